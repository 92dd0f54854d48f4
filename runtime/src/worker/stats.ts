/** Per-process counters reported by `status`. */
export const processStats = {
  /** Messages received from clients. */
  totalRequest: 0,
  /** Sends dropped (buffer full or connection gone). */
  sendFail: 0,
};

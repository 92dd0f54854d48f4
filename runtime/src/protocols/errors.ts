/** Codes passed to `onError(conn, code, message)`. Numbers 1 and 2 match Workerman's. */
export const ErrorCode = {
  /** An outbound connection could not be established. */
  CONNECT_FAIL: 1,
  /** A send was dropped: the send buffer was full or the connection was closed. */
  SEND_FAIL: 2,
  /** A package exceeded `maxPackageSize`; the connection is closed. */
  PACKAGE_TOO_LARGE: 3,
  /** The peer sent bytes the protocol cannot parse; the connection is closed. */
  BAD_PACKAGE: 4,
  /** The WebSocket or TLS handshake failed, timed out or was rejected. */
  HANDSHAKE_FAILED: 5,
  /** The socket reported an error (reset, TLS alert, …). */
  SOCKET_ERROR: 6,
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

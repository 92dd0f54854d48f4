/**
 * Why a connection move was refused. Every refusal leaves the connection working where it was,
 * except `SOURCE_GONE` style failures that cannot happen before the source released it.
 */
export const TransferErrorCode = {
  /** This process cannot move connections (no master, single-process Worker, not a child). */
  NOT_SUPPORTED: 'NOT_SUPPORTED',
  /** The target id is not a process of this Worker (or is this very process). */
  UNKNOWN_TARGET: 'UNKNOWN_TARGET',
  /** The target process is restarting, stopping or did not answer in time. */
  TARGET_NOT_RUNNING: 'TARGET_NOT_RUNNING',
  /** TLS state lives in this process's OpenSSL object and cannot move. */
  TLS: 'TLS',
  /** A negotiated WebSocket extension (permessage-deflate) keeps state that cannot move. */
  EXTENSION: 'EXTENSION',
  /** The connection is not established, is closing, half-closed or already moving. */
  NOT_ESTABLISHED: 'NOT_ESTABLISHED',
  /** Outgoing bytes did not reach the kernel in time (the peer is not reading). */
  SEND_BUFFER_NOT_FLUSHED: 'SEND_BUFFER_NOT_FLUSHED',
  /** The context is not JSON-serialisable or larger than the cap. */
  CONTEXT_TOO_LARGE: 'CONTEXT_TOO_LARGE',
  /** Unparsed input carried with the connection is larger than the cap. */
  STATE_TOO_LARGE: 'STATE_TOO_LARGE',
  /** The protocol keeps per-connection state without `exportState`/`importState`, or the ws internals this needs are missing. */
  UNSUPPORTED_PROTOCOL: 'UNSUPPORTED_PROTOCOL',
  /** The target refused the connection (see the message). */
  TARGET_REFUSED: 'TARGET_REFUSED',
  /** The master went away during the move; the connection stayed here. */
  MASTER_GONE: 'MASTER_GONE',
} as const;

export type TransferErrorCode = (typeof TransferErrorCode)[keyof typeof TransferErrorCode];

/** Rejection of `conn.transferTo()`: the move did not happen and the connection is still served here. */
export class TransferError extends Error {
  override readonly name = 'TransferError';
  constructor(
    readonly code: TransferErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Limits of a move. */
export const HANDOVER_LIMITS = {
  /** Largest JSON of the context (and `conn.context`) carried, in bytes. */
  maxContextBytes: 64 * 1024,
  /** Largest amount of unparsed input carried, in bytes. */
  maxCarriedBytes: 16 * 1024 * 1024,
  /** How long the source waits for its send buffer to reach the kernel, ms. */
  flushTimeoutMs: 2000,
  /** How long the master waits for the target's answer, ms. */
  offerTimeoutMs: 5000,
  /** How long the source waits for the master's decision, ms (it aborts by itself before releasing). */
  decisionTimeoutMs: 8000,
};

/**
 * The I/O half of a connection. A transport owns one socket, turns incoming bytes into messages
 * and messages into outgoing bytes; the `Connection` on top of it owns identity, callbacks and
 * the send-buffer policy. Splitting them lets one Connection outlive its socket
 * (`AsyncConnection.reconnect`) and lets new wire formats plug in without touching Connection.
 */
import type { ErrorCode } from './errors.js';

/** Where a transport reports what happened; implemented by `Connection`. */
export interface TransportSink {
  /** One decoded message arrived. */
  onTransportMessage(message: unknown): void;
  /** The socket is gone. Called exactly once. */
  onTransportClose(): void;
  /** Something went wrong; a close follows when the error is fatal. */
  onTransportError(code: ErrorCode, message: string): void;
  /** Everything queued so far reached the kernel (after {@link Transport.watchDrain}). */
  onTransportDrain(): void;
}

/** Byte and address facts of a transport. */
export interface TransportInfo {
  /** Protocol name (`tcp`, `text`, `frame`, `websocket`, …). */
  readonly protocol: string;
  /** `tcp`, `ssl` or `unix`. */
  readonly kind: 'tcp' | 'ssl' | 'unix';
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Bytes accepted by `send` that have not reached the kernel yet. */
  readonly bufferedAmount: number;
}

export interface Transport extends TransportInfo {
  /**
   * Sends one message (`raw`: bytes already encoded for the wire).
   * @returns true when everything is in the kernel, false when part of it waits in user space.
   */
  send(data: unknown, raw: boolean): boolean;
  /** Closes after everything queued has been flushed. */
  close(): void;
  /** Closes now, dropping anything queued. */
  destroy(): void;
  pause(): void;
  resume(): void;
  /** Asks for one `onTransportDrain` once everything queued so far is flushed. */
  watchDrain(): void;
}

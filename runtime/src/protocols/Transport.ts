/**
 * The I/O half of a connection. A transport owns one socket, turns incoming bytes into messages
 * and messages into outgoing bytes; the `Connection` on top of it owns identity, callbacks and
 * the send-buffer policy. Splitting them lets one Connection outlive its socket
 * (`AsyncConnection.reconnect`) and lets new wire formats plug in without touching Connection.
 */
import type { Socket } from 'node:net';
import type { ErrorCode } from './errors.js';

/** Where a transport reports what happened; implemented by `Connection`. */
export interface TransportSink {
  /**
   * One decoded message arrived. WebSocket transports pass the message's bytes and whether it was
   * a binary frame (text frames are UTF-8, already validated); the sink decides whether to make a
   * string of them.
   */
  onTransportMessage(message: unknown, binary?: boolean): void;
  /** The socket is gone. Called exactly once. */
  onTransportClose(): void;
  /** Something went wrong; a close follows when the error is fatal. */
  onTransportError(code: ErrorCode, message: string): void;
  /** Everything queued so far reached the kernel (after {@link Transport.watchDrain}). */
  onTransportDrain(): void;
}

/** Both ends of a socket. */
export interface PeerAddress {
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
}

/** Reads a socket's addresses (empty for a unix socket's missing ones). */
export function peerAddress(socket: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): PeerAddress {
  return {
    remoteAddress: socket.remoteAddress ?? '',
    remotePort: socket.remotePort ?? 0,
    localAddress: socket.localAddress ?? '',
    localPort: socket.localPort ?? 0,
  };
}

/** Byte and address facts of a transport. */
export interface TransportInfo {
  /** Protocol name (`tcp`, `text`, `frame`, `websocket`, …). */
  readonly protocol: string;
  /** `tcp`, `ssl` or `unix`. */
  readonly kind: 'tcp' | 'ssl' | 'unix';
  /** Both ends of the socket, read once at the start (Node forgets them after a close). */
  readonly address: PeerAddress;
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
  /** Holds writes in user space until {@link uncork}, so that many small sends leave in one syscall. */
  cork(): void;
  uncork(): void;
  /** Present when the connection can move to a sibling process. @internal */
  readonly handover?: TransportHandover;
}

/**
 * What a transport exposes so that its connection can move to another process (the
 * mechanics live in `worker/handover/`). A transport without it cannot move.
 * @internal
 */
export interface TransportHandover {
  /** `stream` (a Protocol over bytes) or `websocket`. */
  readonly family: 'stream' | 'websocket';
  /** The socket whose handle moves. */
  readonly socket: Socket;
  /** Why this connection cannot move right now (extension, closing, …), or null. */
  refusal(): { code: 'EXTENSION' | 'NOT_ESTABLISHED' | 'UNSUPPORTED_PROTOCOL'; message: string } | null;
  /** Bytes still owed to the kernel beyond the socket's own buffer (e.g. ws's sender queue). */
  pendingOutput(): number;
  /**
   * After reading stopped: the parser's state and the bytes a fresh parser must read first so
   * that it produces exactly the messages this one still would. Leaves this parser untouched.
   */
  exportParser(): { parser: { state?: unknown; expected: number } | { subprotocol: string }; input: Buffer[] };
  /** Stops reporting to the sink: the socket is about to be closed without the app hearing of it. */
  detach(): void;
}

import { ErrorCode, peerAddress, type PeerAddress, type Transport, type TransportSink } from '../protocols/index.js';
import { TransferError, TransferErrorCode } from './handover/errors.js';
import type { ConnectionInfo } from './ipc.js';
import { describeError, log } from './log.js';
import { ConnectionTimers } from './ConnectionTimers.js';
import { processStats } from './stats.js';

/**
 * What `send` did with the data, as in Workerman: `true` it reached the kernel, `null` it waits
 * in the send buffer, `false` it was dropped (buffer full or connection closed; counted in
 * `send_fail` and reported to `onError`).
 */
export type SendResult = true | null | false;

/** The life of a connection. */
export type ConnectionStatus = 'connecting' | 'established' | 'closing' | 'closed';

/** Callbacks a connection reports to. Any of them may be async; a throw or rejection is logged with the connection id. */
export interface ConnectionEvents<M = unknown, C extends Connection<M> = Connection<M>> {
  /** The connection is established (for WebSocket: the upgrade request arrived). */
  onConnect?: (conn: C) => unknown;
  /** One decoded message arrived; for WebSocket, `binary` tells a binary frame from a text one. */
  onMessage?: (conn: C, data: M, binary?: boolean) => unknown;
  /** The connection is closed, whoever closed it. Called once. */
  onClose?: (conn: C) => unknown;
  /** Something went wrong; see {@link ErrorCode}. */
  onError?: (conn: C, code: ErrorCode, message: string) => unknown;
  /** The send buffer reached `maxSendBufferSize`; further sends are dropped until it drains. */
  onBufferFull?: (conn: C) => unknown;
  /** The send buffer emptied after `onBufferFull`. */
  onBufferDrain?: (conn: C) => unknown;
  /**
   * A connection moved here from a sibling process (`conn.transferTo`); `context` is what the
   * source passed. Called instead of `onConnect`, before any message of the connection here.
   */
  onTransfer?: (conn: C, context: unknown) => unknown;
  /** A timer of the connection fired (see {@link Connection.timers}). */
  onTimer?: (conn: C, name: string) => unknown;
}

/** Settings a connection takes from its Worker or its own options. */
export interface ConnectionLimits {
  /** Largest package accepted from the peer, in bytes. Default 10 MB. */
  maxPackageSize: number;
  /** Largest amount of unsent data held for the peer, in bytes. Default 1 MB. */
  maxSendBufferSize: number;
}

export const DEFAULT_LIMITS: ConnectionLimits = {
  maxPackageSize: 10 * 1024 * 1024,
  maxSendBufferSize: 1024 * 1024,
};

/** Who owns a connection: the source of callbacks, told when the connection goes away. */
export interface ConnectionOwner {
  /** Name shown in logs and `connections` (the Worker name). */
  readonly name: string;
  /** Callbacks, read at each event so that reassigning them takes effect at once. */
  readonly events: ConnectionEvents<never, never>;
  /** Hand WebSocket text messages to onMessage as UTF-8 Buffers instead of strings. */
  readonly textAsBuffer?: boolean;
  forget(conn: Connection<never>): void;
  /** Moves `conn` to the sibling process `target` (see {@link Connection.transferTo}); absent if the owner cannot. */
  transfer?(conn: Connection<never>, target: number, context: unknown): Promise<void>;
}

/** What the app did to a connection while it was moving, delivered once the move is decided. */
export interface MoveBacklog {
  sends: Array<{ data: unknown; raw: boolean }>;
  close: 'close' | 'destroy' | null;
}

let nextConnectionId = 1;

/**
 * One client connection: identity, callbacks and the send-buffer policy, over a transport
 * (TCP/TLS/unix byte stream with a framing protocol, or WebSocket).
 * @typeParam M the message type `onMessage` receives (depends on the protocol).
 */
export class Connection<M = unknown> implements TransportSink {
  /** Unique within this process. */
  readonly id = nextConnectionId++;
  /** Free-form application state for this connection (user name, room, …). */
  context: Record<string, unknown> = {};
  /**
   * Named timers of this connection: `conn.timers.add('idle', 30)` calls the owner's
   * `onTimer(conn, 'idle')`. They stop when the connection closes and follow it when it moves.
   */
  get timers(): ConnectionTimers {
    // Made on first use: most connections never have a timer, and idle memory counts.
    return (this.ownTimers ??= new ConnectionTimers((name) => this.emit('onTimer', name)));
  }
  private ownTimers: ConnectionTimers | null = null;
  /** See {@link ConnectionLimits.maxSendBufferSize}; may be changed per connection. */
  maxSendBufferSize: number;
  /** See {@link ConnectionLimits.maxPackageSize}. */
  readonly maxPackageSize: number;
  protected transport: Transport | null = null;
  protected currentStatus: ConnectionStatus = 'connecting';
  /** Sends made before the transport is ready (e.g. in onConnect before a WebSocket handshake). */
  private pending: Array<{ data: unknown; raw: boolean; size: number }> = [];
  private pendingBytes = 0;
  private bufferFull = false;
  private paused = false;
  private closeWhenReady = false;
  /** A move to another process is under way: sends queue, close waits for the outcome. */
  private moving = false;
  /** The connection now lives in another process; this object is spent. */
  private moved = false;
  private closeAfterMove: 'close' | 'destroy' | null = null;
  /** Bytes of transports this connection had before (AsyncConnection reconnects). */
  protected retired = { bytesRead: 0, bytesWritten: 0 };
  private addresses: PeerAddress | null = null;

  constructor(
    protected owner: ConnectionOwner,
    limits: ConnectionLimits,
  ) {
    this.maxSendBufferSize = limits.maxSendBufferSize;
    this.maxPackageSize = limits.maxPackageSize;
  }

  get status(): ConnectionStatus {
    return this.currentStatus;
  }
  /** Protocol name: tcp, text, frame, websocket, … */
  get protocol(): string {
    return this.transport?.protocol ?? 'unknown';
  }
  /** tcp, ssl or unix. */
  get transportKind(): string {
    return this.transport?.kind ?? 'tcp';
  }
  get remoteAddress(): string {
    return (this.transport?.address ?? this.addresses)?.remoteAddress ?? '';
  }
  get remotePort(): number {
    return (this.transport?.address ?? this.addresses)?.remotePort ?? 0;
  }
  get localAddress(): string {
    return (this.transport?.address ?? this.addresses)?.localAddress ?? '';
  }
  get localPort(): number {
    return (this.transport?.address ?? this.addresses)?.localPort ?? 0;
  }
  get bytesRead(): number {
    return this.retired.bytesRead + (this.transport?.bytesRead ?? 0);
  }
  get bytesWritten(): number {
    return this.retired.bytesWritten + (this.transport?.bytesWritten ?? 0);
  }
  /** Bytes accepted by `send` that have not reached the kernel yet. */
  get sendBufferSize(): number {
    return this.pendingBytes + (this.transport?.bufferedAmount ?? 0);
  }

  /**
   * Sends a message, encoded by the connection's protocol (or as it is with `raw`).
   * @returns true (in the kernel), null (buffered) or false (dropped), see {@link SendResult}.
   */
  send(data: M | string | Buffer, raw = false): SendResult {
    if (this.moved) return this.dropSend('connection moved to another process');
    if (this.currentStatus === 'closing' || this.currentStatus === 'closed' || this.closeAfterMove) {
      return this.dropSend('connection is closed');
    }
    if (this.sendBufferSize >= this.maxSendBufferSize) {
      return this.dropSend('send buffer full and drop package');
    }
    if (!this.transport || this.currentStatus === 'connecting' || this.moving) {
      const size = typeof data === 'string' ? Buffer.byteLength(data) : Buffer.isBuffer(data) ? data.length : 64;
      this.pending.push({ data, raw, size });
      this.pendingBytes += size;
      this.checkBufferFull();
      return null;
    }
    if (this.transport.send(data, raw)) return true;
    this.checkBufferFull();
    return null;
  }

  /**
   * Sends `data` if given, then closes once the send buffer has been flushed
   * (for WebSocket: a close frame with code 1000).
   */
  close(data?: M | string | Buffer, raw = false): void {
    if (data !== undefined) this.send(data, raw);
    if (this.currentStatus === 'closing' || this.currentStatus === 'closed') return;
    if (this.moving) {
      this.closeAfterMove ??= 'close';
      return;
    }
    if (!this.transport || this.currentStatus === 'connecting') {
      this.closeWhenReady = true;
      this.currentStatus = 'closing';
      return;
    }
    this.currentStatus = 'closing';
    this.transport.close();
  }

  /** Closes at once, dropping anything unsent. */
  destroy(): void {
    if (this.currentStatus === 'closed') return;
    if (this.moving) {
      this.closeAfterMove = 'destroy';
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    this.currentStatus = 'closing';
    this.pending = [];
    this.pendingBytes = 0;
    this.transport?.destroy();
  }

  /**
   * Holds this connection's writes until {@link uncork} so that many sends in one turn leave in
   * one syscall (the gateway does this per batch from a worker). Calls nest like `socket.cork`.
   */
  cork(): void {
    this.transport?.cork();
  }

  /** Releases writes held by {@link cork}. */
  uncork(): void {
    this.transport?.uncork();
  }

  /** Stops delivering messages (backpressure): nothing more reaches onMessage until {@link resumeRecv}, and the socket stops reading once its buffer fills. */
  pauseRecv(): void {
    this.paused = true;
    this.transport?.pause();
  }

  /** Reads from the peer again after {@link pauseRecv}. */
  resumeRecv(): void {
    this.paused = false;
    this.transport?.resume();
  }

  /**
   * Moves this connection to the process `targetWorkerId` of the same Worker (its `id`,
   * 0…count-1): the socket handle goes through the master, with the bytes read but not yet
   * parsed, so the client notices nothing. Resolves once the target owns the connection (this
   * object is then spent: sends return false); the target's `onTransfer(conn, context)` runs.
   * Sends made meanwhile are delivered by the target, in order.
   *
   * Rejects with a {@link TransferError} when the move is refused — TLS, a WebSocket extension,
   * a closing or half-closed connection, a send buffer that does not flush, a context over
   * 64 KB of JSON, an unknown or stopped target — and the connection keeps working here.
   * @param context JSON-serialisable state for the target (defaults to nothing; `conn.context` travels too).
   */
  transferTo(targetWorkerId: number, context?: unknown): Promise<void> {
    if (!this.owner.transfer) {
      return Promise.reject(new TransferError(TransferErrorCode.NOT_SUPPORTED, `${this.owner.name} connections cannot move`));
    }
    return this.owner.transfer(this as Connection<never>, targetWorkerId, context);
  }

  /** True while a move is under way. */
  get transferring(): boolean {
    return this.moving;
  }

  /**
   * Starts a move: from now on sends queue and close waits. Returns the transport.
   * @throws TransferError when the connection cannot start a move.
   * @internal
   */
  beginMove(): Transport {
    if (this.moving) throw new TransferError(TransferErrorCode.NOT_ESTABLISHED, 'connection is already moving');
    if (this.moved || this.currentStatus !== 'established' || !this.transport || this.closeAfterMove) {
      throw new TransferError(TransferErrorCode.NOT_ESTABLISHED, `connection is ${this.moved ? 'moved' : this.currentStatus}`);
    }
    this.moving = true;
    return this.transport;
  }

  /** Facts the target needs to carry on. @internal */
  get moveFacts(): { paused: boolean; bytesRead: number; bytesWritten: number } {
    return { paused: this.paused, bytesRead: this.bytesRead, bytesWritten: this.bytesWritten };
  }

  /** The move is off: deliver what was queued meanwhile, then any close the app asked for. @internal */
  abortMove(): void {
    if (!this.moving) return;
    this.moving = false;
    this.flushPending();
    const close = this.closeAfterMove;
    this.closeAfterMove = null;
    if (close === 'destroy') this.destroy();
    else if (close === 'close') this.close();
  }

  /**
   * The move is done: this object is spent and leaves its owner without `onClose`; returns what
   * the app sent (and whether it closed) meanwhile, for the target to deliver.
   * @internal
   */
  commitMove(): MoveBacklog {
    const backlog: MoveBacklog = { sends: this.pending.map(({ data, raw }) => ({ data, raw })), close: this.closeAfterMove };
    this.moving = false;
    this.moved = true;
    this.pending = [];
    this.pendingBytes = 0;
    this.closeAfterMove = null;
    this.retired = { bytesRead: this.bytesRead, bytesWritten: this.bytesWritten };
    this.transport = null;
    this.currentStatus = 'closed';
    this.owner.forget(this as Connection<never>);
    return backlog;
  }

  /**
   * Prepares a connection that moved here: byte counters so far, receive pause, and the sends
   * the source's app made during the move (they go out first).
   * @internal
   */
  adoptMove(facts: { paused: boolean; bytesRead: number; bytesWritten: number }, sends: MoveBacklog['sends']): void {
    this.retired = { bytesRead: facts.bytesRead, bytesWritten: facts.bytesWritten };
    this.paused = facts.paused;
    for (const { data, raw } of sends) {
      const size = typeof data === 'string' ? Buffer.byteLength(data) : Buffer.isBuffer(data) ? data.length : 64;
      this.pending.push({ data, raw, size });
      this.pendingBytes += size;
    }
  }

  /** Tells the owner's `onTransfer`. @internal */
  announceTransfer(context: unknown): void {
    this.emit('onTransfer', context);
  }

  /** A row for the `connections` command. */
  info(pid: number): ConnectionInfo {
    return {
      pid,
      worker: this.owner.name,
      id: this.id,
      protocol: this.protocol,
      transport: this.transportKind,
      remoteAddress: formatAddress(this.remoteAddress, this.remotePort),
      localAddress: formatAddress(this.localAddress, this.localPort),
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      sendBuffer: this.sendBufferSize,
      status: this.currentStatus,
    };
  }

  /**
   * Puts a transport under this connection and flushes what was sent before it was ready.
   * @internal used by Worker and AsyncConnection.
   */
  attach(transport: Transport): void {
    this.transport = transport;
    this.addresses = null;
    if (this.paused) transport.pause();
    this.currentStatus = 'established';
    this.flushPending();
    if (this.closeWhenReady) {
      this.closeWhenReady = false;
      this.currentStatus = 'closing';
      transport.close();
    }
  }

  /**
   * Records the peer's addresses before a transport exists (during a WebSocket handshake), so
   * that onConnect can read them.
   * @internal
   */
  adoptAddresses(socket: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): void {
    this.addresses = peerAddress(socket);
  }

  /** Tells the owner's `onConnect`. @internal */
  announce(): void {
    this.emit('onConnect');
  }

  /** True once a transport carries this connection. @internal */
  get attached(): boolean {
    return this.transport !== null;
  }

  private flushPending(): boolean {
    const queued = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const item of queued) this.transport?.send(item.data, item.raw);
    if (queued.length > 0) this.checkBufferFull();
    return queued.length > 0;
  }

  /** @internal TransportSink */
  onTransportMessage(message: unknown, binary?: boolean): void {
    processStats.totalRequest++;
    if (binary === undefined) this.emit('onMessage', message);
    else if (binary || this.owner.textAsBuffer) this.emit('onMessage', message, binary);
    else this.emit('onMessage', (message as Buffer).toString('utf8'), binary);
  }

  /** @internal TransportSink */
  onTransportClose(): void {
    if (this.currentStatus === 'closed') return;
    this.currentStatus = 'closed';
    this.ownTimers?.delAll();
    this.pending = [];
    this.pendingBytes = 0;
    this.owner.forget(this as Connection<never>);
    this.emit('onClose');
  }

  /** @internal TransportSink */
  onTransportError(code: ErrorCode, message: string): void {
    const handler = this.owner.events.onError;
    if (handler) {
      this.emit('onError', code, message);
      return;
    }
    // Resets and timeouts are ordinary on the Internet; bad input deserves a line.
    const fields = { conn: this.id, remote: formatAddress(this.remoteAddress, this.remotePort), code };
    if (code === ErrorCode.SOCKET_ERROR) log.debug(message, fields);
    else log.info(`closing connection: ${message}`, fields);
  }

  /** @internal TransportSink */
  onTransportDrain(): void {
    if (!this.bufferFull) return;
    if (this.sendBufferSize > 0) {
      this.transport?.watchDrain();
      return;
    }
    this.bufferFull = false;
    this.emit('onBufferDrain');
  }

  private checkBufferFull(): void {
    if (this.bufferFull || this.sendBufferSize < this.maxSendBufferSize) return;
    this.bufferFull = true;
    this.emit('onBufferFull');
    this.transport?.watchDrain();
  }

  private dropSend(reason: string): false {
    processStats.sendFail++;
    if (this.owner.events.onError) this.emit('onError', ErrorCode.SEND_FAIL, reason);
    return false;
  }

  /** Calls a user callback; a throw or a rejection is logged with this connection's id and goes no further. */
  protected emit(name: keyof ConnectionEvents, ...args: unknown[]): void {
    const handler = this.owner.events[name] as ((...a: unknown[]) => unknown) | undefined;
    if (!handler) return;
    try {
      const result = handler(this, ...args);
      if (result instanceof Promise) result.catch((error: unknown) => this.reportHandlerError(name, error));
    } catch (error) {
      this.reportHandlerError(name, error);
    }
  }

  private reportHandlerError(name: string, error: unknown): void {
    log.error(`${name} threw`, { worker: this.owner.name, conn: this.id, error: describeError(error) });
  }
}

/** `host:port`, with brackets for IPv6; the bare address when there is no port (unix). */
export function formatAddress(address: string, port: number): string {
  if (!address) return port ? `:${port}` : '';
  if (!port) return address;
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

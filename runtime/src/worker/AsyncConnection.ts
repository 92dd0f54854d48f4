import net from 'node:net';
import tls from 'node:tls';
import { WebSocket } from 'ws';
import { ErrorCode, StreamTransport, WebSocketTransport, type Protocol, type TransportSink } from '../protocols/index.js';
import { parseAddress, type ParsedAddress } from './address.js';
import { Connection, DEFAULT_LIMITS, type ConnectionEvents, type ConnectionLimits, type ConnectionOwner } from './Connection.js';
import type { MessageOf } from './Worker.js';

/** Options of an {@link AsyncConnection}. */
export interface AsyncConnectionOptions<M = unknown> extends Partial<ConnectionLimits>, ConnectionEvents<M, AsyncConnection<M>> {
  /** TLS client options for `wss://` and `ssl://` (ca, servername, rejectUnauthorized, …). */
  tls?: tls.ConnectionOptions;
  /** Framing protocol for `tcp://`, `ssl://` and `unix://` addresses. */
  protocol?: string | Protocol;
  /** Seconds to wait for the TCP/TLS/WebSocket handshake. Default 10. */
  connectTimeout?: number;
  /** Extra headers for the WebSocket handshake. */
  headers?: Record<string, string>;
  /** Local address to connect from (which interface or loopback alias the peer sees). */
  localAddress?: string;
}

/**
 * An outbound connection with the same callbacks and send semantics as a server connection —
 * Workerman's `AsyncTcpConnection`. The object survives {@link reconnect}; sends made while it
 * (re)connects are queued and flushed once it is up.
 *
 * ```ts
 * const conn = new AsyncConnection('ws://127.0.0.1:8080/chat');
 * conn.onMessage = (c, data) => console.log(data);
 * conn.onClose = (c) => c.reconnect(1);
 * conn.connect();
 * ```
 */
export class AsyncConnection<M = unknown> extends Connection<M> implements ConnectionOwner, ConnectionEvents<M, AsyncConnection<M>> {
  readonly name = 'AsyncConnection';
  onConnect?: ConnectionEvents<M, AsyncConnection<M>>['onConnect'];
  onMessage?: ConnectionEvents<M, AsyncConnection<M>>['onMessage'];
  onClose?: ConnectionEvents<M, AsyncConnection<M>>['onClose'];
  onError?: ConnectionEvents<M, AsyncConnection<M>>['onError'];
  onBufferFull?: ConnectionEvents<M, AsyncConnection<M>>['onBufferFull'];
  onBufferDrain?: ConnectionEvents<M, AsyncConnection<M>>['onBufferDrain'];

  private readonly parsed: ParsedAddress;
  /** Each connect attempt gets a number; events of older attempts are ignored. */
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private socket: net.Socket | null = null;
  private ws: WebSocket | null = null;

  constructor(
    readonly address: string,
    private readonly connectOptions: AsyncConnectionOptions<M> = {},
  ) {
    super(undefined as unknown as ConnectionOwner, {
      maxPackageSize: connectOptions.maxPackageSize ?? DEFAULT_LIMITS.maxPackageSize,
      maxSendBufferSize: connectOptions.maxSendBufferSize ?? DEFAULT_LIMITS.maxSendBufferSize,
    });
    this.owner = this;
    this.parsed = parseAddress(address, connectOptions.protocol);
    for (const key of ['onConnect', 'onMessage', 'onClose', 'onError', 'onBufferFull', 'onBufferDrain'] as const) {
      const handler = connectOptions[key];
      if (handler) (this as Record<string, unknown>)[key] = handler;
    }
  }

  /** @internal ConnectionOwner */
  get events(): ConnectionEvents<never, never> {
    return this as unknown as ConnectionEvents<never, never>;
  }

  /** @internal ConnectionOwner */
  forget(): void {}

  /** Starts connecting; `onConnect` follows, or `onError(CONNECT_FAIL)` and `onClose`. */
  connect(): void {
    if (this.currentStatus === 'established') return;
    const attempt = ++this.attempt;
    this.currentStatus = 'connecting';
    const sink = this.sinkFor(attempt);
    const timeoutMs = (this.connectOptions.connectTimeout ?? 10) * 1000;
    if (this.parsed.family === 'websocket') this.connectWebSocket(attempt, sink, timeoutMs);
    else this.connectStream(attempt, sink, timeoutMs);
  }

  /**
   * Drops the current socket (if any) without `onClose` and connects again after `delaySeconds`.
   * Typically called from `onClose` to keep a link up.
   */
  reconnect(delaySeconds = 0): void {
    this.attempt++;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.retireTransport();
    this.currentStatus = 'connecting';
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, Math.max(0, delaySeconds * 1000));
  }

  override close(data?: M | string | Buffer, raw = false): void {
    this.cancelReconnect();
    if (this.currentStatus === 'connecting' && !this.attached) {
      this.attempt++;
      this.socket?.destroy();
      this.ws?.terminate();
      this.onTransportClose();
      return;
    }
    super.close(data, raw);
  }

  override destroy(): void {
    this.cancelReconnect();
    if (this.currentStatus === 'connecting' && !this.attached) {
      this.close();
      return;
    }
    super.destroy();
  }

  private cancelReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private connectStream(attempt: number, sink: TransportSink, timeoutMs: number): void {
    const endpoint = this.parsed.endpoint;
    const secure = this.parsed.tls || this.connectOptions.tls !== undefined;
    const target =
      endpoint.kind === 'unix' ? { path: endpoint.path } : { host: endpoint.host, port: endpoint.port, localAddress: this.connectOptions.localAddress };
    const socket = secure ? tls.connect({ ...target, ...this.connectOptions.tls }) : net.connect(target);
    this.socket = socket;
    const kind = secure ? 'ssl' : endpoint.kind === 'unix' ? 'unix' : 'tcp';
    const timer = setTimeout(() => socket.destroy(new Error(`connect timeout after ${timeoutMs} ms`)), timeoutMs);
    const onError = (error: Error): void => this.connectFailed(attempt, error, timer);
    socket.once('error', onError);
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      if (attempt !== this.attempt) return;
      this.attach(new StreamTransport(socket, sink, { protocol: this.parsed.protocol, maxPackageSize: this.maxPackageSize, kind }));
      this.announce();
    });
  }

  private connectWebSocket(attempt: number, sink: TransportSink, timeoutMs: number): void {
    const endpoint = this.parsed.endpoint;
    if (endpoint.kind !== 'tcp') throw new TypeError(`${this.address}: WebSocket needs host:port`);
    const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
    const url = `${this.parsed.tls ? 'wss' : 'ws'}://${host}:${endpoint.port}${this.parsed.path}`;
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      maxPayload: this.maxPackageSize,
      handshakeTimeout: timeoutMs,
      headers: this.connectOptions.headers,
      localAddress: this.connectOptions.localAddress,
      ...this.connectOptions.tls,
    });
    this.ws = ws;
    let socket: net.Socket | null = null;
    ws.once('upgrade', (response) => {
      socket = response.socket as net.Socket;
    });
    const onError = (error: Error): void => this.connectFailed(attempt, error, null);
    ws.once('error', onError);
    ws.once('open', () => {
      ws.off('error', onError);
      if (attempt !== this.attempt || !socket) {
        ws.terminate();
        return;
      }
      this.attach(new WebSocketTransport(ws, socket, sink, this.parsed.tls ? 'ssl' : 'tcp'));
      this.announce();
    });
  }

  private connectFailed(attempt: number, error: Error, timer: NodeJS.Timeout | null): void {
    if (timer) clearTimeout(timer);
    if (attempt !== this.attempt) return;
    this.attempt++;
    this.socket?.destroy();
    this.ws?.terminate();
    this.emit('onError', ErrorCode.CONNECT_FAIL, `connect to ${this.address} failed: ${error.message}`);
    this.onTransportClose();
  }

  /** Forwards a transport's events only while it belongs to the current attempt. */
  private sinkFor(attempt: number): TransportSink {
    const current = (): boolean => attempt === this.attempt;
    return {
      onTransportMessage: (message, binary) => current() && this.onTransportMessage(message, binary),
      onTransportClose: () => current() && this.onTransportClose(),
      onTransportError: (code, message) => current() && this.onTransportError(code, message),
      onTransportDrain: () => current() && this.onTransportDrain(),
    };
  }

  private retireTransport(): void {
    if (this.transport) {
      this.retired.bytesRead += this.transport.bytesRead;
      this.retired.bytesWritten += this.transport.bytesWritten;
      this.transport.destroy();
      this.transport = null;
    } else {
      this.socket?.destroy();
      this.ws?.terminate();
    }
  }
}

export type { MessageOf };

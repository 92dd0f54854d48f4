import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { ErrorCode } from './errors.js';
import { toWire } from './stream.js';
import { SocketTransport } from './SocketTransport.js';
import type { Transport, TransportHandover, TransportSink } from './Transport.js';

/** ws error codes that mean "too big" rather than "malformed". */
const TOO_LARGE = new Set(['WS_ERR_UNSUPPORTED_MESSAGE_LENGTH']);

/**
 * A WebSocket connection driven by the `ws` package. Messages reach the sink as bytes with their
 * frame type; strings are sent as text frames and Buffers as binary frames. A raw send
 * writes bytes that are already a complete frame (see {@link encodeFrame}), which is how one
 * broadcast is framed once for many clients.
 */
export class WebSocketTransport extends SocketTransport implements Transport {
  readonly protocol = 'websocket';

  constructor(
    private readonly ws: WebSocket,
    socket: Socket,
    sink: TransportSink,
    kind: 'tcp' | 'ssl' | 'unix',
  ) {
    super(socket, sink, kind);
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (this.detached) return;
      sink.onTransportMessage(data, isBinary);
    });
    ws.on('error', (error: Error & { code?: string }) => {
      if (this.detached) return;
      const code = error.code && TOO_LARGE.has(error.code) ? ErrorCode.PACKAGE_TOO_LARGE : ErrorCode.BAD_PACKAGE;
      sink.onTransportError(code, `websocket: ${error.message}`);
    });
    ws.on('close', () => {
      if (!this.detached) sink.onTransportClose();
    });
  }

  /** The `ws` WebSocket (its receiver state is what a move carries). @internal */
  get websocket(): WebSocket {
    return this.ws;
  }

  /**
   * @internal see {@link TransportHandover}. The receiver's partial frame is exported by
   * `worker/handover` (it reads ws's private state); this only reports what is public.
   */
  get handover(): TransportHandover {
    return {
      family: 'websocket',
      socket: this.socket,
      refusal: () => {
        if (this.ws.extensions !== '') return { code: 'EXTENSION', message: `negotiated extension ${this.ws.extensions} keeps state that cannot move` };
        if (this.ws.readyState !== WebSocket.OPEN) return { code: 'NOT_ESTABLISHED', message: 'websocket is not open' };
        return null;
      },
      pendingOutput: () => Math.max(0, this.ws.bufferedAmount - this.socket.writableLength),
      exportParser: () => ({ parser: { subprotocol: this.ws.protocol }, input: [] }),
      detach: () => {
        this.detached = true;
      },
    };
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(data: unknown, raw: boolean): boolean {
    if (raw) this.socket.write(toWire(data));
    else this.ws.send(toWire(data));
    return this.ws.bufferedAmount === 0;
  }

  close(): void {
    this.ws.close(1000);
  }

  /** Closes with a specific WebSocket close code and reason. */
  closeWith(code: number, reason: string): void {
    this.ws.close(code, reason);
  }

  destroy(): void {
    this.ws.terminate();
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  protected isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }
}

/**
 * One complete unmasked server frame for `data`, to be sent raw to any number of WebSocket
 * connections: a text frame for strings (or for bytes that are UTF-8 text, with `text`), binary
 * otherwise.
 */
export function encodeFrame(data: string | Buffer, text = typeof data === 'string'): Buffer {
  const payload = typeof data === 'string' ? Buffer.from(data) : data;
  const opcode = text ? 0x1 : 0x2;
  const length = payload.length;
  const headerLength = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = 0x80 | opcode;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 0x10000) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  payload.copy(frame, headerLength);
  return frame;
}

/** How the acceptor hands events to its owner (the Worker). */
export interface WebSocketAcceptorHooks {
  /**
   * A valid upgrade request arrived. Resolve `true` to accept, or a status and message to refuse
   * with that HTTP response.
   */
  verify(request: http.IncomingMessage, socket: Socket): Promise<true | { status: number; message: string }>;
  /** The handshake completed. */
  open(ws: WebSocket, request: http.IncomingMessage, socket: Socket): void;
  /** A plain HTTP request (no upgrade). Without a handler the answer is 426 Upgrade Required. */
  httpRequest?(request: http.IncomingMessage, response: http.ServerResponse): void;
  /** The handshake failed; the socket has been answered and closed. */
  handshakeError(socket: Socket, request: http.IncomingMessage | null, status: number, reason: string): void;
}

export interface WebSocketAcceptorOptions {
  /** Largest message accepted, in bytes (ws `maxPayload`). */
  maxPayload: number;
  /** Milliseconds a new socket has to complete its handshake. */
  handshakeTimeout: number;
  /** permessage-deflate; off by default (CPU, memory, and a connection using it cannot be handed over). */
  perMessageDeflate?: boolean;
}

/**
 * Accepts server-side WebSocket connections on sockets the Worker accepted itself: Node's HTTP
 * parser reads the request, `ws` performs the upgrade. Plain HTTP requests on the same port can be
 * served (a chat page next to its socket).
 */
export class WebSocketAcceptor {
  private readonly http: http.Server;
  private readonly wss: WebSocketServer;
  /** Sockets still in their HTTP phase, so that a stop can close them. */
  private readonly pending = new Set<Socket>();

  constructor(
    private readonly hooks: WebSocketAcceptorHooks,
    private readonly options: WebSocketAcceptorOptions,
  ) {
    this.http = http.createServer({ noDelay: true });
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: options.maxPayload,
      perMessageDeflate: options.perMessageDeflate ?? false,
      verifyClient: (info, done) => {
        const socket = info.req.socket;
        hooks.verify(info.req, socket).then(
          (verdict) => {
            if (verdict === true) return done(true);
            // Unless the handshake timeout refused it already, the owner hears of this refusal once.
            const first = this.pending.delete(socket);
            clearHandshakeTimer(socket);
            done(false, verdict.status, verdict.message);
            if (first) hooks.handshakeError(socket, info.req, verdict.status, verdict.message);
          },
          () => done(false, 500, 'Internal Server Error'),
        );
      },
    });
    this.wss.on('wsClientError', (error: Error, socket: Duplex, request: http.IncomingMessage) => {
      this.refuse(socket as Socket, request, 400, error.message);
    });
    this.http.on('upgrade', (request: http.IncomingMessage, socket: Socket, head: Buffer) => {
      this.wss.handleUpgrade(request, socket, head, (ws) => {
        this.pending.delete(socket);
        clearHandshakeTimer(socket);
        hooks.open(ws, request, socket);
      });
    });
    this.http.on('request', (request: http.IncomingMessage, response: http.ServerResponse) => {
      if (hooks.httpRequest) {
        hooks.httpRequest(request, response);
        return;
      }
      response.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close', Upgrade: 'websocket' });
      response.end('426 Upgrade Required: this port speaks WebSocket\n');
    });
    this.http.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
      const reason = error.code === 'HPE_HEADER_OVERFLOW' ? 'request headers too large' : `not a valid HTTP request (${error.code ?? error.message})`;
      this.refuse(socket, null, error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400, reason);
    });
  }

  /** Takes a freshly accepted socket through the HTTP/WebSocket handshake. */
  accept(socket: Socket): void {
    this.pending.add(socket);
    socket.once('close', () => {
      this.pending.delete(socket);
      clearHandshakeTimer(socket);
    });
    const timer = setTimeout(() => {
      if (!this.pending.has(socket)) return;
      this.refuse(socket, null, 408, `handshake not completed within ${this.options.handshakeTimeout} ms`);
    }, this.options.handshakeTimeout);
    handshakeTimers.set(socket, timer);
    this.http.emit('connection', socket);
  }

  /** Closes every socket that has not finished its handshake. */
  closePending(): void {
    for (const socket of this.pending) socket.destroy();
    this.pending.clear();
  }

  private refuse(socket: Socket, request: http.IncomingMessage | null, status: number, reason: string): void {
    this.pending.delete(socket);
    clearHandshakeTimer(socket);
    if (socket.writable) {
      const body = `${status} ${http.STATUS_CODES[status] ?? ''}: ${reason}\n`;
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    }
    // A peer that never reads must not keep the socket: give the answer a moment, then cut.
    setTimeout(() => socket.destroy(), 2000).unref();
    this.hooks.handshakeError(socket, request, status, reason);
  }
}

const handshakeTimers = new WeakMap<Socket, NodeJS.Timeout>();

function clearHandshakeTimer(socket: Socket): void {
  const timer = handshakeTimers.get(socket);
  if (timer) {
    clearTimeout(timer);
    handshakeTimers.delete(socket);
  }
}

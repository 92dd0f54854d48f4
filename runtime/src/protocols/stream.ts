import type { Socket } from 'node:net';
import { ErrorCode } from './errors.js';
import type { Protocol, ProtocolConnection } from './Protocol.js';
import { SocketTransport } from './SocketTransport.js';
import type { Transport, TransportHandover, TransportSink } from './Transport.js';

const EMPTY = Buffer.alloc(0);

/** Options for a {@link StreamTransport}. */
export interface StreamTransportOptions {
  /** Framing protocol; `null` delivers every chunk as it arrives (the `tcp` scheme). */
  protocol: Protocol | null;
  maxPackageSize: number;
  /** What the socket runs over: plain TCP, TLS or a unix socket. */
  kind: 'tcp' | 'ssl' | 'unix';
}

/**
 * A byte-stream socket (TCP, TLS or unix) framed by a {@link Protocol}. Partial packages are
 * kept as a list of chunks and joined once complete, so a large package costs one copy.
 */
export class StreamTransport extends SocketTransport implements Transport, ProtocolConnection {
  readonly protocol: string;
  readonly maxPackageSize: number;
  protocolState: unknown;
  private readonly framer: Protocol | null;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Length of the package being received, once `input` has told it. */
  private expected = 0;
  private closed = false;
  /** While paused, complete packages already read wait here instead of being delivered. */
  private paused = false;

  constructor(socket: Socket, sink: TransportSink, options: StreamTransportOptions) {
    super(socket, sink, options.kind);
    this.framer = options.protocol;
    this.protocol = options.protocol?.name ?? 'tcp';
    this.maxPackageSize = options.maxPackageSize;
    this.protocolState = options.protocol?.createState?.();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (this.detached) return;
      sink.onTransportError(ErrorCode.SOCKET_ERROR, error.code ? `${error.code}: ${error.message}` : error.message);
    });
    socket.on('close', () => {
      this.closed = true;
      this.chunks = [];
      if (!this.detached) sink.onTransportClose();
    });
  }

  /** @internal see {@link TransportHandover} */
  get handover(): TransportHandover {
    const framer = this.framer;
    return {
      family: 'stream',
      socket: this.socket,
      refusal: () => {
        if (framer?.createState && !(framer.exportState && framer.importState)) {
          return { code: 'UNSUPPORTED_PROTOCOL', message: `protocol ${this.protocol} keeps state but has no exportState/importState` };
        }
        return null;
      },
      pendingOutput: () => 0,
      exportParser: () => ({
        parser: {
          state: framer?.exportState ? framer.exportState(this.protocolState) : undefined,
          expected: this.expected,
        },
        input: this.chunks.slice(),
      }),
      detach: () => {
        this.detached = true;
      },
    };
  }

  /**
   * Continues the parse of a connection that moved here: its exported protocol state, and the
   * bytes it had read but not framed yet (they are framed before anything the socket brings).
   * @internal
   */
  importParser(parser: { state?: unknown; expected: number }, input: Buffer): void {
    if (this.framer?.importState) this.protocolState = this.framer.importState(parser.state);
    this.expected = parser.expected;
    this.chunks = input.length > 0 ? [input] : [];
    this.buffered = input.length;
  }

  /** Frames what {@link importParser} carried in (packages may already be complete). @internal */
  parseCarried(): void {
    if (this.buffered === 0) return;
    if (!this.framer) {
      const carried = Buffer.concat(this.chunks, this.buffered);
      this.chunks = [];
      this.buffered = 0;
      this.onData(carried);
    } else if (!this.paused) {
      this.onData(EMPTY);
    }
  }

  get bufferedAmount(): number {
    return this.socket.writableLength;
  }

  send(data: unknown, raw: boolean): boolean {
    const bytes = raw || !this.framer ? toWire(data) : this.framer.encode(data, this);
    this.socket.write(bytes);
    // A write that libuv completed synchronously has already left the writable buffer.
    return this.socket.writableLength === 0;
  }

  close(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  pause(): void {
    this.paused = true;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    // Packages read before the pause are delivered first, outside the caller's stack.
    if (this.buffered > 0) setImmediate(() => !this.paused && this.onData(EMPTY));
    this.socket.resume();
  }

  protected isOpen(): boolean {
    return !this.closed;
  }

  private onData(chunk: Buffer): void {
    if (this.detached) return;
    if (!this.framer) {
      this.sink.onTransportMessage(chunk);
      return;
    }
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    if (this.expected > this.buffered || this.paused || this.buffered === 0) return;
    let buffer = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    while (buffer.length > 0 && !this.closed && !this.socket.destroyed && !this.paused) {
      if (this.expected === 0) {
        const length = this.measure(buffer);
        if (length < 0) return;
        if (length === 0) break;
        this.expected = length;
      }
      if (buffer.length < this.expected) break;
      const packet = buffer.length === this.expected ? buffer : buffer.subarray(0, this.expected);
      buffer = buffer.subarray(this.expected);
      this.expected = 0;
      let message: unknown;
      try {
        message = this.framer.decode(packet, this);
      } catch (error) {
        this.fail(ErrorCode.BAD_PACKAGE, `${this.protocol}: cannot decode package: ${(error as Error).message}`);
        return;
      }
      this.sink.onTransportMessage(message);
    }
    if (buffer.length > 0 && !this.closed) {
      this.chunks.push(buffer);
      this.buffered = buffer.length;
    }
  }

  /** Asks the protocol for the next package length; closes the connection on -1 or over-limit sizes. */
  private measure(buffer: Buffer): number {
    const framer = this.framer as Protocol;
    let length: number;
    try {
      length = framer.input(buffer, this);
    } catch (error) {
      this.fail(ErrorCode.BAD_PACKAGE, `${this.protocol}: ${(error as Error).message}`);
      return -1;
    }
    if (length < 0 || !Number.isInteger(length)) {
      this.fail(ErrorCode.BAD_PACKAGE, `${this.protocol}: malformed package`);
      return -1;
    }
    if (length > this.maxPackageSize || (length === 0 && buffer.length >= this.maxPackageSize)) {
      const size = length === 0 ? `more than ${buffer.length}` : String(length);
      this.fail(ErrorCode.PACKAGE_TOO_LARGE, `${this.protocol}: package of ${size} bytes exceeds maxPackageSize ${this.maxPackageSize}`);
      return -1;
    }
    return length;
  }

  private fail(code: ErrorCode, reason: string): void {
    this.sink.onTransportError(code, reason);
    this.chunks = [];
    this.buffered = 0;
    this.socket.destroy();
  }
}

/** Bytes for a raw send: Buffers and typed arrays as they are, anything else as its UTF-8 string. */
export function toWire(data: unknown): Buffer | string {
  if (typeof data === 'string' || Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  return String(data);
}

import type { Socket } from 'node:net';
import { peerAddress, type PeerAddress, type TransportSink } from './Transport.js';

const EMPTY = Buffer.alloc(0);

/** What every socket-backed transport shares: addresses, byte counters, corking, drain watching. */
export abstract class SocketTransport {
  /** Both ends, read once: Node forgets them after the socket closes, and `connections` may ask later. */
  readonly address: PeerAddress;
  /** Moved to another process: the socket's events no longer concern the sink. */
  protected detached = false;

  constructor(
    protected readonly socket: Socket,
    protected readonly sink: TransportSink,
    readonly kind: 'tcp' | 'ssl' | 'unix',
  ) {
    this.address = peerAddress(socket);
    if (kind !== 'unix') socket.setNoDelay(true);
  }

  get bytesRead(): number {
    return this.socket.bytesRead;
  }

  get bytesWritten(): number {
    return this.socket.bytesWritten;
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  watchDrain(): void {
    // An empty write completes after everything queued before it: one callback for any buffer size.
    this.socket.write(EMPTY, () => {
      if (this.isOpen()) this.sink.onTransportDrain();
    });
  }

  /** Whether the connection can still report a drain. */
  protected abstract isOpen(): boolean;
}

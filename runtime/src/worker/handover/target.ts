/**
 * The target side of a move: wrap the handle the master sent without reading from it, rebuild
 * the transport and parser from the carried state, answer `ready`; on `start` (the source has
 * released the connection) deliver the sends made meanwhile, tell `onTransfer`, start reading.
 * On `cancel`, or if the master goes away first, the copy is closed without a FIN and without
 * a word to the app: the source still owns the connection.
 */
import type { CarriedTimer } from '../ConnectionTimers.js';
import type { Socket } from 'node:net';
import { StreamTransport, WebSocketTransport, type Protocol, type Transport } from '../../protocols/index.js';
import type { Connection } from '../Connection.js';
import type { HandoverFromChild, HandoverState, HandoverToChild } from '../ipc.js';
import { log } from '../log.js';
import { decodeBytes, decodeJson, decodeSend } from './codec.js';
import { release, startReading, wrapHandle } from './socket.js';
import { adoptWebSocket, wsSupport } from './wsReceiver.js';

/** What the target needs of its Worker. */
export interface TargetHost {
  readonly index: number;
  readonly framing: { family: 'stream' | 'websocket' | null; protocol: Protocol | null };
  readonly maxPackageSize: number;
  /** A connection of this Worker, not yet tracked. */
  newConnection(): Connection<never>;
  /** Adds it to the Worker's connections. */
  track(conn: Connection<never>): void;
}

interface Offer {
  socket: Socket;
  conn: Connection<never>;
  transport: Transport;
  state: HandoverState;
}

export class TargetMoves {
  private readonly offers = new Map<string, Offer>();

  constructor(
    private readonly host: TargetHost,
    private readonly send: (message: HandoverFromChild) => void,
  ) {}

  onMessage(message: HandoverToChild, handle: unknown): void {
    switch (message.op) {
      case 'offer':
        this.offer(message.mid, message.state, handle);
        break;
      case 'start':
        this.start(message.mid, message);
        break;
      case 'cancel':
        this.drop(message.mid);
        break;
    }
  }

  /** The master is gone: no offer can be started any more. */
  masterGone(): void {
    for (const mid of [...this.offers.keys()]) this.drop(mid);
  }

  private offer(mid: string, state: HandoverState, handle: unknown): void {
    let socket: Socket | null = null;
    try {
      if (!handle || typeof handle !== 'object') throw new Error('no socket handle came with the offer');
      socket = wrapHandle(handle);
      const framing = this.host.framing;
      if (state.worker !== this.host.index || state.family !== framing.family) throw new Error('offer is for another worker');
      const conn = this.host.newConnection();
      conn.maxSendBufferSize = state.maxSendBufferSize;
      const input = decodeBytes(state.input);
      let transport: Transport;
      if (state.family === 'websocket') {
        const why = wsSupport();
        if (why) throw new Error(why);
        if (!('subprotocol' in state.parser)) throw new Error('websocket offer without sub-protocol');
        const ws = adoptWebSocket(socket, input, { maxPayload: this.host.maxPackageSize, subprotocol: state.parser.subprotocol });
        transport = new WebSocketTransport(ws, socket, conn, state.transport);
      } else {
        const protocol = framing.protocol;
        if ((protocol?.name ?? 'tcp') !== state.protocol) throw new Error(`protocol ${state.protocol} is not this worker's`);
        if (!('expected' in state.parser)) throw new Error('stream offer without parser state');
        const stream = new StreamTransport(socket, conn, { protocol, maxPackageSize: this.host.maxPackageSize, kind: state.transport });
        stream.importParser(state.parser, input);
        transport = stream;
      }
      this.offers.set(mid, { socket, conn, transport, state });
      this.send({ gw: 'handover', op: 'ready', mid });
    } catch (error) {
      if (socket) release(socket);
      else if (handle && typeof handle === 'object' && 'close' in handle) (handle as { close(): void }).close();
      this.send({ gw: 'handover', op: 'refuse', mid, code: 'TARGET_REFUSED', message: (error as Error).message });
    }
  }

  private start(mid: string, message: Extract<HandoverToChild, { op: 'start' }>): void {
    const offer = this.offers.get(mid);
    if (!offer) return;
    this.offers.delete(mid);
    const { conn, transport, socket, state } = offer;
    const context = decodeJson(state.context);
    const carried = (decodeJson(message.conn) ?? {}) as { context?: unknown; timers?: CarriedTimer[] };
    conn.context = carried.context && typeof carried.context === 'object' ? (carried.context as Record<string, unknown>) : {};
    conn.timers.import(Array.isArray(carried.timers) ? carried.timers : []);
    conn.adoptMove({ paused: state.paused, bytesRead: state.bytesRead, bytesWritten: state.bytesWritten }, message.sends.map(decodeSend));
    this.host.track(conn);
    // Sends made during the move go out first (attach flushes them), then the app hears of it.
    conn.attach(transport);
    conn.announceTransfer(context);
    if (message.close === 'destroy') conn.destroy();
    else if (message.close === 'close') conn.close();
    if (socket.destroyed) return;
    if (transport instanceof StreamTransport) transport.parseCarried();
    if (!state.paused) startReading(socket);
  }

  private drop(mid: string): void {
    const offer = this.offers.get(mid);
    if (!offer) return;
    this.offers.delete(mid);
    offer.transport.handover?.detach();
    release(offer.socket);
    log.debug('handover offer dropped', { mid });
  }
}

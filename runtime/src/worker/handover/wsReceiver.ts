/**
 * The WebSocket half of a move: turns what ws's `Receiver` has already consumed of an unfinished
 * frame or message back into wire bytes, and builds a server-side `ws` WebSocket over a socket
 * that arrived from another process, fed those bytes first.
 *
 * This reads and calls ws's private state (`_receiver`, its `_state`/`_buffers`/`_fragments`…,
 * `setSocket`). ws is pinned; {@link wsSupport} checks at start-up that the internals still
 * behave as expected (a round trip cut at every byte) and moves are refused if not.
 */
import type { Socket } from 'node:net';
import * as wsModule from 'ws';
import { WebSocket } from 'ws';

/** ws `Receiver` parser states (lib/receiver.js). */
const GET_INFO = 0;
const GET_PAYLOAD_LENGTH_16 = 1;
const GET_PAYLOAD_LENGTH_64 = 2;
const GET_MASK = 3;
const GET_DATA = 4;

/** The private fields of ws 8's Receiver this module depends on. */
interface ReceiverInternals {
  _state: number;
  _buffers: Buffer[];
  _bufferedBytes: number;
  _fragments: Buffer[];
  _fragmented: number;
  _numFragments: number;
  _fin: boolean;
  _opcode: number;
  _payloadLength: number;
  _masked: boolean;
  _mask: Buffer | undefined;
  _compressed: boolean;
  _errored: boolean;
  _writableState: { length: number };
}

interface WebSocketInternals {
  _receiver: ReceiverInternals | null;
  _protocol: string;
  setSocket(socket: Socket, head: Buffer, options: Record<string, unknown>): void;
}

type ReceiverClass = new (options: Record<string, unknown>) => ReceiverInternals & NodeJS.EventEmitter & { write(chunk: Buffer): boolean };

const ZERO_MASK = Buffer.alloc(4);

/** One masked (zero key, so payload as is) client frame. */
function frame(fin: boolean, opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  const header = headerBytes(fin, opcode, length);
  return Buffer.concat([header, ZERO_MASK, payload]);
}

/** First bytes of a masked frame header up to (not including) the mask key, minimal length encoding. */
function headerBytes(fin: boolean, opcode: number, length: number): Buffer {
  const b0 = (fin ? 0x80 : 0) | opcode;
  if (length < 126) return Buffer.from([b0, 0x80 | length]);
  if (length < 0x10000) {
    const out = Buffer.allocUnsafe(4);
    out[0] = b0;
    out[1] = 0x80 | 126;
    out.writeUInt16BE(length, 2);
    return out;
  }
  const out = Buffer.allocUnsafe(10);
  out[0] = b0;
  out[1] = 0x80 | 127;
  out.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
  out.writeUInt32BE(length >>> 0, 6);
  return out;
}

/** Fragments of the message in progress, as frames (the first carries the message's opcode). */
function fragmentFrames(receiver: ReceiverInternals, out: Buffer[]): void {
  const fragments = receiver._fragments;
  if (fragments.length === 0) {
    out.push(frame(false, receiver._fragmented, Buffer.alloc(0)));
    return;
  }
  fragments.forEach((payload, i) => out.push(frame(false, i === 0 ? receiver._fragmented : 0, payload)));
}

/**
 * Wire bytes that make a fresh server Receiver continue exactly where `receiver` stands: the
 * fragments of an unfinished message, the consumed part of the current frame's header, then the
 * bytes it has not parsed. Throws if the receiver is not between two parse steps.
 */
export function exportReceiver(receiver: ReceiverInternals): Buffer[] {
  if (receiver._errored) throw new Error('receiver has failed');
  if (receiver._compressed) throw new Error('compressed frame in progress');
  if (receiver._writableState.length !== 0) throw new Error('receiver is in the middle of a write');
  const state = receiver._state;
  if (state > GET_DATA) throw new Error(`receiver is busy (state ${state})`);
  const out: Buffer[] = [];
  const inMessage = receiver._fragmented !== 0;
  if (state === GET_INFO) {
    if (inMessage) fragmentFrames(receiver, out);
  } else {
    const opcode = receiver._opcode;
    let wireOpcode = opcode;
    if (opcode < 0x08 && inMessage) {
      // ws replaced a continuation's opcode 0 by the message's; `_fragmented` was set by this
      // frame itself only if it is the message's first (no earlier fragments, not final).
      const continuation = receiver._fin || receiver._fragments.length > 0 || receiver._numFragments > 0;
      if (continuation) {
        fragmentFrames(receiver, out);
        wireOpcode = 0;
      }
    } else if (inMessage) {
      // A control frame between fragments.
      fragmentFrames(receiver, out);
    }
    if (!receiver._masked) throw new Error('unmasked client frame');
    if (state === GET_PAYLOAD_LENGTH_16 || state === GET_PAYLOAD_LENGTH_64) {
      out.push(Buffer.from([(receiver._fin ? 0x80 : 0) | wireOpcode, 0x80 | receiver._payloadLength]));
    } else {
      out.push(headerBytes(receiver._fin, wireOpcode, receiver._payloadLength));
      if (state === GET_DATA) out.push(Buffer.from(receiver._mask ?? ZERO_MASK));
    }
  }
  for (const chunk of receiver._buffers) out.push(chunk);
  return out;
}

/** The receiver of a ws WebSocket (throws when ws's internals are not there). */
export function receiverOf(ws: WebSocket): ReceiverInternals {
  const receiver = (ws as unknown as WebSocketInternals)._receiver;
  if (!receiver) throw new Error('websocket has no receiver');
  return receiver;
}

/** Options a server-side ws WebSocket is given (as WebSocketServer does). */
export interface AdoptOptions {
  maxPayload: number;
  subprotocol: string;
}

/**
 * A server-side WebSocket over `socket` (already upgraded elsewhere), whose receiver reads
 * `head` before anything from the socket. The socket must not be reading yet.
 */
export function adoptWebSocket(socket: Socket, head: Buffer, options: AdoptOptions): WebSocket {
  const ws = new (WebSocket as unknown as new (address: null, protocols: undefined, options: Record<string, unknown>) => WebSocket)(null, undefined, {
    autoPong: true,
  });
  const internals = ws as unknown as WebSocketInternals;
  internals._protocol = options.subprotocol;
  internals.setSocket(socket, head, {
    allowSynchronousEvents: true,
    maxBufferedChunks: 256 * 1024,
    maxFragments: 16 * 1024,
    maxPayload: options.maxPayload,
    skipUTF8Validation: false,
  });
  return ws;
}

let support: string | null | undefined;

/**
 * Null when ws's internals behave as this module expects, else why not. Checked once: a
 * fragmented message with a ping between fragments, cut at every byte, exported and parsed by
 * a fresh receiver, must give the same events as the uncut stream.
 */
export function wsSupport(): string | null {
  if (support !== undefined) return support;
  try {
    support = selfTest();
  } catch (error) {
    support = `ws internals check failed: ${(error as Error).message}`;
  }
  return support;
}

function selfTest(): string | null {
  // The ESM build exports Receiver by name; the CommonJS one hangs it on WebSocket.
  const Receiver = ((wsModule as unknown as { Receiver?: ReceiverClass }).Receiver ?? (WebSocket as unknown as { Receiver?: ReceiverClass }).Receiver);
  if (typeof Receiver !== 'function') return 'ws does not expose Receiver';
  if (typeof (WebSocket.prototype as unknown as Partial<WebSocketInternals>).setSocket !== 'function') return 'ws WebSocket has no setSocket';
  const probe = new Receiver({ isServer: true, maxPayload: 0 });
  for (const field of ['_state', '_buffers', '_bufferedBytes', '_fragments', '_fragmented', '_numFragments', '_fin', '_opcode', '_payloadLength', '_masked', '_compressed', '_errored']) {
    if (!(field in probe)) return `ws Receiver has no ${field}`;
  }
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = (fin: boolean, opcode: number, payload: Buffer, long = false): Buffer => {
    const data = Buffer.from(payload);
    for (let i = 0; i < data.length; i++) data[i]! ^= mask[i & 3]!;
    // `long`: a (legal, non-minimal) 64-bit length, to cover that header state cheaply.
    const header = long ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, payload.length]) : headerBytes(fin, opcode, payload.length);
    return Buffer.concat([header, mask, data]);
  };
  const stream = Buffer.concat([
    masked(true, 1, Buffer.from('héllo')),
    masked(false, 2, Buffer.alloc(130, 7)),
    masked(true, 9, Buffer.from('p')),
    masked(false, 0, Buffer.alloc(0)),
    masked(true, 0, Buffer.alloc(20, 9), true),
    masked(true, 1, Buffer.from('end')),
  ]);
  const expected = events(Receiver, [stream]);
  if (expected.split(',').length !== 4 || expected.includes(',e')) return `ws Receiver does not parse as expected: ${expected}`;
  for (let cut = 0; cut <= stream.length; cut++) {
    const got = events(Receiver, [stream.subarray(0, cut)], stream.subarray(cut));
    if (got !== expected) return `ws Receiver state export failed at byte ${cut}: ${got} vs ${expected}`;
  }
  return null;
}

/** Events of a receiver fed `chunks`; with `rest`, the state is exported and a fresh receiver gets export + rest. */
function events(Receiver: ReceiverClass, chunks: Buffer[], rest?: Buffer): string {
  const seen: string[] = [];
  const listen = (r: NodeJS.EventEmitter): void => {
    r.on('message', (data: Buffer, binary: boolean) => seen.push(`m${binary ? 'b' : 't'}${data.length}:${data.toString('latin1').slice(0, 4)}`));
    r.on('ping', (data: Buffer) => seen.push(`p${data.toString()}`));
    r.on('error', (error: Error) => seen.push(`e${error.message}`));
  };
  const first = new Receiver({ isServer: true, maxPayload: 0 });
  listen(first);
  // Receivers unmask in place: every run gets its own copy of the bytes.
  for (const chunk of chunks) if (chunk.length) first.write(Buffer.from(chunk));
  if (rest === undefined) return seen.join();
  const second = new Receiver({ isServer: true, maxPayload: 0 });
  listen(second);
  const carried = Buffer.concat([...exportReceiver(first), Buffer.from(rest)]);
  if (carried.length) second.write(carried);
  return seen.join();
}

/**
 * Reference framers for the fuzz oracles, written from the protocol descriptions (and, for
 * WebSocket, the documented behaviour of `ws` as a server), not from the runtime's code: what a
 * server must deliver and whether it must close, for a whole input.
 */
import { isUtf8 } from 'node:buffer';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { ErrorCode } from '../../runtime/src/protocols/errors.js';

/** What a stream transport delivers for an input, and whether it closes. */
export interface Outcome {
  messages: unknown[];
  /** First error code reported (BAD_PACKAGE, PACKAGE_TOO_LARGE), or null. */
  error: number | null;
  closed: boolean;
}

/**
 * `text`: one message per line (`\n`, a `\r` before it dropped), UTF-8 decoded. A line counts its
 * newline against `max`; a partial line of `max` bytes or more closes the connection.
 */
export function refText(input: Buffer, max: number): Outcome {
  const messages: string[] = [];
  let pos = 0;
  for (;;) {
    const nl = input.indexOf(0x0a, pos);
    if (nl === -1) {
      const partial = input.length - pos;
      if (partial >= max) return { messages, error: ErrorCode.PACKAGE_TOO_LARGE, closed: true };
      return { messages, error: null, closed: false };
    }
    if (nl + 1 - pos > max) return { messages, error: ErrorCode.PACKAGE_TOO_LARGE, closed: true };
    let end = nl;
    if (end > pos && input[end - 1] === 0x0d) end--;
    messages.push(input.toString('utf8', pos, end));
    pos = nl + 1;
  }
}

/** `frame`: u32 big-endian total length (header included, so at least 4), then the body. */
export function refFrame(input: Buffer, max: number): Outcome {
  const messages: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const rest = input.length - pos;
    if (rest < 4) return rest >= max ? { messages, error: ErrorCode.PACKAGE_TOO_LARGE, closed: true } : { messages, error: null, closed: false };
    const length = input.readUInt32BE(pos);
    if (length < 4) return { messages, error: ErrorCode.BAD_PACKAGE, closed: true };
    if (length > max) return { messages, error: ErrorCode.PACKAGE_TOO_LARGE, closed: true };
    if (rest < length) return { messages, error: null, closed: false };
    messages.push(Buffer.from(input.subarray(pos + 4, pos + length)));
    pos += length;
  }
}

/**
 * Length of the MQTT packet at `pos`: fixed header byte (type nibble ≠ 0), remaining length as a
 * 1–4 byte varint (MQTT §2.2.3). 0 = more bytes needed, -1 = never a packet.
 */
export function mqttLength(input: Buffer, pos = 0): number {
  const rest = input.length - pos;
  if (rest < 2) return 0;
  if (input[pos] >> 4 === 0) return -1;
  let remaining = 0;
  for (let i = 1; i <= 4; i++) {
    if (pos + i >= input.length) return 0;
    remaining += (input[pos + i] & 0x7f) * 128 ** (i - 1);
    if ((input[pos + i] & 0x80) === 0) return 1 + i + remaining;
  }
  return -1;
}

/** The `mqtt` stream protocol: whole packets; before the first one, anything but 0x10 closes. */
export function refMqttStream(input: Buffer, max: number): Outcome {
  const messages: Buffer[] = [];
  let pos = 0;
  let connected = false;
  for (;;) {
    const rest = input.length - pos;
    if (rest === 0) return { messages, error: null, closed: false };
    if (!connected && input[pos] !== 0x10) return { messages, error: ErrorCode.BAD_PACKAGE, closed: true };
    const total = mqttLength(input, pos);
    if (total < 0) return { messages, error: ErrorCode.BAD_PACKAGE, closed: true };
    if (total === 0) return rest >= max ? { messages, error: ErrorCode.PACKAGE_TOO_LARGE, closed: true } : { messages, error: null, closed: false };
    if (total > max) return { messages, error: ErrorCode.PACKAGE_TOO_LARGE, closed: true };
    if (rest < total) return { messages, error: null, closed: false };
    messages.push(Buffer.from(input.subarray(pos, pos + total)));
    connected = true;
    pos += total;
  }
}

// ---- WebSocket (RFC 6455, client → server frames, no extension) ---------------------------------

/** A frame the server sends back. */
export interface WsFrame {
  opcode: number;
  payload: Buffer;
}

export interface WsReference {
  /** What the server must send, in order: echoes of data messages, pongs, and its close frame. */
  replies: WsFrame[];
  /** `open`: waiting for more; `error`: protocol error (server sends close `code`); `close`: the client closed. */
  end: 'open' | 'error' | 'close';
  /** Bytes of the frame in progress when the input ends (`open`). */
  pending: Buffer;
  /** A fragmented message is in progress (`open`). */
  fragmented: boolean;
}

/** RFC 6455 §7.4 codes a peer may send (ws's isValidStatusCode). */
export function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

const closeFrame = (code: number | null, reason = Buffer.alloc(0)): WsFrame => {
  if (code === null) return { opcode: 8, payload: Buffer.alloc(0) };
  const payload = Buffer.alloc(2 + reason.length);
  payload.writeUInt16BE(code, 0);
  reason.copy(payload, 2);
  return { opcode: 8, payload };
};

/**
 * What a `ws` server (maxPayload `max`, 16384 fragments at most) echoing every message makes of
 * the bytes a client sends after the handshake.
 */
export function refWebSocket(input: Buffer, max: number): WsReference {
  const replies: WsFrame[] = [];
  let pos = 0;
  let fragmented = 0;
  let fragments: Buffer[] = [];
  let total = 0;
  let count = 0;
  const error = (code: number): WsReference => {
    replies.push(closeFrame(code));
    return { replies, end: 'error', pending: Buffer.alloc(0), fragmented: false };
  };
  const open = (): WsReference => ({ replies, end: 'open', pending: Buffer.from(input.subarray(pos)), fragmented: fragmented !== 0 });
  for (;;) {
    if (input.length - pos < 2) return open();
    const b0 = input[pos];
    const b1 = input[pos + 1];
    const fin = (b0 & 0x80) !== 0;
    let opcode = b0 & 0x0f;
    if ((b0 & 0x30) !== 0) return error(1002);
    if ((b0 & 0x40) !== 0) return error(1002);
    let length = b1 & 0x7f;
    if (opcode === 0) {
      if (!fragmented) return error(1002);
      opcode = fragmented;
    } else if (opcode === 1 || opcode === 2) {
      if (fragmented) return error(1002);
    } else if (opcode >= 8 && opcode <= 10) {
      if (!fin) return error(1002);
      if (length > 125 || (opcode === 8 && length === 1)) return error(1002);
    } else return error(1002);
    if (!fin && !fragmented) fragmented = opcode;
    if ((b1 & 0x80) === 0) return error(1002);
    let at = pos + 2;
    if (length === 126) {
      if (input.length - at < 2) return open();
      length = input.readUInt16BE(at);
      at += 2;
    } else if (length === 127) {
      if (input.length - at < 8) return open();
      const high = input.readUInt32BE(at);
      if (high > 2 ** 21 - 1) return error(1009);
      length = high * 2 ** 32 + input.readUInt32BE(at + 4);
      at += 8;
    }
    if (length && opcode < 8) {
      total += length;
      if (total > max) return error(1009);
    }
    if (input.length - at < 4) return open();
    const mask = input.subarray(at, at + 4);
    at += 4;
    if (input.length - at < length) return open();
    const data = Buffer.from(input.subarray(at, at + length));
    for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
    pos = at + length;
    if (opcode >= 8) {
      if (opcode === 8) {
        if (data.length === 0) {
          replies.push(closeFrame(null));
          return { replies, end: 'close', pending: Buffer.alloc(0), fragmented: false };
        }
        const code = data.readUInt16BE(0);
        if (!validCloseCode(code)) return error(1002);
        const reason = data.subarray(2);
        if (!isUtf8(reason)) return error(1007);
        replies.push(closeFrame(code, reason));
        return { replies, end: 'close', pending: Buffer.alloc(0), fragmented: false };
      }
      if (opcode === 9) replies.push({ opcode: 10, payload: data });
      continue;
    }
    if (++count > 16 * 1024) return error(1008);
    if (data.length) fragments.push(data);
    if (!fin) continue;
    const message = Buffer.concat(fragments);
    fragments = [];
    total = 0;
    count = 0;
    fragmented = 0;
    if (opcode === 1 && !isUtf8(message)) return error(1007);
    replies.push({ opcode, payload: message });
  }
}

/** A masked client frame. */
export function clientFrame(opcode: number, payload: Buffer, options: { fin?: boolean; mask?: Buffer; rsv?: number; lengthForm?: 7 | 16 | 64 } = {}): Buffer {
  const mask = options.mask ?? Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const fin = options.fin ?? true;
  const n = payload.length;
  const form = options.lengthForm ?? (n < 126 ? 7 : n < 0x10000 ? 16 : 64);
  const header: number[] = [(fin ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode];
  if (form === 7 && n < 126) header.push(0x80 | n);
  else if (form === 16 || (form === 7 && n < 0x10000)) header.push(0x80 | 126, n >> 8, n & 0xff);
  else {
    const big = Buffer.alloc(8);
    big.writeBigUInt64BE(BigInt(n));
    header.push(0x80 | 127, ...big);
  }
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] ^= mask[i & 3];
  return Buffer.concat([Buffer.from(header), mask, masked]);
}

/**
 * Bytes that finish the frame in progress (`pending`, from {@link refWebSocket}) with zeros where
 * a value is free, keeping it masked; nothing when its header already announces more than `max`
 * (the server refuses it from the header alone).
 */
export function completeWsFrame(pending: Buffer, max: number): Buffer {
  if (pending.length === 0) return Buffer.alloc(0);
  const head = Buffer.alloc(14);
  pending.copy(head, 0, 0, Math.min(14, pending.length));
  if (pending.length < 2) head[1] = 0x80;
  const len7 = head[1] & 0x7f;
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  const length = len7 === 126 ? head.readUInt16BE(2) : len7 === 127 ? head.readUInt32BE(2) * 2 ** 32 + head.readUInt32BE(6) : len7;
  const headerLength = 2 + ext + ((head[1] & 0x80) !== 0 ? 4 : 0);
  const wanted = length > max + 16 ? headerLength : headerLength + length;
  const fill = Buffer.alloc(Math.max(0, wanted - pending.length));
  if (pending.length < 2 && fill.length > 0) fill[1 - pending.length] = 0x80;
  return fill;
}

/** Server frames in `bytes` (unmasked, as a server sends them); `rest` is an incomplete tail. */
export function parseServerFrames(bytes: Buffer): { frames: Array<WsFrame & { fin: boolean; masked: boolean; rsv: number }>; rest: number } {
  const frames: Array<WsFrame & { fin: boolean; masked: boolean; rsv: number }> = [];
  let pos = 0;
  for (;;) {
    if (bytes.length - pos < 2) break;
    const b0 = bytes[pos];
    const b1 = bytes[pos + 1];
    let length = b1 & 0x7f;
    let at = pos + 2;
    if (length === 126) {
      if (bytes.length - at < 2) break;
      length = bytes.readUInt16BE(at);
      at += 2;
    } else if (length === 127) {
      if (bytes.length - at < 8) break;
      length = Number(bytes.readBigUInt64BE(at));
      at += 8;
    }
    const masked = (b1 & 0x80) !== 0;
    if (masked) at += 4;
    if (bytes.length - at < length) break;
    frames.push({ opcode: b0 & 0x0f, fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, masked, payload: Buffer.from(bytes.subarray(at, at + length)) });
    pos = at + length;
  }
  return { frames, rest: bytes.length - pos };
}

// ---- MQTT session (what an mqtt:// gateway must do with a client's packets) ----------------------

/**
 * Why a parsed packet lacks the packet identifier its type requires (MQTT-2.3.1-1: SUBSCRIBE,
 * UNSUBSCRIBE, PUBLISH with QoS > 0 and their acknowledgements carry a non-zero 16-bit one), or
 * null. mqtt-packet's parser does not check it: a PUBREL with no bytes after its fixed header
 * parses with messageId -1.
 */
export function packetIdProblem(packet: Packet): string | null {
  // MQTT-3.8.3-3 / MQTT-3.10.3-2: at least one topic filter. mqtt-packet only checks that the
  // remaining length is not 0, so an identifier alone passes.
  if (packet.cmd === 'subscribe' && packet.subscriptions.length === 0) return 'subscribe without a topic filter';
  if (packet.cmd === 'unsubscribe' && packet.unsubscriptions.length === 0) return 'unsubscribe without a topic filter';
  const needsId = ['puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe', 'suback', 'unsuback'].includes(packet.cmd) || (packet.cmd === 'publish' && packet.qos > 0);
  if (!needsId) return null;
  const id = (packet as { messageId?: number }).messageId;
  if (id === undefined || id === -1) return `${packet.cmd} without a packet identifier`;
  if (id === 0) return `${packet.cmd} with packet identifier 0`;
  return null;
}

/** One packet parsed by a fresh mqtt-packet parser at `version`: the packet, or why it is not one. */
export function parseMqtt(bytes: Buffer, version: 3 | 4 | 5): { packet: Packet } | { error: string } {
  const parser = mqttPacket.parser({ protocolVersion: version });
  const found: Packet[] = [];
  let error: string | null = null;
  parser.on('packet', (p: Packet) => found.push(p));
  parser.on('error', (e: Error) => (error ??= e.message));
  let left: number;
  try {
    left = parser.parse(bytes);
  } catch (e) {
    return { error: `threw ${(e as Error).message}` };
  }
  if (error) return { error };
  if (found.length !== 1 || left !== 0) return { error: `${found.length} packets, ${left} bytes left` };
  return { packet: found[0] };
}

export interface MqttSessionReference {
  /** Packets accepted, in order. */
  packets: Packet[];
  /** `closed`: the gateway (or, for DISCONNECT, the broker) closes the connection. */
  end: 'open' | 'closed';
  why: string;
  /** Protocol level after the input (0: no CONNECT yet). */
  version: 0 | 3 | 4 | 5;
  /** Bytes of the packet in progress. */
  pending: Buffer;
  /** PINGREQs accepted (each is answered with a PINGRESP). */
  pingreqs: number;
  /** The input has a packet without its packet identifier, which the runtime takes (known bug): no prediction past it. */
  knownBug: string | null;
}

/**
 * What an mqtt:// gateway (stream limit `max`) does with `input`, from protocol level `version`
 * (0: the connection is new, its first packet must be a CONNECT): the stream framing, then every
 * packet must be one valid packet at the session's level; a second CONNECT closes, and so does
 * DISCONNECT (the broker closes the client). `runtimeAccepts` says whether the runtime's decoder
 * takes a packet the spec forbids (then `knownBug` names it).
 */
export function refMqttSession(input: Buffer, max: number, version: 0 | 3 | 4 | 5, runtimeAccepts: (bytes: Buffer, version: 3 | 4 | 5) => boolean = () => true): MqttSessionReference {
  const packets: Packet[] = [];
  let v = version;
  let pingreqs = 0;
  let pos = 0;
  let knownBug: string | null = null;
  let disconnected = false;
  const done = (end: 'open' | 'closed', why: string): MqttSessionReference =>
    disconnected
      ? { packets, end: 'closed', why: 'DISCONNECT', version: v, pending: Buffer.alloc(0), pingreqs, knownBug }
      : { packets, end, why, version: v, pending: end === 'open' ? Buffer.from(input.subarray(pos)) : Buffer.alloc(0), pingreqs, knownBug };
  for (;;) {
    const rest = input.length - pos;
    if (rest === 0) return done('open', 'waiting');
    if (v === 0 && pos === 0 && input[0] !== 0x10) return done('closed', 'first byte is not CONNECT');
    const total = mqttLength(input, pos);
    if (total < 0) return done('closed', 'not an MQTT fixed header');
    if (total === 0) return rest >= max ? done('closed', 'header over the limit') : done('open', 'partial header');
    if (total > max) return done('closed', 'packet over the limit');
    if (rest < total) return done('open', 'partial packet');
    const bytes = input.subarray(pos, pos + total);
    pos += total;
    const parsed = parseMqtt(bytes, v === 0 ? 4 : v);
    if ('error' in parsed) return done('closed', `malformed: ${parsed.error}`);
    const packet = parsed.packet;
    // A packet the spec forbids but mqtt-packet parses (no or a zero packet identifier, no topic
    // filter): a correct server closes the connection. A runtime that takes it (known bug) leaves
    // nothing to predict past it.
    const problem = packetIdProblem(packet);
    if (problem) {
      if (runtimeAccepts(bytes, v === 0 ? 4 : v)) knownBug = problem;
      return done('closed', `malformed: ${problem}`);
    }
    packets.push(packet);
    if (v === 0) {
      v = (packet as { protocolVersion?: 3 | 4 | 5 }).protocolVersion ?? 4;
      continue;
    }
    if (packet.cmd === 'connect') return done('closed', 'second CONNECT');
    // DISCONNECT is passed on and the broker closes the client later: the gateway goes on with the
    // packets after it meanwhile (and still answers them).
    if (packet.cmd === 'disconnect') disconnected = true;
    if (packet.cmd === 'pingreq') pingreqs++;
  }
}

/** Zero bytes that finish the MQTT packet in progress (a zero ends an unfinished length); nothing over `max`. */
export function completeMqttPacket(pending: Buffer, max: number): Buffer {
  if (pending.length === 0) return Buffer.alloc(0);
  if (pending.length === 1) return Buffer.from([0]);
  let remaining = 0;
  let i = 1;
  for (; i <= 4 && i < pending.length; i++) {
    remaining += (pending[i] & 0x7f) * 128 ** (i - 1);
    if ((pending[i] & 0x80) === 0) break;
  }
  if (i < pending.length || i > 4) {
    const total = 1 + i + remaining;
    return total > max ? Buffer.alloc(0) : Buffer.alloc(Math.max(0, total - pending.length));
  }
  // The length is unfinished: a zero byte ends it (no more length to add).
  const total = 1 + i + remaining;
  return total > max ? Buffer.from([0]) : Buffer.alloc(1 + Math.max(0, total - pending.length - 1));
}

/**
 * Valid inputs of the stream protocols (fast-check arbitraries) for the fuzz suites to use as they
 * are and to mutate, with the positions of their length fields.
 */
import { Cmd, Target, encodeBroadcast, encodeClientEvent, encodeJson, encodePublish, encodeRequest, encodeSend, encodeU32 } from '../../runtime/src/internal/codec.js';
import { frame } from '../../runtime/src/protocols/frame.js';
import { clientFrame } from './reference.js';
import { fc, type Field } from './lib.js';

/** Newline-terminated lines (`\n` or `\r\n`), short ones and ones around `max` (the limit counts the newline). */
export function textStream(max: number): fc.Arbitrary<Buffer> {
  const line = fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.string({ maxLength: 300 }), fc.string({ minLength: max - 3, maxLength: max + 2 }));
  return fc.array(fc.tuple(line, fc.boolean()), { maxLength: 6 }).map((lines) => Buffer.from(lines.map(([l, crlf]) => `${l}${crlf ? '\r\n' : '\n'}`).join('')));
}

/** `frame` packages (u32 length, header included), bodies up to 300 bytes. */
export function frameStream(max: number): fc.Arbitrary<Buffer> {
  const framePackage = fc.uint8Array({ maxLength: 300 }).map((body) => frame.encode(Buffer.from(body), { maxPackageSize: max, protocolState: undefined }) as Buffer);
  return fc.array(framePackage, { maxLength: 5 }).map((list) => Buffer.concat(list));
}

/** The u32 length of each package of a frame stream. */
export function frameFields(b: Buffer): Field[] {
  const out: Field[] = [];
  for (let pos = 0; pos + 4 <= b.length; ) {
    out.push({ pos, width: 4 });
    const length = b.readUInt32BE(pos);
    if (length < 4) break;
    pos += length;
  }
  return out;
}

/** MQTT remaining-length varint of `n`, padded to `padding` extra bytes (0x80 0x00 is still a length). */
export function varint(n: number, padding = 0): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  while (padding-- > 0 && out.length < 4) {
    out[out.length - 1] |= 0x80;
    out.push(0);
  }
  return out;
}

/** A packet with any first byte and a correct remaining length: framing-valid, content random. */
export const mqttFramed = fc
  .tuple(fc.nat({ max: 255 }), fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 3 }))
  .map(([first, body, padding]) => Buffer.concat([Buffer.from([first === 0 ? 0x10 : first, ...varint(body.length, padding)]), body]));

/** A CONNECT-typed first packet, then framing-valid packets of any type. */
export function mqttStream(_max: number): fc.Arbitrary<Buffer> {
  return fc.tuple(mqttFramed, fc.array(mqttFramed, { maxLength: 4 })).map(([connect, rest]) => Buffer.concat([Buffer.from([0x10]), connect.subarray(1), ...rest]));
}

/** The fixed header byte and first length byte of each packet of an MQTT stream. */
export function mqttFields(b: Buffer): Field[] {
  const out: Field[] = [];
  for (let pos = 0; pos + 1 < b.length; ) {
    out.push({ pos, width: 1 }, { pos: pos + 1, width: 1 });
    let remaining = 0;
    let i = 1;
    for (; i <= 4 && pos + i < b.length; i++) {
      remaining += (b[pos + i] & 0x7f) * 128 ** (i - 1);
      if ((b[pos + i] & 0x80) === 0) break;
    }
    pos += 1 + i + remaining;
  }
  return out;
}

// ---- WebSocket client frames --------------------------------------------------------------------

const utf8Text = fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s));

/**
 * A valid message sequence as client frames: text and binary messages (some fragmented, with
 * pings inside), pings and pongs, every length form, random masks; sometimes a close at the end.
 */
export function wsClientStream(max: number): fc.Arbitrary<Buffer> {
  const mask = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((m) => Buffer.from(m));
  const form = fc.constantFrom(7 as const, 16 as const, 64 as const);
  const message = fc.record({
    binary: fc.boolean(),
    payload: fc.oneof(utf8Text, fc.uint8Array({ maxLength: Math.min(300, max) }).map((b) => Buffer.from(b))),
    parts: fc.nat({ max: 3 }),
    ping: fc.option(fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b))),
    mask,
    form,
  });
  const item = fc.oneof(
    { weight: 5, arbitrary: message.map((m) => ({ kind: 'message' as const, ...m })) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('ping' as const), payload: fc.uint8Array({ maxLength: 125 }).map((b) => Buffer.from(b)), mask }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('pong' as const), payload: fc.uint8Array({ maxLength: 125 }).map((b) => Buffer.from(b)), mask }) },
  );
  const close = fc.option(fc.record({ code: fc.constantFrom(1000, 1001, 1003, 1008, 1011, 3000, 4999), reason: fc.string({ maxLength: 20 }), mask }));
  return fc.tuple(fc.array(item, { maxLength: 5 }), close).map(([items, end]) => {
    const out: Buffer[] = [];
    for (const it of items) {
      if (it.kind !== 'message') {
        out.push(clientFrame(it.kind === 'ping' ? 9 : 10, it.payload, { mask: it.mask }));
        continue;
      }
      // Text frames carry UTF-8; random bytes go as binary.
      const binary = it.binary || !Buffer.from(it.payload.toString('utf8')).equals(it.payload);
      const opcode = binary ? 2 : 1;
      const n = it.parts + 1;
      const size = Math.ceil(it.payload.length / n);
      for (let i = 0; i < n; i++) {
        const piece = it.payload.subarray(i * size, (i + 1) * size);
        out.push(clientFrame(i === 0 ? opcode : 0, piece, { fin: i === n - 1, mask: it.mask, lengthForm: it.form }));
        if (i === 0 && n > 1 && it.ping) out.push(clientFrame(9, it.ping, { mask: it.mask }));
      }
    }
    if (end) {
      const reason = Buffer.from(end.reason);
      const payload = Buffer.alloc(2 + reason.length);
      payload.writeUInt16BE(end.code, 0);
      reason.copy(payload, 2);
      out.push(clientFrame(8, payload.subarray(0, 2 + Math.min(reason.length, 123)), { mask: end.mask }));
    }
    return Buffer.concat(out);
  });
}

/** Header bytes (first byte, length byte, extended length) of each frame of a client stream. */
export function wsFields(b: Buffer): Field[] {
  const out: Field[] = [];
  for (let pos = 0; pos + 2 <= b.length; ) {
    out.push({ pos, width: 1 }, { pos: pos + 1, width: 1 });
    const len7 = b[pos + 1] & 0x7f;
    let length = len7;
    let at = pos + 2;
    if (len7 === 126 && at + 2 <= b.length) {
      out.push({ pos: at, width: 2 });
      length = b.readUInt16BE(at);
      at += 2;
    } else if (len7 === 127 && at + 8 <= b.length) {
      out.push({ pos: at, width: 4 }, { pos: at + 4, width: 4 });
      length = b.readUInt32BE(at + 4);
      at += 8;
    }
    pos = at + ((b[pos + 1] & 0x80) !== 0 ? 4 : 0) + length;
  }
  return out;
}

// ---- internal link frames -------------------------------------------------------------------------

const u32 = fc.nat({ max: 0xffffffff });
const epoch48 = fc.nat({ max: 2 ** 48 - 1 });
const smallBytes = fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b));
const json = fc.jsonValue({ maxDepth: 2 });

/** Whole internal-link frames (u32 length included) of every command, as the codec encodes them. */
export const linkFrame: fc.Arbitrary<Buffer> = fc.oneof(
  fc
    .record({ cmd: fc.constantFrom(Cmd.CLIENT_CONNECT, Cmd.CLIENT_MESSAGE, Cmd.CLIENT_CLOSE), seq: u32, counter: u32, flags: fc.nat({ max: 255 }), payload: smallBytes, session: fc.option(fc.tuple(u32, json)) })
    .map((v) => encodeClientEvent(v.cmd, v.seq, v.counter, v.flags, v.payload, v.session ? { version: v.session[0], json: Buffer.from(JSON.stringify(v.session[1]) ?? 'null') } : undefined)),
  fc.record({ epoch: epoch48, counter: u32, flags: fc.nat({ max: 255 }), payload: smallBytes }).map((v) => encodeSend(v.epoch, v.counter, v.flags, v.payload)),
  fc
    .record({ target: fc.constantFrom(Target.ALL, Target.CLIENTS, Target.GROUPS, Target.UIDS), epoch: epoch48, counters: fc.array(u32, { maxLength: 4 }), names: fc.array(fc.string({ maxLength: 6 }), { maxLength: 4 }), excluded: fc.array(u32, { maxLength: 4 }), flags: fc.nat({ max: 255 }), payload: smallBytes })
    .map((v) => encodeBroadcast(v.target, v.epoch, v.target === Target.GROUPS || v.target === Target.UIDS ? v.names : v.counters, v.excluded, v.flags, v.payload)),
  fc
    .record({ qos: fc.constantFrom(0 as const, 1 as const, 2 as const), retain: fc.boolean(), binary: fc.boolean(), topic: fc.string({ maxLength: 10 }), target: fc.option(fc.record({ epoch: epoch48, counter: u32 })), from: fc.option(fc.record({ epoch: epoch48, counter: u32 })), properties: fc.option(json.map((j) => JSON.stringify(j) ?? 'null')), payload: smallBytes })
    .map((v) => encodePublish(v)),
  json.map((v) => encodeJson(Cmd.CONTROL, { op: 'joinGroup', counter: 1, epoch: 1, group: v })),
  fc.tuple(u32, json).map(([req, v]) => encodeRequest(Cmd.QUERY, req, { op: 'count', args: v })),
  u32.map((v) => encodeU32(Cmd.ACK, v)),
  fc.constant(encodeJson(Cmd.PING, 0)),
);

/** A stream of link frames. */
export const linkStream = fc.array(linkFrame, { minLength: 1, maxLength: 4 }).map((list) => Buffer.concat(list));

// Fuzz of the internal wire decoders (runtime/src/internal/codec.ts): every exported decode*
// function gets valid encodings (which must round-trip), mutants of them (bit flips, truncation,
// length/count fields changed, splicing…) and random bytes. Properties: the decoder returns or
// throws only what it documents, within a bounded time, and never returns more than the input
// can hold (no allocation driven by a length field); decoding is deterministic.
//
//   decodeClientEvent, decodeSend, decodeBroadcast, decodeU32, decodePublish,
//   decodeMqttDeliveryState   RangeError
//   decodeJson                SyntaxError
//   decodeRequest             RangeError (truncated) or SyntaxError (JSON)
import assert from 'node:assert/strict';
import t from 'tap';
import {
  Cmd,
  PayloadFlag,
  Target,
  decodeBroadcast,
  decodeClientEvent,
  decodeJson,
  decodeMqttDeliveryState,
  decodePublish,
  decodeRequest,
  decodeSend,
  decodeU32,
  encodeBroadcast,
  encodeClientEvent,
  encodeJson,
  encodeMqttDeliveryState,
  encodePublish,
  encodeRequest,
  encodeSend,
  encodeU32,
  type MqttDeliveryState,
  type PublishFrame,
} from '../../runtime/src/internal/codec.js';
import { ErrorTally, Watchdog, bytes, fc, fuzz, heapAfterGc, hex, mutated, runs, type Field } from './lib.js';

/** Default cases per decoder in `npm test`. */
const DEFAULT_RUNS = 1000;
/** A case over this is a failure (the decoders are microseconds on these sizes). */
/** A case over this (twice: see Watchdog.bounded) is a failure; these calls take microseconds. */
const CASE_LIMIT_MS = 2000;

const watchdog = new Watchdog(10_000);
t.teardown(() => watchdog.stop());

/** The body a decoder gets: the frame without its u32 length header. */
const body = (frame: Buffer): Buffer => frame.subarray(4);

const u32 = fc.nat({ max: 0xffffffff });
const u16 = fc.nat({ max: 0xffff });
const epoch48 = fc.nat({ max: 2 ** 48 - 1 });
const text = (maxLength = 12): fc.Arbitrary<string> => fc.string({ unit: 'binary', maxLength });
const payload = bytes(48);

/** Everything a decoder hands back, measured in bytes (strings as UTF-16, numbers as 8). */
function outputSize(value: unknown, seen = new Set<unknown>()): number {
  if (value === null || value === undefined) return 0;
  if (typeof value === 'string') return value.length * 2;
  if (typeof value !== 'object') return 8;
  if (seen.has(value)) return 0;
  seen.add(value);
  // A subarray of the input costs nothing; a copy costs its length.
  if (Buffer.isBuffer(value)) return value.length;
  if (Array.isArray(value)) return value.reduce((sum: number, v) => sum + 8 + outputSize(v, seen), 0);
  return Object.values(value as object).reduce((sum: number, v) => sum + 8 + outputSize(v, seen), 0);
}

interface DecoderTarget<V> {
  name: string;
  decode(body: Buffer): unknown;
  /** Error classes the decoder documents. */
  errors: ReadonlyArray<new (...args: never[]) => Error>;
  /** Valid encodings with the value they encode. */
  valid: fc.Arbitrary<{ value: V; bytes: Buffer }>;
  /** Where the length/count fields of a valid encoding are. */
  fields?(bytes: Buffer): Field[];
  /** Asserts that `decoded` is `value` (valid inputs only). */
  roundtrip(value: V, decoded: unknown): void;
  /** Output bytes allowed per input byte (amplification bound). */
  amplification: number;
}

function target<V>(spec: DecoderTarget<V>): DecoderTarget<V> {
  return spec;
}

// ---- the targets --------------------------------------------------------------------------------

const clientEvent = target({
  name: 'decodeClientEvent',
  decode: decodeClientEvent,
  errors: [RangeError],
  valid: fc
    .record({
      cmd: fc.constantFrom(Cmd.CLIENT_CONNECT, Cmd.CLIENT_MESSAGE, Cmd.CLIENT_CLOSE, Cmd.DRAIN_DONE),
      seq: u32,
      counter: u32,
      flags: fc.nat({ max: 255 }),
      payload,
      session: fc.option(fc.record({ version: u32, json: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null') })),
    })
    .map((v) => ({
      value: v,
      bytes: body(encodeClientEvent(v.cmd, v.seq, v.counter, v.flags, v.payload, v.session ? { version: v.session.version, json: Buffer.from(v.session.json) } : undefined)),
    })),
  fields: () => [
    { pos: 9, width: 1 },
    { pos: 10, width: 4 },
    { pos: 14, width: 4 },
  ],
  roundtrip(v, decoded) {
    const d = decoded as ReturnType<typeof decodeClientEvent>;
    assert.equal(d.seq, v.seq);
    assert.equal(d.counter, v.counter);
    assert.equal(d.flags, v.session ? v.flags | PayloadFlag.SESSION : v.flags & ~PayloadFlag.SESSION);
    assert.deepEqual(d.session, v.session ? { version: v.session.version, json: v.session.json } : null);
    assert.ok(d.payload.equals(v.payload));
  },
  amplification: 8,
});

const send = target({
  name: 'decodeSend',
  decode: decodeSend,
  errors: [RangeError],
  valid: fc.record({ epoch: epoch48, counter: u32, flags: fc.nat({ max: 255 }), payload }).map((v) => ({ value: v, bytes: body(encodeSend(v.epoch, v.counter, v.flags, v.payload)) })),
  fields: () => [
    { pos: 1, width: 2 },
    { pos: 7, width: 4 },
    { pos: 11, width: 1 },
  ],
  roundtrip(v, decoded) {
    const d = decoded as ReturnType<typeof decodeSend>;
    assert.deepEqual({ epoch: d.epoch, counter: d.counter, flags: d.flags }, { epoch: v.epoch, counter: v.counter, flags: v.flags });
    assert.ok(d.payload.equals(v.payload));
  },
  amplification: 8,
});

/** Offsets of the count and length fields of an encoded broadcast, found by walking it. */
function broadcastFields(b: Buffer): Field[] {
  const fields: Field[] = [{ pos: 2, width: 1 }, { pos: 9, width: 4 }];
  try {
    const target = b[2];
    const count = b.readUInt32BE(9);
    let at = 13;
    if (target === Target.GROUPS || target === Target.UIDS) {
      for (let i = 0; i < count; i++) {
        fields.push({ pos: at, width: 2 });
        at += 2 + b.readUInt16BE(at);
      }
    } else at += count * 4;
    fields.push({ pos: at, width: 4 });
  } catch {
    // a valid encoding always walks; nothing to add otherwise
  }
  return fields;
}

const broadcast = target({
  name: 'decodeBroadcast',
  decode: decodeBroadcast,
  errors: [RangeError],
  valid: fc
    .record({
      target: fc.constantFrom(Target.ALL, Target.CLIENTS, Target.GROUPS, Target.UIDS),
      epoch: epoch48,
      counters: fc.array(u32, { maxLength: 6 }),
      names: fc.array(text(10), { maxLength: 6 }),
      excluded: fc.array(u32, { maxLength: 6 }),
      flags: fc.nat({ max: 255 }),
      payload,
    })
    .map((v) => {
      const strings = v.target === Target.GROUPS || v.target === Target.UIDS;
      const targets = strings ? v.names : v.counters;
      return { value: { ...v, targets }, bytes: body(encodeBroadcast(v.target, v.epoch, targets, v.excluded, v.flags, v.payload)) };
    }),
  fields: broadcastFields,
  roundtrip(v, decoded) {
    const d = decoded as ReturnType<typeof decodeBroadcast>;
    assert.deepEqual(
      { flags: d.flags, target: d.target, epoch: d.epoch, targets: d.targets, excluded: d.excluded },
      { flags: v.flags, target: v.target, epoch: v.epoch, targets: v.targets, excluded: v.excluded },
    );
    assert.ok(d.payload.equals(v.payload));
  },
  // A zero-length group name costs 2 input bytes and one string in the output.
  amplification: 16,
});

const json = target({
  name: 'decodeJson',
  decode: (b: Buffer) => decodeJson(b),
  errors: [SyntaxError],
  valid: fc.tuple(fc.constantFrom(...Object.values(Cmd)), fc.jsonValue({ maxDepth: 3 })).map(([cmd, value]) => ({ value, bytes: body(encodeJson(cmd, value)) })),
  roundtrip(value, decoded) {
    assert.equal(JSON.stringify(decoded), JSON.stringify(value));
  },
  // JSON.parse: `[0,0,…]` is 2 input bytes per 8-byte number (plus array slots).
  amplification: 16,
});

const request = target({
  name: 'decodeRequest',
  decode: (b: Buffer) => decodeRequest(b),
  errors: [RangeError, SyntaxError],
  valid: fc.tuple(fc.constantFrom(Cmd.QUERY, Cmd.QUERY_RESULT), u32, fc.jsonValue({ maxDepth: 3 })).map(([cmd, req, value]) => ({ value: { req, value }, bytes: body(encodeRequest(cmd, req, value)) })),
  fields: () => [{ pos: 1, width: 4 }],
  roundtrip(v, decoded) {
    const d = decoded as { req: number; value: unknown };
    assert.equal(d.req, v.req);
    assert.equal(JSON.stringify(d.value), JSON.stringify(v.value));
  },
  amplification: 16,
});

const u32Frame = target({
  name: 'decodeU32',
  decode: decodeU32,
  errors: [RangeError],
  valid: fc.tuple(fc.constantFrom(Cmd.ACK, Cmd.PING), u32).map(([cmd, value]) => ({ value, bytes: body(encodeU32(cmd, value)) })),
  fields: () => [{ pos: 1, width: 4 }],
  roundtrip(value, decoded) {
    assert.equal(decoded, value);
  },
  amplification: 8,
});

function publishFields(b: Buffer): Field[] {
  const fields: Field[] = [{ pos: 1, width: 1 }];
  const flags = b[1];
  let at = 2 + ((flags & 8) !== 0 ? 10 : 0) + ((flags & 16) !== 0 ? 10 : 0);
  if (at + 2 <= b.length) {
    fields.push({ pos: at, width: 2 });
    at += 2 + b.readUInt16BE(at);
    if (flags & 32 && at + 4 <= b.length) fields.push({ pos: at, width: 4 });
  }
  return fields;
}

const party = fc.option(fc.record({ epoch: epoch48, counter: u32 }, { noNullPrototype: true }));
const publish = target({
  name: 'decodePublish',
  decode: decodePublish,
  errors: [RangeError],
  valid: fc
    .record({
      qos: fc.constantFrom(0 as const, 1 as const, 2 as const),
      retain: fc.boolean(),
      binary: fc.boolean(),
      topic: text(16),
      target: party,
      from: party,
      properties: fc.option(fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null')),
      payload,
    })
    .map((v: PublishFrame) => ({ value: v, bytes: body(encodePublish(v)) })),
  fields: publishFields,
  roundtrip(v, decoded) {
    const d = decoded as PublishFrame;
    assert.deepEqual({ ...d, payload: null }, { ...v, payload: null });
    assert.ok(d.payload.equals(v.payload));
  },
  amplification: 8,
});

/** Offsets of the count and length fields of an encoded delivery state. */
function deliveryFields(b: Buffer): Field[] {
  const fields: Field[] = [{ pos: 0, width: 2 }];
  try {
    let at = 2 + b.readUInt16BE(0) * 2;
    while (at + 6 <= b.length) {
      fields.push({ pos: at, width: 1 }, { pos: at + 1, width: 1 }, { pos: at + 4, width: 2 });
      const flags = b[at + 1];
      at += 6 + b.readUInt16BE(at + 4);
      if (flags & 4) {
        fields.push({ pos: at, width: 4 });
        at += 4 + b.readUInt32BE(at);
      }
      fields.push({ pos: at, width: 4 });
      at += 4 + b.readUInt32BE(at);
    }
  } catch {
    // walked off a valid encoding: cannot happen, and harmless
  }
  return fields;
}

const properties = fc.option(
  fc.record(
    {
      contentType: text(8),
      correlationData: bytes(8),
      messageExpiryInterval: u32,
      userProperties: fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 }), { maxKeys: 2, noNullPrototype: true }),
    },
    { requiredKeys: [], noNullPrototype: true },
  ),
  { nil: undefined },
);

const delivery = target({
  name: 'decodeMqttDeliveryState',
  decode: decodeMqttDeliveryState,
  errors: [RangeError],
  valid: fc
    .record({
      awaitingRelease: fc.array(u16, { maxLength: 5 }),
      unacked: fc.array(
        fc.record({ topic: text(12), payload, qos: fc.constantFrom(1 as const, 2 as const), retain: fc.boolean(), packetId: u16, released: fc.boolean(), properties }),
        { maxLength: 4 },
      ),
    })
    .map((v) => {
      const state: MqttDeliveryState = {
        awaitingRelease: v.awaitingRelease,
        unacked: v.unacked.map(({ properties: p, ...m }) => (p === undefined ? m : { ...m, properties: p })),
      };
      return { value: state, bytes: encodeMqttDeliveryState(state) };
    }),
  fields: deliveryFields,
  roundtrip(v, decoded) {
    const d = decoded as MqttDeliveryState;
    // Empty properties are not sent (encodeMqttDeliveryState): they come back absent.
    const expected = v.unacked.map((m) => {
      const { properties: p, ...rest } = m;
      return p && Object.keys(p).length > 0 ? { ...rest, properties: p } : rest;
    });
    assert.deepEqual(d.awaitingRelease, v.awaitingRelease);
    assert.deepEqual(d.unacked, expected);
  },
  amplification: 16,
});

const TARGETS = [clientEvent, send, broadcast, json, request, u32Frame, publish, delivery] as DecoderTarget<unknown>[];

// ---- the property, per decoder ------------------------------------------------------------------

for (const spec of TARGETS) {
  t.test(spec.name, async (t) => {
    const tally = new ErrorTally();
    const kinds = { valid: 0, mutated: 0, random: 0, threw: 0 };
    const heapBefore = heapAfterGc();
    let slowest = 0;
    const input: fc.Arbitrary<{ kind: 'valid' | 'mutated' | 'random'; bytes: Buffer; value?: unknown }> = fc.oneof(
      { weight: 1, arbitrary: spec.valid.map((v) => ({ kind: 'valid' as const, bytes: v.bytes, value: v.value })) },
      { weight: 4, arbitrary: mutated(spec.valid.map((v) => v.bytes), spec.fields).map((m) => ({ kind: 'mutated' as const, bytes: m.bytes })) },
      { weight: 1, arbitrary: bytes(96).map((b) => ({ kind: 'random' as const, bytes: b })) },
      // Random bodies behind a real command byte, so decoders get past byte 0 as they would.
      { weight: 1, arbitrary: bytes(64).map((b) => ({ kind: 'random' as const, bytes: Buffer.concat([Buffer.from([Object.values(Cmd)[b.length % 16]]), b]) })) },
    );
    await fuzz(
      t,
      spec.name,
      fc.property(input, (c) => {
        kinds[c.kind]++;
        const attempt = (): { ok: true; value: unknown } | { ok: false; error: unknown } => {
          try {
            return { ok: true, value: spec.decode(c.bytes) };
          } catch (error) {
            return { ok: false, error };
          }
        };
        const { value: result, ms } = watchdog.bounded(spec.name, c.bytes, attempt, CASE_LIMIT_MS);
        slowest = Math.max(slowest, ms);
        if (!result.ok) {
          kinds.threw++;
          tally.add(result.error);
          assert.ok(
            spec.errors.some((E) => result.error instanceof E),
            `${spec.name} threw an undocumented ${(result.error as Error)?.name}: ${(result.error as Error)?.message} on ${hex(c.bytes)}`,
          );
          assert.equal(c.kind === 'valid', false, `${spec.name} refused a valid encoding ${hex(c.bytes)}: ${(result.error as Error).message}`);
        } else {
          const size = outputSize(result.value);
          assert.ok(size <= spec.amplification * c.bytes.length + 64, `${spec.name} returned ${size} bytes for a ${c.bytes.length}-byte input ${hex(c.bytes)}`);
          if (c.kind === 'valid') spec.roundtrip(c.value, result.value);
        }
        // Deterministic: no state carried from one decode to the next.
        const again = attempt();
        assert.equal(again.ok, result.ok, `${spec.name} answered differently on the same input ${hex(c.bytes)}`);
        if (again.ok && result.ok) assert.deepEqual(again.value, result.value);
      }),
      { numRuns: runs(DEFAULT_RUNS) },
    );
    const grown = heapAfterGc() - heapBefore;
    t.comment(`${spec.name}: inputs ${JSON.stringify(kinds)}, slowest case ${slowest.toFixed(2)} ms, heap +${(grown / 1048576).toFixed(1)} MB`);
    t.comment(`${spec.name} errors: ${tally.toString() || 'none'}`);
    t.ok(grown < 64 * 1024 * 1024, `heap after the run within 64 MB of before (+${(grown / 1048576).toFixed(1)} MB)`);
  });
}

// Inputs known to sit on the edges, every run (they are cheap).
t.test('edge inputs', async (t) => {
  const edges: Array<[string, (b: Buffer) => unknown, Buffer]> = [
    ['client event with SESSION flag and no session header', decodeClientEvent, Buffer.from('15' + '00'.repeat(8) + '04', 'hex')],
    ['client event with a 2^32-1 session length', decodeClientEvent, Buffer.from('15' + '00'.repeat(8) + '04' + '00000000ffffffff', 'hex')],
    ['broadcast naming 2^32-1 groups in 13 bytes', decodeBroadcast, Buffer.from('20' + '00' + '02' + '000000000000' + 'ffffffff', 'hex')],
    ['broadcast of 2^32-1 client counters', decodeBroadcast, Buffer.from('20' + '00' + '01' + '000000000000' + 'ffffffff' + '00000000', 'hex')],
    ['broadcast without the exclusion count', decodeBroadcast, Buffer.from('20' + '00' + '00' + '000000000000' + '00000000', 'hex')],
    ['broadcast excluding 2^32-1 clients', decodeBroadcast, Buffer.from('20' + '00' + '00' + '000000000000' + '00000000' + 'ffffffff', 'hex')],
    ['publish with qos 3', decodePublish, Buffer.from('24' + '03' + '0000', 'hex')],
    ['publish with target and from flags but no bytes', decodePublish, Buffer.from('24' + '18' + '0000', 'hex')],
    ['publish with a 2^32-1 properties length', decodePublish, Buffer.from('24' + '20' + '0000' + 'ffffffff', 'hex')],
    ['delivery state awaiting 65535 ids in 2 bytes', decodeMqttDeliveryState, Buffer.from('ffff', 'hex')],
    ['delivery state with malformed properties JSON', decodeMqttDeliveryState, Buffer.from('0000' + '01' + '04' + '0001' + '0000' + '00000001' + '7b' + '00000000', 'hex')],
    ['delivery state properties with a non-string $b64', decodeMqttDeliveryState, Buffer.concat([Buffer.from('0000' + '01' + '04' + '0001' + '0000', 'hex'), lengthPrefixed('{"a":{"$b64":5}}'), Buffer.from('00000000', 'hex')])],
    ['delivery state properties with "__proto__"', decodeMqttDeliveryState, Buffer.concat([Buffer.from('0000' + '01' + '04' + '0001' + '0000', 'hex'), lengthPrefixed('{"__proto__":{"polluted":1}}'), Buffer.from('00000000', 'hex')])],
    ['request of 4 bytes', (b) => decodeRequest(b), Buffer.from('22000000', 'hex')],
    ['json of one byte', (b) => decodeJson(b), Buffer.from('0a', 'hex')],
    ['empty body', decodeU32, Buffer.alloc(0)],
  ];
  for (const [name, decode, input] of edges) {
    let outcome: string;
    try {
      outcome = `ok ${JSON.stringify(decode(input))?.slice(0, 80)}`;
    } catch (error) {
      t.ok(error instanceof RangeError || error instanceof SyntaxError, `${name}: ${(error as Error).name} is documented`);
      outcome = `${(error as Error).name}: ${(error as Error).message}`;
    }
    t.comment(`${name} → ${outcome}`);
  }
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution from properties JSON');
});

function lengthPrefixed(s: string): Buffer {
  const b = Buffer.from(s);
  const out = Buffer.alloc(4 + b.length);
  out.writeUInt32BE(b.length, 0);
  b.copy(out, 4);
  return out;
}

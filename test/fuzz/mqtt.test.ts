// Fuzz of MQTT: the framing and packet decoder (runtime/src/protocols/mqtt.ts: mqttPacketLength,
// decodeMqttPacket) in process, and a live mqtt:// Gateway (test/fixtures/fuzz/mqtt-app.ts:
// Register + Gateway + BusinessWorker broker under the master, loopback, free ports).
//
// Decoders (documented: mqttPacketLength never throws and returns -1, 0 or a length;
// decodeMqttPacket throws Error "malformed MQTT packet: …"): every packet type at 3.1, 3.1.1 and
// 5.0, mutants and random bytes; lengths agree with the fixed header, decodes agree with a fresh
// mqtt-packet parser (the runtime reuses parsers), bounded time.
//
// Live: random and mutated bytes instead of a CONNECT; valid, mutated and random packets after a
// valid CONNECT at a random protocol level. The connection is closed exactly when the reference
// (./reference.ts refMqttSession) says the gateway must close it, otherwise a PINGREQ probe is
// answered; everything the gateway sends parses. A well-behaved client keeps its pub/sub round
// trip working; at the end the gateway process is the same one, every fuzzed client is gone, no
// worker saw a packet it could not decode, and no process logged an uncaught exception.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mqttPacketLib, { type Packet } from 'mqtt-packet';
import t, { type Test } from 'tap';
import { decodeMqttPacket, encodeMqttPacket, mqttPacketLength, type MqttVersion } from '../../runtime/src/protocols/mqtt.js';
import { mqttFields, mqttFramed } from './arbitraries.js';
import { RawClient, bounded, freePorts, fuzzFixtures, pidAlive, rssOf, sleep, spawnFixture, until } from './live.js';
import { ErrorTally, Watchdog, applyMutations, bytes, chunking, chunks, fc, fuzz, hex, knownBug, mutationArb, runs, type Field } from './lib.js';
import { completeMqttPacket, mqttLength, packetIdProblem, parseMqtt, refMqttSession } from './reference.js';

const DECODER_RUNS = 1500;
/** Per mode (instead of / after a CONNECT). */
const LIVE_RUNS = 200;
const REPLY_MS = 3000;
const CASE_MS = 10_000;
const MAX_PACKET = 4096;
/** A decode over this (twice) is a failure: they take microseconds. */
const CASE_LIMIT_MS = 2000;

// ---- packets --------------------------------------------------------------------------------------

const topicName = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('a', 'a/b', 'fuzz/x', 'good/x', '$SYS/x', '/', '') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }) },
  { weight: 1, arbitrary: fc.constantFrom('#', '+', 'a/#', 'a/+/b', 'a/#/b', 'a\u0000b', '$share/g/a', 'a'.repeat(300)) },
);
const id = fc.integer({ min: 1, max: 0xffff });
const reason = fc.constantFrom(0, 0x10, 0x80, 0x83, 0x87, 0x91, 0x97);
const userProperties = fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2, noNullPrototype: true });
const props5 = fc.option(
  fc.record(
    { payloadFormatIndicator: fc.boolean(), messageExpiryInterval: fc.nat(), contentType: fc.string({ maxLength: 8 }), responseTopic: fc.string({ maxLength: 8 }), correlationData: bytes(8), userProperties },
    { requiredKeys: [], noNullPrototype: true },
  ),
  { nil: undefined },
);

/** Packet objects a client (or a confused client) may send, for a protocol level. */
function packetObject(version: MqttVersion): fc.Arbitrary<Record<string, unknown>> {
  const v5 = version === 5;
  const with5 = <T extends object>(o: T, extra: object): T => (v5 ? { ...o, ...extra } : o);
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({ topic: topicName, payload: bytes(64), qos: fc.constantFrom(0, 1, 2), retain: fc.boolean(), dup: fc.boolean(), messageId: id, properties: props5 }, { noNullPrototype: true }).map((p) => with5({ cmd: 'publish', topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain, dup: p.dup, ...(p.qos > 0 ? { messageId: p.messageId } : {}) }, p.properties ? { properties: p.properties } : {})) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(id, fc.array(fc.record({ topic: topicName, qos: fc.constantFrom(0, 1, 2), nl: fc.boolean(), rap: fc.boolean(), rh: fc.constantFrom(0, 1, 2) }, { noNullPrototype: true }), { minLength: 1, maxLength: 3 }))
        .map(([messageId, subs]) => ({ cmd: 'subscribe', messageId, subscriptions: subs.map((s) => (v5 ? s : { topic: s.topic, qos: s.qos })) })),
    },
    { weight: 1, arbitrary: fc.tuple(id, fc.array(topicName, { minLength: 1, maxLength: 3 })).map(([messageId, unsubscriptions]) => ({ cmd: 'unsubscribe', messageId, unsubscriptions })) },
    { weight: 4, arbitrary: fc.tuple(fc.constantFrom('puback', 'pubrec', 'pubrel', 'pubcomp'), id, reason).map(([cmd, messageId, code]) => with5({ cmd, messageId }, { reasonCode: code })) },
    { weight: 3, arbitrary: fc.constant({ cmd: 'pingreq' }) },
    { weight: 1, arbitrary: fc.constantFrom({ cmd: 'pingresp' }, { cmd: 'connack', returnCode: 0, sessionPresent: false }, { cmd: 'suback', messageId: 1, granted: [0] }) },
    { weight: 1, arbitrary: reason.map((code) => with5({ cmd: 'disconnect' }, { reasonCode: code })) },
    { weight: v5 ? 1 : 0, arbitrary: fc.constant({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x' } }) },
    { weight: 1, arbitrary: connectObject },
  );
}

const connectObject = fc
  .record(
    {
      version: fc.constantFrom(3, 4, 5),
      clientId: fc.oneof(fc.string({ maxLength: 12 }), fc.constant('')),
      clean: fc.boolean(),
      keepalive: fc.constantFrom(0, 30, 60, 65535),
      username: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
      password: fc.option(bytes(8), { nil: undefined }),
      will: fc.option(fc.record({ topic: fc.constantFrom('w', 'will/t'), payload: bytes(8), qos: fc.constantFrom(0, 1, 2), retain: fc.boolean() }, { noNullPrototype: true }), { nil: undefined }),
      receiveMaximum: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
    },
    { noNullPrototype: true },
  )
  .map((c) => {
    const packet: Record<string, unknown> = { cmd: 'connect', protocolId: c.version === 3 ? 'MQIsdp' : 'MQTT', protocolVersion: c.version, clientId: c.clientId, clean: c.clean, keepalive: c.keepalive };
    if (c.username !== undefined) packet.username = c.username;
    if (c.password !== undefined && c.username !== undefined) packet.password = c.password;
    if (c.will) packet.will = c.will;
    if (c.version === 5 && c.receiveMaximum) packet.properties = { receiveMaximum: c.receiveMaximum };
    return packet;
  });

/** Encodes a packet object; null when mqtt-packet refuses to generate it. */
function generate(packet: Record<string, unknown>, version: MqttVersion): Buffer | null {
  try {
    return mqttPacketLib.generate(packet as unknown as Packet, { protocolVersion: version });
  } catch {
    return null;
  }
}

const connectBytes = connectObject.map((c) => generate(c, c.protocolVersion as MqttVersion) ?? generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'x', clean: true, keepalive: 0 }, 4)!);
const encoded = (version: MqttVersion): fc.Arbitrary<Buffer> => packetObject(version).map((p) => generate(p, version) ?? Buffer.from([0xc0, 0]));
const sequence = (version: MqttVersion): fc.Arbitrary<Buffer> => fc.array(encoded(version), { minLength: 1, maxLength: 4 }).map((list) => Buffer.concat(list));

/** Valid, mutated, framing-valid random, and random byte inputs. */
function inputs(valid: fc.Arbitrary<Buffer>, fields: (b: Buffer) => Field[], nonEmpty = false): fc.Arbitrary<{ kind: string; bytes: Buffer }> {
  const out = fc.oneof(
    { weight: 2, arbitrary: valid.map((b) => ({ kind: 'valid', bytes: b })) },
    { weight: 4, arbitrary: fc.tuple(valid, valid, fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(([a, b, m]) => ({ kind: 'mutated', bytes: applyMutations(a, b, m, fields(a)) })) },
    { weight: 1, arbitrary: fc.array(mqttFramed, { minLength: 1, maxLength: 3 }).map((list) => ({ kind: 'framed', bytes: Buffer.concat(list) })) },
    { weight: 1, arbitrary: bytes(200).map((b) => ({ kind: 'random', bytes: b })) },
  );
  return nonEmpty ? out.filter((c) => c.bytes.length > 0) : out;
}

// ---- in process: mqttPacketLength, decodeMqttPacket --------------------------------------------------

t.test('decoders', async (t) => {
  const watchdog = new Watchdog(10_000);
  t.teardown(() => watchdog.stop());
  const tally = new ErrorTally();
  const kinds = { accepted: 0, refused: 0, reencodeRefused: 0, knownBug: 0 };
  const version = fc.constantFrom(3 as const, 4 as const, 5 as const);
  const input = version.chain((v) => fc.tuple(fc.constant(v), inputs(fc.oneof(sequence(v), connectBytes), mqttFields)));
  await fuzz(
    t,
    'mqttPacketLength/decodeMqttPacket',
    fc.property(input, fc.nat({ max: 0xffff }), ([v, c], limit) => {
      const b = c.bytes;
      const { value: length } = watchdog.bounded('mqttPacketLength', b, () => mqttPacketLength(b), CASE_LIMIT_MS);
      assert.ok(Number.isInteger(length) && length >= -1, `mqttPacketLength → ${length}`);
      assert.equal(length, mqttLength(b), `length of ${hex(b)}`);
      // With a limit: -1 exactly when the packet is longer than it, else the same answer.
      const limited = mqttPacketLength(b, limit);
      assert.equal(limited, length > limit ? -1 : length, `length of ${hex(b)} under a limit of ${limit}`);
      const packet = length > 0 && length <= b.length ? b.subarray(0, length) : b;
      const reference = parseMqtt(packet, packet[0] >> 4 === 1 ? 4 : v);
      // A packet without the identifier or topic filter its type requires must be refused too; a
      // runtime that takes it has the known bug (the todo test below), counted here.
      const problem = 'packet' in reference ? packetIdProblem(reference.packet) : null;
      let decoded: Packet | null = null;
      let failure: unknown = null;
      watchdog.bounded('decodeMqttPacket', packet, () => {
        try {
          decoded = decodeMqttPacket(packet, v);
          failure = null;
        } catch (error) {
          decoded = null;
          failure = error;
        }
      }, CASE_LIMIT_MS);
      if (failure) {
        tally.add(failure);
        assert.ok(failure instanceof Error && /^malformed MQTT packet: /.test(failure.message), `undocumented error ${(failure as Error).name}: ${(failure as Error).message} for ${hex(packet)}`);
      }
      if (decoded) kinds.accepted++;
      else kinds.refused++;
      if (problem) {
        if (decoded) kinds.knownBug++;
        return;
      }
      // The cached parsers decide as a fresh one does, whatever came before.
      assert.equal(decoded !== null, !('error' in reference), `decodeMqttPacket ${decoded ? 'accepted' : 'refused'} ${hex(packet)} at v${v}; a fresh parser: ${'error' in reference ? reference.error : 'accepts'}`);
      if (decoded && 'packet' in reference) assert.equal(JSON.stringify(decoded), JSON.stringify(reference.packet), 'the same packet as a fresh parser');
      if (decoded) {
        // Not a property (mqtt-packet's generator checks more than its parser), shown for information.
        try {
          encodeMqttPacket(decoded, (decoded as { protocolVersion?: MqttVersion }).protocolVersion ?? v);
        } catch {
          kinds.reencodeRefused++;
        }
      }
    }),
    { numRuns: runs(DECODER_RUNS) },
  );
  t.comment(`decodes: ${JSON.stringify(kinds)}; errors: ${tally.toString()}`);
});

const TODO_PACKET_ID =
  'runtime bug: decodeMqttPacket (runtime/src/protocols/mqtt.ts) accepts PUBACK/PUBREC/PUBREL/PUBCOMP with fewer than 2 ' +
  'bytes after the fixed header and QoS 1/2 PUBLISH without a packet identifier: mqtt-packet parses them with messageId -1 ' +
  '(its _parseNum returns -1, which _parseMessageId lets through). The gateway then answers a PUBREL "62 00" with PUBCOMP ' +
  '"70 02" (encodeMqttPacket of messageId -1: a remaining length of 2 and no bytes), which desynchronises the client\'s ' +
  'stream, and forwards such PUBLISHes to workers, whose PUBACK/PUBREC come out truncated the same way; QoS 2 ids -1 land ' +
  'in awaitingRelease. Likewise a SUBSCRIBE or UNSUBSCRIBE with an identifier and no topic filter (MQTT-3.8.3-3, ' +
  '3.10.3-2) is passed on with subscriptions: [], and a broker\'s SUBACK for it cannot be encoded (mqtt-packet: ' +
  '"Invalid qos vector", thrown in the worker\'s onMessage). Fix in decodeMqttPacket: after the parse, refuse a packet ' +
  'of a type that needs an identifier whose messageId is not 1…65535, and a SUBSCRIBE/UNSUBSCRIBE with an empty list ' +
  '(throw "malformed MQTT packet: …"), so the gateway closes the connection as for any malformed packet.';

t.test('decodeMqttPacket refuses packets without their packet identifier or topic filters (known bug: todo)', async (t) => {
  const examples: Array<[string, string, MqttVersion]> = [
    ['PUBREL, remaining length 0', '6200', 4],
    ['PUBREL, remaining length 1', '620100', 4],
    ['PUBACK, remaining length 0', '4000', 4],
    ['PUBREC, remaining length 0, v5', '5000', 5],
    ['PUBLISH QoS 1 without identifier', '3203000161', 4],
    ['SUBSCRIBE without a topic filter', '82020001', 4],
    ['SUBSCRIBE without a topic filter, v5', '8203000100', 5],
    ['UNSUBSCRIBE without a topic filter', 'a2020001', 4],
  ];
  for (const [name, bytesHex, v] of examples) {
    let outcome: string;
    try {
      outcome = `accepted with messageId ${(decodeMqttPacket(Buffer.from(bytesHex, 'hex'), v) as { messageId?: number }).messageId}`;
    } catch (error) {
      outcome = (error as Error).message;
    }
    t.match(outcome, /^malformed MQTT packet/, `${name} (${bytesHex}): ${outcome}`, /^malformed/.test(outcome) ? {} : { todo: knownBug(t, 'mqtt-packet-id', TODO_PACKET_ID) });
  }
  t.equal(encodeMqttPacket({ cmd: 'pubcomp', messageId: -1 } as never, 4).toString('hex'), '7002', 'what the gateway writes back for PUBREL 62 00: a PUBCOMP that announces 2 bytes and has none');
  const version = fc.constantFrom(3 as const, 4 as const, 5 as const);
  await fuzz(
    t,
    'decoded packets carry their identifier and topic filters',
    fc.property(version.chain((v) => fc.tuple(fc.constant(v), inputs(sequence(v), mqttFields))), ([v, c]) => {
      const length = mqttPacketLength(c.bytes);
      if (length <= 0 || length > c.bytes.length) return;
      let packet: Packet;
      try {
        packet = decodeMqttPacket(c.bytes.subarray(0, length), v);
      } catch {
        return;
      }
      const problem = packetIdProblem(packet);
      assert.equal(problem, null, `${problem}: ${hex(c.bytes.subarray(0, length))}`);
    }),
    { numRuns: runs(500), todo: knownBug(t, 'mqtt-packet-id', TODO_PACKET_ID) },
  );
});

// ---- live gateway ---------------------------------------------------------------------------------

/** Log lines that mean something went wrong in a process of the app. */
const PROBLEMS = /uncaught exception|unhandled rejection|child exited unexpectedly|FUZZ-WORKER-UNDECODABLE|event handling failed| threw/;

interface MqttApp {
  port: number;
  gatewayPid: number;
  /** `status --json` of the app (the master asks every process): pid and connections per process. */
  status(): Promise<Array<{ name: string; pid: number; connections: number }>>;
  output(): string;
  /** Problems the processes logged: crashes, restarts, undecodable forwards. */
  problems(): string[];
}

async function startApp(t: Test): Promise<MqttApp> {
  const [registerPort, internalPort] = await freePorts(2);
  const runtimeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-fuzz-mqtt-'));
  t.teardown(() => fs.rmSync(runtimeDir, { recursive: true, force: true }));
  const app = spawnFixture(t, path.join(fuzzFixtures, 'mqtt-app.ts'), {
    REGISTER_ADDRESS: `127.0.0.1:${registerPort}`,
    MQTT_START_PORT: String(internalPort),
    MAX_PACKET: String(MAX_PACKET),
    GATEWAYWORKER_LOG_LEVEL: 'info',
    GATEWAYWORKER_RUNTIME_DIR: runtimeDir,
  }, [], ['start'], PROBLEMS);
  const linked = /FuzzMqtt#0 pid=(\d+) business worker linked/;
  const ok = await until(() => linked.test(app.output()) && /Start (success|finished)/.test(app.output()) || app.proc.exitCode !== null, 40_000, 50);
  const port = Number(/FuzzMqtt\s+mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(app.output())?.[1]);
  if (!ok || !port) throw new Error(`the MQTT fuzz app did not start:\n${app.output()}`);
  const gatewayPid = Number(linked.exec(app.output())![1]);
  const file = path.join(fuzzFixtures, 'mqtt-app.ts');
  return {
    port,
    gatewayPid,
    status: () =>
      new Promise((resolve, reject) => {
        const env: NodeJS.ProcessEnv = { ...process.env, GATEWAYWORKER_RUNTIME_DIR: runtimeDir };
        delete env.TAP;
        delete env.NODE_V8_COVERAGE;
        execFile(process.execPath, ['--import', 'tsx', file, 'status', '--json'], { env, timeout: 30_000 }, (error, stdout) => {
          if (error) return reject(new Error(`status --json failed: ${error.message}\n${stdout}`));
          resolve((JSON.parse(stdout) as { processes: Array<{ name: string; pid: number; connections: number }> }).processes);
        });
      }),
    output: app.output,
    problems: () => [...app.watched],
  };
}

/** An MQTT client over a raw socket: packets it received, parsed at its level. */
class MqttPeer {
  readonly packets: Packet[] = [];
  parseErrors: string[] = [];
  private parser: ReturnType<typeof mqttPacketLib.parser>;
  private fed = 0;
  private constructor(
    readonly raw: RawClient,
    private version: MqttVersion,
  ) {
    this.parser = this.newParser();
  }

  static async connect(port: number, version: MqttVersion = 4): Promise<MqttPeer> {
    return new MqttPeer(await RawClient.connect(port), version);
  }

  private newParser(): ReturnType<typeof mqttPacketLib.parser> {
    const parser = mqttPacketLib.parser({ protocolVersion: this.version });
    parser.on('packet', (p: Packet) => this.packets.push(p));
    parser.on('error', (e: Error) => this.parseErrors.push(e.message));
    return parser;
  }

  /** Acknowledge every QoS 1/2 delivery as a well-behaved client does (the good client). */
  autoAck = false;
  private acked = 0;

  /** Parses what arrived since the last call. */
  poll(): Packet[] {
    const all = this.raw.bytes();
    if (all.length > this.fed) {
      this.parser.parse(all.subarray(this.fed));
      this.fed = all.length;
    }
    if (this.autoAck) {
      for (; this.acked < this.packets.length; this.acked++) {
        const p = this.packets[this.acked] as { cmd: string; qos?: number; messageId?: number };
        if (p.cmd === 'publish' && p.qos === 1) this.raw.write(encodeMqttPacket({ cmd: 'puback', messageId: p.messageId! }, this.version));
        if (p.cmd === 'publish' && p.qos === 2) this.raw.write(encodeMqttPacket({ cmd: 'pubrec', messageId: p.messageId! }, this.version));
        if (p.cmd === 'pubrel') this.raw.write(encodeMqttPacket({ cmd: 'pubcomp', messageId: p.messageId! }, this.version));
      }
    }
    return this.packets;
  }

  /** Forgets the packets received so far (a long-lived client). */
  forget(): void {
    this.poll();
    this.packets.length = 0;
    this.acked = 0;
  }

  /** Re-parses everything at another level (the level is known once the CONNECT is). */
  setVersion(version: MqttVersion): void {
    this.version = version;
    this.packets.length = 0;
    this.parseErrors = [];
    this.fed = 0;
    this.parser = this.newParser();
  }

  async next(pred: (p: Packet) => boolean, what: string): Promise<Packet> {
    let found: Packet | undefined;
    const ok = await this.raw.waitUntil(() => (found = this.poll().find(pred)) !== undefined, REPLY_MS);
    if (!ok || !found) throw new Error(`no ${what} within ${REPLY_MS} ms (closed: ${this.raw.closed}; got ${this.packets.map((p) => p.cmd).join(',')})`);
    return found;
  }
}

/** The well-behaved client: subscribed to good/#, publishes QoS 1 and gets its PUBACK and the delivery back. */
async function goodClient(t: Test, port: number): Promise<{ ask(): Promise<void>; clients(): Promise<number> }> {
  const peer = await MqttPeer.connect(port, 4);
  peer.autoAck = true;
  t.teardown(() => peer.raw.destroy());
  // Its own topic space: fuzzed clients publish to `good/x` and random topics, not here.
  const prefix = `fuzz-good-${process.pid}`;
  peer.raw.write(encodeMqttPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'fuzz-good', clean: true, keepalive: 0 }, 4));
  await peer.next((p) => p.cmd === 'connack', 'CONNACK');
  peer.raw.write(encodeMqttPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${prefix}/#`, qos: 1 }] }, 4));
  await peer.next((p) => p.cmd === 'suback', 'SUBACK');
  let n = 1;
  return {
    async ask() {
      const messageId = (++n % 60000) + 2;
      const topic = `${prefix}/${n}`;
      peer.raw.write(encodeMqttPacket({ cmd: 'publish', topic, payload: Buffer.from(`m${n}`), qos: 1, retain: false, dup: false, messageId }, 4));
      await peer.next((p) => p.cmd === 'puback' && p.messageId === messageId, `PUBACK ${messageId}`);
      const delivery = await peer.next((p) => p.cmd === 'publish' && p.topic === topic, `delivery of ${topic}`);
      assert.equal(Buffer.from((delivery as { payload: Buffer }).payload).toString(), `m${n}`);
      assert.deepEqual(peer.parseErrors, [], 'the good client parses everything it gets');
      peer.forget();
    },
    async clients() {
      peer.forget();
      peer.raw.write(encodeMqttPacket({ cmd: 'publish', topic: '$fuzz/stats', payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }, 4));
      const reply = await peer.next((p) => p.cmd === 'publish' && p.topic === '$fuzz/stats', 'stats');
      peer.forget();
      return (JSON.parse(Buffer.from((reply as { payload: Buffer }).payload).toString()) as { clients: number }).clients;
    },
  };
}

/** Whether this runtime's decoder takes `bytes` (the gateway's own check). */
function runtimeAccepts(bytes: Buffer, version: MqttVersion): boolean {
  try {
    decodeMqttPacket(bytes, version);
    return true;
  } catch {
    return false;
  }
}

/**
 * One live case: `prefix` (a CONNECT already answered, or nothing), then the fuzzed bytes, then
 * what finishes a packet in progress and a PINGREQ probe when the reference says the connection
 * must still be open.
 */
async function liveCase(app: MqttApp, start: { connect: Buffer; version: MqttVersion } | null, input: Buffer, points: number[]): Promise<string> {
  const peer = await MqttPeer.connect(app.port, start?.version ?? 4);
  try {
    if (start) {
      peer.raw.write(start.connect);
      await peer.next((p) => p.cmd === 'connack', 'CONNACK to the valid CONNECT');
    }
    const from = start ? start.version : 0;
    const first = refMqttSession(input, MAX_PACKET, from, runtimeAccepts);
    let all = input;
    if (first.end === 'open') all = Buffer.concat([all, completeMqttPacket(first.pending, MAX_PACKET)]);
    const second = refMqttSession(all, MAX_PACKET, from, runtimeAccepts);
    if (second.end === 'open' && second.version !== 0) all = Buffer.concat([all, Buffer.from([0xc0, 0x00])]);
    const expected = refMqttSession(all, MAX_PACKET, from, runtimeAccepts);
    if (expected.knownBug) {
      // The runtime accepts it and answers with a truncated packet (see TODO_PACKET_ID): nothing to
      // predict past it; the gateway must still survive it.
      await peer.raw.writeChunks(chunks(input, points));
      await peer.raw.waitUntil(() => peer.raw.closed, 20);
      return `known bug: ${expected.knownBug}`;
    }
    if (expected.version !== 0 && expected.version !== (start?.version ?? 4)) peer.setVersion(expected.version);
    await peer.raw.writeChunks([...chunks(input, points), all.subarray(input.length)].filter((b) => b.length > 0));
    const context = `${start ? `after CONNECT v${start.version}` : 'as the first bytes'}: ${hex(input)} chunked at ${JSON.stringify(points)}; reference: ${expected.end} (${expected.why})`;
    if (expected.end === 'closed') {
      const closed = await peer.raw.waitUntil(() => peer.raw.closed, REPLY_MS);
      assert.ok(closed, `the gateway did not close the connection (${context}); got ${peer.poll().map((p) => p.cmd).join(',')}`);
    } else {
      assert.ok(expected.version !== 0, `the reference left the connection open without a CONNECT (${context})`);
      const pings = expected.pingreqs;
      const answered = (): boolean => peer.poll().filter((p) => p.cmd === 'pingresp').length >= pings && (start !== null || peer.packets.some((p) => p.cmd === 'connack'));
      const ok = await peer.raw.waitUntil(answered, REPLY_MS);
      assert.ok(ok && !peer.raw.closed, `a valid connection was ${peer.raw.closed ? 'closed' : 'not answered'} (${context}); got ${peer.poll().map((p) => p.cmd).join(',')}`);
      // MQTT-3.2.0-1 wants the CONNACK first; the gateway answers PINGREQ/PUBREL itself before the
      // worker's CONNACK (known bug, see the test below): counted here, not failed.
      if (!start && peer.packets[0]?.cmd !== 'connack') return `open: ${peer.packets[0]?.cmd} before CONNACK (known bug)`;
    }
    peer.poll();
    assert.deepEqual(peer.parseErrors, [], `everything the gateway sent parses at v${expected.version || 4} (${context}); got ${hex(peer.raw.bytes())}`);
    return `${expected.end}: ${expected.why.replace(/:.*/, '')}`;
  } finally {
    peer.raw.destroy();
  }
}

const TODO_CONNACK_ORDER =
  'runtime bug: the gateway answers PINGREQ (PINGRESP) and PUBREL (PUBCOMP) itself as soon as it reads them, also between a ' +
  'CONNECT it forwarded and the CONNACK the worker sends back: a client that pipelines CONNECT + PINGREQ gets PINGRESP ' +
  'before CONNACK (MQTT-3.2.0-1: the first packet from the server MUST be CONNACK), and the gateway acts on packets of a ' +
  'CONNECT the application may still refuse (MQTT-3.1.4-5). Fix in runtime/src/gateway/mqtt.ts MqttLayer: until the ' +
  'CONNACK has been written to the client (Gateway.write of bytes starting 0x20 for a session that has none yet), hold ' +
  'the packets after the CONNECT (or forward them in order and let the gateway answer only after the CONNACK); replay ' +
  'them once a successful CONNACK went out, drop them when it refuses.';

const TODO_AFTER_REFUSAL =
  'runtime bug: when the gateway refuses an mqtt:// client (malformed packet, second CONNECT, packet too large for ' +
  'MQTT rules), MqttLayer.refuse() only calls conn.close(), which half-closes the socket (StreamTransport.close: ' +
  'socket.end()); StreamTransport.onData goes on framing the rest of the bytes it has read, and Gateway.clientMessage ' +
  'passes every package to MqttLayer.receive, which forwards it to a worker. A PUBLISH in the same TCP read as the ' +
  'refused packet is published to subscribers (MQTT-4.8.0-1: after a protocol error the server closes the connection, ' +
  'it does not act on what follows). Fix: Gateway.clientMessage (runtime/src/gateway/Gateway.ts:296) returns when ' +
  'conn.status is not "established", and/or MqttSession gets a refused flag set in MqttLayer.refuse() and checked ' +
  'first in MqttLayer.packet() (runtime/src/gateway/mqtt.ts); StreamTransport could also stop framing once close() ' +
  'was called.';

t.test('live mqtt:// gateway', async (t) => {
  const app = await startApp(t);

  await t.test('packets after a refused one are not acted on (known bug: todo)', async (t) => {
    const topic = `fuzz-after-refusal-${process.pid}`;
    const sub = await MqttPeer.connect(app.port, 4);
    t.teardown(() => sub.raw.destroy());
    sub.raw.write(encodeMqttPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'refusal-sub', clean: true, keepalive: 0 }, 4));
    await sub.next((p) => p.cmd === 'connack', 'CONNACK');
    sub.raw.write(encodeMqttPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] }, 4));
    await sub.next((p) => p.cmd === 'suback', 'SUBACK');
    const peer = await MqttPeer.connect(app.port, 4);
    t.teardown(() => peer.raw.destroy());
    peer.raw.write(encodeMqttPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'refused', clean: true, keepalive: 0 }, 4));
    await peer.next((p) => p.cmd === 'connack', 'CONNACK');
    // A PINGREQ with reserved flag bits set (malformed: the gateway refuses the client), then a PUBLISH, in one write.
    peer.raw.write(Buffer.concat([Buffer.from('c100', 'hex'), encodeMqttPacket({ cmd: 'publish', topic, payload: Buffer.from('after the refusal'), qos: 0, retain: false, dup: false }, 4)]));
    t.ok(await peer.raw.waitUntil(() => peer.raw.closed, REPLY_MS), 'the malformed packet closes the connection');
    const leaked = await sub.raw.waitUntil(() => sub.poll().some((p) => p.cmd === 'publish'), 1000);
    t.notOk(leaked, 'the PUBLISH after the refused packet is not published', leaked ? { todo: knownBug(t, 'mqtt-after-refusal', TODO_AFTER_REFUSAL) } : {});
  });

  await t.test('a PUBREL without its packet identifier is refused (known bug: todo)', async (t) => {
    const peer = await MqttPeer.connect(app.port, 4);
    t.teardown(() => peer.raw.destroy());
    peer.raw.write(encodeMqttPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'no-id', clean: true, keepalive: 0 }, 4));
    await peer.next((p) => p.cmd === 'connack', 'CONNACK');
    const connackBytes = peer.raw.received;
    // PUBREL with remaining length 0, then a PINGREQ.
    peer.raw.write(Buffer.from('6200c000', 'hex'));
    await peer.raw.waitUntil(() => peer.raw.closed || peer.raw.received >= connackBytes + 4, REPLY_MS);
    const answer = peer.raw.bytes().subarray(connackBytes);
    t.comment(`after PUBREL 62 00 + PINGREQ c0 00 the gateway sent ${hex(answer)}${answer.subarray(0, 2).equals(Buffer.from('7002', 'hex')) ? ' (70 02: a PUBCOMP announcing 2 bytes it does not have; the client reads the PINGRESP d0 00 as its identifier)' : ''}`);
    t.ok(peer.raw.closed && answer.length === 0, 'the gateway closes the connection and writes nothing', peer.raw.closed ? {} : { todo: knownBug(t, 'mqtt-packet-id', TODO_PACKET_ID) });
  });

  await t.test('CONNACK is the first packet the gateway sends (MQTT-3.2.0-1)', async (t) => {
    for (const [name, after] of [
      ['PINGREQ', Buffer.from([0xc0, 0x00])],
      ['PUBREL', encodeMqttPacket({ cmd: 'pubrel', messageId: 7 }, 4)],
    ] as const) {
      const peer = await MqttPeer.connect(app.port, 4);
      t.teardown(() => peer.raw.destroy());
      // CONNECT and the next packet in one write, as a pipelining client sends them.
      peer.raw.write(Buffer.concat([encodeMqttPacket({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: `order-${name}`, clean: true, keepalive: 0 }, 4), after]));
      await peer.next((p) => p.cmd === 'connack', 'CONNACK');
      await peer.raw.waitUntil(() => peer.poll().length >= 2, REPLY_MS);
      const order = peer.poll().map((p) => p.cmd);
      t.equal(order[0], 'connack', `CONNECT + ${name} in one write: ${order.join(', ')}`, order[0] === 'connack' ? {} : { todo: knownBug(t, 'mqtt-connack-order', TODO_CONNACK_ORDER) });
    }
  });

  const good = await goodClient(t, app.port);
  await good.ask();
  const rssBefore = rssOf(app.gatewayPid);
  const outcomes = new ErrorTally();
  let n = 0;
  const check = async (): Promise<void> => {
    assert.ok(pidAlive(app.gatewayPid), `the gateway process ${app.gatewayPid} is gone:\n${app.output().slice(-4000)}`);
    assert.deepEqual(app.problems(), [], 'no process logged a crash, restart or undecodable forward');
    if (++n % 25 === 0) await good.ask();
  };

  await t.test('instead of a CONNECT', async (t) => {
    await fuzz(
      t,
      'mqtt:// first bytes',
      fc.asyncProperty(inputs(connectBytes, mqttFields, true), chunking, async (c, points) => {
        await check();
        outcomes.add(await bounded(liveCase(app, null, c.bytes, points), CASE_MS, `first bytes ${hex(c.bytes)}`));
      }),
      { numRuns: runs(LIVE_RUNS), endOnFailure: true },
    );
  });

  await t.test('after a valid CONNECT', async (t) => {
    const level = fc.constantFrom(3 as const, 4 as const, 5 as const);
    const input = level.chain((v) =>
      fc.record({
        version: fc.constant(v),
        c: inputs(sequence(v), mqttFields),
        clientId: fc.string({ maxLength: 8 }),
      }),
    );
    await fuzz(
      t,
      'mqtt:// packets after CONNECT',
      fc.asyncProperty(input, chunking, async ({ version, c, clientId }, points) => {
        await check();
        const connect = generate({ cmd: 'connect', protocolId: version === 3 ? 'MQIsdp' : 'MQTT', protocolVersion: version, clientId: `f-${clientId}`, clean: true, keepalive: 0 }, version)!;
        outcomes.add(await bounded(liveCase(app, { connect, version }, c.bytes, points), CASE_MS, `packets ${hex(c.bytes)}`));
      }),
      { numRuns: runs(LIVE_RUNS), endOnFailure: true },
    );
  });

  t.comment(`outcomes: ${outcomes.toString()}`);
  await good.ask();
  t.ok(pidAlive(app.gatewayPid), `the gateway process (pid ${app.gatewayPid}) is the one that started`);
  // Every fuzzed client is gone: the broker only knows the good client.
  let clients = await good.clients();
  for (let i = 0; i < 50 && clients > 1; i++) {
    await sleep(100);
    clients = await good.clients();
  }
  t.equal(clients, 1, 'no fuzzed client left connected (as the broker sees it)');
  const gateway = (await app.status()).find((p) => p.name === 'FuzzMqtt');
  t.equal(gateway?.pid, app.gatewayPid, 'the gateway process is the one that started (no restart)');
  t.equal(gateway?.connections, 1, 'the gateway holds only the good client');
  const rssAfter = rssOf(app.gatewayPid);
  t.comment(`gateway rss ${(rssBefore / 1048576).toFixed(0)} → ${(rssAfter / 1048576).toFixed(0)} MB`);
  t.ok(rssAfter - rssBefore < 64 * 1024 * 1024, 'gateway memory within 64 MB of before');
  t.same(app.problems(), [], 'no crash, restart, unhandled error or undecodable forward in the logs');
});

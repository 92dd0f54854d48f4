/**
 * End to end, the MQTT hub as a person gets it (`create-gatewayworker-app --template mqtt-hub`,
 * installed, `tsx start.ts start` on free ports, 2 gateways of each kind and 2 workers), driven by
 * clients no one here wrote: `mosquitto_pub` / `mosquitto_sub` over TCP, the `mqtt` npm client
 * over TCP and WebSocket, MQTT 3.1.1 and 5.0, and a raw mqtt-packet client for what polite
 * clients never do. This file: wildcards, retained messages, presence, auth and ACL refusals,
 * take-over by client id, malformed input, keep-alive, last will and its MQTT 5 delay,
 * subscription identifiers, and the HTTP API's checks when it has no ADMIN_TOKEN.
 */
import { request as httpRequest } from 'node:http';
import t, { type Test } from 'tap';
import type { IClientOptions } from 'mqtt';
import type { IDisconnectPacket } from 'mqtt-packet';
import {
  addDevice,
  closedWithin,
  dataDirIn,
  generateHub,
  hubEnv,
  mosqPub,
  mosqSub,
  mqttJs,
  mqttJsChild,
  mqttJsRefused,
  nextPacket,
  noMosquitto,
  publish,
  rawClient,
  rawConnect,
  sleep,
  startHub,
  subscribe,
  subscribedOrThrow,
  tempDir,
  type Device,
  type Hub,
  type MosqOptions,
  type MqttJs,
  type Queue,
  type Received,
} from './mqtt-helpers.ts';

// Generating and installing is ~20 s of it; next to other test files it can take twice that.
t.setTimeout(240_000);

let hub: Hub;
const dev: Record<string, Device> = {};
const IDS = ['alpha', 'beta', 'gamma'];

t.before(async () => {
  const dir = tempDir(t, 'gw-e2e-mqtt-proto-');
  const project = await generateHub(dir);
  const env = await hubEnv(dataDirIn(dir), { SHARED_TOPICS: 'broadcast/#' });
  for (const id of IDS) dev[id] = await addDevice(project, env, id);
  hub = await startHub(t, project, env);
});

/** mosquitto options of a device on the TCP port. */
const as = <T extends object>(d: Device, extra: T = {} as T): MosqOptions & T => ({ port: hub.mqttPort, user: d.id, password: d.password, ...extra });

/** An `mqtt` npm client of a device, over TCP (3.1.1 by default) or WebSocket. */
function js(t: Test, d: Device, opts: IClientOptions & { ws?: boolean } = {}): Promise<MqttJs> {
  const { ws, ...rest } = opts;
  return mqttJs(t, ws ? hub.wsUrl : hub.tcpUrl, { username: d.id, password: d.password, protocolVersion: 4, ...rest });
}

const text = (items: Received[]): string[] => items.map((m) => `${m.topic}=${m.payload}`);
const sorted = (items: string[]): string[] => [...items].sort();

/** The next `n` messages (matching) as `topic=payload`, sorted; one that does not come shows as `<missing>`. */
async function takeSorted<T extends { topic: string; payload: string }>(queue: Queue<T>, n: number, match: (m: T) => boolean = () => true): Promise<string[]> {
  const got: string[] = [];
  for (let i = 0; i < n; i++) got.push(await queue.next(match, 5000).then((m) => `${m.topic}=${m.payload}`, () => '<missing>'));
  return got.sort();
}

t.test('wildcards: + and # over TCP (mosquitto_sub, 3.1.1) and WebSocket (mqtt.js, 5.0)', { skip: noMosquitto }, async (t) => {
  const { alpha, beta } = dev;
  const plus = mosqSub(t, as(alpha!, { id: 'alpha-plus', qos: 1, topics: ['devices/alpha/+/temp'] }));
  t.same(await subscribedOrThrow(plus), [1], 'mosquitto_sub: devices/alpha/+/temp granted QoS 1');
  const multi = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-multi' });
  t.same(await subscribe(multi, ['devices/alpha/#', 'devices/alpha/+/temp'], { qos: 1 }), [1, 1], 'mqtt.js over WS (v5): # and an overlapping + filter granted');
  const shared = await js(t, beta!, { clientId: 'beta-shared' });
  t.same(await subscribe(shared, ['broadcast/#', 'broadcast/+/news'], { qos: 0 }), [0, 0], 'another device on the shared broadcast/#');

  const topics = [
    'devices/alpha/room1/temp', // + and #
    'devices/alpha/room1/hum', // # only
    'devices/alpha/a/b/temp', // # only: + is one level
    'devices/alpha/temp', // # only
    'devices/alpha', // # matches its parent level too
    'broadcast/eu/news', // broadcast/# and broadcast/+/news: one delivery
    'broadcast/eu/west/news', // broadcast/# only
    'broadcast/news', // broadcast/# only
    'broadcast', // broadcast/# matches its parent
  ];
  for (const [i, topic] of topics.entries()) {
    const r = await mosqPub(as(alpha!, { qos: 1, topic, message: `m${i}` }));
    t.equal(r.code, 0, `mosquitto_pub ${topic} exits 0${r.code === 0 ? '' : `: ${r.stdout}${r.stderr}`}`);
  }
  const plusExpected = ['devices/alpha/room1/temp=m0'];
  const multiExpected = topics.slice(0, 5).map((topic, i) => `${topic}=m${i}`);
  const sharedExpected = topics.slice(5).map((topic, i) => `${topic}=m${i + 5}`);
  t.same(await takeSorted(plus.messages, 1), plusExpected, '+ matches exactly one level');
  // devices/alpha/# also matches alpha's presence (devices/alpha/online, published by the hub at each connect): left out.
  const notPresence = (m: Received): boolean => m.topic !== 'devices/alpha/online';
  t.same(await takeSorted(multi.received, 5, notPresence), sorted(multiExpected), '# matches every level below and the parent; one delivery when two filters match');
  t.same(await takeSorted(shared.received, 4), sorted(sharedExpected), 'shared topics: one delivery per client');

  // Nothing else arrived: a marker each subscriber matches comes next.
  await mosqPub(as(alpha!, { qos: 1, topic: 'devices/alpha/end/temp', message: 'end' }));
  await mosqPub(as(alpha!, { qos: 1, topic: 'broadcast/end/news', message: 'end' }));
  t.same(await plus.messages.until((m) => m.payload === 'end'), [], 'mosquitto_sub got nothing more');
  t.same(text((await multi.received.until((m) => m.payload === 'end')).filter(notPresence)), [], 'mqtt.js (WS) got nothing more');
  t.same(text(await shared.received.until((m) => m.payload === 'end')), [], 'the shared subscriber got nothing more');
  const qos = multi.received.all.find((m) => m.topic === 'devices/alpha/room1/temp');
  t.equal(qos?.qos, 1, 'delivered at min(publish QoS 1, granted QoS 1)');
  t.equal(shared.received.all[0]?.qos, 0, 'a QoS 1 publish to a QoS 0 subscription arrives at QoS 0');
});

t.test('retained: set, delivered on subscribe, replaced, cleared by an empty payload', { skip: noMosquitto }, async (t) => {
  const { alpha } = dev;
  const topic = 'devices/alpha/state';
  let r = await mosqPub(as(alpha!, { qos: 1, topic, message: 'v1', retain: true }));
  t.equal(r.code, 0, 'mosquitto_pub -r v1');
  const live = await js(t, alpha!, { clientId: 'alpha-live' });
  const first = await subscribe(live, topic, { qos: 1 });
  t.same(first, [1]);
  const got = await live.received.next();
  t.match(got, { topic, payload: 'v1', retain: true, qos: 1 }, 'a new subscriber gets the retained message with the retain flag');

  r = await mosqPub(as(alpha!, { qos: 1, topic, message: 'v2', retain: true }));
  t.equal(r.code, 0, 'mosquitto_pub -r v2 (replaces v1)');
  const liveCopy = await live.received.next();
  t.match(liveCopy, { topic, payload: 'v2', retain: false }, 'an existing subscription gets it as a normal message (3.1.1: retain flag 0)');

  const late = mosqSub(t, as(alpha!, { id: 'alpha-late', qos: 1, topics: [topic], count: 1, timeoutSeconds: 10 }));
  await subscribedOrThrow(late);
  t.match(await late.messages.next(), { topic, payload: 'v2', retain: true }, 'mosquitto_sub after the replace: only v2, retained');
  t.equal(await late.exited, 0, 'mosquitto_sub -C 1 exits 0 after one message');

  // v5 over WebSocket, through a wildcard: every retained topic below, each once.
  await mosqPub(as(alpha!, { qos: 0, topic: 'devices/alpha/r/1', message: 'one', retain: true }));
  await mosqPub(as(alpha!, { qos: 2, topic: 'devices/alpha/r/2', message: 'two', retain: true }));
  const wild = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-wild' });
  await subscribe(wild, 'devices/alpha/r/+', { qos: 2 });
  const two = [await wild.received.next(), await wild.received.next()];
  t.same(sorted(text(two)), ['devices/alpha/r/1=one', 'devices/alpha/r/2=two'], 'a wildcard subscription gets every matching retained message');
  t.same(two.map((m) => m.retain), [true, true], 'both with the retain flag');
  t.same(sorted(two.map((m) => `${m.payload}:q${m.qos}`)), ['one:q0', 'two:q2'], 'each at min(stored QoS, granted QoS)');

  r = await mosqPub(as(alpha!, { qos: 1, topic, message: null, retain: true }));
  t.equal(r.code, 0, 'mosquitto_pub -r -n clears it');
  const cleared = await live.received.next();
  t.match(cleared, { topic, payload: '' }, 'the live subscriber sees the empty message');
  const after = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-after' });
  await subscribe(after, [topic, 'devices/alpha/r/+'], { qos: 1 });
  await mosqPub(as(alpha!, { qos: 1, topic, message: 'not retained' }));
  const before = await after.received.until((m) => m.payload === 'not retained');
  t.same(sorted(text(before)), ['devices/alpha/r/1=one', 'devices/alpha/r/2=two'], 'after the clear a new subscriber gets no retained message for that topic');
  t.equal(after.received.all.find((m) => m.payload === 'not retained')?.retain, false, 'a publish without -r is not retained');
});

t.test('auth: wrong or missing credentials are refused with the right code', { skip: noMosquitto }, async (t) => {
  const { alpha } = dev;
  const wrong311 = await mosqPub(as(alpha!, { password: 'not-the-password', topic: 'devices/alpha/x', message: 'x' }));
  t.not(wrong311.code, 0, 'mosquitto_pub with a wrong password exits non-zero (3.1.1)');
  t.match(wrong311.stdout + wrong311.stderr, /received CONNACK \(4\)/, 'CONNACK return code 4 (bad user name or password)');
  const wrong5 = await mosqPub(as(alpha!, { version: 5, password: 'not-the-password', topic: 'devices/alpha/x', message: 'x' }));
  t.not(wrong5.code, 0, 'mosquitto_pub with a wrong password exits non-zero (5.0)');
  t.match(wrong5.stdout + wrong5.stderr, /received CONNACK \(134\)/, 'CONNACK reason 0x86 (bad user name or password)');
  const unknown = await mosqPub({ port: hub.mqttPort, user: 'nobody', password: 'x', topic: 'devices/nobody/x', message: 'x' });
  t.not(unknown.code, 0, 'an unknown device is refused');
  t.match(unknown.stdout + unknown.stderr, /received CONNACK \(4\)/, 'with the same code as a wrong password');
  const anonymous = await mosqPub({ port: hub.mqttPort, topic: 'broadcast/x', message: 'x' });
  t.not(anonymous.code, 0, 'no credentials: refused (ALLOW_ANONYMOUS is off)');
  t.match(anonymous.stdout + anonymous.stderr, /received CONNACK \((4|5)\)/, 'CONNACK 4 or 5');

  const refusedWs = await mqttJsRefused(hub.wsUrl, { username: 'alpha', password: 'nope', protocolVersion: 5 });
  t.equal(refusedWs.code, 0x86, `mqtt.js over WS (v5) refused with 0x86: ${refusedWs.message}`);
  const refusedTcp = await mqttJsRefused(hub.tcpUrl, { username: 'alpha', password: 'nope', protocolVersion: 4 });
  t.equal(refusedTcp.code, 4, `mqtt.js over TCP (3.1.1) refused with 4: ${refusedTcp.message}`);

  const { raw, connack } = await rawConnect(t, { port: hub.mqttPort }, { clientId: 'raw-bad', username: 'alpha', password: Buffer.from('nope') });
  t.equal(connack.returnCode, 4, 'raw: CONNACK return code 4');
  t.equal(connack.sessionPresent, false, 'session present 0 with a refusal');
  await closedWithin(raw, 3000);
  t.pass('and the hub closes the connection');

  const ok = await mosqPub(as(alpha!, { topic: 'devices/alpha/x', message: 'x' }));
  t.equal(ok.code, 0, `the right password works${ok.code === 0 ? '' : `: ${ok.stdout}${ok.stderr}`}`);
});

t.test('ACL: another device\'s topics, #, and $-topics are refused', { skip: noMosquitto }, async (t) => {
  const { alpha, beta } = dev;
  const a3 = await js(t, alpha!, { clientId: 'alpha-acl3' });
  t.same(await subscribe(a3, 'devices/beta/#', { qos: 1 }), [0x80], '3.1.1: SUBACK 0x80 for devices/beta/#');
  t.same(await subscribe(a3, ['devices/alpha/ok', 'devices/+/telemetry', '#', '$SYS/#'], { qos: 1 }), [1, 0x80, 0x80, 0x80], 'per filter: own topic granted, devices/+/telemetry, # and $SYS/# refused');
  const a5 = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-acl5' });
  t.same(await subscribe(a5, 'devices/beta/cmd', { qos: 1 }), [0x87], '5.0: SUBACK 0x87 (not authorized)');
  const mosq = mosqSub(t, as(alpha!, { id: 'alpha-aclm', topics: ['devices/beta/#'] }));
  t.same(await mosq.subscribed, [128], 'mosquitto_sub sees 128 for devices/beta/#');

  // Publishing to another device's topic: not delivered.
  const b = mosqSub(t, as(beta!, { id: 'beta-acl', qos: 1, topics: ['devices/beta/#'] }));
  await subscribedOrThrow(b);
  const bad = await mosqPub(as(alpha!, { qos: 1, topic: 'devices/beta/cmd', message: 'from alpha' }));
  t.equal(bad.code, 0, 'mosquitto_pub (3.1.1) to a forbidden topic still gets its PUBACK: 3.1.1 cannot refuse a PUBLISH');
  await publish(a3, 'devices/beta/cmd', 'from alpha mqtt.js', { qos: 0 });
  await publish(a3, '$SYS/hub', 'fake', { qos: 0 });
  const v5 = await rawConnect(t, { port: hub.mqttPort }, { clientId: 'alpha-acl-raw5', username: 'alpha', password: Buffer.from(alpha!.password) }, 5);
  t.equal(v5.connack.reasonCode, 0, 'raw v5 connected');
  v5.raw.send({ cmd: 'publish', topic: 'devices/beta/cmd', payload: Buffer.from('from raw v5'), qos: 1, messageId: 7, retain: false, dup: false });
  const puback = (await nextPacket(v5.raw, 'puback').catch(() => null)) as { messageId?: number; reasonCode?: number } | null;
  t.same([puback?.messageId, puback?.reasonCode], [7, 0x87], '5.0: a refused QoS 1 publish gets PUBACK 0x87 (not authorized)');
  const r = await mosqPub(as(beta!, { qos: 1, topic: 'devices/beta/marker', message: 'marker' }));
  t.equal(r.code, 0);
  const before = await b.messages.until((m) => m.payload === 'marker');
  t.same(before.filter((m) => m.payload.startsWith('from') || m.payload === 'fake').map((m) => m.payload), [], 'beta got nothing alpha published to its topics');

  // The refused publish did not cost alpha its connection.
  await subscribe(a3, 'devices/alpha/still', { qos: 1 });
  await publish(a3, 'devices/alpha/still', 'here', { qos: 1 });
  t.match(await a3.received.next((m) => m.topic === 'devices/alpha/still'), { payload: 'here' }, 'alpha is still connected and served');
});

t.test('take-over: a second connection with the same client id closes the first', async (t) => {
  const { alpha } = dev;
  // 3.1.1: mqtt.js over TCP, then mosquitto_sub with the same id.
  const old = await js(t, alpha!, { clientId: 'alpha-same' });
  await subscribe(old, 'devices/alpha/take', { qos: 1 });
  if (!noMosquitto) {
    const fresh = mosqSub(t, as(alpha!, { id: 'alpha-same', qos: 1, topics: ['devices/alpha/take'] }));
    await subscribedOrThrow(fresh);
    const closedIn = await Promise.race([old.closed.then(() => 'closed'), sleep(5000).then(() => 'open')]);
    t.equal(closedIn, 'closed', 'the old connection (3.1.1) is closed');
    t.notOk(old.packets.some((p) => p.cmd === 'disconnect'), 'without a DISCONNECT (3.1.1 servers send none)');
    await mosqPub(as(alpha!, { qos: 1, id: 'alpha-pub', topic: 'devices/alpha/take', message: 'to the new one' }));
    t.match(await fresh.messages.next(), { payload: 'to the new one' }, 'the new connection works');
    t.equal(fresh.proc.exitCode, null, 'and stays connected');
  }

  // 5.0: the old connection gets DISCONNECT 0x8E (session taken over), TCP then WebSocket.
  const first = await rawConnect(t, { port: hub.mqttPort }, { clientId: 'alpha-same-5', username: 'alpha', password: Buffer.from(alpha!.password) }, 5);
  t.equal(first.connack.reasonCode, 0);
  const second = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-same-5' });
  const disconnect = (await nextPacket(first.raw, 'disconnect').catch((error: Error) => ({ cmd: 'none', error: error.message }))) as IDisconnectPacket;
  t.equal(disconnect.reasonCode, 0x8e, `the old v5 connection gets DISCONNECT 0x8E (${JSON.stringify(disconnect)})`);
  await closedWithin(first.raw, 3000);
  t.pass('and is closed');
  t.same(await subscribe(second, 'devices/alpha/take5', { qos: 1 }), [1]);
  await publish(second, 'devices/alpha/take5', 'hello', { qos: 1 });
  t.match(await second.received.next(), { payload: 'hello' }, 'the new one (WS) works');
});

t.test('malformed input closes that connection only', async (t) => {
  const { alpha } = dev;
  const bystander = await js(t, alpha!, { clientId: 'alpha-bystander' });
  await subscribe(bystander, 'devices/alpha/alive', { qos: 1 });
  const bystanderWs = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-bystander-ws' });
  await subscribe(bystanderWs, 'devices/alpha/alive', { qos: 1 });

  const cases: Array<[string, (raw: Awaited<ReturnType<typeof rawClient>>) => void, 'tcp' | 'ws']> = [
    ['HTTP on the MQTT port', (raw) => raw.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), 'tcp'],
    ['bytes of packet type 0', (raw) => raw.write(Buffer.from([0x00, 0x01, 0x02, 0x03])), 'tcp'],
    ['a first packet that is not CONNECT (SUBSCRIBE)', (raw) => raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'devices/alpha/#', qos: 0 }] }), 'tcp'],
    ['a first packet that is not CONNECT (PUBLISH)', (raw) => raw.send({ cmd: 'publish', topic: 'devices/alpha/alive', payload: Buffer.from('sneaky'), qos: 0, retain: false, dup: false }), 'tcp'],
    ['a remaining length of 268 MB', (raw) => raw.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f])), 'tcp'],
    ['a five-byte remaining length', (raw) => raw.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])), 'tcp'],
    ['a CONNECT with a wrong protocol name', (raw) => raw.write(Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x58, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00])), 'tcp'],
    ['garbage in a WebSocket frame', (raw) => raw.write(Buffer.from([0x00, 0xde, 0xad, 0xbe, 0xef])), 'ws'],
    ['a first packet that is not CONNECT over WebSocket', (raw) => raw.send({ cmd: 'pingreq' }), 'ws'],
  ];
  for (const [what, send, transport] of cases) {
    const raw = await rawClient(t, transport === 'tcp' ? { port: hub.mqttPort } : { wsUrl: hub.wsUrl });
    send(raw);
    const at = await closedWithin(raw, 3000).catch((error: Error) => error.message);
    t.type(at, 'number', `${what}: connection closed (${transport})`);
    t.same(raw.packets.all.map((p) => p.cmd), [], `${what}: nothing was answered`);
  }

  // After a valid CONNECT: a second CONNECT, and (v5) a malformed PUBLISH get DISCONNECT with a reason first.
  const twice = await rawConnect(t, { port: hub.mqttPort }, { clientId: 'alpha-twice', username: 'alpha', password: Buffer.from(alpha!.password) }, 5);
  twice.raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 60, clientId: 'alpha-twice', username: 'alpha', password: Buffer.from(alpha!.password) });
  const d1 = (await nextPacket(twice.raw, 'disconnect').catch(() => null)) as IDisconnectPacket | null;
  t.ok(d1 !== null && (d1.reasonCode ?? 0) >= 0x80, `v5 second CONNECT: DISCONNECT with reason ${d1?.reasonCode} (protocol error 0x82 expected)`);
  t.type(await closedWithin(twice.raw, 3000).catch(() => 'open'), 'number', 'then closed');

  const broken = await rawConnect(t, { port: hub.mqttPort }, { clientId: 'alpha-broken', username: 'alpha', password: Buffer.from(alpha!.password) }, 5);
  // PUBLISH QoS 0 whose topic length says 10 bytes but only 2 follow (a whole packet by its remaining length).
  broken.raw.write(Buffer.from([0x30, 0x05, 0x00, 0x0a, 0x61, 0x62, 0x00]));
  const d2 = (await nextPacket(broken.raw, 'disconnect').catch(() => null)) as IDisconnectPacket | null;
  t.ok(d2 !== null && (d2.reasonCode ?? 0) >= 0x80, `v5 malformed PUBLISH: DISCONNECT with reason ${d2?.reasonCode} (0x81 expected)`);
  t.type(await closedWithin(broken.raw, 3000).catch(() => 'open'), 'number', 'then closed');

  const v4 = await rawConnect(t, { port: hub.mqttPort }, { clientId: 'alpha-broken4', username: 'alpha', password: Buffer.from(alpha!.password) }, 4);
  v4.raw.write(Buffer.from([0x30, 0x05, 0x00, 0x0a, 0x61, 0x62, 0x00]));
  t.type(await closedWithin(v4.raw, 3000).catch(() => 'open'), 'number', '3.1.1 malformed PUBLISH: closed');
  t.same(v4.raw.packets.all.map((p) => p.cmd), ['connack'], '3.1.1: no DISCONNECT from a server');

  // The others did not notice.
  t.equal(bystander.client.connected && bystanderWs.client.connected, true, 'the bystanders (TCP and WS) are still connected');
  const sneaky = bystander.received.all.filter((m) => m.payload === 'sneaky');
  t.same(sneaky, [], 'the PUBLISH sent without CONNECT was not delivered');
  await publish(bystander, 'devices/alpha/alive', 'still here', { qos: 1 });
  t.match(await bystander.received.next((m) => m.payload === 'still here'), { topic: 'devices/alpha/alive' }, 'TCP bystander served');
  t.match(await bystanderWs.received.next((m) => m.payload === 'still here'), { topic: 'devices/alpha/alive' }, 'WS bystander served');
});

t.test('keep-alive: a client silent for 1.5 × its keep-alive is closed and its will published', async (t) => {
  const { alpha } = dev;
  const watch = await js(t, alpha!, { clientId: 'alpha-ka-watch' });
  await subscribe(watch, 'devices/alpha/ka/#', { qos: 1 });
  const silent = await rawConnect(t, { port: hub.mqttPort }, {
    clientId: 'alpha-silent',
    username: 'alpha',
    password: Buffer.from(alpha!.password),
    keepalive: 1,
    will: { topic: 'devices/alpha/ka/will', payload: Buffer.from('silent-gone'), qos: 1, retain: false },
  });
  const connackAt = Date.now();
  t.equal(silent.connack.returnCode, 0, 'connected with keep-alive 1 s');
  // A talking client with the same keep-alive stays.
  const talker = await rawConnect(t, { wsUrl: hub.wsUrl }, { clientId: 'alpha-talker', username: 'alpha', password: Buffer.from(alpha!.password), keepalive: 1 });
  t.equal(talker.connack.returnCode, 0, 'a second client (WS) with keep-alive 1 s');
  const pinger = setInterval(() => talker.raw.send({ cmd: 'pingreq' }), 500);
  t.teardown(() => clearInterval(pinger));

  const closedAt = await closedWithin(silent.raw, 5000);
  const after = closedAt - connackAt;
  t.ok(after >= 1400 && after <= 3000, `the silent client was closed after ${after} ms (1.5 × 1 s expected)`);
  t.match(await watch.received.next((m) => m.topic === 'devices/alpha/ka/will', 3000), { payload: 'silent-gone' }, 'its will was published');
  await sleep(Math.max(0, 3000 - (Date.now() - connackAt)));
  clearInterval(pinger);
  t.equal(talker.raw.isClosed(), false, 'the client that sends PINGREQ is still connected after 3 s');
  t.ok(talker.raw.packets.all.filter((p) => p.cmd === 'pingresp').length >= 4, `and got PINGRESPs (${talker.raw.packets.all.filter((p) => p.cmd === 'pingresp').length})`);
});

t.test('last will on kill -9; none after a clean DISCONNECT', async (t) => {
  const { alpha, beta } = dev;
  const watch = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-will-watch' });
  await subscribe(watch, 'devices/alpha/will/#', { qos: 1 });

  if (!noMosquitto) {
    const doomed = mosqSub(t, as(alpha!, { id: 'alpha-doomed', topics: ['devices/alpha/doomed'], will: { topic: 'devices/alpha/will/mosq', payload: 'mosq-died', qos: 1 } }));
    await subscribedOrThrow(doomed);
    doomed.kill('SIGKILL');
    t.equal(await doomed.exited, 'SIGKILL', 'mosquitto_sub killed with -9');
    t.match(await watch.received.next((m) => m.topic === 'devices/alpha/will/mosq', 5000), { payload: 'mosq-died', qos: 1 }, 'its will arrives (QoS 1)');

    // A clean exit (mosquitto_sub -C 1 sends DISCONNECT): no will.
    const polite = mosqSub(t, as(alpha!, { id: 'alpha-polite', topics: ['devices/alpha/polite'], count: 1, will: { topic: 'devices/alpha/will/polite', payload: 'polite-will' } }));
    await subscribedOrThrow(polite);
    await mosqPub(as(alpha!, { topic: 'devices/alpha/polite', message: 'bye' }));
    t.equal(await polite.exited, 0, 'mosquitto_sub -C 1 exits cleanly');
    await sleep(300);
    await mosqPub(as(alpha!, { qos: 1, topic: 'devices/alpha/will/marker', message: 'marker' }));
    t.same(text(await watch.received.until((m) => m.payload === 'marker')), [], 'no will after a clean DISCONNECT');
  }

  // An mqtt.js client (v5 over WebSocket) in a child process, with a retained will.
  const child = await mqttJsChild(t, hub.wsUrl, {
    username: 'beta',
    password: beta!.password,
    protocolVersion: 5,
    clientId: 'beta-child',
    will: { topic: 'devices/beta/will', payload: 'child-died', qos: 1, retain: true },
  } as IClientOptions);
  const betaWatch = await js(t, beta!, { clientId: 'beta-will-watch' });
  await subscribe(betaWatch, 'devices/beta/will', { qos: 1 });
  child.kill('SIGKILL');
  t.match(await betaWatch.received.next((m) => m.payload === 'child-died', 5000), { topic: 'devices/beta/will', qos: 1 }, 'the will of a killed mqtt.js (WS, v5) client arrives');
  const late = await js(t, beta!, { clientId: 'beta-will-late' });
  await subscribe(late, 'devices/beta/will', { qos: 1 });
  t.match(await late.received.next(), { payload: 'child-died', retain: true }, 'a retained will is kept as the retained message');
  await publish(late, 'devices/beta/will', '', { qos: 1, retain: true });
});

t.test('MQTT 5 subscription identifiers reach retained messages sent at SUBSCRIBE', async (t) => {
  const { alpha } = dev;
  const publisher = await js(t, alpha!, { clientId: 'alpha-sid-pub' });
  await publish(publisher, 'devices/alpha/sid/state', 'retained-state', { qos: 1, retain: true });
  t.teardown(() => publisher.client.publishAsync('devices/alpha/sid/state', '', { qos: 1, retain: true }).then(() => {}, () => {}));
  const sub = await js(t, alpha!, { ws: true, protocolVersion: 5, clientId: 'alpha-sid' });
  await sub.client.subscribeAsync('devices/alpha/sid/+', { qos: 1, properties: { subscriptionIdentifier: 9 } });
  const retained = await sub.received.next((m) => m.topic === 'devices/alpha/sid/state');
  t.equal(retained.retain, true, 'the retained message');
  t.same([retained.properties?.subscriptionIdentifier].flat(), [9], 'carries the subscription identifier of its SUBSCRIBE');
  await publish(publisher, 'devices/alpha/sid/live', 'live', { qos: 1 });
  const live = await sub.received.next((m) => m.topic === 'devices/alpha/sid/live');
  t.same([live.properties?.subscriptionIdentifier].flat(), [9], 'as a live one does');
});

t.test('MQTT 5 will delay: the will comes after the delay, and not at all when the client is back first', async (t) => {
  const { alpha } = dev;
  const watch = await js(t, alpha!, { clientId: 'alpha-wd-watch' });
  await subscribe(watch, 'devices/alpha/wd/#', { qos: 1 });
  const withWill = (clientId: string, delay: number) =>
    rawConnect(
      t,
      { port: hub.mqttPort },
      {
        clientId,
        username: 'alpha',
        password: Buffer.from(alpha!.password),
        clean: false,
        properties: { sessionExpiryInterval: 60 },
        will: { topic: `devices/alpha/wd/${clientId}`, payload: Buffer.from(`${clientId}-gone`), qos: 1, retain: false, properties: { willDelayInterval: delay } },
      },
      5,
    );

  const late = await withWill('late', 2);
  t.equal(late.connack.reasonCode, 0);
  const lostAt = Date.now();
  late.raw.destroy();
  const will = await watch.received.next((m) => m.topic === 'devices/alpha/wd/late', 15_000);
  const after = Date.now() - lostAt;
  t.equal(will.payload, 'late-gone', 'the will arrives');
  t.ok(after >= 1500, `not before its 2 s delay (${after} ms after the connection was lost)`);

  const back = await withWill('back', 3);
  back.raw.destroy();
  await sleep(300);
  const again = await withWill('back', 3);
  t.equal(again.connack.sessionPresent, true, 'back within the delay, session present');
  await sleep(5000);
  await publish(watch, 'devices/alpha/wd/marker', 'marker', { qos: 1 });
  t.same(text(await watch.received.until((m) => m.payload === 'marker')).filter((m) => m.includes('back-gone')), [], 'no will: the client came back before the delay');
  again.raw.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
});

t.test('the HTTP API without ADMIN_TOKEN answers only requests addressed to localhost', async (t) => {
  const request = (method: string, headers: Record<string, string>, body?: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port: hub.wsPort, method, path: '/api/devices' + (method === 'POST' ? '/alpha/command' : ''), headers }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const rebound = await request('GET', { Host: `evil.example:${hub.wsPort}` });
  t.equal(rebound.status, 403, 'Host of another name (DNS rebinding): 403');
  t.match(JSON.parse(rebound.body), { error: /localhost or a name in API_HOSTS/ });
  t.equal((await request('GET', { Host: `localhost:${hub.wsPort}` })).status, 200, 'Host localhost: 200');
  t.equal((await request('GET', { Host: `127.0.0.1:${hub.wsPort}` })).status, 200, 'Host 127.0.0.1: 200');
  const form = await request('POST', { Host: `localhost:${hub.wsPort}`, 'Content-Type': 'text/plain' }, 'reboot');
  t.equal(form.status, 415, 'a POST that is not JSON: 415');
  const csrf = await request('POST', { Host: `localhost:${hub.wsPort}`, 'Content-Type': 'application/json', Origin: 'http://evil.example' }, '{}');
  t.equal(csrf.status, 403, 'a POST from another origin: 403');
  const ok = await request('POST', { Host: `localhost:${hub.wsPort}`, 'Content-Type': 'application/json', Origin: `http://localhost:${hub.wsPort}` }, '{}');
  t.equal(ok.status, 202, 'from its own origin: 202');
});

/**
 * End to end, the MQTT hub's delivery promises (see mqtt-hub-protocol.test.ts for the setup):
 * persistent sessions (clean session 0 in 3.1.1, session expiry in 5.0) keep subscriptions and
 * QoS 1/2 messages for an offline device; QoS 2 arrives exactly once, also across a reconnect;
 * a message sent but never acknowledged is sent again when the device returns, with its packet id,
 * DUP set and its MQTT 5 properties, and a QoS 2 message the device received gets only its PUBREL
 * again (MQTT §4.4);
 * the device's own QoS 2 PUBLISH resent after a reconnect is delivered once; retained messages
 * and offline sessions survive a restart of the hub.
 */
import t, { type Test } from 'tap';
import type { IClientOptions } from 'mqtt';
import type { IPublishPacket, IPubrelPacket } from 'mqtt-packet';
import {
  addDevice,
  dataDirIn,
  generateHub,
  hubEnv,
  mosqPub,
  mosqSub,
  mqttJs,
  nextPacket,
  noMosquitto,
  publish,
  rawConnect,
  sleep,
  startHub,
  subscribe,
  subscribedOrThrow,
  tempDir,
  within,
  type Device,
  type Hub,
  type MosqOptions,
  type MqttJs,
  type RawClient,
  type Received,
} from './mqtt-helpers.ts';

t.setTimeout(240_000);

let hub: Hub;
let project = '';
let env: Record<string, string>;
const dev: Record<string, Device> = {};

t.before(async () => {
  const dir = tempDir(t, 'gw-e2e-mqtt-sess-');
  project = await generateHub(dir);
  env = await hubEnv(dataDirIn(dir));
  for (const id of ['carol', 'dave']) dev[id] = await addDevice(project, env, id);
  hub = await startHub(t, project, env);
});

const as = <T extends object>(d: Device, extra: T = {} as T): MosqOptions & T => ({ port: hub.mqttPort, user: d.id, password: d.password, ...extra });

function js(t: Test, d: Device, opts: IClientOptions & { ws?: boolean } = {}): Promise<MqttJs> {
  const { ws, ...rest } = opts;
  return mqttJs(t, ws ? hub.wsUrl : hub.tcpUrl, { username: d.id, password: d.password, protocolVersion: 4, ...rest });
}

/** payload → how many times it arrived. */
function counts(items: Received[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of items) out[m.payload] = (out[m.payload] ?? 0) + 1;
  return out;
}

/** Ends a client with a DISCONNECT and waits until the hub has seen it close. */
async function leave(m: MqttJs): Promise<void> {
  await m.client.endAsync();
  await m.closed;
  // The hub closes the session in the store asynchronously (worker → store); give it a moment.
  await sleep(300);
}

/**
 * The persistent-session round for one client kind: subscribe with a persistent session, leave,
 * have messages published at QoS 0/1/2, come back without subscribing, check what arrived.
 */
async function persistentRound(t: Test, opts: { label: string; ws: boolean; version: 4 | 5; clientId: string; topic: string }): Promise<void> {
  const { carol } = dev;
  const session: IClientOptions = opts.version === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false };
  const first = await js(t, carol!, { ws: opts.ws, protocolVersion: opts.version, clientId: opts.clientId, ...session });
  t.equal(first.connack.sessionPresent, false, `${opts.label}: a new session (session present 0)`);
  t.same(await subscribe(first, [opts.topic, `${opts.topic}/q1`], { qos: 2 }), [2, 2], 'subscribed at QoS 2');
  // A subscription at QoS 1: a QoS 2 publish reaches it at QoS 1.
  t.same(await subscribe(first, `${opts.topic}/low`, { qos: 1 }), [1]);
  await leave(first);

  // While it is away, carol publishes from another connection (only she may use her topics).
  const publisher = await js(t, carol!, { clientId: `${opts.clientId}-pub` });
  for (let i = 1; i <= 3; i++) await publish(publisher, opts.topic, `q1-${i}`, { qos: 1 });
  for (let i = 1; i <= 3; i++) await publish(publisher, opts.topic, `q2-${i}`, { qos: 2 });
  await publish(publisher, `${opts.topic}/low`, 'q2-to-q1', { qos: 2 });

  const back = await js(t, carol!, { ws: opts.ws, protocolVersion: opts.version, clientId: opts.clientId, ...session });
  t.equal(back.connack.sessionPresent, true, `${opts.label}: back with session present 1`);
  // No SUBSCRIBE now: the session's subscriptions deliver.
  await back.received.wait(() => (back.received.items.length >= 7 ? true : undefined), 5000, '7 queued messages');
  const got = counts(back.received.items);
  t.same(Object.keys(got).sort(), ['q1-1', 'q1-2', 'q1-3', 'q2-1', 'q2-2', 'q2-3', 'q2-to-q1'], 'every QoS 1 and 2 message published meanwhile arrives');
  t.same([got['q2-1'], got['q2-2'], got['q2-3']], [1, 1, 1], 'QoS 2: each exactly once');
  t.ok(['q1-1', 'q1-2', 'q1-3'].every((k) => got[k]! >= 1), 'QoS 1: each at least once');
  t.same(
    back.received.items.filter((m) => m.payload.startsWith('q1-')).map((m) => m.payload),
    ['q1-1', 'q1-2', 'q1-3'],
    'in the order they were published',
  );
  t.equal(back.received.items.find((m) => m.payload === 'q2-to-q1')?.qos, 1, 'at min(publish QoS, granted QoS)');
  t.equal(back.received.items.find((m) => m.payload === 'q2-1')?.qos, 2);
  back.received.drain();

  // The subscriptions are still there once back.
  await publish(publisher, `${opts.topic}/q1`, 'live', { qos: 1 });
  t.match(await back.received.next(), { payload: 'live', topic: `${opts.topic}/q1` }, 'the kept subscriptions deliver live messages too');
  await leave(back);

  // A clean session drops all that.
  await publish(publisher, opts.topic, 'for nobody', { qos: 1 });
  const clean = await js(t, carol!, { ws: opts.ws, protocolVersion: opts.version, clientId: opts.clientId, clean: true });
  t.equal(clean.connack.sessionPresent, false, 'a clean session: session present 0');
  await publish(publisher, opts.topic, 'after clean', { qos: 1 });
  await sleep(500);
  t.same(clean.received.all.map((m) => m.payload), [], 'no queued message and no old subscription');
}

t.test('persistent session, 3.1.1 over TCP (mqtt.js): QoS 1/2 kept while offline', (t) =>
  persistentRound(t, { label: '3.1.1 TCP', ws: false, version: 4, clientId: 'carol-p3', topic: 'devices/carol/p3' }),
);

t.test('persistent session, 5.0 over WebSocket (mqtt.js, session expiry 300 s)', (t) =>
  persistentRound(t, { label: '5.0 WS', ws: true, version: 5, clientId: 'carol-p5', topic: 'devices/carol/p5' }),
);

t.test('5.0 without a session expiry keeps nothing', async (t) => {
  const { carol } = dev;
  const first = await js(t, carol!, { ws: true, protocolVersion: 5, clientId: 'carol-x0', clean: false });
  await subscribe(first, 'devices/carol/x0', { qos: 1 });
  await leave(first);
  await mosqPub(as(carol!, { qos: 1, topic: 'devices/carol/x0', message: 'gone' }));
  const back = await js(t, carol!, { ws: true, protocolVersion: 5, clientId: 'carol-x0', clean: false });
  t.equal(back.connack.sessionPresent, false, 'session expiry 0: the session ended with the connection');
  await sleep(500);
  t.same(back.received.all.map((m) => m.payload), [], 'nothing queued');
});

t.test('persistent session with mosquitto_sub -c (3.1.1 and 5.0)', { skip: noMosquitto }, async (t) => {
  const { carol } = dev;
  for (const version of [4, 5] as const) {
    const id = `carol-mosq-${version}`;
    const topic = `devices/carol/mosq${version}`;
    const opts = as(carol!, { version, id, qos: 2, persistent: true, ...(version === 5 ? { sessionExpiry: 300 } : {}) });
    const first = mosqSub(t, { ...opts, topics: [topic] });
    await subscribedOrThrow(first);
    first.kill('SIGINT'); // mosquitto_sub disconnects cleanly on SIGINT
    await first.exited;
    await sleep(300);
    for (let i = 1; i <= 3; i++) {
      const r = await mosqPub(as(carol!, { version, qos: (i === 1 ? 1 : 2) as 1 | 2, topic, message: `offline-${i}` }));
      t.equal(r.code, 0, `mosquitto_pub offline-${i}`);
    }
    // Back with the same id and -c. -C 4 -W 2: it waits for a fourth message that must not come,
    // and -W ends it (non-zero) 2 s after it connected.
    const back = mosqSub(t, { ...opts, topics: [topic], count: 4, timeoutSeconds: 2 });
    const code = await back.exited;
    const payloads = back.messages.all.map((m) => m.payload);
    t.same([...payloads].sort(), ['offline-1', 'offline-2', 'offline-3'], `v${version === 4 ? '3.1.1' : '5.0'}: all three arrive, each once (output: ${payloads.join(',')})`);
    t.match(back.output(), /received CONNACK \(0\)/, 'connected');
    t.not(code, 0, 'and no fourth message before -W ends it');
  }
});

/** A raw client of carol with a persistent session. */
async function rawCarol(t: Test, clientId: string, version: 4 | 5 = 4): Promise<{ raw: RawClient; sessionPresent: boolean }> {
  const { raw, connack } = await rawConnect(
    t,
    { port: hub.mqttPort },
    { clientId, username: 'carol', password: Buffer.from(dev.carol!.password), clean: false, ...(version === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}) },
    version,
  );
  if ((connack.returnCode ?? connack.reasonCode ?? 0) !== 0) throw new Error(`refused: ${JSON.stringify(connack)}`);
  return { raw, sessionPresent: connack.sessionPresent };
}

const isPublish = (payload: string) => (p: { cmd: string }): boolean => p.cmd === 'publish' && String((p as IPublishPacket).payload) === payload;

t.test('in flight: a QoS 1 message never acknowledged is sent again on reconnect, same packet id, DUP', async (t) => {
  const topic = 'devices/carol/inflight1';
  const a = await rawCarol(t, 'carol-if1');
  a.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] });
  t.same((await nextPacket(a.raw, 'suback') as { granted: number[] }).granted, [1], 'raw client subscribed at QoS 1');
  const publisher = await js(t, dev.carol!, { clientId: 'carol-if1-pub' });
  // Two acknowledged first, so the packet id of the third is not the one a new connection starts with.
  for (const warm of ['warm-1', 'warm-2']) {
    await publish(publisher, topic, warm, { qos: 1 });
    a.raw.send({ cmd: 'puback', messageId: ((await nextPacket(a.raw, isPublish(warm))) as IPublishPacket).messageId! });
  }
  await publish(publisher, topic, 'unacked-1', { qos: 1 });
  const first = (await nextPacket(a.raw, isPublish('unacked-1'))) as IPublishPacket;
  t.equal(first.qos, 1, 'received at QoS 1 — and not acknowledged');
  t.not(first.messageId, 1, `packet id ${first.messageId}`);
  a.raw.destroy();
  await sleep(500);

  const b = await rawCarol(t, 'carol-if1');
  t.equal(b.sessionPresent, true, 'session present on return');
  const again = (await nextPacket(b.raw, isPublish('unacked-1'))) as IPublishPacket;
  t.equal(again.qos, 1, 'the unacknowledged message is sent again');
  t.equal(again.messageId, first.messageId, `with the packet id it was first sent with (${first.messageId})`);
  t.equal(again.dup, true, 'and DUP set');
  t.equal(first.dup, false, 'the first delivery had no DUP');
  t.same(
    b.raw.packets.all.map((p) => p.cmd),
    ['connack', 'publish'],
    'right after the CONNACK, before anything else',
  );
  b.raw.send({ cmd: 'puback', messageId: again.messageId! });
  await publish(publisher, topic, 'next', { qos: 1 });
  const next = (await nextPacket(b.raw, 'publish')) as IPublishPacket;
  t.equal(String(next.payload), 'next', 'once acknowledged it is not sent again: the next PUBLISH is the next message');
  t.equal(next.dup, false, 'a new message, no DUP');
  b.raw.send({ cmd: 'puback', messageId: next.messageId! });
  b.raw.destroy();
  await sleep(500);
  const c = await rawCarol(t, 'carol-if1');
  await publish(publisher, topic, 'marker', { qos: 1 });
  await nextPacket(c.raw, isPublish('marker'));
  t.same(
    c.raw.packets.all.map((p) => (p.cmd === 'publish' ? `publish:${String((p as IPublishPacket).payload)}` : p.cmd)),
    ['connack', 'publish:marker'],
    'all acknowledged: nothing resent on the next reconnect',
  );
});

t.test('in flight: QoS 2 resent until PUBREC (same id, DUP), then only its PUBREL: exactly once', async (t) => {
  const topic = 'devices/carol/inflight2';
  const a = await rawCarol(t, 'carol-if2', 5);
  a.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 2 }] });
  t.same((await nextPacket(a.raw, 'suback') as { granted: number[] }).granted, [2]);
  const publisher = await js(t, dev.carol!, { clientId: 'carol-if2-pub' });
  // One completed first, so the packet id of the next is not the one a new connection starts with.
  await publish(publisher, topic, 'warm', { qos: 2 });
  const warm = (await nextPacket(a.raw, isPublish('warm'))) as IPublishPacket;
  a.raw.send({ cmd: 'pubrec', messageId: warm.messageId! });
  await nextPacket(a.raw, 'pubrel');
  a.raw.send({ cmd: 'pubcomp', messageId: warm.messageId! });
  await publish(publisher, topic, 'unrec', { qos: 2 });
  const first = (await nextPacket(a.raw, isPublish('unrec'))) as IPublishPacket;
  t.equal(first.qos, 2, 'QoS 2 PUBLISH received — no PUBREC sent');
  t.not(first.messageId, 1, `packet id ${first.messageId}`);
  a.raw.destroy();
  await sleep(500);

  const b = await rawCarol(t, 'carol-if2', 5);
  t.equal(b.sessionPresent, true);
  const again = (await nextPacket(b.raw, isPublish('unrec'))) as IPublishPacket;
  t.equal(again.qos, 2, 'sent again on reconnect');
  t.same([again.messageId, again.dup], [first.messageId, true], 'with its packet id and DUP set (5.0)');
  b.raw.send({ cmd: 'pubrec', messageId: again.messageId! });
  const pubrel = (await nextPacket(b.raw, 'pubrel')) as IPubrelPacket;
  t.equal(pubrel.messageId, again.messageId, 'PUBREC → PUBREL');
  b.raw.send({ cmd: 'pubcomp', messageId: again.messageId! });

  // Received (PUBREC sent) but PUBCOMP not: on reconnect only the PUBREL comes again, with the
  // same packet id; the message is not published a third time.
  await publish(publisher, topic, 'rec-no-comp', { qos: 2 });
  const third = (await nextPacket(b.raw, isPublish('rec-no-comp'))) as IPublishPacket;
  b.raw.send({ cmd: 'pubrec', messageId: third.messageId! });
  t.equal(((await nextPacket(b.raw, 'pubrel')) as IPubrelPacket).messageId, third.messageId, 'PUBREC → PUBREL, and no PUBCOMP from the client');
  b.raw.destroy();
  await sleep(500);
  const c = await rawCarol(t, 'carol-if2', 5);
  t.equal(c.sessionPresent, true);
  const rel = (await nextPacket(c.raw, 'pubrel')) as IPubrelPacket;
  t.equal(rel.messageId, third.messageId, `PUBREL sent again with the same packet id (${third.messageId})`);
  c.raw.send({ cmd: 'pubcomp', messageId: rel.messageId });
  await publish(publisher, topic, 'marker', { qos: 2 });
  const marker = (await nextPacket(c.raw, isPublish('marker'))) as IPublishPacket;
  c.raw.send({ cmd: 'pubrec', messageId: marker.messageId! });
  t.equal(((await nextPacket(c.raw, 'pubrel')) as IPubrelPacket).messageId, marker.messageId);
  c.raw.send({ cmd: 'pubcomp', messageId: marker.messageId! });
  const seen = c.raw.packets.all.map((p) => (p.cmd === 'publish' ? `publish:${String((p as IPublishPacket).payload)}` : p.cmd));
  t.same(seen, ['connack', 'pubrel', 'publish:marker', 'pubrel'], 'after the reconnect: the PUBREL, then the next message; neither received message is published again');

  // Completed (PUBCOMP sent): nothing left for the next connection.
  c.raw.destroy();
  await sleep(500);
  const d = await rawCarol(t, 'carol-if2', 5);
  await publish(publisher, topic, 'end', { qos: 2 });
  await nextPacket(d.raw, isPublish('end'));
  t.same(
    d.raw.packets.all.map((p) => (p.cmd === 'publish' ? `publish:${String((p as IPublishPacket).payload)}` : p.cmd)),
    ['connack', 'publish:end'],
    'once PUBCOMP came, no PUBREL on the next reconnect',
  );
});

t.test('inbound QoS 2: a duplicate PUBLISH before PUBREL is delivered once', async (t) => {
  const topic = 'devices/carol/in2';
  const sub = await js(t, dev.carol!, { ws: true, protocolVersion: 5, clientId: 'carol-in2-sub' });
  await subscribe(sub, topic, { qos: 2 });
  const { raw } = await rawCarol(t, 'carol-in2-pub');
  const packet: IPublishPacket = { cmd: 'publish', topic, payload: Buffer.from('once'), qos: 2, messageId: 42, retain: false, dup: false };
  raw.send(packet);
  t.equal((await nextPacket(raw, 'pubrec')).messageId, 42, 'PUBREC');
  raw.send({ ...packet, dup: true });
  t.equal((await nextPacket(raw, 'pubrec')).messageId, 42, 'the duplicate is answered with PUBREC too');
  raw.send({ cmd: 'pubrel', messageId: 42 });
  t.equal((await nextPacket(raw, 'pubcomp')).messageId, 42, 'PUBREL → PUBCOMP');
  // The same packet id again after PUBCOMP is a new message.
  raw.send({ ...packet, payload: Buffer.from('twice') });
  await nextPacket(raw, 'pubrec');
  raw.send({ cmd: 'pubrel', messageId: 42 });
  await nextPacket(raw, 'pubcomp');
  const before = await sub.received.until((m) => m.payload === 'twice');
  t.same(before.map((m) => m.payload), ['once'], 'the subscriber got "once" exactly once, then the next message');

  // Across a reconnect: the PUBREC is lost (the client drops the connection), the client sends
  // the PUBLISH again with DUP set in its persistent session; still one delivery.
  raw.send({ ...packet, messageId: 43, payload: Buffer.from('across') });
  await sleep(300);
  raw.destroy();
  await sleep(300);
  const again = await rawCarol(t, 'carol-in2-pub');
  again.raw.send({ ...packet, messageId: 43, payload: Buffer.from('across'), dup: true });
  await nextPacket(again.raw, 'pubrec');
  again.raw.send({ cmd: 'pubrel', messageId: 43 });
  await nextPacket(again.raw, 'pubcomp');
  again.raw.send({ ...packet, messageId: 44, payload: Buffer.from('end') });
  await nextPacket(again.raw, 'pubrec');
  again.raw.send({ cmd: 'pubrel', messageId: 44 });
  const more = await sub.received.until((m) => m.payload === 'end');
  t.same(more.map((m) => m.payload), ['across'], 'a PUBLISH resent with DUP after a reconnect is delivered once (MQTT 4.3.3, method B)');
});

t.test('in flight: a message resent on reconnect keeps its MQTT 5 properties', async (t) => {
  const topic = 'devices/carol/inflight-props';
  const a = await rawCarol(t, 'carol-ifp', 5);
  a.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }], properties: { subscriptionIdentifier: 21 } });
  await nextPacket(a.raw, 'suback');
  const publisher = await js(t, dev.carol!, { protocolVersion: 5, clientId: 'carol-ifp-pub' });
  const properties = { contentType: 'application/json', responseTopic: 'devices/carol/reply', correlationData: Buffer.from('req-7'), userProperties: { trace: 'abc' } };
  await within(publisher.client.publishAsync(topic, '{"n":1}', { qos: 1, properties }), 5000, 'PUBACK');
  const first = (await nextPacket(a.raw, isPublish('{"n":1}'))) as IPublishPacket;
  t.match(first.properties, { ...properties, subscriptionIdentifier: 21 }, 'delivered with its properties — and not acknowledged');
  a.raw.destroy();
  await sleep(500);

  const b = await rawCarol(t, 'carol-ifp', 5);
  const again = (await nextPacket(b.raw, isPublish('{"n":1}'))) as IPublishPacket;
  t.same([again.messageId, again.dup], [first.messageId, true], 'resent with its packet id and DUP');
  t.match(again.properties, { ...properties, subscriptionIdentifier: 21 }, 'and the same properties: content type, response topic, correlation data, user properties, subscription identifier');
  b.raw.send({ cmd: 'puback', messageId: again.messageId! });
});

t.test('take-over: the in-flight state moves to the new connection', async (t) => {
  const topic = 'devices/carol/takeover';
  const a = await rawCarol(t, 'carol-to', 5);
  a.raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 2 }] });
  await nextPacket(a.raw, 'suback');
  const publisher = await js(t, dev.carol!, { clientId: 'carol-to-pub' });
  await publish(publisher, topic, 'warm', { qos: 1 });
  a.raw.send({ cmd: 'puback', messageId: ((await nextPacket(a.raw, isPublish('warm'))) as IPublishPacket).messageId! });
  await publish(publisher, topic, 'to-unacked', { qos: 1 });
  const unacked = (await nextPacket(a.raw, isPublish('to-unacked'))) as IPublishPacket;
  await publish(publisher, topic, 'to-released', { qos: 2 });
  const released = (await nextPacket(a.raw, isPublish('to-released'))) as IPublishPacket;
  a.raw.send({ cmd: 'pubrec', messageId: released.messageId! });
  await nextPacket(a.raw, 'pubrel');
  // Its own QoS 2 PUBLISH: PUBREC comes, PUBREL is not sent before the take-over.
  const sub = await js(t, dev.carol!, { clientId: 'carol-to-sub' });
  await subscribe(sub, `${topic}/in`, { qos: 2 });
  const inbound: IPublishPacket = { cmd: 'publish', topic: `${topic}/in`, payload: Buffer.from('to-inbound'), qos: 2, messageId: 300, retain: false, dup: false };
  a.raw.send(inbound);
  await nextPacket(a.raw, 'pubrec');

  // Same client id while the first connection is still open: it takes over.
  const b = await rawCarol(t, 'carol-to', 5);
  t.equal(b.sessionPresent, true, 'session present');
  t.match(await nextPacket(a.raw, 'disconnect'), { reasonCode: 0x8e }, 'the old connection: DISCONNECT 0x8E');
  const again = (await nextPacket(b.raw, isPublish('to-unacked'))) as IPublishPacket;
  t.same([again.messageId, again.dup], [unacked.messageId, true], `the unacknowledged message: same packet id (${unacked.messageId}), DUP`);
  t.equal(((await nextPacket(b.raw, 'pubrel')) as IPubrelPacket).messageId, released.messageId, 'the released one: its PUBREL again');
  b.raw.send({ cmd: 'puback', messageId: again.messageId! });
  b.raw.send({ cmd: 'pubcomp', messageId: released.messageId! });
  b.raw.send({ ...inbound, dup: true });
  t.equal((await nextPacket(b.raw, 'pubrec')).messageId, 300, 'its own QoS 2 PUBLISH resent: PUBREC');
  b.raw.send({ cmd: 'pubrel', messageId: 300 });
  await nextPacket(b.raw, 'pubcomp');
  b.raw.send({ ...inbound, messageId: 301, payload: Buffer.from('to-end') });
  await nextPacket(b.raw, 'pubrec');
  b.raw.send({ cmd: 'pubrel', messageId: 301 });
  t.same((await sub.received.until((m) => m.payload === 'to-end')).map((m) => m.payload), ['to-inbound'], 'and delivered once');
  t.notOk(
    b.raw.packets.all.some((p) => p.cmd === 'publish' && String((p as IPublishPacket).payload) === 'to-released'),
    'the released message is not published again',
  );
});

t.test('a restart keeps retained messages and offline sessions', { skip: noMosquitto }, async (t) => {
  const { dave } = dev;
  const sessionOpts = as(dave!, { id: 'dave-restart', qos: 1, persistent: true });
  const s = mosqSub(t, { ...sessionOpts, topics: ['devices/dave/inbox'] });
  await subscribedOrThrow(s);
  s.kill('SIGINT');
  await s.exited;
  await sleep(300);
  t.equal((await mosqPub(as(dave!, { qos: 1, topic: 'devices/dave/config', message: 'retained-before-restart', retain: true }))).code, 0);
  t.equal((await mosqPub(as(dave!, { qos: 1, topic: 'devices/dave/inbox', message: 'queued-before-restart' }))).code, 0);

  const stop = await hub.cli('stop');
  t.equal(stop.code, 0, `stop ${stop.stderr}`);
  await Promise.race([hub.exited, sleep(10_000)]);
  hub = await startHub(t, project, env);

  const r = mosqSub(t, as(dave!, { id: 'dave-retained', topics: ['devices/dave/config'], count: 1, timeoutSeconds: 5 }));
  t.equal(await r.exited, 0, 'a retained message is there after the restart');
  t.match(r.messages.all[0], { payload: 'retained-before-restart', retain: true });
  const back = mosqSub(t, { ...sessionOpts, topics: ['devices/dave/inbox'], count: 1, timeoutSeconds: 5 });
  t.equal(await back.exited, 0, 'the offline session got its queued message after the restart');
  t.match(back.messages.all[0], { payload: 'queued-before-restart' });
});

// MQTT topic routing against the fixture broker (test/fixtures/mqtt), with real clients:
// mosquitto_pub / mosquitto_sub at 3.1.1 and 5.0 over TCP, the mqtt npm client over TCP and
// WebSocket. Wildcards and $-topics, one delivery per client at the highest granted QoS, exact
// counts per QoS, noLocal, subscription identifiers, retain-as-published and MQTT 5 properties,
// unsubscribe, text clients on topics, and the Gateway API (GatewayClient) publishing,
// targeting one client, and refusing bad filters and topics.
import t from 'tap';
import { GatewayArgumentError } from '../../runtime/src/api/GatewayApi.js';
import { failure } from './helpers.js';
import { mosquittoPub, mosquittoSub, mqttJs, startMqttApp, textClient, type MqttJs } from './mqtt-helpers.js';

/** Topics received before the first message on `marker` (which is taken too). */
async function before(client: MqttJs, marker: string, timeoutMs = 5000): Promise<string[]> {
  return (await client.messages.until((m) => m.topic === marker, timeoutMs, `marker ${marker}`)).map((m) => m.topic);
}

t.test('MQTT topic routing', async (t) => {
  const broker = await startMqttApp(t);
  const { tcpUrl, wsUrl } = broker;

  await t.test('wildcards and $-topics, subscribers on TCP and WebSocket, 3.1.1 and 5.0', async (t) => {
    const topics = ['r/b/c', 'r/b', 'r', 'r/b/c/d', '$SYS/x', 's/b/c', 'a/x', 'r/', '/r'];
    const filters: Record<string, string[]> = {
      'r/+/c': ['r/b/c'],
      'r/#': ['r/b/c', 'r/b', 'r', 'r/b/c/d', 'r/'],
      '#': ['r/b/c', 'r/b', 'r', 'r/b/c/d', 's/b/c', 'a/x', 'r/', '/r'],
      '$SYS/#': ['$SYS/x'],
      '$SYS/+': ['$SYS/x'],
      '+/+/c': ['r/b/c', 's/b/c'],
      '+/x': ['a/x'],
      '+/#': ['r/b/c', 'r/b', 'r', 'r/b/c/d', 's/b/c', 'a/x', 'r/', '/r'],
      '+': ['r'],
      'r/+': ['r/b', 'r/'],
      '+/r': ['/r'],
    };
    const subscribers: Array<{ filter: string; client: MqttJs; where: string }> = [];
    let n = 0;
    for (const filter of Object.keys(filters)) {
      const url = n % 2 === 0 ? tcpUrl : wsUrl;
      const protocolVersion = n % 4 < 2 ? 4 : 5;
      n++;
      const client = await mqttJs(t, url, { protocolVersion });
      await client.sub([filter, 'end'], { qos: 0 });
      subscribers.push({ filter, client, where: `${filter} (${url.startsWith('ws') ? 'ws' : 'tcp'}, v${protocolVersion})` });
    }
    for (const [pubUrl, label] of [
      [tcpUrl, 'TCP'],
      [wsUrl, 'WebSocket'],
    ]) {
      const publisher = await mqttJs(t, pubUrl, { protocolVersion: 5 });
      for (const topic of topics) await publisher.pub(topic, `to ${topic}`, { qos: 1 });
      await publisher.pub('end', 'end', { qos: 1 });
      for (const { filter, client, where } of subscribers) {
        t.same(await before(client, 'end'), filters[filter], `published over ${label}: ${where} got exactly its topics, in order`);
      }
      publisher.client.end();
    }
    const hash = subscribers.find((s) => s.filter === '#')!;
    t.equal(hash.client.messages.all.filter((m) => m.topic === 'end').length, 2, 'a client whose two filters (# and end) match gets one delivery per publish');
  });

  await t.test('two matching filters: one delivery at the higher granted QoS', async (t) => {
    const sub = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await sub.sub('ov/+', { qos: 0 });
    await sub.sub('ov/#', { qos: 2 });
    await sub.sub('ov/a', { qos: 1 });
    const sub4 = await mqttJs(t, tcpUrl, { protocolVersion: 4 });
    await sub4.sub({ 'ov/a': { qos: 1 }, '#': { qos: 0 } });
    const pub = await mqttJs(t, tcpUrl);
    await pub.pub('ov/a', 'q2', { qos: 2 });
    await pub.pub('ov/a', 'q1', { qos: 1 });
    await pub.pub('ov/a', 'q0', { qos: 0 });
    await pub.pub('ov/b/c', 'deep', { qos: 2 });
    await pub.pub('ov/end', 'end', { qos: 2 });
    // mqtt.js hands a QoS 2 message over at PUBREL, so arrival order across QoS levels is not compared.
    const got = (await sub.messages.until((m) => m.payload === 'end')).map((m) => `${m.payload}@${m.packet.qos}`).sort();
    t.same(got, ['deep@2', 'q0@0', 'q1@1', 'q2@2'], 'v5: each message once, at min(publish QoS, highest granted QoS)');
    const got4 = (await sub4.messages.until((m) => m.payload === 'end')).map((m) => `${m.payload}@${m.packet.qos}`).sort();
    t.same(got4, ['deep@0', 'q0@0', 'q1@1', 'q2@1'], 'v4 with ov/a at QoS 1 and # at QoS 0: once each, at the better of the two');
  });

  await t.test('QoS 0/1/2 from mosquitto_pub to mosquitto_sub and mqtt.js: exact counts, downgraded to the granted QoS', async (t) => {
    const N = 12;
    const subs = [
      { name: 'mosquitto_sub 3.1.1 QoS 0', granted: 0, sub: await mosquittoSub(t, broker.mqttPort, ['-V', 'mqttv311', '-q', '0', '-t', 'q/#']) },
      { name: 'mosquitto_sub 5.0 QoS 1', granted: 1, sub: await mosquittoSub(t, broker.mqttPort, ['-V', 'mqttv5', '-q', '1', '-t', 'q/#']) },
      { name: 'mosquitto_sub 3.1.1 QoS 2', granted: 2, sub: await mosquittoSub(t, broker.mqttPort, ['-V', 'mqttv311', '-q', '2', '-t', 'q/#']) },
    ];
    const ws = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await ws.sub('q/#', { qos: 2 });
    const lines = (qos: number): string => Array.from({ length: N }, (_, i) => `m${qos}-${i}`).join('\n') + '\n';
    await mosquittoPub(broker.mqttPort, ['-V', 'mqttv311', '-q', '0', '-t', 'q/0', '-l'], lines(0));
    await mosquittoPub(broker.mqttPort, ['-V', 'mqttv5', '-q', '1', '-t', 'q/1', '-l'], lines(1));
    await mosquittoPub(broker.mqttPort, ['-V', 'mqttv311', '-q', '2', '-t', 'q/2', '-l'], lines(2));
    const expected = (granted: number): string[] => [0, 1, 2].flatMap((qos) => Array.from({ length: N }, (_, i) => `${Math.min(qos, granted)} q/${qos} m${qos}-${i}`));
    for (const { name, granted, sub } of subs) {
      const got = await sub.messages.take(3 * N, () => true, 8000, name);
      t.same(got.map((m) => `${m.qos} ${m.topic} ${m.payload}`), expected(granted), `${name}: ${3 * N} messages, each once, in order, at min(publish, granted) QoS`);
    }
    const wsGot = await ws.messages.take(3 * N, () => true, 8000, 'mqtt.js ws');
    t.same(wsGot.map((m) => `${m.packet.qos} ${m.topic} ${m.payload}`).sort(), expected(2).sort(), `mqtt.js over WebSocket at QoS 2: ${3 * N} messages, each once`);
    // Nothing more comes: a marker from mosquitto_pub is the very next message everywhere.
    await mosquittoPub(broker.mqttPort, ['-V', 'mqttv5', '-q', '1', '-t', 'q/end', '-m', 'end']);
    for (const { name, sub } of subs) t.same(payloadsUntil(await sub.messages.until((m) => m.topic === 'q/end', 5000)), [], `${name}: no extra message`);
    t.same(await before(ws, 'q/end'), [], 'mqtt.js: no extra message');
  });

  await t.test('mosquitto_pub 5.0 over TCP to mqtt.js 3.1.1 over WebSocket and back', async (t) => {
    const ws4 = await mqttJs(t, wsUrl, { protocolVersion: 4 });
    await ws4.sub('mix/to-ws', { qos: 1 });
    const sub5 = await mosquittoSub(t, broker.mqttPort, ['-V', 'mqttv5', '-q', '2', '-t', 'mix/to-tcp', '-C', '1']);
    await mosquittoPub(broker.mqttPort, ['-V', 'mqttv5', '-q', '2', '-t', 'mix/to-ws', '-m', 'héllo ✓', '-D', 'publish', 'content-type', 'text/plain']);
    const at = await ws4.messages.next(() => true, 5000, 'mix/to-ws');
    t.same([at.topic, at.payload, at.packet.qos, at.packet.properties], ['mix/to-ws', 'héllo ✓', 1, undefined], 'the 3.1.1 client got it at QoS 1, UTF-8 intact, without v5 properties');
    await ws4.pub('mix/to-tcp', 'back', { qos: 2 });
    t.same(await sub5.messages.next(() => true, 5000, 'mix/to-tcp'), { qos: 2, topic: 'mix/to-tcp', payload: 'back' }, 'mosquitto_sub 5.0 got the reply at QoS 2');
    t.equal(await sub5.exited, 0, 'mosquitto_sub -C 1 exited cleanly after one message');
  });

  await t.test('3.1.1 and 5.0 clients interleaved on one gateway keep working', async (t) => {
    // A 3.1.1 client connects, then a 5.0 client connects, then the 3.1.1 client publishes and
    // subscribes: its packets must still be read as 3.1.1.
    const sub = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    await sub.sub('mixed/#', { qos: 1 });
    const old = await mqttJs(t, tcpUrl, { protocolVersion: 4 });
    const closed = new Promise<void>((resolve) => old.client.once('close', () => resolve()));
    const five = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    const acked = await old.pub('mixed/a', 'hello from 3.1.1', { qos: 1 }).then(
      () => 'acked',
      (error: Error) => error.message,
    );
    t.equal(acked, 'acked', 'the 3.1.1 client’s QoS 1 publish was acknowledged');
    const got = await sub.messages.next(() => true, 3000, 'the 3.1.1 publish').catch((error: Error) => error);
    t.match(got, { topic: 'mixed/a', payload: 'hello from 3.1.1' }, 'the 3.1.1 publish after a 5.0 CONNECT was delivered');
    t.equal(await Promise.race([closed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('open'), 300))]), 'open', 'the 3.1.1 client was not disconnected');
    await five.pub('mixed/b', 'hello from 5.0', { qos: 1 });
    t.match(await sub.messages.next(() => true, 3000, 'the 5.0 publish'), { topic: 'mixed/b', payload: 'hello from 5.0' }, 'the 5.0 client publishes too');
  });

  await t.test('noLocal (MQTT 5): a client does not get its own publishes', async (t) => {
    const a = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await a.sub({ 'nl/#': { qos: 1, nl: true } });
    const b = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    await b.sub('nl/#', { qos: 1 });
    await a.pub('nl/from-a', 'a', { qos: 1 });
    await b.pub('nl/from-b', 'b', { qos: 1 });
    await b.pub('nl/end', 'end', { qos: 1 });
    t.same(await before(a, 'nl/end'), ['nl/from-b'], 'A (noLocal) got B’s publish, not its own');
    t.same(await before(b, 'nl/end'), ['nl/from-a', 'nl/from-b'], 'B (noLocal off) got A’s publish and its own');
  });

  await t.test('subscription identifiers (MQTT 5) are echoed, one delivery carrying every matching id', async (t) => {
    const sub = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    await sub.sub('sid/+', { qos: 1, properties: { subscriptionIdentifier: 7 } });
    await sub.sub('sid/#', { qos: 0, properties: { subscriptionIdentifier: 300_000 } });
    await sub.sub('sid-none', { qos: 1 });
    const old = await mqttJs(t, wsUrl, { protocolVersion: 4 });
    await old.sub('sid/#', { qos: 1 });
    const pub = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await pub.pub('sid/a', 'both', { qos: 1 });
    await pub.pub('sid/a/b', 'deep', { qos: 0 });
    await pub.pub('sid-none', 'none', { qos: 1 });
    const [both, deep, none] = await sub.messages.take(3, () => true, 5000, 'sid messages');
    const ids = (m: { packet: { properties?: { subscriptionIdentifier?: number | number[] } } }): number[] => [m.packet.properties?.subscriptionIdentifier ?? []].flat().sort((x, y) => x - y);
    t.same([both.topic, ids(both), both.packet.qos], ['sid/a', [7, 300_000], 1], 'sid/a: one delivery with ids 7 and 300000, at QoS 1');
    t.same([deep.topic, ids(deep), deep.packet.qos], ['sid/a/b', [300_000], 0], 'sid/a/b (QoS 0): id 300000 only');
    t.same([none.topic, ids(none)], ['sid-none', []], 'a subscription without an id: no identifier');
    const oldGot = await old.messages.take(2, () => true, 5000, '3.1.1 sid messages');
    t.same(
      oldGot.map((m) => [m.topic, m.packet.properties]),
      [
        ['sid/a', undefined],
        ['sid/a/b', undefined],
      ],
      'a 3.1.1 subscriber gets the same messages without properties',
    );
  });

  await t.test('retain as published and MQTT 5 publish properties', async (t) => {
    const rap = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await rap.sub({ 'rp/#': { qos: 1, rap: true } });
    const plain = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    await plain.sub('rp/#', { qos: 1 });
    const old = await mqttJs(t, tcpUrl, { protocolVersion: 4 });
    await old.sub('rp/#', { qos: 0 });
    const pub = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    const properties = {
      payloadFormatIndicator: true,
      messageExpiryInterval: 60,
      contentType: 'application/json',
      responseTopic: 'rp/reply',
      correlationData: Buffer.from([0, 1, 2, 250]),
      userProperties: { trace: 'abc', multi: ['x', 'y'] },
    };
    await pub.pub('rp/kept', '{"v":1}', { qos: 1, retain: true, properties });
    await pub.pub('rp/not', 'plain', { qos: 1, retain: false });
    const [kept, not] = await rap.messages.take(2);
    t.same([kept.topic, kept.packet.retain, not.packet.retain], ['rp/kept', true, false], 'retainAsPublished: the retain flag as published');
    t.match(kept.packet.properties, properties, 'every property arrived (correlation data bytes intact)');
    const [plainKept] = await plain.messages.take(2);
    t.same([plainKept.topic, plainKept.packet.retain], ['rp/kept', false], 'without retainAsPublished: retain cleared on a live delivery');
    t.match(plainKept.packet.properties, { contentType: 'application/json', correlationData: Buffer.from([0, 1, 2, 250]) }, 'properties for the other v5 subscriber too');
    const [oldKept] = await old.messages.take(2);
    t.same([oldKept.topic, oldKept.payload, oldKept.packet.retain, oldKept.packet.properties], ['rp/kept', '{"v":1}', false, undefined], 'a 3.1.1 subscriber: payload only');
  });

  await t.test('unsubscribe stops delivery', async (t) => {
    const sub = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await sub.sub(['un/a', 'un/#', 'un-end'], { qos: 1 });
    const pub = await mqttJs(t, tcpUrl);
    await pub.pub('un/a', '1', { qos: 1 });
    await pub.pub('un-end', 'end', { qos: 1 });
    t.same(await before(sub, 'un-end'), ['un/a'], 'subscribed twice: once');
    await sub.unsub('un/a');
    await pub.pub('un/a', '2', { qos: 1 });
    await pub.pub('un-end', 'end', { qos: 1 });
    t.same(await before(sub, 'un-end'), ['un/a'], 'after unsubscribing un/a, un/# still delivers');
    await sub.unsub('un/#');
    await pub.pub('un/a', '3', { qos: 1 });
    await pub.pub('un/b', '4', { qos: 0 });
    await pub.pub('un-end', 'end', { qos: 1 });
    t.same(await before(sub, 'un-end'), [], 'after unsubscribing un/#, nothing on un/…');
    await sub.unsub('never/subscribed');
    await pub.pub('un-end', 'end', { qos: 1 });
    t.same(await before(sub, 'un-end'), [], 'unsubscribing a filter never subscribed is harmless');
  });

  await t.test('text clients on topics: MQTT → text and text → MQTT', async (t) => {
    const text = await textClient(t, broker.textPort);
    text.send('sub tx/+/in');
    await text.expect((m) => m.raw === 'subscribed tx/+/in', 5000, 'subscribed');
    const other = await textClient(t, broker.textPort);
    const mq = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await mq.sub('tx/from-text', { qos: 2 });
    const pub = await mqttJs(t, tcpUrl);
    await pub.pub('tx/a/in', 'plain text payload', { qos: 1 });
    await pub.pub('tx/b/in', 'second', { qos: 0 });
    await pub.pub('tx/c/out', 'not matched', { qos: 0 });
    t.equal((await text.expect(() => true, 5000, 'first publish')).raw, 'plain text payload', 'the text client got the payload as a plain line');
    t.equal((await text.expect(() => true, 5000, 'second publish')).raw, 'second', 'and the next one');
    text.send('pub tx/from-text hi from text');
    await text.expect((m) => m.raw === 'published tx/from-text', 5000, 'published');
    const got = await mq.messages.next(() => true, 5000, 'text → MQTT');
    t.same([got.topic, got.payload, got.packet.qos], ['tx/from-text', 'hi from text', 1], 'the MQTT client got the text client’s publish (QoS 1 as published)');
    other.send('ping-marker');
    await other.expect((m) => m.raw === 'unknown ping-marker', 5000, 'marker');
    t.same(other.queue.map((m) => m.raw), [], 'a text client that did not subscribe got nothing');
    t.same(text.queue.map((m) => m.raw), [], 'tx/c/out did not reach the text client');
  });

  await t.test('Gateway API from another process (GatewayClient)', async (t) => {
    const api = await broker.client();
    const one = await mqttJs(t, tcpUrl, { protocolVersion: 5, clientId: 'api-one' });
    const two = await mqttJs(t, wsUrl, { protocolVersion: 4, clientId: 'api-two' });
    await one.sub('api/#', { qos: 1 });
    await two.sub('api/#', { qos: 0 });
    const ids = await gatewayIds(api, ['api-one', 'api-two']);

    await api.publish('api/all', 'to both', { qos: 1 });
    const a1 = await one.messages.next(() => true, 5000, 'api/all at one');
    const a2 = await two.messages.next(() => true, 5000, 'api/all at two');
    t.same([a1.topic, a1.payload, a1.packet.qos, a2.topic, a2.payload, a2.packet.qos], ['api/all', 'to both', 1, 'api/all', 'to both', 0], 'a GatewayClient publish reached both subscribers, each at its QoS');

    await api.publish('api/only', 'just one', { qos: 2, clientId: ids['api-one'] });
    await api.publish('elsewhere/never-subscribed', 'direct', { qos: 1, retain: true, clientId: ids['api-two'] });
    const only = await one.messages.next(() => true, 5000, 'api/only');
    t.same([only.topic, only.payload, only.packet.qos], ['api/only', 'just one', 2], 'clientId: that client, at the QoS given (not capped by its QoS 1 subscription)');
    const direct = await two.messages.next(() => true, 5000, 'direct');
    t.same([direct.topic, direct.payload, direct.packet.qos, direct.packet.retain], ['elsewhere/never-subscribed', 'direct', 1, true], 'clientId: delivered without a matching subscription, retain as given');
    await api.publish('api/end', 'end', { qos: 0 });
    t.same(await before(one, 'api/end'), [], 'nothing else reached the first client');
    t.same(await before(two, 'api/end'), [], 'api/only did not reach the other subscriber of api/#');

    await api.subscribe(ids['api-two'], 'server/side/+', { qos: 1 });
    await api.publish('server/side/x', 'pushed', { qos: 1 });
    t.match(await two.messages.next(() => true, 5000, 'server-side subscription'), { topic: 'server/side/x', payload: 'pushed' }, 'Gateway.subscribe from the API subscribes an MQTT client');
    await api.unsubscribe(ids['api-two'], 'server/side/+');
    await api.publish('server/side/x', 'not any more', { qos: 1 });
    await api.publish('api/end', 'end', { qos: 0 });
    t.same(await before(two, 'api/end'), [], 'Gateway.unsubscribe from the API stops it');

    const bad: Array<[string, Promise<unknown>]> = [
      ['publish to a/+', api.publish('a/+', 'x')],
      ['publish to a/#', api.publish('a/#', 'x')],
      ['publish to an empty topic', api.publish('', 'x')],
      ['publish to a topic with U+0000', api.publish('a\u0000b', 'x')],
      ['publish at QoS 3', api.publish('a', 'x', { qos: 3 as 0 })],
      ['subscribe to a/#/b', api.subscribe(ids['api-one'], 'a/#/b')],
      ['subscribe to a+', api.subscribe(ids['api-one'], 'a+')],
      ['subscribe to an empty filter', api.subscribe(ids['api-one'], '')],
      ['subscribe at QoS 3', api.subscribe(ids['api-one'], 'a', { qos: 3 as 0 })],
      ['unsubscribe from a/b#', api.unsubscribe(ids['api-one'], 'a/b#')],
    ];
    for (const [what, promise] of bad) {
      const result = await failure(promise);
      t.ok(result !== 'resolved' && result.error instanceof GatewayArgumentError, `${what}: GatewayArgumentError (${result === 'resolved' ? 'resolved' : result.name})`);
    }
    // Still fine after the refusals.
    await api.publish('api/after', 'still fine', { qos: 1, clientId: ids['api-one'] });
    t.match(await one.messages.next((m) => m.topic === 'api/after', 5000, 'after'), { topic: 'api/after', payload: 'still fine' }, 'the API keeps working after refused calls');
  });
});

function payloadsUntil(list: Array<{ payload: string }>): string[] {
  return list.map((m) => m.payload);
}

/** The gateway client ids of MQTT clients, by their MQTT client id (the fixture keeps it in the session). */
async function gatewayIds(api: { getAllClientSessions(): Promise<Record<string, Record<string, unknown> | null>> }, mqttIds: string[]): Promise<Record<string, string>> {
  const sessions = await api.getAllClientSessions();
  const out: Record<string, string> = {};
  for (const [id, session] of Object.entries(sessions)) if (session && mqttIds.includes(String(session.mqttId))) out[String(session.mqttId)] = id;
  for (const id of mqttIds) if (!out[id]) throw new Error(`no session with mqttId ${id}: ${JSON.stringify(sessions)}`);
  return out;
}

// MQTT clients that push a gateway to its limits, against the fixture broker (test/fixtures/mqtt):
// a refused QoS 2 message frees its packet id, an MQTT 5 maximum packet size is kept, bytes before CONNECT do not keep a connection
// alive, a packet split into a thousand WebSocket messages, a packet larger than the worker links'
// old 10 MB frame limit, a subscriber whose send buffer is full, and an event that kills every
// worker it reaches.
import net from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';
import t from 'tap';
import { Gateway } from '../../runtime/src/index.js';
import { RawClient, encode, mqttJs, sleep, startMqttApp, textClient, waitFor } from './mqtt-helpers.js';

const is =
  (cmd: string, extra: (p: Packet & Record<string, unknown>) => boolean = () => true) =>
  (p: Packet): boolean =>
    p.cmd === cmd && extra(p as Packet & Record<string, unknown>);

t.test('limits of one MQTT gateway', async (t) => {
  const broker = await startMqttApp(t, { MAX_PACKET: String(16 * 1024 * 1024), CONNECT_TIMEOUT: '1' });

  await t.test('a refused QoS 2 PUBLISH frees its packet id: the next message with that id is delivered', async (t) => {
    const watcher = await RawClient.tcp(t, broker.mqttPort);
    await watcher.connect({ version: 4 });
    await watcher.subscribe('reuse/#', 0);
    const publisher = await RawClient.ws(t, broker.wsUrl);
    await publisher.connect({ version: 5 });
    const publish = (topic: string, payload: string): Packet => ({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 2, messageId: 9, dup: false, retain: false }) as Packet;
    publisher.send(publish('refuse/x', 'refused'));
    const refusal = await publisher.packets.next(is('pubrec', (p) => p.messageId === 9), 3000, 'PUBREC of the refusal');
    t.equal(refusal.reasonCode, 0x87, 'PUBREC 0x87 (not authorized)');
    publisher.send(publish('reuse/x', 'accepted'));
    const accepted = await publisher.packets.next(is('pubrec', (p) => p.messageId === 9), 3000, 'PUBREC of the reuse');
    t.notOk(accepted.reasonCode, 'the reuse of id 9 is accepted');
    const delivered = (await watcher.packets.next(is('publish'), 3000, 'the delivery')) as Packet & { payload: Buffer };
    t.equal(delivered.payload.toString(), 'accepted', 'the message that reused id 9 reached the subscriber');
    publisher.send({ cmd: 'pubrel', messageId: 9 } as Packet);
    await publisher.packets.next(is('pubcomp', (p) => p.messageId === 9), 3000, 'PUBCOMP');
  });

  await t.test('MQTT 5 maximum packet size: larger messages are not sent to that client', async (t) => {
    const small = await RawClient.tcp(t, broker.mqttPort);
    await small.connect({ version: 5, properties: { maximumPacketSize: 1000 } });
    await small.subscribe('sized/#', 1);
    const publisher = await RawClient.tcp(t, broker.mqttPort);
    await publisher.connect({ version: 4 });
    let id = 1;
    for (const [size, qos] of [
      [2000, 0],
      [2000, 1],
      [100, 0],
      [100, 1],
    ] as const) {
      publisher.send({ cmd: 'publish', topic: `sized/${size}/${qos}`, payload: Buffer.alloc(size), qos, messageId: qos ? id++ : undefined, dup: false, retain: false } as Packet);
    }
    publisher.send({ cmd: 'publish', topic: 'sized/end', payload: Buffer.from('end'), qos: 0, dup: false, retain: false } as Packet);
    const got = await small.packets.until(is('publish', (p) => p.topic === 'sized/end'), 5000, 'end marker');
    t.same(
      got.filter((p) => p.cmd === 'publish').map((p) => (p as { topic: string }).topic),
      ['sized/100/0', 'sized/100/1'],
      'only the messages that fit were sent',
    );
    t.notOk(small.isClosed, 'the client is still connected');
  });

  await t.test('bytes that never complete a CONNECT do not keep the connection open', async (t) => {
    const client = await RawClient.ws(t, broker.wsUrl);
    const connect = encode(client.connectPacket({ version: 4, clientId: 'slow-connect' }), 4);
    const opened = Date.now();
    // One byte per WebSocket message every 150 ms: the whole CONNECT would take longer than the 1 s limit.
    for (let i = 0; i < connect.length - 1 && !client.isClosed; i++) {
      client.sendBytes(connect.subarray(i, i + 1));
      await sleep(150);
    }
    t.ok(await client.closesWithin(3000), 'closed although bytes kept arriving');
    t.ok(client.closedAt - opened < 3000, `closed ${client.closedAt - opened} ms after opening (CONNECT timeout 1 s, checked every 250 ms)`);
    t.equal(client.packets.all.length, 0, 'no CONNACK');
  });

  await t.test('a 3 MB packet split into 3,000 WebSocket messages arrives whole', async (t) => {
    const watcher = await RawClient.tcp(t, broker.mqttPort);
    await watcher.connect({ version: 4 });
    await watcher.subscribe('split/#', 0);
    const publisher = await RawClient.ws(t, broker.wsUrl);
    await publisher.connect({ version: 4 });
    const payload = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < payload.length; i++) payload[i] = i % 251;
    const bytes = encode({ cmd: 'publish', topic: 'split/x', payload, qos: 0, dup: false, retain: false } as Packet, 4);
    for (let at = 0; at < bytes.length; at += 1024) publisher.sendBytes(bytes.subarray(at, at + 1024));
    const got = (await watcher.packets.next(is('publish'), 20_000, 'the 3 MB message')) as Packet & { payload: Buffer };
    t.ok(got.payload.equals(payload), 'same bytes');
    t.notOk(publisher.isClosed, 'the publisher is still connected');
  });

  await t.test('a 12 MB PUBLISH crosses the worker link (frames above 10 MB)', async (t) => {
    const watcher = await mqttJs(t, broker.tcpUrl);
    await watcher.sub('large/#', { qos: 1 });
    const publisher = await RawClient.tcp(t, broker.mqttPort);
    await publisher.connect({ version: 4 });
    const payload = Buffer.alloc(12 * 1024 * 1024, 0x5a);
    publisher.send({ cmd: 'publish', topic: 'large/x', payload, qos: 1, messageId: 3, dup: false, retain: false } as Packet);
    await publisher.packets.next(is('puback', (p) => p.messageId === 3), 30_000, 'PUBACK of the 12 MB message');
    const got = await watcher.messages.next((m) => m.topic === 'large/x', 30_000, 'the 12 MB message');
    t.equal(got.packet.payload.length, payload.length, 'delivered whole');
    t.notOk(broker.app.output().includes('exceeds maxPackageSize'), 'no link dropped a frame');
  });

  await t.test('a subscriber whose send buffer is full is closed; what it missed goes to onClose', async (t) => {
    const watcher = await mqttJs(t, broker.tcpUrl);
    await watcher.sub('unacked/#', { qos: 1 });
    // A subscriber that stops reading once subscribed.
    const socket = net.connect(broker.mqttPort, '127.0.0.1');
    t.teardown(() => socket.destroy());
    let closed = false;
    socket.on('close', () => (closed = true));
    socket.on('error', () => {});
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    const packets: Packet[] = [];
    parser.on('packet', (p: Packet) => packets.push(p));
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(encode({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'stalled', clean: true, keepalive: 0 } as Packet, 4));
    socket.write(encode({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood/#', qos: 1 }] } as Packet, 4));
    await waitFor(() => packets.some((p) => p.cmd === 'suback'), 5000, 'SUBACK');
    socket.pause();
    const publisher = await RawClient.tcp(t, broker.mqttPort);
    await publisher.connect({ version: 4 });
    const MESSAGES = 60;
    for (let i = 0; i < MESSAGES; i++) {
      publisher.send({ cmd: 'publish', topic: 'flood/x', payload: Buffer.alloc(250 * 1024, i), qos: 1, messageId: i + 1, dup: false, retain: false } as Packet);
    }
    await publisher.packets.next(is('puback', (p) => p.messageId === MESSAGES), 20_000, 'the last PUBACK');
    const unacked = await watcher.messages.next((m) => m.topic === 'unacked/stalled', 20_000, 'the stalled client closed (unacked/stalled)');
    const missed = JSON.parse(unacked.payload) as Array<{ payload: string }>;
    t.ok(missed.length > 0, `onClose got the ${missed.length} messages the stalled client never acknowledged`);
    socket.resume();
    await waitFor(() => closed, 10_000, 'the stalled socket closed');
    // Messages published after the close are no longer this client's; every one before is accounted for.
    const received = packets.filter((p) => p.cmd === 'publish').map((p) => (p as Packet & { payload: Buffer }).payload[0]);
    const accounted = new Set([...received, ...missed.map((m) => m.payload.charCodeAt(0))]);
    const last = Math.max(...accounted);
    const gaps = Array.from({ length: last + 1 }, (_, i) => i).filter((i) => !accounted.has(i));
    t.same(gaps, [], `messages 0–${last} were each received (${received.length}) or handed back (${missed.length}): none lost`);
    t.notOk(publisher.isClosed, 'the publisher is still connected');
  });
});

t.test('an event that kills every worker it reaches is dropped after five crashes, and its client closed', async (t) => {
  const broker = await startMqttApp(t, { WORKER_COUNT: '2' });
  const victim = await textClient(t, broker.textPort);
  victim.send('crash');
  await waitFor(() => victim.isClosed, 120_000, 'the client that sent the poison event closed');
  const survivor = await textClient(t, broker.textPort);
  // The supervisor brings the workers back; the new client's events reach them.
  await waitFor(
    async () => {
      survivor.send('sub ok/x');
      return survivor
        .expect((m) => m.raw === 'subscribed ok/x', 1000, 'subscribed')
        .then(() => true)
        .catch(() => false);
    },
    30_000,
    'a new client is served after the workers restarted',
  );
  t.match(broker.app.output(), /lost with 5 worker links: dropped, and its client closed/, 'the gateway said why');
});

t.test('a Gateway refuses a maxPackageSize that cannot fit in one internal frame', async (t) => {
  t.throws(() => new Gateway('websocket://127.0.0.1:0', { maxPackageSize: 100 * 1024 * 1024 }), RangeError);
});

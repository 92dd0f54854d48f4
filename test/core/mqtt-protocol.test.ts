// MQTT in the gateway, against the fixture broker (test/fixtures/mqtt), with raw clients that
// misbehave on purpose (bytes built by mqtt-packet, over TCP and WebSocket) beside mqtt.js:
// PINGREQ, keep-alive, what closes a connection (first packet not CONNECT, garbage, a second
// CONNECT, an oversized packet), inbound QoS 2 duplicates, outbound QoS 1/2 handshakes and the
// unacknowledged messages handed to onClose, receive maximum, and MQTT packets split over and
// packed into WebSocket messages.
import t from 'tap';
import type { Packet } from 'mqtt-packet';
import { RawClient, encode, mqttJs, sleep, startMqttApp, type MqttJs } from './mqtt-helpers.js';

const is =
  (cmd: string, extra: (p: Packet & Record<string, unknown>) => boolean = () => true) =>
  (p: Packet): boolean =>
    p.cmd === cmd && extra(p as Packet & Record<string, unknown>);

/** The JSON list the fixture publishes on `unacked/<id>` when that client closes. */
async function unackedOf(watcher: MqttJs, mqttId: string, timeoutMs = 5000): Promise<Array<{ topic: string; payload: string; qos: number }>> {
  const message = await watcher.messages.next((m) => m.topic === `unacked/${mqttId}`, timeoutMs, `unacked/${mqttId}`);
  return JSON.parse(message.payload) as Array<{ topic: string; payload: string; qos: number }>;
}

t.test('MQTT in the gateway', async (t) => {
  const broker = await startMqttApp(t);
  const { wsUrl, mqttPort, tcpUrl } = broker;
  const raw = (kind: 'tcp' | 'ws', tt = t) => (kind === 'tcp' ? RawClient.tcp(tt, mqttPort) : RawClient.ws(tt, wsUrl));

  await t.test('PINGREQ is answered by the gateway with D0 00', async (t) => {
    for (const [kind, version] of [
      ['tcp', 4],
      ['tcp', 5],
      ['ws', 4],
      ['ws', 5],
    ] as const) {
      const client = await raw(kind, t);
      await client.connect({ version });
      const after = client.received.length;
      client.sendBytes(Buffer.from([0xc0, 0x00]));
      await client.packets.next(is('pingresp'), 3000, 'PINGRESP');
      client.sendBytes(Buffer.from([0xc0, 0x00, 0xc0, 0x00]));
      await client.packets.take(2, is('pingresp'), 3000, 'two PINGRESPs');
      t.equal(client.received.subarray(after).toString('hex'), 'd000d000d000', `${kind} v${version}: three PINGREQs, three D0 00, nothing else`);
      t.notOk(client.isClosed, `${kind} v${version}: still connected`);
    }
  });

  await t.test('keep-alive: a client silent for 1.5 × its keep-alive is closed', async (t) => {
    const started = Date.now();
    const silent = await Promise.all(
      (
        [
          ['tcp', 4],
          ['tcp', 5],
          ['ws', 4],
          ['ws', 5],
        ] as const
      ).map(async ([kind, version]) => {
        const client = await raw(kind, t);
        const sentAt = Date.now();
        await client.connect({ version, keepalive: 1 });
        return { kind, version, client, sentAt };
      }),
    );
    // Controls: one keeps talking (PINGREQ every 0.5 s), one has keep-alive 0.
    const talker = await raw('tcp', t);
    await talker.connect({ version: 4, keepalive: 1 });
    const pinging = setInterval(() => talker.sendBytes(Buffer.from([0xc0, 0x00])), 500);
    t.teardown(() => clearInterval(pinging));
    const noKeepAlive = await raw('ws', t);
    await noKeepAlive.connect({ version: 5, keepalive: 0 });

    for (const { kind, version, client, sentAt } of silent) {
      t.ok(await client.closesWithin(5000), `${kind} v${version}: closed`);
      const after = client.closedAt - sentAt;
      t.ok(after >= 1400 && after <= 2800, `${kind} v${version}: closed ${after} ms after its CONNECT (window 1400–2800 ms)`);
      const disconnect = client.packets.all.find((p) => p.cmd === 'disconnect');
      if (version === 5) t.match(disconnect, { cmd: 'disconnect', reasonCode: 0x8d }, `${kind} v5: DISCONNECT 0x8D (keep-alive timeout) first`);
      else t.equal(disconnect, undefined, `${kind} v4: no DISCONNECT (3.1.1 has none from the server)`);
      t.same(client.parseErrors, [], `${kind} v${version}: every byte received parsed`);
    }
    await sleep(Math.max(0, 3200 - (Date.now() - started)));
    clearInterval(pinging);
    t.notOk(talker.isClosed, 'a client sending PINGREQ every 0.5 s with keep-alive 1 is still connected after 3 s');
    t.notOk(noKeepAlive.isClosed, 'a client with keep-alive 0 is still connected after 3 s');
  });

  await t.test('the first packet must be CONNECT', async (t) => {
    for (const kind of ['tcp', 'ws'] as const) {
      for (const [what, bytes] of [
        ['PINGREQ', Buffer.from([0xc0, 0x00])],
        ['SUBSCRIBE', encode({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] } as Packet)],
        ['PUBLISH', encode({ cmd: 'publish', topic: 'x', payload: Buffer.from('y'), qos: 0, retain: false, dup: false } as Packet)],
      ] as const) {
        const client = await raw(kind, t);
        client.sendBytes(bytes);
        t.ok(await client.closesWithin(3000), `${kind}: ${what} first → closed`);
        t.equal(client.received.length, 0, `${kind}: ${what} first → nothing answered`);
      }
    }
  });

  await t.test('garbage closes that connection only', async (t) => {
    const bystander = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    await bystander.sub('by/#', { qos: 1 });
    const wsBystander = await raw('ws', t);
    await wsBystander.connect({ version: 4 });
    await wsBystander.subscribe('by/#', 0);
    const cases: Array<{ kind: 'tcp' | 'ws'; version: 4 | 5 | 0; what: string; bytes: Buffer; reason?: number }> = [
      // 'G' reads as a type 4 header with a length of 'E' (69): sent whole, so the gateway sees a first packet that is not CONNECT.
      { kind: 'tcp', version: 0, what: 'an HTTP request instead of CONNECT', bytes: Buffer.from(`GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(40)}\r\n\r\n`) },
      { kind: 'tcp', version: 4, what: 'packet type 0', bytes: Buffer.from([0x00, 0x01, 0x02, 0x03]) },
      { kind: 'tcp', version: 4, what: 'a five-byte length', bytes: Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]) },
      { kind: 'tcp', version: 4, what: 'a PUBLISH whose topic runs past its end', bytes: Buffer.from([0x30, 0x03, 0x00, 0x05, 0x61]) },
      { kind: 'tcp', version: 5, what: 'a PUBLISH whose topic runs past its end', bytes: Buffer.from([0x30, 0x03, 0x00, 0x05, 0x61]), reason: 0x81 },
      { kind: 'tcp', version: 5, what: 'a PUBLISH with an unknown property', bytes: Buffer.from([0x30, 0x06, 0x00, 0x01, 0x61, 0x02, 0x7f, 0x00]), reason: 0x81 },
      { kind: 'tcp', version: 4, what: 'a PUBREL with flags 0', bytes: Buffer.from([0x60, 0x02, 0x00, 0x01]) },
      { kind: 'ws', version: 0, what: 'random bytes instead of CONNECT', bytes: Buffer.concat([Buffer.from('8f3a', 'hex'), Buffer.from(Array.from({ length: 62 }, (_, i) => (i * 97 + 13) & 0xff))]) },
      { kind: 'ws', version: 4, what: 'packet type 0', bytes: Buffer.from([0x00, 0x00]) },
      { kind: 'ws', version: 5, what: 'a PUBLISH QoS 3', bytes: Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]), reason: 0x81 },
    ];
    for (const c of cases) {
      const client = await raw(c.kind, t);
      if (c.version) await client.connect({ version: c.version });
      const after = client.received.length;
      client.sendBytes(c.bytes);
      const label = `${c.kind}${c.version ? ` v${c.version}` : ''}: ${c.what}`;
      t.ok(await client.closesWithin(3000), `${label} → closed`);
      const answered = client.packets.all.filter((p) => p.cmd !== 'connack');
      if (c.reason !== undefined) t.match(answered, [{ cmd: 'disconnect', reasonCode: c.reason }], `${label} → DISCONNECT 0x${c.reason.toString(16)} first`);
      else t.equal(client.received.length, after, `${label} → nothing sent back`);
    }
    // The others never noticed.
    const publisher = await mqttJs(t, wsUrl, { protocolVersion: 4 });
    await publisher.pub('by/after', 'still here', { qos: 1 });
    t.match(await bystander.messages.next(() => true, 5000, 'by/after'), { topic: 'by/after', payload: 'still here' }, 'an mqtt.js client connected throughout still gets messages');
    t.match(await wsBystander.packets.next(is('publish'), 5000, 'by/after'), { topic: 'by/after', payload: Buffer.from('still here') }, 'so does a raw WebSocket client');
    t.notOk(wsBystander.isClosed, 'and it is still connected');
  });

  await t.test('a second CONNECT closes the connection (v5: DISCONNECT 0x82 first)', async (t) => {
    for (const [kind, version] of [
      ['tcp', 4],
      ['tcp', 5],
      ['ws', 4],
      ['ws', 5],
    ] as const) {
      const client = await raw(kind, t);
      await client.connect({ version });
      const after = client.received.length;
      client.send(client.connectPacket({ version }));
      t.ok(await client.closesWithin(3000), `${kind} v${version}: closed`);
      if (version === 5) t.match(client.packets.all.slice(1), [{ cmd: 'disconnect', reasonCode: 0x82 }], `${kind} v5: DISCONNECT 0x82 (protocol error), and no second CONNACK`);
      else t.equal(client.received.length, after, `${kind} v4: no second CONNACK, nothing else`);
    }
  });

  await t.test('inbound QoS 2: a duplicate before PUBREL is acknowledged again, delivered once', async (t) => {
    for (const [kind, version] of [
      ['tcp', 4],
      ['ws', 5],
    ] as const) {
      const watcher = await raw('tcp', t);
      await watcher.connect({ version: 4 });
      await watcher.subscribe(`dup/${kind}/#`, 0);
      const publisher = await raw(kind, t);
      await publisher.connect({ version });
      const publish = (dup: boolean, payload: string, messageId = 7): Packet => ({ cmd: 'publish', topic: `dup/${kind}/x`, payload: Buffer.from(payload), qos: 2, messageId, dup, retain: false }) as Packet;
      publisher.send(publish(false, 'once'));
      await publisher.packets.next(is('pubrec', (p) => p.messageId === 7), 3000, 'first PUBREC');
      publisher.send(publish(true, 'once'));
      await publisher.packets.next(is('pubrec', (p) => p.messageId === 7), 3000, 'second PUBREC');
      t.equal(publisher.packets.all.filter((p) => p.cmd === 'pubcomp').length, 0, `${kind} v${version}: no PUBCOMP before PUBREL`);
      publisher.send({ cmd: 'pubrel', messageId: 7 } as Packet);
      await publisher.packets.next(is('pubcomp', (p) => p.messageId === 7), 3000, 'PUBCOMP');
      // Packet id 7 is free again: a new message with it is a new message.
      publisher.send(publish(false, 'again'));
      await publisher.packets.next(is('pubrec', (p) => p.messageId === 7), 3000, 'PUBREC of the reuse');
      publisher.send({ cmd: 'pubrel', messageId: 7 } as Packet);
      await publisher.packets.next(is('pubcomp', (p) => p.messageId === 7), 3000, 'PUBCOMP of the reuse');
      publisher.send({ cmd: 'publish', topic: `dup/${kind}/end`, payload: Buffer.from('end'), qos: 0, dup: false, retain: false } as Packet);
      const got = await watcher.packets.until(is('publish', (p) => p.topic === `dup/${kind}/end`), 5000, 'end marker');
      t.same(
        got.filter((p) => p.cmd === 'publish').map((p) => (p as { payload: Buffer }).payload.toString()),
        ['once', 'again'],
        `${kind} v${version}: the subscriber got "once" once, then the reuse of id 7`,
      );
      t.equal(publisher.packets.all.filter((p) => p.cmd === 'pubrec').length, 3, `${kind} v${version}: PUBREC ×3 (twice for id 7, once for its reuse)`);
      t.notOk(publisher.isClosed, `${kind} v${version}: the publisher is still connected`);
    }
  });

  await t.test('inbound QoS 2: the same packet id again without DUP before PUBREL is not delivered twice', async (t) => {
    // MQTT 3.1.1 §4.3.3 / 5.0 §4.3.3: until PUBREL, any PUBLISH with that packet id gets a PUBREC
    // and must not cause a duplicate delivery — the DUP flag is not part of that rule.
    const watcher = await raw('tcp', t);
    await watcher.connect({ version: 4 });
    await watcher.subscribe('nodup/#', 0);
    const publisher = await raw('tcp', t);
    await publisher.connect({ version: 4 });
    const publish = { cmd: 'publish', topic: 'nodup/x', payload: Buffer.from('once'), qos: 2, messageId: 8, dup: false, retain: false } as Packet;
    publisher.send(publish);
    await publisher.packets.next(is('pubrec'), 3000, 'first PUBREC');
    publisher.send(publish);
    await publisher.packets.next(is('pubrec'), 3000, 'second PUBREC');
    publisher.send({ cmd: 'pubrel', messageId: 8 } as Packet);
    await publisher.packets.next(is('pubcomp'), 3000, 'PUBCOMP');
    publisher.send({ cmd: 'publish', topic: 'nodup/end', payload: Buffer.from('end'), qos: 0, dup: false, retain: false } as Packet);
    const got = await watcher.packets.until(is('publish', (p) => p.topic === 'nodup/end'), 5000, 'end marker');
    t.same(
      got.filter((p) => p.cmd === 'publish').map((p) => (p as { payload: Buffer }).payload.toString()),
      ['once'],
      'delivered once',
    );
  });

  await t.test('outbound QoS 1 and 2: what the client never acknowledged goes to onClose (ctx.unacked)', async (t) => {
    const watcher = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    await watcher.sub('unacked/#', { qos: 1 });
    const publisher = await mqttJs(t, tcpUrl, { protocolVersion: 5 });

    // QoS 1: three messages, the second acknowledged.
    const lazy = await raw('tcp', t);
    await lazy.connect({ version: 4, clientId: 'lazy-1' });
    await lazy.subscribe('work/#', 1);
    for (const i of [1, 2, 3]) await publisher.pub(`work/${i}`, `m${i}`, { qos: 1 });
    const got = (await lazy.packets.take(3, is('publish'), 5000, 'work messages')) as Array<Packet & { messageId: number; qos: number; dup: boolean; topic: string }>;
    t.same(
      got.map((p) => [p.topic, p.qos, p.dup]),
      [
        ['work/1', 1, false],
        ['work/2', 1, false],
        ['work/3', 1, false],
      ],
      'the raw subscriber got the three messages at QoS 1',
    );
    t.equal(new Set(got.map((p) => p.messageId)).size, 3, 'with three distinct packet ids');
    t.ok(got.every((p) => p.messageId > 0), 'packet ids are non-zero');
    lazy.send({ cmd: 'puback', messageId: got[1].messageId } as Packet);
    await sleep(100);
    lazy.close();
    t.same(
      await unackedOf(watcher, 'lazy-1'),
      [
        { topic: 'work/1', payload: 'm1', qos: 1 },
        { topic: 'work/3', payload: 'm3', qos: 1 },
      ],
      'onClose got exactly the two unacknowledged messages, oldest first',
    );

    // QoS 2: A completes, B gets PUBREC (so PUBREL comes) but no PUBCOMP, C nothing at all.
    const lazy2 = await raw('ws', t);
    await lazy2.connect({ version: 5, clientId: 'lazy-2' });
    await lazy2.subscribe('work2/#', 2);
    for (const name of ['A', 'B', 'C']) await publisher.pub(`work2/${name}`, name, { qos: 2 });
    const [a, b, c] = (await lazy2.packets.take(3, is('publish'), 5000, 'work2 messages')) as Array<Packet & { messageId: number; qos: number; topic: string }>;
    t.same([a.qos, b.qos, c.qos], [2, 2, 2], 'delivered at QoS 2');
    lazy2.send({ cmd: 'pubrec', messageId: a.messageId } as Packet);
    await lazy2.packets.next(is('pubrel', (p) => p.messageId === a.messageId), 3000, 'PUBREL for A');
    lazy2.send({ cmd: 'pubcomp', messageId: a.messageId } as Packet);
    lazy2.send({ cmd: 'pubrec', messageId: b.messageId } as Packet);
    await lazy2.packets.next(is('pubrel', (p) => p.messageId === b.messageId), 3000, 'PUBREL for B');
    t.equal(lazy2.packets.all.filter((p) => p.cmd === 'pubrel').length, 2, 'one PUBREL per PUBREC');
    await sleep(100);
    lazy2.close();
    const left = await unackedOf(watcher, 'lazy-2');
    t.ok(
      left.some((m) => m.payload === 'C') && !left.some((m) => m.payload === 'A'),
      `C (never acknowledged) is handed back, A (completed) is not: ${JSON.stringify(left)}`,
    );
    t.same(left, [{ topic: 'work2/C', payload: 'C', qos: 2 }], 'B, received (PUBREC) though not completed, is not handed back for redelivery as a new PUBLISH');

    // A client that acknowledged everything: no unacked publish at all (checked at the next close).
    const tidy = await raw('tcp', t);
    await tidy.connect({ version: 4, clientId: 'tidy' });
    await tidy.subscribe('work3/#', 1);
    await publisher.pub('work3/x', 'x', { qos: 1 });
    const x = (await tidy.packets.next(is('publish'), 5000, 'work3/x')) as Packet & { messageId: number };
    tidy.send({ cmd: 'puback', messageId: x.messageId } as Packet);
    await sleep(100);
    tidy.close();
    const last = await raw('tcp', t);
    await last.connect({ version: 4, clientId: 'last' });
    await last.subscribe('work4/#', 1);
    await publisher.pub('work4/y', 'y', { qos: 1 });
    await last.packets.next(is('publish'), 5000, 'work4/y');
    await tidy.closed;
    await sleep(200);
    last.close();
    t.same(await unackedOf(watcher, 'last'), [{ topic: 'work4/y', payload: 'y', qos: 1 }], 'the next close hands back its message');
    t.same(
      watcher.messages.all.filter((m) => m.topic === 'unacked/tidy'),
      [],
      'a client that acknowledged everything hands back nothing',
    );
  });

  await t.test('a persistent session goes on over the next connection (Gateway.restoreMqttSession)', async (t) => {
    type Pub = Packet & { messageId: number; topic: string; dup: boolean; qos: number; payload: Buffer };
    const publisher = await mqttJs(t, tcpUrl, { protocolVersion: 5 });
    const watcher = await mqttJs(t, wsUrl, { protocolVersion: 4 });
    await watcher.sub('resume-in/#', { qos: 2 });
    for (const kind of ['tcp', 'ws'] as const) {
      const id = `resume-${kind}`;
      const first = await raw(kind, t);
      await first.connect({ version: 4, clientId: id, clean: false });
      await first.subscribe(`resume/${kind}/#`, 2);
      await publisher.pub(`resume/${kind}/q1`, 'one', { qos: 1 });
      await publisher.pub(`resume/${kind}/q2`, 'two', { qos: 2 });
      const [one, two] = (await first.packets.take(2, is('publish'), 5000, 'both messages')) as Pub[];
      // QoS 2 received (PUBREC) but not completed; QoS 1 not acknowledged at all.
      first.send({ cmd: 'pubrec', messageId: two.messageId } as Packet);
      await first.packets.next(is('pubrel'), 3000, 'PUBREL');
      // Its own QoS 2 publish, passed on but never released.
      first.send({ cmd: 'publish', topic: `resume-in/${kind}`, payload: Buffer.from('in'), qos: 2, messageId: 42, dup: false, retain: false } as Packet);
      await first.packets.next(is('pubrec', (p) => p.messageId === 42), 3000, 'PUBREC for 42');
      first.close();
      await sleep(300);

      const second = await raw(kind, t);
      const connack = (await second.connect({ version: 4, clientId: id, clean: false })) as Packet & { sessionPresent: boolean };
      t.equal(connack.sessionPresent, true, `${kind}: the session is present`);
      const resent = (await second.packets.next(is('publish'), 3000, 'the unacknowledged QoS 1 message again')) as Pub;
      t.same([resent.topic, resent.messageId, resent.dup, resent.qos, resent.payload.toString()], [one.topic, one.messageId, true, 1, 'one'], `${kind}: QoS 1 resent with its packet id and DUP`);
      const release = (await second.packets.next(is('pubrel'), 3000, 'PUBREL again')) as Packet & { messageId: number };
      t.equal(release.messageId, two.messageId, `${kind}: PUBREL resent for the received QoS 2 message`);
      t.equal(second.packets.items.filter((p) => p.cmd === 'publish').length, 0, `${kind}: the received QoS 2 message is not delivered again`);
      second.send({ cmd: 'publish', topic: `resume-in/${kind}`, payload: Buffer.from('in'), qos: 2, messageId: 42, dup: true, retain: false } as Packet);
      await second.packets.next(is('pubrec', (p) => p.messageId === 42), 3000, 'PUBREC for the resent 42');
      second.send({ cmd: 'pubrel', messageId: 42 } as Packet);
      await second.packets.next(is('pubcomp', (p) => p.messageId === 42), 3000, 'PUBCOMP for 42');
      second.send({ cmd: 'puback', messageId: resent.messageId } as Packet);
      second.send({ cmd: 'pubcomp', messageId: two.messageId } as Packet);
      await publisher.pub(`resume-in/${kind}/end`, 'end', { qos: 1 });
      await watcher.messages.until((m) => m.topic === `resume-in/${kind}/end`, 5000, 'end marker');
      t.equal(watcher.messages.all.filter((m) => m.topic === `resume-in/${kind}`).length, 1, `${kind}: its QoS 2 message, sent twice, was delivered once`);
      second.close();
    }
  });

  await t.test('receive maximum (MQTT 5): no more than that many unacknowledged messages in flight', async (t) => {
    const watcher = await mqttJs(t, tcpUrl, { protocolVersion: 4 });
    await watcher.sub('unacked/#', { qos: 1 });
    const publisher = await mqttJs(t, wsUrl, { protocolVersion: 5 });
    for (const kind of ['tcp', 'ws'] as const) {
      const slow = await raw(kind, t);
      const id = `slow-${kind}`;
      await slow.connect({ version: 5, clientId: id, properties: { receiveMaximum: 2 } });
      await slow.subscribe(`rm/${kind}/#`, 1);
      for (const i of [1, 2, 3, 4]) await publisher.pub(`rm/${kind}/${i}`, `r${i}`, { qos: 1 });
      const first = (await slow.packets.take(2, is('publish'), 5000, 'two in flight')) as Array<Packet & { messageId: number; topic: string }>;
      t.same(
        first.map((p) => p.topic),
        [`rm/${kind}/1`, `rm/${kind}/2`],
        `${kind}: the first two arrived`,
      );
      await sleep(400);
      t.equal(slow.packets.items.filter((p) => p.cmd === 'publish').length, 0, `${kind}: no third while two are unacknowledged`);
      slow.send({ cmd: 'puback', messageId: first[0].messageId } as Packet);
      const third = (await slow.packets.next(is('publish'), 3000, 'the third')) as Packet & { topic: string };
      t.equal(third.topic, `rm/${kind}/3`, `${kind}: one PUBACK lets the third through`);
      await sleep(300);
      t.equal(slow.packets.items.filter((p) => p.cmd === 'publish').length, 0, `${kind}: and only the third`);
      slow.close();
      t.same(
        (await unackedOf(watcher, id)).map((m) => m.payload),
        ['r2', 'r3', 'r4'],
        `${kind}: at close, the two in flight and the one still waiting, oldest first`,
      );
    }
  });

  await t.test('MQTT packets split over WebSocket messages, and several in one message', async (t) => {
    const client = await raw('ws', t);
    const connect = encode(client.connectPacket({ version: 4, clientId: 'splitter' }));
    client.sendBytes(connect.subarray(0, 1));
    client.sendBytes(connect.subarray(1, 3));
    await sleep(50);
    client.sendBytes(connect.subarray(3));
    t.match(await client.packets.next(is('connack'), 3000, 'CONNACK'), { cmd: 'connack', returnCode: 0 }, 'a CONNECT in three messages (split inside the length) → CONNACK');
    const subscribe = encode({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'split/#', qos: 0 }] } as Packet);
    client.sendBytes(Buffer.concat([subscribe, Buffer.from([0xc0, 0x00])]));
    await client.packets.next(is('suback', (p) => p.messageId === 3), 3000, 'SUBACK');
    await client.packets.next(is('pingresp'), 3000, 'PINGRESP');
    t.pass('SUBSCRIBE + PINGREQ in one message → SUBACK and PINGRESP');
    const big = encode({ cmd: 'publish', topic: 'split/big', payload: Buffer.alloc(300, 0x62), qos: 0, dup: false, retain: false } as Packet);
    const small = encode({ cmd: 'publish', topic: 'split/small', payload: Buffer.from('s'), qos: 0, dup: false, retain: false } as Packet);
    // The big one split after its first length byte; its rest, a whole small one and the start of another in one message.
    client.sendBytes(big.subarray(0, 2));
    client.sendBytes(Buffer.concat([big.subarray(2), small, small.subarray(0, 4)]));
    client.sendBytes(small.subarray(4));
    // And one sent a byte per message.
    for (const byte of small) client.sendBytes(Buffer.from([byte]));
    const got = (await client.packets.take(4, is('publish'), 5000, 'the echoed publishes')) as Array<Packet & { topic: string; payload: Buffer }>;
    t.same(
      got.map((p) => [p.topic, p.payload.length]),
      [
        ['split/big', 300],
        ['split/small', 1],
        ['split/small', 1],
        ['split/small', 1],
      ],
      'every packet arrived whole, once, in order',
    );
    t.notOk(client.isClosed, 'still connected');
    t.same(client.parseErrors, [], 'everything the gateway sent back parsed');
  });

  await t.test('MQTT packets split over TCP writes, and several in one write', async (t) => {
    const client = await raw('tcp', t);
    await client.connect({ version: 5, clientId: 'tcp-splitter' });
    const subscribe = encode({ cmd: 'subscribe', messageId: 4, subscriptions: [{ topic: 'tsplit/#', qos: 0 }] } as Packet, 5);
    client.sendBytes(subscribe.subarray(0, 1));
    await sleep(30);
    client.sendBytes(Buffer.concat([subscribe.subarray(1), Buffer.from([0xc0, 0x00])]));
    await client.packets.next(is('suback', (p) => p.messageId === 4), 3000, 'SUBACK');
    await client.packets.next(is('pingresp'), 3000, 'PINGRESP');
    const p1 = encode({ cmd: 'publish', topic: 'tsplit/a', payload: Buffer.alloc(200, 1), qos: 0, dup: false, retain: false } as Packet, 5);
    client.sendBytes(p1.subarray(0, 2));
    await sleep(30);
    client.sendBytes(Buffer.concat([p1.subarray(2), p1]));
    const got = (await client.packets.take(2, is('publish'), 5000, 'two publishes')) as Array<Packet & { topic: string; payload: Buffer }>;
    t.same(
      got.map((p) => [p.topic, p.payload.length]),
      [
        ['tsplit/a', 200],
        ['tsplit/a', 200],
      ],
      'split and packed packets over TCP arrive whole',
    );
  });
});

t.test('oversized packets (maxPackageSize 1024)', async (t) => {
  const broker = await startMqttApp(t, { MAX_PACKET: '1024' });
  const watcher = await RawClient.tcp(t, broker.mqttPort);
  await watcher.connect({ version: 4 });
  await watcher.subscribe('big/#', 0);
  const publish = (size: number, version: 4 | 5): Buffer => encode({ cmd: 'publish', topic: 'big/x', payload: Buffer.alloc(size, 0x61), qos: 0, dup: false, retain: false } as Packet, version);
  for (const [kind, version] of [
    ['tcp', 4],
    ['tcp', 5],
    ['ws', 4],
    ['ws', 5],
  ] as const) {
    const client = kind === 'tcp' ? await RawClient.tcp(t, broker.mqttPort) : await RawClient.ws(t, broker.wsUrl);
    await client.connect({ version });
    client.sendBytes(publish(900, version));
    const fits = (await watcher.packets.next(is('publish'), 3000, 'the 900-byte publish')) as Packet & { payload: Buffer };
    t.equal(fits.payload.length, 900, `${kind} v${version}: a 900-byte payload (under 1024 in all) passes`);
    client.sendBytes(publish(2000, version));
    t.ok(await client.closesWithin(3000), `${kind} v${version}: a 2000-byte packet closes the connection`);
    if (version === 5) t.match(client.packets.all.slice(1), [{ cmd: 'disconnect', reasonCode: 0x95 }], `${kind} v5: DISCONNECT 0x95 (packet too large) first`);
  }
  watcher.sendBytes(Buffer.from([0xc0, 0x00]));
  await watcher.packets.next(is('pingresp'), 3000, 'PINGRESP');
  t.equal(watcher.packets.items.filter((p) => p.cmd === 'publish').length, 0, 'no oversized message was delivered');
  t.notOk(watcher.isClosed, 'the watcher is still connected');
});

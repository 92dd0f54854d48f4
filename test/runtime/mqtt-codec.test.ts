// MQTT framing and packet helpers (protocols/mqtt.ts) and the internal codec of topic publishes
// and unacknowledged messages (internal/codec.ts): lengths on every cut of real packets, round
// trips of every packet type at 3.1.1 and 5.0, malformed input that throws without poisoning
// the next decode, truncation, and seeded random / mutated bytes.
import t from 'tap';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { decodeMqttPacket, encodeMqttPacket, mqttPacketLength, type MqttVersion } from '../../runtime/src/protocols/mqtt.js';
import { decodeMqttDeliveryState, decodePublish, encodeMqttDeliveryState, encodePublish, type MqttDeliveryState, type PublishFrame, type UnackedMessage } from '../../runtime/src/internal/codec.js';

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const gen = (packet: object, version: MqttVersion): Buffer => mqttPacket.generate(packet as Packet, { protocolVersion: version });

/** What a fresh mqtt-packet parser makes of `bytes` (the reference, free of any cached state). */
function reference(bytes: Buffer, version: MqttVersion): Packet {
  const parser = mqttPacket.parser({ protocolVersion: version });
  const found: Packet[] = [];
  parser.on('packet', (p: Packet) => found.push(p));
  parser.on('error', (error: Error) => {
    throw error;
  });
  parser.parse(bytes);
  if (found.length !== 1) throw new Error(`reference parse found ${found.length} packets`);
  return found[0];
}

/** Every packet type, as a packet object, for a protocol level. */
function packetsFor(version: 4 | 5): Array<{ name: string; packet: object }> {
  const v5 = version === 5;
  const list: Array<{ name: string; packet: object }> = [
    {
      name: 'connect',
      packet: {
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: version,
        clientId: 'dev-1',
        clean: true,
        keepalive: 30,
        username: 'u',
        password: Buffer.from('p'),
        will: { topic: 'w/t', payload: Buffer.from('gone'), qos: 1, retain: false, ...(v5 ? { properties: { willDelayInterval: 5 } } : {}) },
        ...(v5 ? { properties: { sessionExpiryInterval: 60, receiveMaximum: 10, maximumPacketSize: 1000 } } : {}),
      },
    },
    { name: 'connack', packet: v5 ? { cmd: 'connack', sessionPresent: true, reasonCode: 0, properties: { maximumQoS: 1 } } : { cmd: 'connack', sessionPresent: true, returnCode: 0 } },
    { name: 'publish qos 0', packet: { cmd: 'publish', topic: 'a/b', payload: Buffer.from('zero'), qos: 0, retain: false, dup: false } },
    {
      name: 'publish qos 1 retain',
      packet: { cmd: 'publish', topic: 'a/ü', payload: Buffer.from('one'), qos: 1, retain: true, dup: false, messageId: 1, ...(v5 ? { properties: { contentType: 'text/plain', userProperties: { k: 'v' } } } : {}) },
    },
    { name: 'publish qos 2 dup', packet: { cmd: 'publish', topic: 'x', payload: Buffer.alloc(300, 7), qos: 2, retain: false, dup: true, messageId: 65535 } },
    { name: 'publish empty payload', packet: { cmd: 'publish', topic: 't', payload: Buffer.alloc(0), qos: 0, retain: true, dup: false } },
    { name: 'puback', packet: { cmd: 'puback', messageId: 2, ...(v5 ? { reasonCode: 0x10 } : {}) } },
    { name: 'pubrec', packet: { cmd: 'pubrec', messageId: 3 } },
    { name: 'pubrel', packet: { cmd: 'pubrel', messageId: 4 } },
    { name: 'pubcomp', packet: { cmd: 'pubcomp', messageId: 5 } },
    {
      name: 'subscribe',
      packet: {
        cmd: 'subscribe',
        messageId: 6,
        subscriptions: v5
          ? [
              { topic: 'a/+', qos: 1, nl: true, rap: true, rh: 1 },
              { topic: '#', qos: 2, nl: false, rap: false, rh: 0 },
            ]
          : [
              { topic: 'a/+', qos: 1 },
              { topic: '#', qos: 2 },
            ],
        ...(v5 ? { properties: { subscriptionIdentifier: 42 } } : {}),
      },
    },
    { name: 'suback', packet: { cmd: 'suback', messageId: 6, granted: [1, 2, 128] } },
    { name: 'unsubscribe', packet: { cmd: 'unsubscribe', messageId: 7, unsubscriptions: ['a/+', '#'] } },
    { name: 'unsuback', packet: v5 ? { cmd: 'unsuback', messageId: 7, granted: [0, 17] } : { cmd: 'unsuback', messageId: 7 } },
    { name: 'pingreq', packet: { cmd: 'pingreq' } },
    { name: 'pingresp', packet: { cmd: 'pingresp' } },
    { name: 'disconnect', packet: v5 ? { cmd: 'disconnect', reasonCode: 0x8d, properties: { reasonString: 'bye' } } : { cmd: 'disconnect' } },
  ];
  if (v5) list.push({ name: 'auth', packet: { cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM', authenticationData: Buffer.from([1, 2, 3]) } } });
  return list;
}

/** A PUBLISH whose remaining length is exactly `remaining` (topic "t", qos 0). */
function publishWithRemaining(remaining: number): Buffer {
  return gen({ cmd: 'publish', topic: 't', payload: Buffer.alloc(remaining - 3, 0x61), qos: 0, retain: false, dup: false }, 4);
}

t.test('mqttPacketLength', async (t) => {
  await t.test('every cut of real packets: 0 until the length is known, then the exact total', async (t) => {
    const samples: Buffer[] = [];
    for (const version of [4, 5] as const) for (const { packet } of packetsFor(version)) samples.push(gen(packet, version));
    // Remaining-length varints of 1, 2, 3 bytes, on both sides of each boundary.
    for (const remaining of [3, 127, 128, 16_383, 16_384]) samples.push(publishWithRemaining(remaining));
    let wrong = 0;
    let checked = 0;
    for (const packet of samples) {
      let header = 2;
      while (packet[header - 1] & 0x80) header++;
      for (let cut = 0; cut <= packet.length; cut++) {
        const got = mqttPacketLength(packet.subarray(0, cut));
        const want = cut < header ? 0 : packet.length;
        checked++;
        if (got !== want && wrong++ < 5) t.fail(`cut ${cut}/${packet.length} of ${packet.subarray(0, 6).toString('hex')}…: got ${got}, want ${want}`);
      }
      // Followed by more bytes (the next packet): still this one's length.
      t.equal(mqttPacketLength(Buffer.concat([packet, Buffer.from([0xc0, 0x00])])), packet.length, `length of ${packet.length} followed by another packet`);
    }
    t.equal(wrong, 0, `${checked} cuts measured right`);
  });

  await t.test('varint edges', async (t) => {
    t.equal(mqttPacketLength(Buffer.from([0xc0, 0x00])), 2, 'PINGREQ: 2 bytes');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0x7f])), 2 + 127, 'one-byte varint maximum');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0x80, 0x01])), 3 + 128, 'two-byte varint minimum');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0x7f])), 3 + 16_383, 'two-byte varint maximum');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0x80, 0x80, 0x01])), 4 + 16_384, 'three-byte varint minimum');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0xff, 0x7f])), 4 + 2_097_151, 'three-byte varint maximum');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x01])), 5 + 2_097_152, 'four-byte varint minimum');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0xff, 0xff])), 0, 'four continuation bytes so far: wait');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff])), -1, 'a fifth length byte: never a packet');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00])), -1, 'a fifth length byte with more after it: never a packet');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80])), -1, 'five bytes of zero continuation: never a packet');
  });

  await t.test('packet type 0 is not MQTT', async (t) => {
    t.equal(mqttPacketLength(Buffer.from([0x00, 0x00])), -1, 'type 0, flags 0');
    t.equal(mqttPacketLength(Buffer.from([0x0f, 0x02, 0x00, 0x00])), -1, 'type 0, flags 15');
    t.equal(mqttPacketLength(Buffer.alloc(0)), 0, 'nothing yet');
    t.equal(mqttPacketLength(Buffer.from([0x30])), 0, 'a fixed header byte alone: wait');
  });

  await t.test('the size limit counts the whole packet', async (t) => {
    const packet = publishWithRemaining(200); // 1 + 2 + 200
    t.equal(packet.length, 203);
    t.equal(mqttPacketLength(packet, 203), 203, 'exactly the limit: accepted');
    t.equal(mqttPacketLength(packet, 202), -1, 'one byte over the limit: refused');
    t.equal(mqttPacketLength(packet.subarray(0, 3), 202), -1, 'refused as soon as the header is known');
    t.equal(mqttPacketLength(packet.subarray(0, 2), 202), 0, 'not before');
    // The largest packet MQTT can express: remaining length 268,435,455 → 268,435,460 bytes in all.
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f])), 268_435_460, 'without a limit, the largest possible packet is measured, not refused');
    t.equal(mqttPacketLength(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), 1024 * 1024), -1, 'over a 1 MB limit: refused');
  });
});

t.test('decodeMqttPacket / encodeMqttPacket round trips', async (t) => {
  for (const version of [4, 5] as const) {
    await t.test(`MQTT ${version === 5 ? '5.0' : '3.1.1'}: every packet type`, async (t) => {
      for (const { name, packet } of packetsFor(version)) {
        const bytes = encodeMqttPacket(packet as Packet, version);
        t.same(bytes, gen(packet, version), `${name}: encodeMqttPacket writes what mqtt-packet writes`);
        const decoded = decodeMqttPacket(bytes, version);
        const { length: _length, ...fields } = decoded as Packet & { length?: number };
        // Every field given comes back (payloads as Buffers).
        t.match(fields, packet, `${name}: decoded fields`);
        t.same(decoded, reference(bytes, version), `${name}: decoded as a fresh mqtt-packet parser does`);
        // Re-encoding may spell defaults out (a v5 PUBREC's reason code 0), never change a field.
        const again = encodeMqttPacket(decoded, version);
        const { length: _again, ...fieldsAgain } = decodeMqttPacket(again, version) as Packet & { length?: number };
        t.same(fieldsAgain, fields, `${name}: re-encoding the decoded packet keeps every field`);
      }
    });
  }

  await t.test('MQTT 3.1 (MQIsdp) CONNECT', async (t) => {
    const bytes = encodeMqttPacket({ cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'old', clean: true, keepalive: 5 } as Packet, 3);
    t.match(decodeMqttPacket(bytes, 3), { cmd: 'connect', protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'old', keepalive: 5 });
    t.match(decodeMqttPacket(bytes, 4), { cmd: 'connect', protocolVersion: 3 }, 'decodes with another version: a CONNECT carries its own');
  });

  await t.test('a CONNECT decodes with any version and does not change how that version decodes later packets', async (t) => {
    const connect5 = gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: 'five', clean: true, keepalive: 10, properties: { receiveMaximum: 3 } }, 5);
    const connect4 = gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'four', clean: true, keepalive: 10 }, 4);
    const publish4 = gen({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 1, messageId: 9, retain: false, dup: false }, 4);
    const publish5 = gen({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 1, messageId: 9, retain: false, dup: false, properties: { contentType: 'x' } }, 5);
    // The gateway decodes every CONNECT at level 4, then a client's other packets at its level.
    t.match(decodeMqttPacket(connect5, 4), { cmd: 'connect', protocolVersion: 5, clientId: 'five', properties: { receiveMaximum: 3 } }, 'a v5 CONNECT decoded at level 4');
    let after: unknown;
    try {
      after = decodeMqttPacket(publish4, 4);
    } catch (error) {
      after = (error as Error).message;
    }
    t.match(after, { cmd: 'publish', topic: 'a/b', messageId: 9, payload: Buffer.from('hello') }, 'a 3.1.1 PUBLISH decoded at level 4 right after a v5 CONNECT');
    t.match(decodeMqttPacket(connect4, 5), { cmd: 'connect', protocolVersion: 4, clientId: 'four' }, 'a v4 CONNECT decoded at level 5');
    try {
      after = decodeMqttPacket(publish5, 5);
    } catch (error) {
      after = (error as Error).message;
    }
    t.match(after, { cmd: 'publish', topic: 'a/b', messageId: 9, properties: { contentType: 'x' } }, 'a 5.0 PUBLISH decoded at level 5 right after a v4 CONNECT');
  });

  await t.test('encodeMqttPacket refuses invalid packets with an Error', async (t) => {
    t.throws(() => encodeMqttPacket({ cmd: 'publish', topic: 'a', payload: 'x', qos: 1 } as unknown as Packet, 4), Error, 'QoS 1 without a packet id');
    t.throws(() => encodeMqttPacket({ cmd: 'subscribe', messageId: 1, subscriptions: [] } as unknown as Packet, 4), Error, 'SUBSCRIBE without filters');
    t.throws(() => encodeMqttPacket({ cmd: 'nope' } as unknown as Packet, 4), Error, 'unknown command');
    t.throws(() => encodeMqttPacket({ cmd: 'auth', reasonCode: 0 } as Packet, 4), Error, 'AUTH below MQTT 5');
  });
});

t.test('malformed input throws and does not poison the next decode', async (t) => {
  const good4 = gen({ cmd: 'publish', topic: 'ok', payload: Buffer.from('fine'), qos: 1, messageId: 3, retain: false, dup: false }, 4);
  const good5 = gen({ cmd: 'publish', topic: 'ok', payload: Buffer.from('fine'), qos: 1, messageId: 3, retain: false, dup: false, properties: { userProperties: { a: 'b' } } }, 5);
  const bad: Array<[string, Buffer]> = [
    ['incomplete (header says 10, 3 given)', Buffer.from([0x30, 0x0a, 0x00, 0x01, 0x61])],
    ['two packets in one buffer', Buffer.concat([good4, Buffer.from([0xc0, 0x00])])],
    ['topic length past the end', Buffer.from([0x30, 0x03, 0x00, 0x05, 0x61])],
    ['PUBLISH QoS 3', Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01])],
    ['PUBREL with flags 0 (must be 2)', Buffer.from([0x60, 0x02, 0x00, 0x01])],
    ['SUBSCRIBE with flags 0 (must be 2)', Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00])],
    ['CONNECT with a bad protocol name', Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x58, 0x04, 0x02, 0x00, 0x0a, 0x00, 0x00])],
    ['CONNECT with the reserved flag set', Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x03, 0x00, 0x0a, 0x00, 0x00])],
    ['CONNECT of protocol level 6', Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x06, 0x02, 0x00, 0x0a, 0x00, 0x00])],
    ['empty buffer', Buffer.alloc(0)],
    ['a lone header byte', Buffer.from([0x30])],
    ['five-byte varint', Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])],
  ];
  for (const version of [4, 5] as const) {
    const good = version === 5 ? good5 : good4;
    const want = reference(good, version);
    for (const [name, bytes] of bad) {
      t.throws(() => decodeMqttPacket(bytes, version), Error, `v${version} ${name}: throws`);
      t.same(decodeMqttPacket(good, version), want, `v${version} ${name}: the next decode is right`);
    }
  }
  // v5-only property errors at level 5, then a v4 decode is unaffected and vice versa.
  t.throws(() => decodeMqttPacket(Buffer.from([0x30, 0x05, 0x00, 0x01, 0x61, 0x02, 0x7f]), 5), Error, 'v5: unknown property id');
  t.match(decodeMqttPacket(good4, 4), { topic: 'ok', payload: Buffer.from('fine') }, 'v4 decode after a v5 failure');
  t.match(decodeMqttPacket(good5, 5), { topic: 'ok', properties: { userProperties: { a: 'b' } } }, 'v5 decode after a v5 failure');
});

t.test('random and mutated bytes never throw anything but Error, never hang, never poison', async (t) => {
  const random = rng(0x5eed);
  const byte = () => Math.floor(random() * 256);
  const seeds: Buffer[] = [];
  for (const version of [4, 5] as const) for (const { packet } of packetsFor(version)) seeds.push(gen(packet, version));
  const probe4 = gen({ cmd: 'subscribe', messageId: 11, subscriptions: [{ topic: 'p/#', qos: 1 }] }, 4);
  const probe5 = gen({ cmd: 'subscribe', messageId: 11, subscriptions: [{ topic: 'p/#', qos: 1, nl: true, rap: false, rh: 0 }], properties: { subscriptionIdentifier: 3 } }, 5);
  const want4 = reference(probe4, 4);
  const want5 = reference(probe5, 5);
  let notErrors = 0;
  let poisoned = 0;
  let badLengths = 0;
  let decoded = 0;
  const started = Date.now();
  for (let i = 0; i < 2000; i++) {
    let bytes: Buffer;
    if (i % 2 === 0) {
      // Pure noise, often behind a plausible fixed header so the parser gets past the first byte.
      const length = Math.floor(random() * 48);
      bytes = Buffer.from(Array.from({ length }, byte));
      if (length >= 2 && random() < 0.7) {
        bytes[0] = ((1 + Math.floor(random() * 15)) << 4) | (random() < 0.5 ? 0 : Math.floor(random() * 16));
        bytes[1] = length - 2 < 128 ? length - 2 : bytes[1];
      }
    } else {
      // A real packet with 1–3 bytes changed (its length byte kept half the time).
      bytes = Buffer.from(seeds[Math.floor(random() * seeds.length)]);
      const flips = 1 + Math.floor(random() * 3);
      for (let f = 0; f < flips; f++) {
        const at = random() < 0.5 ? 2 + Math.floor(random() * Math.max(1, bytes.length - 2)) : Math.floor(random() * bytes.length);
        if (at < bytes.length) bytes[at] = byte();
      }
    }
    const length = mqttPacketLength(bytes);
    if (!Number.isInteger(length) || length < -1) badLengths++;
    for (const version of [3, 4, 5] as const) {
      try {
        decodeMqttPacket(bytes, version);
        decoded++;
      } catch (error) {
        if (!(error instanceof Error) && notErrors++ < 3) t.fail(`case ${i} v${version} threw a non-Error: ${String(error)} (${bytes.toString('hex')})`);
      }
    }
    const ok4 = (() => {
      try {
        return JSON.stringify(decodeMqttPacket(probe4, 4)) === JSON.stringify(want4);
      } catch {
        return false;
      }
    })();
    const ok5 = (() => {
      try {
        return JSON.stringify(decodeMqttPacket(probe5, 5)) === JSON.stringify(want5);
      } catch {
        return false;
      }
    })();
    if ((!ok4 || !ok5) && poisoned++ < 3) t.fail(`case ${i} poisoned the next decode (v4 ${ok4}, v5 ${ok5}) after ${bytes.toString('hex')}`);
  }
  t.equal(badLengths, 0, 'mqttPacketLength always answered an integer ≥ -1');
  t.equal(notErrors, 0, 'every throw was an Error');
  t.equal(poisoned, 0, 'a valid packet decoded right after each of the 2000 cases, at levels 4 and 5');
  t.ok(decoded > 0, `some mutated packets still decode (${decoded} of 6000)`);
  t.comment(`2000 cases in ${Date.now() - started} ms`);
});

t.test('codec: topic publish frames', async (t) => {
  let badHeaders = 0;
  const body = (frame: Buffer): Buffer => {
    if (frame.readUInt32BE(0) !== frame.length || frame[4] !== 36) badHeaders++;
    return frame.subarray(4);
  };
  const frames: Array<Omit<PublishFrame, 'properties'> & { properties: string | null }> = [];
  for (const qos of [0, 1, 2] as const)
    for (const retain of [false, true])
      for (const target of [null, { epoch: 0xffff_ffff_fff, counter: 0xffff_fffe }])
        for (const from of [null, { epoch: 1_700_000_000_123, counter: 1 }])
          for (const properties of [null, JSON.stringify({ contentType: 'ü', correlationData: 'AQI=' })])
            frames.push({ qos, retain, binary: (qos + (retain ? 1 : 0)) % 2 === 0, topic: qos === 1 ? 'a/ünï/コード' : 'x', target, from, properties, payload: Buffer.from(`p${frames.length}`) });
  frames.push({ qos: 0, retain: false, binary: true, topic: 't'.repeat(65_535), target: null, from: null, properties: null, payload: Buffer.alloc(0) });
  frames.push({ qos: 1, retain: false, binary: true, topic: 'big', target: null, from: null, properties: '{}', payload: Buffer.alloc(1 << 20, 9) });
  let wrong = 0;
  for (const frame of frames) {
    const decoded = decodePublish(body(encodePublish(frame)));
    if (JSON.stringify({ ...decoded, payload: decoded.payload.toString('hex') }) !== JSON.stringify({ ...frame, payload: frame.payload.toString('hex') }) && wrong++ < 3) {
      t.same(decoded, frame, 'round trip');
    }
  }
  t.equal(wrong, 0, `${frames.length} publish frames round-trip`);
  t.equal(badHeaders, 0, 'every frame starts with its own length and the PUBLISH command byte');

  // Truncation: every cut before the payload is a RangeError; cuts inside it shorten the payload.
  const frame = { qos: 2 as const, retain: true, binary: false, topic: 'cut/here', target: { epoch: 5, counter: 6 }, from: { epoch: 7, counter: 8 }, properties: '{"a":1}', payload: Buffer.from('payload') };
  const full = body(encodePublish(frame));
  const headerEnd = full.length - frame.payload.length;
  let rangeErrors = 0;
  for (let cut = 0; cut < headerEnd; cut++) {
    try {
      decodePublish(full.subarray(0, cut));
      t.fail(`cut at ${cut} of ${headerEnd} decoded`);
    } catch (error) {
      if (error instanceof RangeError) rangeErrors++;
      else t.fail(`cut at ${cut}: ${String(error)} is not a RangeError`);
    }
  }
  t.equal(rangeErrors, headerEnd, `each of the ${headerEnd} cuts before the payload is a RangeError`);
  t.same(decodePublish(full.subarray(0, headerEnd + 3)).payload, Buffer.from('pay'), 'a cut inside the payload keeps the rest');
  const qos3 = Buffer.from(full);
  qos3[1] |= 3;
  t.throws(() => decodePublish(qos3), RangeError, 'qos bits 3: RangeError');
});

t.test('codec: an MQTT delivery state (close event)', async (t) => {
  const list: UnackedMessage[] = [
    { topic: 'a/b', payload: Buffer.from('one'), qos: 1, retain: false, packetId: 1, released: false },
    { topic: 'ü/コード', payload: Buffer.alloc(0), qos: 2, retain: true, packetId: 65_535, released: true },
    { topic: 'x'.repeat(65_535), payload: Buffer.alloc(70_000, 1), qos: 1, retain: true, packetId: 0, released: false },
    { topic: 'last', payload: Buffer.from([0, 255, 0]), qos: 2, retain: false, packetId: 7, released: false },
  ];
  const withProperties: UnackedMessage = {
    topic: 'props',
    payload: Buffer.from('p'),
    qos: 1,
    retain: false,
    packetId: 9,
    released: false,
    properties: { contentType: 'text/plain', correlationData: Buffer.from([1, 2, 3]), userProperties: { a: ['1', '2'] }, messageExpiryInterval: 60 },
  };
  t.same(decodeMqttDeliveryState(encodeMqttDeliveryState({ unacked: [withProperties], awaitingRelease: [] })).unacked, [withProperties], 'MQTT 5 properties (a Buffer among them) survive');
  const empty: MqttDeliveryState = { unacked: [], awaitingRelease: [] };
  t.same(decodeMqttDeliveryState(encodeMqttDeliveryState(empty)), empty, 'empty state');
  const state: MqttDeliveryState = { unacked: list, awaitingRelease: [3, 9, 65_535] };
  const bytes = encodeMqttDeliveryState(state);
  t.same(decodeMqttDeliveryState(bytes), state, 'round trip');
  for (const one of list) t.same(decodeMqttDeliveryState(encodeMqttDeliveryState({ unacked: [one], awaitingRelease: [] })).unacked, [one], `single: ${one.topic.slice(0, 10)}`);
  // Every cut: a message boundary decodes to the messages before it, anything else is a RangeError.
  const smallList = [list[0], list[1], list[3]];
  const small = encodeMqttDeliveryState({ unacked: smallList, awaitingRelease: [5] });
  const boundaries = new Map<number, number>([[4, 0]]);
  let at = 4;
  smallList.forEach((m, i) => {
    at += 10 + Buffer.byteLength(m.topic) + m.payload.length;
    boundaries.set(at, i + 1);
  });
  let wrong = 0;
  for (let cut = 0; cut <= small.length; cut++) {
    const part = small.subarray(0, cut);
    if (boundaries.has(cut)) {
      if (decodeMqttDeliveryState(part).unacked.length !== boundaries.get(cut) && wrong++ < 3) t.fail(`cut ${cut}: wrong count`);
    } else {
      try {
        decodeMqttDeliveryState(part);
        if (wrong++ < 3) t.fail(`cut ${cut} of ${small.length} decoded`);
      } catch (error) {
        if (!(error instanceof RangeError) && wrong++ < 3) t.fail(`cut ${cut}: ${String(error)}`);
      }
    }
  }
  t.equal(wrong, 0, `every cut of ${small.length} bytes: a prefix list at boundaries, a RangeError elsewhere`);
  for (const cut of [1, 4, 10, bytes.length - 1]) t.throws(() => decodeMqttDeliveryState(bytes.subarray(0, cut)), RangeError, `large state cut at ${cut}`);
  const copy = decodeMqttDeliveryState(bytes);
  bytes.fill(0);
  t.same(copy.unacked[0].payload, Buffer.from('one'), 'decoded payloads are copies, not views of the frame');
});

/**
 * A raw MQTT 3.1.1 client for the load driver: a plain `net.Socket`, CONNECT and SUBSCRIBE encoded
 * by mqtt-packet (once per connection), PUBLISH / PUBACK framed and parsed by hand (the hot path:
 * no per-packet objects, no stream machinery). The same client for every MQTT peer, so the
 * comparison is between servers; cheaper than mqtt.js, so the driver saturates later.
 *
 * Contract with the scenarios (through `WireConn`): `ready` resolves after CONNACK (and SUBACK
 * when `subscribe` is set); `send(text)` publishes `text` on `topic` at `qos`; `onText(text)` gets
 * the payload of every PUBLISH received (QoS 1 ones are acknowledged, batched per read);
 * `onAck()` runs on every PUBACK for a QoS 1 publish of this connection.
 */
import net from 'node:net';
import * as mqttPacket from 'mqtt-packet';
import type { WireConn } from './wire.js';

export interface MqttWireOptions {
  /** Topic filter subscribed to before `ready`. */
  subscribe?: string;
  /** QoS of that subscription. */
  subQos?: 0 | 1;
  /** Topic `send` publishes on. */
  topic?: string;
  /** QoS of `send`. */
  qos?: 0 | 1;
}

export interface MqttConn extends WireConn {
  onAck: () => void;
}

let counter = 0;

/** Remaining-length varint + fixed header for a packet of `remaining` bytes after it. */
function header(first: number, remaining: number): Buffer {
  const bytes = [first];
  let n = remaining;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    bytes.push(b);
  } while (n > 0);
  return Buffer.from(bytes);
}

export function openMqtt(opts: { host: string; port: number; localAddress: string; timeoutMs: number; mqtt: MqttWireOptions }): MqttConn {
  const { mqtt } = opts;
  const socket = net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress });
  socket.setNoDelay(true);
  let markReady!: () => void;
  let fail!: (error: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    fail = reject;
  });
  ready.catch(() => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const timer = setTimeout(() => {
    fail(new Error('no CONNACK/SUBACK in time'));
    socket.destroy();
  }, opts.timeoutMs);
  socket.on('error', (error) => {
    clearTimeout(timer);
    fail(error);
  });
  socket.on('close', () => {
    clearTimeout(timer);
    fail(new Error('closed before ready'));
  });

  // PUBLISH framing for `send`: fixed header and topic encoded once; payload appended per message.
  const topic = Buffer.from(mqtt.topic ?? 'bench');
  const qos = mqtt.qos ?? 0;
  const topicPart = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic]);
  let nextId = 0;

  const conn: MqttConn = {
    ready,
    onText: () => {},
    onAck: () => {},
    send(text: string) {
      const payloadLength = Buffer.byteLength(text, 'latin1');
      const remaining = topicPart.length + (qos ? 2 : 0) + payloadLength;
      const head = header(0x30 | (qos << 1), remaining);
      const packet = Buffer.allocUnsafe(head.length + remaining);
      let at = head.copy(packet, 0);
      at += topicPart.copy(packet, at);
      if (qos) {
        nextId = (nextId % 65535) + 1;
        packet[at++] = nextId >> 8;
        packet[at++] = nextId & 0xff;
      }
      packet.write(text, at, 'latin1');
      socket.write(packet);
    },
    close: () => {
      if (socket.destroyed) return;
      socket.end(Buffer.from([0xe0, 0x00])); // DISCONNECT
      setTimeout(() => socket.destroy(), 2000).unref();
    },
    closed,
  };

  let isReady = false;
  let pending: Buffer | null = null;
  const acks: number[] = [];
  const onPacket = (buf: Buffer, first: number, start: number, end: number): void => {
    const type = first >> 4;
    if (type === 3) {
      const topicLength = (buf[start] << 8) | buf[start + 1];
      let at = start + 2 + topicLength;
      if ((first & 0x06) !== 0) {
        acks.push((buf[at] << 8) | buf[at + 1]);
        at += 2;
      }
      if (isReady) conn.onText(buf.toString('latin1', at, end));
    } else if (type === 4) conn.onAck();
    else if (type === 2) {
      if (buf[start + 1] !== 0) return fail(new Error(`CONNACK return code ${buf[start + 1]}`));
      if (!mqtt.subscribe) becomeReady();
      else socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: mqtt.subscribe, qos: mqtt.subQos ?? 0 }] }));
    } else if (type === 9) {
      if (buf[start + 2] === 0x80) return fail(new Error(`subscription to ${mqtt.subscribe} refused`));
      becomeReady();
    }
  };
  const becomeReady = (): void => {
    isReady = true;
    clearTimeout(timer);
    markReady();
  };
  socket.on('data', (chunk: Buffer) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let at = 0;
    socket.cork();
    while (at + 2 <= buf.length) {
      const first = buf[at];
      let remaining = 0;
      let multiplier = 1;
      let i = at + 1;
      let complete = false;
      for (; i < buf.length && i <= at + 4; i++) {
        remaining += (buf[i] & 0x7f) * multiplier;
        multiplier *= 128;
        if ((buf[i] & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || i + remaining > buf.length) break;
      onPacket(buf, first, i, i + remaining);
      at = i + remaining;
    }
    if (at < buf.length) pending = buf.subarray(at);
    if (acks.length > 0) {
      // PUBACKs of this read, in one write.
      const out = Buffer.allocUnsafe(acks.length * 4);
      for (let k = 0; k < acks.length; k++) {
        out[k * 4] = 0x40;
        out[k * 4 + 1] = 0x02;
        out[k * 4 + 2] = acks[k] >> 8;
        out[k * 4 + 3] = acks[k] & 0xff;
      }
      acks.length = 0;
      socket.write(out);
    }
    socket.uncork();
  });
  socket.once('connect', () => {
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: `b${process.pid}-${++counter}` }));
  });
  return conn;
}

/**
 * Client wire adapters: how a driver connection speaks to one kind of peer. Every adapter gives
 * the same tiny interface (text messages in and out) so scenarios never know the peer.
 * `mqtt` is a raw MQTT 3.1.1 client (driver/mqtt.ts): `send` publishes, `onText` gets payloads.
 */
import { WebSocket } from 'ws';
import { openMqtt, type MqttWireOptions } from './mqtt.js';

export type WireKind = 'ws' | 'socketio' | 'mqtt';

export interface WireConn {
  /** Resolves once the server said `R` (joined its room, ready for traffic; MQTT: CONNACK / SUBACK). */
  ready: Promise<void>;
  send(text: string): void;
  onText: (text: string) => void;
  close(): void;
  /** Resolves when the socket is closed. */
  closed: Promise<void>;
  /** MQTT: a PUBACK for one of this connection's QoS 1 publishes arrived. */
  onAck?: () => void;
}

export interface WireOptions {
  host: string;
  port: number;
  room?: string;
  localAddress: string;
  timeoutMs: number;
  /** MQTT only: what to subscribe to and publish on. */
  mqtt?: MqttWireOptions;
}

export function openWire(kind: WireKind, opts: WireOptions): WireConn {
  if (kind === 'mqtt') return openMqtt({ ...opts, mqtt: opts.mqtt ?? {} });
  const query = opts.room ? `room=${encodeURIComponent(opts.room)}` : '';
  const url =
    kind === 'socketio'
      ? `ws://${opts.host}:${opts.port}/socket.io/?EIO=4&transport=websocket${query ? `&${query}` : ''}`
      : `ws://${opts.host}:${opts.port}/${query ? `?${query}` : ''}`;
  const socket = new WebSocket(url, { perMessageDeflate: false, localAddress: opts.localAddress, handshakeTimeout: opts.timeoutMs });
  let markReady!: () => void;
  let fail!: (error: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    fail = reject;
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const timer = setTimeout(() => {
    fail(new Error('no ready message in time'));
    socket.terminate();
  }, opts.timeoutMs);
  socket.on('error', (error) => {
    clearTimeout(timer);
    fail(error);
  });
  socket.on('close', () => {
    clearTimeout(timer);
    fail(new Error('closed before ready'));
  });
  let isReady = false;
  const conn: WireConn = {
    ready,
    onText: () => {},
    send: kind === 'socketio' ? (text) => socket.send(`42${JSON.stringify(['m', text])}`) : (text) => socket.send(text),
    close: () => socket.close(),
    closed,
  };
  const deliver = (text: string): void => {
    if (!isReady) {
      if (text === 'R') {
        isReady = true;
        clearTimeout(timer);
        markReady();
      }
      return;
    }
    conn.onText(text);
  };
  if (kind === 'socketio') {
    // Engine.IO v4 / Socket.IO v5 framing, the few packets this contract needs.
    socket.on('message', (data) => {
      const text = data.toString();
      const type = text.charCodeAt(0);
      if (type === 0x34 /* 4 message */) {
        if (text.charCodeAt(1) === 0x32 /* 2 event */) deliver((JSON.parse(text.slice(2)) as [string, string])[1]);
      } else if (type === 0x32 /* 2 ping */) socket.send('3');
      else if (type === 0x30 /* 0 open */) socket.send('40');
    });
  } else {
    socket.on('message', (data, isBinary) => deliver(isBinary ? (data as Buffer).toString() : data.toString()));
  }
  return conn;
}

/**
 * MQTT hub traffic: `publishers` device connections (half over TCP, half over WebSocket) each
 * publish `<publisher>:<seq>` at QoS 1 to their own topic under `topicRoot` — one at a time,
 * the next `intervalMs` after the PUBACK — and `subscribers` connections (alternately TCP and
 * WebSocket) subscribe to `topicRoot/#` at QoS 1. Every publish must reach every subscriber:
 * nothing lost; a duplicate is what QoS 1 allows (counted, never failed).
 */
import mqtt, { type MqttClient } from 'mqtt';
import { DeliveryTracker } from '../track.ts';
import { eachLimited, jitter, sleep, until, type Counters, type Load } from './types.ts';

export interface MqttOptions {
  tcpUrl: string;
  wsUrl: string;
  username?: string;
  password?: string;
  publishers: number;
  subscribers: number;
  intervalMs: number;
  /** Topics are `<topicRoot>/<publisher>`; subscribers take `<topicRoot>/#`. */
  topicRoot: string;
  tag: string;
}

interface Conn {
  client: MqttClient;
  closing: boolean;
}

export class MqttLoad implements Load {
  readonly key = 'mqtt';
  readonly clients: number;
  private readonly pubs: Conn[] = [];
  private readonly subs: Conn[] = [];
  private readonly tracker: DeliveryTracker;
  private readonly sentBy: number[];
  private readonly ackedBy: number[];
  private sending = false;
  private inflight = 0;
  private loops: Promise<void>[] = [];
  private disconnects: Array<{ who: string; at: string }> = [];
  private errors: string[] = [];
  private errorCount = 0;
  private readonly errorAt: number[] = [];
  /** Deliveries at a QoS other than 1. */
  private otherQos = 0;

  constructor(private readonly opts: MqttOptions) {
    this.clients = opts.publishers + opts.subscribers;
    this.tracker = new DeliveryTracker(opts.subscribers, opts.publishers);
    this.sentBy = new Array<number>(opts.publishers).fill(0);
    this.ackedBy = new Array<number>(opts.publishers).fill(0);
  }

  private async open(who: string, url: string): Promise<Conn> {
    const client = mqtt.connect(url, {
      clientId: `soak-${this.opts.tag}-${who}`,
      username: this.opts.username,
      password: this.opts.password,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 30_000,
      keepalive: 60,
    });
    const conn: Conn = { client, closing: false };
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', (err) => reject(new Error(`${who}: ${err.message}`)));
      client.once('close', () => reject(new Error(`${who}: closed before CONNACK`)));
    });
    client.on('error', (err) => this.error(who, err.message));
    client.on('close', () => {
      if (!conn.closing) this.disconnects.push({ who, at: new Date().toISOString() });
    });
    return conn;
  }

  private error(who: string, text: string): void {
    this.errorCount++;
    if (this.errorAt.length < 10_000) this.errorAt.push(Date.now());
    if (this.errors.length < 20) this.errors.push(`${new Date().toISOString().slice(11, 23)} ${who}: ${text}`);
  }

  errorTimes(): number[] {
    return this.errorAt;
  }

  async connect(): Promise<void> {
    for (let i = 0; i < this.opts.subscribers; i++) {
      const conn = await this.open(`sub${i}`, i % 2 === 0 ? this.opts.tcpUrl : this.opts.wsUrl);
      this.subs.push(conn);
      conn.client.on('message', (_topic, payload, packet) => {
        if (packet.qos !== 1) this.otherQos++;
        const match = /^(\d+):(\d+)$/.exec(payload.toString());
        if (!match) {
          this.tracker.foreign++;
          return;
        }
        this.tracker.got(i, Number(match[1]), Number(match[2]));
      });
      const granted = await conn.client.subscribeAsync(`${this.opts.topicRoot}/#`, { qos: 1 });
      if (granted[0]?.qos !== 1) throw new Error(`sub${i}: SUBACK granted ${JSON.stringify(granted)} for ${this.opts.topicRoot}/#`);
    }
    const indexes = Array.from({ length: this.opts.publishers }, (_, i) => i);
    await eachLimited(indexes, 8, async (i) => {
      this.pubs[i] = await this.open(`pub${i}`, i % 2 === 0 ? this.opts.tcpUrl : this.opts.wsUrl);
    });
  }

  start(): void {
    this.sending = true;
    this.loops = this.pubs.map((conn, i) => this.publishLoop(conn, i));
  }

  private async publishLoop(conn: Conn, i: number): Promise<void> {
    await sleep(Math.random() * this.opts.intervalMs);
    while (this.sending && !conn.closing) {
      if (!conn.client.connected) {
        await sleep(this.opts.intervalMs);
        continue;
      }
      const seq = ++this.sentBy[i];
      this.tracker.expect(this.opts.subscribers);
      this.inflight++;
      try {
        await conn.client.publishAsync(`${this.opts.topicRoot}/${i}`, `${i}:${seq}`, { qos: 1 });
        this.ackedBy[i] = Math.max(this.ackedBy[i], seq);
      } catch (error) {
        this.error(`pub${i}`, `publish ${seq}: ${(error as Error).message}`);
      } finally {
        this.inflight--;
      }
      await sleep(jitter(this.opts.intervalMs));
    }
  }

  stopSending(): void {
    this.sending = false;
  }

  drain(timeoutMs: number): Promise<boolean> {
    return until(() => this.inflight === 0 && this.tracker.pending <= 0, timeoutMs);
  }

  counters(): Counters {
    const t = this.tracker;
    return { sent: this.sentBy.reduce((a, b) => a + b, 0), received: t.received, expected: t.expected, delivered: t.delivered, dup: t.dup, disconnects: this.disconnects.length, errors: this.errorCount };
  }

  private *pairs(): Generator<[number, number]> {
    for (let s = 0; s < this.opts.subscribers; s++) for (let p = 0; p < this.opts.publishers; p++) yield [s, p];
  }

  problems(): string[] {
    const out: string[] = [];
    const lost = this.tracker.pending;
    if (lost > 0) out.push(`mqtt: ${lost} deliveries lost (e.g. ${this.tracker.missing(this.pairs(), (p) => this.sentBy[p], 5).examples.join(', ')})`);
    if (this.inflight > 0) out.push(`mqtt: ${this.inflight} publishes never got their PUBACK`);
    if (this.tracker.foreign > 0) out.push(`mqtt: ${this.tracker.foreign} deliveries that were never published`);
    if (this.otherQos > 0) out.push(`mqtt: ${this.otherQos} deliveries at a QoS other than 1`);
    if (this.disconnects.length > 0) out.push(`mqtt: ${this.disconnects.length} connections closed (first: ${JSON.stringify(this.disconnects[0])})`);
    if (this.errorCount > 0) out.push(`mqtt: ${this.errorCount} client errors (first: ${this.errors[0]})`);
    return out;
  }

  details(): Record<string, unknown> {
    const missing = this.tracker.missing(this.pairs(), (p) => this.sentBy[p], 20);
    return {
      publishers: this.opts.publishers,
      subscribers: this.opts.subscribers,
      intervalMs: this.opts.intervalMs,
      acked: this.ackedBy.reduce((a, b) => a + b, 0),
      inflight: this.inflight,
      foreign: this.tracker.foreign,
      otherQos: this.otherQos,
      missing: missing.count,
      missingExamples: missing.examples,
      duplicateExamples: this.tracker.duplicates(20),
      disconnects: this.disconnects,
      errors: this.errors,
    };
  }

  async close(): Promise<void> {
    this.sending = false;
    for (const conn of [...this.pubs, ...this.subs]) {
      if (!conn) continue;
      conn.closing = true;
      conn.client.end(true);
    }
    await Promise.race([Promise.allSettled(this.loops), sleep(1000)]);
  }
}

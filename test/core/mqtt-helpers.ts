/**
 * Helpers of the MQTT core tests: start `test/fixtures/mqtt/app.ts` (a minimal broker on an
 * mqtt://, an mqtt+ws:// and a text:// gateway) through ./helpers.ts `launch`, and the clients
 * that talk to it — none of them written here: the `mqtt` npm client, mosquitto_pub /
 * mosquitto_sub, and a raw client (TCP or WebSocket) that sends packets built by mqtt-packet for
 * what a polite client never does (not acknowledging, going silent, sending garbage).
 */
import { execFile, spawn } from 'node:child_process';
import net from 'node:net';
import type { Test } from 'tap';
import mqtt, { type IClientOptions, type IClientPublishOptions, type IClientSubscribeOptions, type ISubscriptionMap, type MqttClient } from 'mqtt';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { WebSocket, type RawData } from 'ws';
import { Queue } from '../helpers/queue.ts';
import { GatewayClient } from '../../runtime/src/index.js';
import { Peer, freePorts, launch, waitFor, type App } from './helpers.js';

export { sleep, waitFor } from './helpers.js';

export const SECRET = 'mqtt-secret';
export const MOSQUITTO_PUB = '/usr/bin/mosquitto_pub';
export const MOSQUITTO_SUB = '/usr/bin/mosquitto_sub';
const GATEWAYS = ['MqttGateway', 'WsGateway', 'TextGateway'];

export interface MqttApp {
  app: App;
  register: string;
  /** Client-facing ports: MQTT over TCP, MQTT over WebSocket, newline text. */
  mqttPort: number;
  wsPort: number;
  textPort: number;
  /** `ws://127.0.0.1:<wsPort>/mqtt` */
  wsUrl: string;
  /** `mqtt://127.0.0.1:<mqttPort>` */
  tcpUrl: string;
  /** A GatewayClient linked to all three gateways, closed in teardown. */
  client(): Promise<GatewayClient>;
}

/** Starts the MQTT fixture app on free internal ports; waits until every worker linked to every gateway. */
export async function startMqttApp(t: Test, env: NodeJS.ProcessEnv = {}): Promise<MqttApp> {
  const [registerPort, mqttInternal, wsInternal, textInternal] = await freePorts(4);
  const register = `127.0.0.1:${registerPort}`;
  const workers = Number(env.WORKER_COUNT ?? 1);
  const app = await launch(t, 'mqtt/app.ts', {
    REGISTER_ADDRESS: register,
    MQTT_START_PORT: String(mqttInternal),
    WS_START_PORT: String(wsInternal),
    TEXT_START_PORT: String(textInternal),
    ...env,
  });
  killOnTapTimeout(app.pid);
  // After launch's own teardown stopped it (a teardown cut short by the timeout leaves it listed).
  t.teardown(() => {
    if (!alive(app.pid)) running.delete(app.pid);
  });
  await waitFor(() => GATEWAYS.every((gw) => linkedWorkers(app.output(), gw) >= workers), 30_000, 'every Broker linked to every gateway').catch((error: Error) => {
    throw new Error(`${error.message}\noutput:\n${app.output()}`);
  });
  const { MqttGateway: mqttPort, WsGateway: wsPort, TextGateway: textPort } = app.ports;
  if (!mqttPort || !wsPort || !textPort) throw new Error(`client ports not found in the banner:\n${app.output()}`);
  return {
    app,
    register,
    mqttPort,
    wsPort,
    textPort,
    wsUrl: `ws://127.0.0.1:${wsPort}/mqtt`,
    tcpUrl: `mqtt://127.0.0.1:${mqttPort}`,
    async client() {
      const client = new GatewayClient({ registerAddress: register, secretKey: SECRET });
      t.teardown(() => client.close());
      await client.ready();
      await waitFor(() => client.gatewayCount === GATEWAYS.length, 5000, 'GatewayClient linked to the three gateways');
      return client;
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Apps still running in this test process, by master pid (= process group). */
const running = new Set<number>();
let timeoutHook = false;

/**
 * When tap's file timeout fires, it tells the test process (IPC `tapAbort`) and then kills it:
 * teardowns do not run, so the app's process group would outlive the test. Kill it here.
 */
function killOnTapTimeout(pid: number): void {
  running.add(pid);
  if (timeoutHook) return;
  timeoutHook = true;
  const killAll = (): void => {
    for (const group of running) {
      try {
        process.kill(-group, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    running.clear();
  };
  process.on('message', (message: unknown) => {
    if (message && typeof message === 'object' && (message as { tapAbort?: unknown }).tapAbort === 'timeout') killAll();
  });
  process.once('exit', killAll);
}

function linkedWorkers(output: string, gateway: string): number {
  const names = new Set<string>();
  for (const match of output.matchAll(new RegExp(`${gateway}#0 pid=\\d+ business worker linked worker=(\\S+)`, 'g'))) names.add(match[1]);
  return names.size;
}

/** A newline-text client of the fixture's text gateway (which sends no welcome), as a helpers.ts Peer. */
export async function textClient(t: Test, port: number): Promise<Peer> {
  const socket = net.connect(port, '127.0.0.1');
  const peer = new Peer('text', (text) => void socket.write(`${text}\n`), () => socket.destroy());
  t.teardown(() => socket.destroy());
  let rest = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    rest += chunk;
    let at: number;
    while ((at = rest.indexOf('\n')) !== -1) {
      peer.receive(rest.slice(0, at).replace(/\r$/, ''), false);
      rest = rest.slice(at + 1);
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => peer.onClosed());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return peer;
}

// ---- a queue of things received, with waits ----------------------------------------------------


/** Resolves as `promise` does, or rejects after `timeoutMs` (a client that was dropped never answers). */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]);
}

// ---- the mqtt npm client ----------------------------------------------------------------------

export interface Received {
  topic: string;
  payload: string;
  packet: IPublishPacket;
}

export interface MqttJs {
  client: MqttClient;
  messages: Queue<Received>;
  /** The CONNACK's packet. */
  connack: Packet;
  /** publishAsync that rejects when no acknowledgement comes within 5 s. */
  pub(topic: string, payload: string | Buffer, options?: IClientPublishOptions): Promise<unknown>;
  /** subscribeAsync that rejects when no SUBACK comes within 5 s. */
  sub(filter: string | string[] | ISubscriptionMap, options?: IClientSubscribeOptions): Promise<unknown>;
  /** unsubscribeAsync that rejects when no UNSUBACK comes within 5 s. */
  unsub(filter: string | string[]): Promise<unknown>;
}

/** Connects an mqtt.js client (no reconnects), collecting its messages; ended in teardown. */
export async function mqttJs(t: Test, url: string, options: IClientOptions = {}): Promise<MqttJs> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
  t.teardown(() => void client.end(true));
  const messages = new Queue<Received>((m) => `${m.topic} ${m.payload}`);
  client.on('message', (topic, payload, packet) => messages.push({ topic, payload: payload.toString(), packet }));
  client.on('error', () => {});
  const connack = await new Promise<Packet>((resolve, reject) => {
    client.once('connect', (packet) => resolve(packet));
    client.once('error', reject);
    client.once('close', () => reject(new Error(`mqtt.js could not connect to ${url}`)));
  });
  return {
    client,
    messages,
    connack,
    pub: (topic, payload, opts) => within(client.publishAsync(topic, payload, opts), 5000, `publish to ${topic}`),
    sub: (filter, opts) => within(opts ? client.subscribeAsync(filter, opts) : client.subscribeAsync(filter), 5000, `subscribe to ${JSON.stringify(filter)}`),
    unsub: (filter) => within(client.unsubscribeAsync(filter), 5000, `unsubscribe from ${JSON.stringify(filter)}`),
  };
}

// ---- mosquitto_sub / mosquitto_pub ---------------------------------------------------------------

export interface MosquittoSub {
  /** Messages as `qos topic payload` strings. */
  messages: Queue<{ qos: number; topic: string; payload: string }>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  output(): string;
}

/**
 * Runs mosquitto_sub (debug output on, so the SUBACK is seen) and resolves once it is subscribed.
 * Killed in teardown.
 */
export async function mosquittoSub(t: Test, port: number, args: string[]): Promise<MosquittoSub> {
  // stdbuf: mosquitto_sub's stdout is block-buffered on a pipe; lines must come as they happen.
  const proc = spawn('stdbuf', ['-oL', MOSQUITTO_SUB, '-h', '127.0.0.1', '-p', String(port), '-d', '-F', 'MSG %q %t %p', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => void proc.kill('SIGKILL'));
  let text = '';
  let rest = '';
  const messages = new Queue<{ qos: number; topic: string; payload: string }>();
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk: string) => {
    text += chunk;
    rest += chunk;
    let at: number;
    while ((at = rest.indexOf('\n')) !== -1) {
      const line = rest.slice(0, at);
      rest = rest.slice(at + 1);
      const match = /^MSG (\d) (\S+) (.*)$/.exec(line);
      if (match) messages.push({ qos: Number(match[1]), topic: match[2], payload: match[3] });
    }
  });
  proc.stderr.on('data', (chunk: Buffer) => (text += chunk));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  await waitFor(() => /received SUBACK/.test(text), 5000, 'mosquitto_sub SUBACK').catch((error: Error) => {
    throw new Error(`${error.message}\n${text}`);
  });
  return { messages, exited, output: () => text };
}

/** Runs mosquitto_pub to its end; rejects with its output when it fails. */
export function mosquittoPub(port: number, args: string[], stdin?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(MOSQUITTO_PUB, ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`mosquitto_pub ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`));
      else resolve(stdout + stderr);
    });
    if (stdin !== undefined) child.stdin!.end(stdin);
  });
}

// ---- a raw client ----------------------------------------------------------------------------------

export type Version = 3 | 4 | 5;

/** Encodes a packet with mqtt-packet. */
export function encode(packet: Packet, version: Version = 4): Buffer {
  return mqttPacket.generate(packet, { protocolVersion: version });
}

/**
 * A client that sends exactly the bytes it is told to, over TCP or one WebSocket message per
 * `sendBytes`; what it receives is parsed by mqtt-packet (for its protocol level) into `packets`.
 */
export class RawClient {
  readonly packets = new Queue<Packet>((p) => ({ ...p, payload: undefined, length: undefined }));
  version: Version = 4;
  /** Set when the connection closed (ms since epoch). */
  closedAt = 0;
  readonly closed: Promise<void>;
  /** Bytes received that did not parse (should stay empty). */
  parseErrors: string[] = [];
  private parser = this.newParser();
  private markClosed: () => void = () => {};

  private constructor(
    private readonly write: (bytes: Buffer) => void,
    private readonly end: () => void,
  ) {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  private newParser(): mqttPacket.Parser {
    const parser = mqttPacket.parser({ protocolVersion: this.version });
    parser.on('packet', (p: Packet) => this.packets.push(p));
    parser.on('error', (error: Error) => this.parseErrors.push(error.message));
    return parser;
  }

  /** Every byte received, in order. */
  received: Buffer = Buffer.alloc(0);

  private receive(bytes: Buffer): void {
    this.received = Buffer.concat([this.received, bytes]);
    this.parser.parse(bytes);
  }

  private onClose(): void {
    if (this.closedAt) return;
    this.closedAt = Date.now();
    this.markClosed();
  }

  get isClosed(): boolean {
    return this.closedAt !== 0;
  }

  static async tcp(t: Test, port: number): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    const raw = new RawClient(
      (bytes) => void socket.write(bytes),
      () => socket.destroy(),
    );
    t.teardown(() => socket.destroy());
    socket.on('data', (chunk: Buffer) => raw.receive(chunk));
    socket.on('error', () => {});
    socket.on('close', () => raw.onClose());
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return raw;
  }

  static async ws(t: Test, url: string): Promise<RawClient> {
    const ws = new WebSocket(url, 'mqtt', { perMessageDeflate: false });
    const raw = new RawClient(
      (bytes) => ws.send(bytes, { binary: true }),
      () => ws.terminate(),
    );
    t.teardown(() => ws.terminate());
    ws.on('message', (data: RawData) => raw.receive(Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)));
    ws.on('error', () => {});
    ws.on('close', () => raw.onClose());
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return raw;
  }

  /** Sends bytes as they are (one WebSocket message on WS). */
  sendBytes(bytes: Buffer): void {
    this.write(bytes);
  }

  /** Encodes a packet at this client's protocol level and sends it. */
  send(packet: Packet): void {
    this.write(encode(packet, this.version));
  }

  /** Sends CONNECT (and sets the protocol level it parses with); resolves with the CONNACK. */
  async connect(options: { version?: Version; clientId?: string; keepalive?: number; clean?: boolean; properties?: Record<string, unknown> } = {}): Promise<Packet> {
    this.version = options.version ?? 4;
    this.parser = this.newParser();
    this.send(this.connectPacket(options));
    return this.packets.next((p) => p.cmd === 'connack', 5000, 'CONNACK');
  }

  /** A CONNECT packet. */
  connectPacket(options: { version?: Version; clientId?: string; keepalive?: number; clean?: boolean; properties?: Record<string, unknown> } = {}): Packet {
    const version = options.version ?? this.version;
    return {
      cmd: 'connect',
      protocolId: version === 3 ? 'MQIsdp' : 'MQTT',
      protocolVersion: version,
      clientId: options.clientId ?? `raw-${Math.random().toString(36).slice(2, 10)}`,
      clean: options.clean ?? true,
      keepalive: options.keepalive ?? 0,
      ...(options.properties ? { properties: options.properties } : {}),
    } as Packet;
  }

  /** SUBSCRIBE and wait for its SUBACK. */
  async subscribe(filter: string, qos: 0 | 1 | 2 = 0, messageId = 1): Promise<Packet> {
    this.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic: filter, qos }] } as Packet);
    return this.packets.next((p) => p.cmd === 'suback' && p.messageId === messageId, 5000, `SUBACK ${messageId}`);
  }

  /** Resolves true when the connection closes within `timeoutMs`. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    if (this.isClosed) return true;
    return Promise.race([this.closed.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs))]);
  }

  close(): void {
    this.end();
  }
}

export { Queue };

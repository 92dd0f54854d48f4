/**
 * Helpers of the MQTT hub end-to-end tests. Generating, installing, running and always stopping
 * the project come from ./helpers.ts; here is what the hub adds: its ports and data dir, devices
 * (`npm run device:add`), and the clients that talk to it — none written here: `mosquitto_pub` /
 * `mosquitto_sub` (Debian mosquitto-clients), the `mqtt` npm client, and a raw client that speaks
 * packets built by `mqtt-packet` for what no polite client does (not acknowledging, going silent,
 * sending garbage).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import mqttPacket, { type IConnackPacket, type IConnectPacket, type Packet } from 'mqtt-packet';
import { WebSocket, type RawData } from 'ws';
import { Queue } from '../helpers/queue.ts';
import { ROOT, ensureRuntimeBuilt, freePort, generator, runCommand, sleep, startApp, waitFor, type Run, type RunningApp } from './helpers.ts';

export { ROOT, freePort, sleep, tempDir, waitFor, type Run } from './helpers.ts';

export const MOSQUITTO_PUB = '/usr/bin/mosquitto_pub';
export const MOSQUITTO_SUB = '/usr/bin/mosquitto_sub';
export const CHROMIUM = '/usr/bin/chromium';
/** A reason to skip what needs mosquitto-clients (installed by .ci/run), or false. */
export const noMosquitto = existsSync(MOSQUITTO_PUB) && existsSync(MOSQUITTO_SUB) ? false : 'mosquitto-clients is missing (apt-get install -y mosquitto-clients)';

// ---- a queue of things received, with waits ----------------------------------------------------


// ---- the generated hub -----------------------------------------------------------------------

/** `create-gatewayworker-app <name> --template mqtt-hub --yes` in `cwd` (installs from the npm cache). */
export async function generateHub(cwd: string, name = 'hub'): Promise<string> {
  await ensureRuntimeBuilt();
  const r = await generator([name, '--template', 'mqtt-hub', '--yes', '--package-manager', 'npm'], cwd);
  if (r.code !== 0) throw new Error(`generating the mqtt-hub project failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  return join(cwd, name);
}

/**
 * Internal gateway ports: the hub's WS gateways start 50 above START_PORT (start_gateway.ts), so
 * the whole span is kept free.
 */
const START_SPAN = 64;

/**
 * The environment of one hub: free ports, its own data dir, 2 gateways of each kind and 2
 * workers (so routing crosses processes), no anonymous access and no shared topics unless `extra`
 * says otherwise.
 */
export async function hubEnv(dataDir: string, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    MQTT_PORT: String(await freePort()),
    WS_PORT: String(await freePort()),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort(START_SPAN)),
    STORE_ADDRESS: `127.0.0.1:${await freePort()}`,
    DATA_DIR: dataDir,
    ALLOW_ANONYMOUS: 'false',
    SHARED_TOPICS: '',
    ADMIN_TOKEN: '',
    GATEWAY_COUNT: '2',
    WORKER_COUNT: '2',
    ...extra,
  };
}

export interface Hub extends RunningApp {
  env: Record<string, string>;
  project: string;
  mqttPort: number;
  wsPort: number;
  /** ws://127.0.0.1:<WS_PORT>/mqtt */
  wsUrl: string;
  /** mqtt://127.0.0.1:<MQTT_PORT> */
  tcpUrl: string;
  /** http://127.0.0.1:<WS_PORT> */
  httpUrl: string;
}

/**
 * `startApp` (./helpers.ts) with `env`: resolves once every BusinessWorker has linked to every
 * gateway (TCP and WS), so that nothing a test sends falls between the start and the links.
 */
export async function startHub(t: Test, project: string, env: Record<string, string>): Promise<Hub> {
  const app = await startApp(t, project, env);
  const links = 2 * Number(env.GATEWAY_COUNT ?? 2) * Number(env.WORKER_COUNT ?? 2);
  await waitFor(() => (app.output().match(/business worker linked/g) ?? []).length >= links, 15_000, `${links} worker links`).catch((error: Error) => {
    throw new Error(`${error.message}; output:\n${app.output()}`);
  });
  // MQTT_E2E_LOG_DIR=<dir>: keep what the hub printed (to read its side of a failure).
  const logDir = process.env.MQTT_E2E_LOG_DIR;
  if (logDir) t.teardown(() => writeFileSync(join(logDir, `hub-${env.MQTT_PORT}.log`), app.output()));
  const mqttPort = Number(env.MQTT_PORT);
  const wsPort = Number(env.WS_PORT);
  return Object.assign(app, {
    env,
    project,
    mqttPort,
    wsPort,
    wsUrl: `ws://127.0.0.1:${wsPort}/mqtt`,
    tcpUrl: `mqtt://127.0.0.1:${mqttPort}`,
    httpUrl: `http://127.0.0.1:${wsPort}`,
  });
}

export interface Device {
  id: string;
  password: string;
}

/**
 * `npm run device:add <id>` in the project with the hub's env (its DATA_DIR); the password is
 * read from what it prints (once).
 */
export async function addDevice(project: string, env: Record<string, string>, id: string): Promise<Device & { run: Run }> {
  const run = await runCommand('npm', ['run', '--silent', 'device:add', '--', id], { cwd: project, env, timeoutMs: 60_000 });
  if (run.code !== 0) throw new Error(`npm run device:add ${id} failed (${run.code}):\n${run.stdout}\n${run.stderr}`);
  const password = /password\W*[:=]\s*(\S+)/i.exec(run.stdout)?.[1] ?? /password\s+(\S+)/i.exec(run.stdout)?.[1];
  if (!password) throw new Error(`no password in what npm run device:add ${id} printed:\n${run.stdout}`);
  return { id, password: password.replace(/^["']|["',]$/g, ''), run };
}

// ---- child processes of the test that must not outlive it -------------------------------------

const children = new Set<ChildProcess>();
function killChild(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children.delete(child);
}
process.on('exit', () => {
  for (const child of children) killChild(child);
});

/** The environment of a child: tap's loader out (tap puts it into NODE_OPTIONS of every spawn). */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(TAP|_TAPJS_|NODE_V8_COVERAGE$|NODE_OPTIONS$)/.test(key)) delete env[key];
  return env;
}

// ---- mosquitto_pub / mosquitto_sub -----------------------------------------------------------

export interface MosqOptions {
  port: number;
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5.0 */
  version?: 4 | 5;
  user?: string;
  password?: string;
  id?: string;
  qos?: 0 | 1 | 2;
  keepalive?: number;
  /** -c: clean session off (persistent session) */
  persistent?: boolean;
  /** -x (MQTT 5) */
  sessionExpiry?: number;
  will?: { topic: string; payload: string; qos?: 0 | 1 | 2; retain?: boolean };
  extra?: string[];
}

function mosqArgs(o: MosqOptions): string[] {
  const args = ['-d', '-h', '127.0.0.1', '-p', String(o.port), '-V', o.version === 5 ? 'mqttv5' : 'mqttv311'];
  if (o.user !== undefined) args.push('-u', o.user);
  if (o.password !== undefined) args.push('-P', o.password);
  if (o.id !== undefined) args.push('-i', o.id);
  if (o.qos !== undefined) args.push('-q', String(o.qos));
  if (o.keepalive !== undefined) args.push('-k', String(o.keepalive));
  if (o.persistent) args.push('-c');
  if (o.sessionExpiry !== undefined) args.push('-x', String(o.sessionExpiry));
  if (o.will) {
    args.push('--will-topic', o.will.topic, '--will-payload', o.will.payload, '--will-qos', String(o.will.qos ?? 0));
    if (o.will.retain) args.push('--will-retain');
  }
  return [...args, ...(o.extra ?? [])];
}

/** `mosquitto_pub -d …`: one message (`null` = -n, an empty payload), then exits. */
export function mosqPub(o: MosqOptions & { topic: string; message: string | null; retain?: boolean }, timeoutMs = 10_000): Promise<Run> {
  const args = [...mosqArgs(o), '-t', o.topic, ...(o.message === null ? ['-n'] : ['-m', o.message])];
  if (o.retain) args.push('-r');
  return runCommand(MOSQUITTO_PUB, args, { cwd: tmpdir(), timeoutMs });
}

export interface MosqMessage {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
}

export interface MosqSub {
  proc: ChildProcess;
  pid: number;
  /** stdout and stderr so far (with -d: every packet sent and received). */
  output(): string;
  messages: Queue<MosqMessage>;
  /** The CONNACK code (v5: reason code) it got. */
  connack: Promise<number>;
  /** The granted QoS of each filter (128 / 135: refused), once SUBACK came. */
  subscribed: Promise<number[]>;
  exited: Promise<number | string | null>;
  kill(signal?: NodeJS.Signals): void;
}

const FORMAT_MARK = '~~';

/**
 * `mosquitto_sub -d` on `topics`, each message printed as `~~ <retain> <qos> <topic> <payload>`
 * (line-buffered through stdbuf so that messages show as they come). Killed at the end of `t`.
 */
export function mosqSub(t: Test, o: MosqOptions & { topics: string[]; count?: number; timeoutSeconds?: number }): MosqSub {
  const args = [...mosqArgs(o), ...o.topics.flatMap((topic) => ['-t', topic]), '-F', `${FORMAT_MARK} %r %q %t %p`];
  if (o.count !== undefined) args.push('-C', String(o.count));
  if (o.timeoutSeconds !== undefined) args.push('-W', String(o.timeoutSeconds));
  // stdbuf execs mosquitto_sub: the pid is mosquitto_sub's (kill -9 hits the client itself).
  const proc = spawn('stdbuf', ['-oL', '-eL', MOSQUITTO_SUB, ...args], { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  t.teardown(() => killChild(proc));
  let text = '';
  let pending = '';
  const messages = new Queue<MosqMessage>();
  let resolveConnack!: (code: number) => void;
  let resolveSubscribed!: (granted: number[]) => void;
  const connack = new Promise<number>((resolve) => (resolveConnack = resolve));
  const subscribed = new Promise<number[]>((resolve) => (resolveSubscribed = resolve));
  const onData = (d: Buffer): void => {
    text += d;
    pending += d;
    let nl: number;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      const message = /^~~ (\d) (\d) (\S+) ?(.*)$/.exec(line);
      if (message) {
        messages.push({ retain: message[1] === '1', qos: Number(message[2]), topic: message[3]!, payload: message[4]! });
        continue;
      }
      const ack = /received CONNACK \((\d+)\)/.exec(line);
      if (ack) resolveConnack(Number(ack[1]));
      const granted = /^Subscribed \(mid: \d+\): ([\d, ]+)/.exec(line);
      if (granted) resolveSubscribed(granted[1]!.split(',').map((s) => Number(s.trim())));
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  const exited = new Promise<number | string | null>((resolve) =>
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      resolve(code ?? signal);
    }),
  );
  void exited.then(() => {
    resolveConnack(-1);
    resolveSubscribed([]);
  });
  return { proc, pid: proc.pid!, output: () => text, messages, connack, subscribed, exited, kill: (signal = 'SIGKILL') => proc.kill(signal) };
}

/** Resolves with the granted list once `sub` is subscribed; rejects with its output otherwise. */
export async function subscribedOrThrow(sub: MosqSub, timeoutMs = 10_000): Promise<number[]> {
  const granted = await Promise.race([sub.subscribed, sleep(timeoutMs).then(() => null)]);
  if (granted === null || granted.length === 0) throw new Error(`mosquitto_sub did not subscribe (${granted === null ? 'timeout' : 'exited'}); output:\n${sub.output()}`);
  return granted;
}

// ---- the mqtt npm client ---------------------------------------------------------------------

export interface Received {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
  dup: boolean;
  properties?: Record<string, unknown>;
}

export interface MqttJs {
  client: MqttClient;
  received: Queue<Received>;
  /** Packets the client received (packetreceive), in order. */
  packets: Packet[];
  /** Resolves when the connection closes. */
  closed: Promise<void>;
  connack: IConnackPacket;
}

/** What a `Queue<Received>` shows in a timeout message. */
const showReceived = (m: Received): unknown => `${m.topic}=${m.payload} q${m.qos}${m.retain ? ' r' : ''}`;

/**
 * An `mqtt` npm client (no automatic reconnect) connected to `url`; rejects when the hub refuses.
 * Ended at the end of `t`.
 */
export async function mqttJs(t: Test, url: string, opts: IClientOptions = {}): Promise<MqttJs> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  t.teardown(() => {
    client.end(true);
  });
  const received = new Queue<Received>(showReceived);
  const packets: Packet[] = [];
  client.on('packetreceive', (p) => packets.push(p));
  client.on('message', (topic, payload, packet) => {
    received.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain, dup: packet.dup, properties: packet.properties as Record<string, unknown> | undefined });
  });
  const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', (packet) => resolve(packet));
    client.once('error', reject);
    void closed.then(() => reject(new Error(`connection to ${url} closed before CONNACK`)));
  });
  client.on('error', () => {});
  return { client, received, packets, closed, connack };
}

/** An `mqtt` npm client's connect that should be refused: the error (with `code`) it got. */
export async function mqttJsRefused(url: string, opts: IClientOptions): Promise<Error & { code?: number }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  try {
    return await new Promise<Error & { code?: number }>((resolve, reject) => {
      client.once('connect', () => reject(new Error('connected, expected a refusal')));
      client.once('error', (err) => resolve(err as Error & { code?: number }));
      client.once('close', () => resolve(Object.assign(new Error('closed without an error'), { code: undefined })));
    });
  } finally {
    client.end(true);
  }
}

/**
 * An `mqtt` npm client in a child process (so it can be killed with -9): connects with `opts`,
 * prints "connected" and stays. Killed at the end of `t`.
 */
export async function mqttJsChild(t: Test, url: string, opts: IClientOptions): Promise<ChildProcess> {
  const script = `
    import mqtt from 'mqtt';
    const opts = JSON.parse(process.env.MQTT_OPTS);
    const client = mqtt.connect(process.env.MQTT_URL, { reconnectPeriod: 0, ...opts });
    client.on('connect', () => console.log('connected'));
    client.on('error', (e) => { console.log('error ' + e.message); process.exit(3); });
    setInterval(() => {}, 1000);`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: ROOT,
    env: { ...childEnv(), MQTT_URL: url, MQTT_OPTS: JSON.stringify(opts) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  t.teardown(() => killChild(proc));
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  await waitFor(() => text.includes('connected') || proc.exitCode !== null, 10_000, 'the child client to connect');
  if (!text.includes('connected')) throw new Error(`the child client did not connect:\n${text}`);
  return proc;
}

// ---- raw packets -----------------------------------------------------------------------------

export type Target = { port: number } | { wsUrl: string };

export interface RawClient {
  version: 4 | 5;
  packets: Queue<Packet>;
  /** Parse errors of what the hub sent (none expected). */
  errors: Error[];
  send(packet: Packet): void;
  write(bytes: Buffer): void;
  /** Resolves with Date.now() when the hub (or we) closed the connection. */
  closed: Promise<number>;
  isClosed(): boolean;
  destroy(): void;
}

/** A connection that sends exactly the bytes it is told to and parses what comes back. */
export async function rawClient(t: Test, target: Target, version: 4 | 5 = 4): Promise<RawClient> {
  const packets = new Queue<Packet>((p) => p.cmd);
  const errors: Error[] = [];
  const parser = mqttPacket.parser({ protocolVersion: version });
  parser.on('packet', (p: Packet) => packets.push(p));
  parser.on('error', (err: Error) => errors.push(err));
  let isClosed = false;
  let markClosed!: (at: number) => void;
  const closed = new Promise<number>((resolve) => (markClosed = resolve));
  const onClose = (): void => {
    if (isClosed) return;
    isClosed = true;
    markClosed(Date.now());
    packets.poke();
  };
  let write: (bytes: Buffer) => void;
  let destroy: () => void;
  if ('port' in target) {
    const socket = net.connect({ host: '127.0.0.1', port: target.port });
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => parser.parse(d));
    socket.on('error', () => {});
    socket.on('close', onClose);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    write = (bytes) => {
      if (!socket.destroyed) socket.write(bytes);
    };
    destroy = () => socket.destroy();
  } else {
    const ws = new WebSocket(target.wsUrl, ['mqtt'], { perMessageDeflate: false });
    ws.binaryType = 'nodebuffer';
    ws.on('message', (d: RawData) => parser.parse(d as Buffer));
    ws.on('error', () => {});
    ws.on('close', onClose);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    write = (bytes) => {
      if (ws.readyState === ws.OPEN) ws.send(bytes);
    };
    destroy = () => ws.terminate();
  }
  t.teardown(() => destroy());
  return {
    version,
    packets,
    errors,
    send: (packet) => write(mqttPacket.generate(packet, { protocolVersion: version })),
    write: (bytes) => write(bytes),
    closed,
    isClosed: () => isClosed,
    destroy,
  };
}

/** A raw client that sent `connect` and got its CONNACK. */
export async function rawConnect(
  t: Test,
  target: Target,
  connect: Omit<IConnectPacket, 'cmd'>,
  version: 4 | 5 = 4,
): Promise<{ raw: RawClient; connack: IConnackPacket }> {
  const raw = await rawClient(t, target, version);
  raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 60, ...connect });
  const connack = (await nextPacket(raw, 'connack')) as IConnackPacket;
  return { raw, connack };
}

/** The next packet of this kind (or matching); rejects early when the connection closes first. */
export async function nextPacket(raw: RawClient, match: Packet['cmd'] | ((p: Packet) => boolean), timeoutMs = 5000): Promise<Packet> {
  const pred = typeof match === 'string' ? (p: Packet) => p.cmd === match : match;
  const what = typeof match === 'string' ? `${match} packet` : 'matching packet';
  const found = await raw.packets.wait<{ packet?: Packet }>(
    () => {
      const i = raw.packets.items.findIndex(pred);
      if (i !== -1) return { packet: raw.packets.items.splice(i, 1)[0] };
      return raw.isClosed() ? {} : undefined;
    },
    timeoutMs,
    what,
  );
  if (!found.packet) throw new Error(`the connection closed while waiting for a ${what}; got ${raw.packets.all.map((p) => p.cmd).join(', ') || 'nothing'}`);
  return found.packet;
}

/** Resolves with `Date.now()` at close, or rejects after `timeoutMs`. */
export async function closedWithin(raw: RawClient, timeoutMs: number): Promise<number> {
  const at = await Promise.race([raw.closed, sleep(timeoutMs).then(() => null)]);
  if (at === null) throw new Error(`the connection is still open after ${timeoutMs} ms; got ${raw.packets.all.map((p) => p.cmd).join(', ') || 'nothing'}`);
  return at;
}

// ---- small things ----------------------------------------------------------------------------

/** A unique suffix for topics and client ids of one test run. */
export const runId = (): string => Math.random().toString(36).slice(2, 8);

/** A temporary data dir of the hub (removed with the test's temp dir, which must be its parent). */
export function dataDirIn(parent: string): string {
  return mkdtempSync(join(parent, 'data-'));
}

/** Subscribes an `mqtt` npm client; returns the SUBACK's codes (granted QoS, or ≥ 0x80 refused). */
export async function subscribe(m: MqttJs, filters: string | string[], opts: { qos: 0 | 1 | 2; nl?: boolean; rap?: boolean } = { qos: 1 }): Promise<number[]> {
  try {
    const granted = await within(m.client.subscribeAsync(filters, opts), 5000, `SUBACK for ${String(filters)}`);
    return granted.map((g) => g.qos);
  } catch (error) {
    const packet = (error as { packet?: { granted?: number[] } }).packet;
    if (packet?.granted) return packet.granted.map((g) => (typeof g === 'number' ? g : (g as { qos: number }).qos));
    throw error;
  }
}

/** Publishes with an `mqtt` npm client and waits for its handshake (QoS 1/2). */
export async function publish(m: MqttJs, topic: string, payload: string, opts: { qos?: 0 | 1 | 2; retain?: boolean } = {}): Promise<void> {
  await within(m.client.publishAsync(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false }), 5000, `the handshake of a publish to ${topic}`);
}

/**
 * `promise`, or an Error after `timeoutMs` (the `mqtt` client keeps a QoS ≥ 1 publish pending
 * when its connection closes; a test must not wait for it forever).
 */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export { Queue };

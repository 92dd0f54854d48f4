/**
 * Helpers of the GatewayWorker core tests: start `test/fixtures/core/app.ts` on free ports (its
 * own runtime dir, killed as a process group in teardown), and JSON-speaking ws / text clients
 * whose inbox can be searched out of order.
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Test } from 'tap';
import { WebSocket, type ClientOptions, type RawData } from 'ws';
import { GatewayClient } from '../../runtime/src/index.js';
import { fixturesDir, parseBannerPorts, waitFor } from '../helpers/app.js';

export { sleep, waitFor } from '../helpers/app.js';

export const SECRET = 'core-secret';

/** A fixture app started by {@link launch}. */
export interface App {
  /** Master pid (and process group id). */
  pid: number;
  /** Everything the master printed so far (stdout and stderr). */
  output(): string;
  /** Client-facing port by worker name, from the banner. */
  ports: Record<string, number>;
}

/**
 * Starts `node --import tsx <fixture> start` detached (its own process group) with a fresh
 * runtime dir, and waits for the banner. A banner that says some process did not report ready
 * yet is accepted (slow starts on a loaded machine): callers wait for what they need. Teardown
 * runs `stop`, then kills the whole process group whatever happened, and removes the dir.
 */
export async function launch(t: Test, fixture: string, extraEnv: NodeJS.ProcessEnv): Promise<App> {
  const file = path.join(fixturesDir, fixture);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-core-'));
  const env: NodeJS.ProcessEnv = { ...process.env, GATEWAYWORKER_RUNTIME_DIR: dir, ...extraEnv };
  delete env.TAP;
  delete env.NODE_V8_COVERAGE;
  const proc = spawn(process.execPath, ['--import', 'tsx', file, 'start'], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  t.teardown(async () => {
    try {
      if (proc.exitCode === null && proc.signalCode === null) {
        await new Promise<void>((resolve) => execFile(process.execPath, ['--import', 'tsx', file, 'stop'], { env, timeout: 10_000 }, () => resolve()));
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
      }
    } finally {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  await waitFor(
    () => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`master exited early:\n${text}`);
      return /Start (success|finished)/.test(text);
    },
    40_000,
    `the start banner of ${fixture}`,
  ).catch((error: Error) => {
    throw new Error(`${error.message}\noutput:\n${text}`);
  });
  return { pid: proc.pid!, output: () => text, ports: parseBannerPorts(text) };
}

export interface CoreApp {
  app: App;
  /** `127.0.0.1:<port>` of the Register. */
  register: string;
  wsPort: number;
  textPort: number;
  /** Internal (worker-facing) ports of the two gateway processes. */
  wsInternal: number;
  textInternal: number;
  workers: number;
  /** A GatewayClient on this app, closed in teardown; waits until both gateways are linked. */
  client(options?: { secretKey?: string; queryTimeout?: number }): Promise<GatewayClient>;
}

/**
 * Distinct free ports for fixed listeners, below 32768 (ephemeral ports start there, DESIGN §5):
 * a random candidate is bound once to prove it free, then closed.
 */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (!out.has(port) && (await canBind(port))) out.add(port);
  }
  return [...out];
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * Starts the core fixture app (Register + websocket Gateway + text Gateway + BusinessWorkers)
 * and waits until every worker is linked to both gateways.
 */
export async function startCore(t: Test, env: NodeJS.ProcessEnv = {}): Promise<CoreApp> {
  const [registerPort, wsInternal, textInternal] = await freePorts(3);
  const register = `127.0.0.1:${registerPort}`;
  const workers = Number(env.WORKER_COUNT ?? 2);
  const app = await launch(t, 'core/app.ts', {
    REGISTER_ADDRESS: register,
    WS_START_PORT: String(wsInternal),
    TEXT_START_PORT: String(textInternal),
    SECRET_KEY: SECRET,
    ...env,
  });
  await waitFor(
    () => ['WsGateway', 'TextGateway'].every((gw) => linkedWorkers(app.output(), gw) >= workers),
    30_000,
    'every BusinessWorker linked to both gateways',
  ).catch((error: Error) => {
    throw new Error(`${error.message}\noutput:\n${app.output()}`);
  });
  const wsPort = app.ports.WsGateway;
  const textPort = app.ports.TextGateway;
  if (!wsPort || !textPort) throw new Error(`client ports not found in the banner:\n${app.output()}`);
  return {
    app,
    register,
    wsPort,
    textPort,
    wsInternal,
    textInternal,
    workers,
    async client(options = {}) {
      const client = new GatewayClient({ registerAddress: register, secretKey: options.secretKey ?? SECRET, queryTimeout: options.queryTimeout });
      t.teardown(() => client.close());
      await client.ready();
      if ((options.secretKey ?? SECRET) === SECRET) await waitFor(() => client.gatewayCount === 2, 5000, 'GatewayClient linked to both gateways');
      return client;
    },
  };
}

function linkedWorkers(output: string, gateway: string): number {
  const names = new Set<string>();
  for (const match of output.matchAll(new RegExp(`${gateway}#0 pid=\\d+ business worker linked worker=(\\S+)`, 'g'))) names.add(match[1]);
  return names.size;
}

/** One message a client received: the raw text (or bytes) and its JSON value when it parses. */
export interface Msg {
  /** Arrival order on this client (0 = first message). */
  n: number;
  raw: string | Buffer;
  binary: boolean;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
}

type Pred = (m: Msg) => boolean;

/** A client of either gateway with a searchable inbox. */
export class Peer {
  /** Client id, from the welcome message. */
  id = '';
  /** pid of the BusinessWorker that ran onConnect. */
  pid = 0;
  /** Arrival order of the welcome message. */
  welcomeN = -1;
  private received = 0;
  readonly queue: Msg[] = [];
  private waiters: Array<{ pred: Pred; resolve: (index: number) => void }> = [];
  closedAt = 0;
  readonly closed: Promise<void>;
  private markClosed: () => void = () => {};
  private seq = 0;

  constructor(
    readonly kind: 'ws' | 'text',
    private readonly write: (text: string) => void,
    private readonly kill: () => void,
  ) {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
  }

  /** @internal */
  receive(raw: string | Buffer, binary: boolean): void {
    let json: unknown;
    if (typeof raw === 'string') {
      try {
        json = JSON.parse(raw);
      } catch {
        json = undefined;
      }
    }
    this.queue.push({ n: this.received++, raw, binary, json });
    for (const waiter of [...this.waiters]) {
      const index = this.queue.findIndex(waiter.pred);
      if (index !== -1) {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        waiter.resolve(index);
      }
    }
  }

  /** @internal */
  onClosed(): void {
    this.closedAt = Date.now();
    this.markClosed();
  }

  get isClosed(): boolean {
    return this.closedAt !== 0;
  }

  send(text: string): void {
    this.write(text);
  }

  close(): void {
    this.kill();
  }

  private find(pred: Pred, timeoutMs: number, what: string): Promise<number> {
    const index = this.queue.findIndex(pred);
    if (index !== -1) return Promise.resolve(index);
    return new Promise((resolve, reject) => {
      const waiter = {
        pred,
        resolve: (i: number) => {
          clearTimeout(timer);
          resolve(i);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        const seen = this.queue.map((m) => (typeof m.raw === 'string' ? m.raw : `<${m.raw.length} bytes>`)).join(' | ');
        reject(new Error(`${this.kind} client ${this.id}: no ${what} within ${timeoutMs} ms (inbox: ${seen.slice(0, 2000)})`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Takes the first message matching `pred` out of the inbox (waiting for it). */
  async expect(pred: Pred, timeoutMs = 3000, what = 'matching message'): Promise<Msg> {
    const index = await this.find(pred, timeoutMs, what);
    return this.queue.splice(index, 1)[0];
  }

  /** Takes the first JSON message of `type` (and matching `extra`) out of the inbox. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async expectType(type: string, extra: (json: any) => boolean = () => true, timeoutMs = 3000): Promise<any> {
    return (await this.expect((m) => m.json?.type === type && extra(m.json), timeoutMs, `message of type ${type}`)).json;
  }

  /** Takes every message up to and including the first one matching `pred`; returns those before it. */
  async until(pred: Pred, timeoutMs = 3000, what = 'marker'): Promise<Msg[]> {
    const index = await this.find(pred, timeoutMs, what);
    return this.queue.splice(0, index + 1).slice(0, index);
  }

  /** Sends a command and waits for the reply of `type`. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  async ask(line: string, type: string, timeoutMs = 3000): Promise<any> {
    this.send(line);
    return this.expectType(type, () => true, timeoutMs);
  }

  /**
   * Calls `Gateway.<method>(...args)` inside the BusinessWorker that handles this client;
   * resolves with the result or rejects with an Error carrying the worker-side name and code.
   */
  async api(method: string, ...args: unknown[]): Promise<unknown> {
    const seq = ++this.seq;
    this.send(`api ${seq} ${method} ${JSON.stringify(args)}`);
    const reply = await this.expectType('api', (j) => j.seq === seq, 6000);
    if (reply.error) {
      const error = new Error(reply.error.message) as Error & { code?: string };
      error.name = reply.error.name;
      error.code = reply.error.code ?? undefined;
      throw error;
    }
    return reply.ok;
  }
}

/** Connects a ws client; resolves once it got its welcome (so its id is known). */
export async function wsPeer(t: Test, port: number, path = '/', options: ClientOptions = {}): Promise<Peer> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { perMessageDeflate: false, ...options });
  const peer = new Peer('ws', (text) => ws.send(text), () => ws.terminate());
  t.teardown(() => ws.terminate());
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    peer.receive(isBinary ? buffer : buffer.toString('utf8'), isBinary);
  });
  ws.on('error', () => {});
  ws.on('close', () => peer.onClosed());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const welcome = await peer.expect((m) => m.json?.type === 'welcome', 5000, 'welcome');
  peer.id = welcome.json.clientId;
  peer.pid = welcome.json.pid;
  peer.welcomeN = welcome.n;
  return peer;
}

/** Connects a newline-text client; resolves once it got its welcome. */
export async function textPeer(t: Test, port: number): Promise<Peer> {
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
  const welcome = await peer.expect((m) => m.json?.type === 'welcome', 5000, 'welcome');
  peer.id = welcome.json.clientId;
  peer.pid = welcome.json.pid;
  peer.welcomeN = welcome.n;
  return peer;
}

/** Name and code of a rejection (or `resolved` when it did not reject). */
export async function failure(promise: Promise<unknown>): Promise<{ name: string; code: string | undefined; error?: Error } | 'resolved'> {
  try {
    await promise;
    return 'resolved';
  } catch (error) {
    const e = error as Error & { code?: string };
    return { name: e.name, code: e.code, error: e };
  }
}

export const sorted = <T>(list: readonly T[]): T[] => [...list].sort();

/**
 * Helpers of the fault-injection tests: start the fault app (test/fixtures/faults/app.ts) as real
 * process trees in their own process groups (always killed in teardown), pick free ports, drive
 * WebSocket / text clients and count what they get back.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { WebSocket } from 'ws';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const faultApp = path.join(repoRoot, 'test', 'fixtures', 'faults', 'app.ts');

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value or `ms` pass (then returns the last value). */
export async function waitFor<T>(check: () => T | Promise<T>, ms = 10_000, every = 50): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value || Date.now() > deadline) return value;
    await sleep(every);
  }
}

/** Env of a fresh single-host app: its own secret and free internal ports. */
export async function freshEnv(extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    SECRET_KEY: secret(),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    WS_START_PORT: String(await freePort()),
    TEXT_START_PORT: String(await freePort()),
    ...extra,
  };
}

const taken = new Set<number>();

/** A port below 32768 (fixed listen ports must stay out of the ephemeral range) that binds now. */
export async function freePort(span = 1): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 12_000 + crypto.randomInt(0, 20_000 - span);
    let ok = true;
    for (let p = base; p < base + span && ok; p++) ok = !taken.has(p) && (await canBind(p));
    if (!ok) continue;
    for (let p = base; p < base + span; p++) taken.add(p);
    return base;
  }
  throw new Error('no free port found');
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

export interface StatusProcess {
  pid: number;
  name: string;
  id: number;
  listening: string;
}

export interface App {
  pid: number;
  env: NodeJS.ProcessEnv;
  output(): string;
  exited: Promise<unknown>;
  cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  processes(): Promise<StatusProcess[]>;
  /** pids of one worker's processes, by id order. */
  pids(name: string): Promise<number[]>;
  /** The client port a worker listens on (from status). */
  port(name: string): Promise<number>;
  /** `stop` through the CLI; SIGKILL of the group if that does not end it in 10 s. */
  stop(): Promise<void>;
  kill(): void;
}

/** A secret per test run, so that apps of concurrently running test files never link to each other. */
export function secret(): string {
  return `faults-${crypto.randomBytes(6).toString('hex')}`;
}

/**
 * Process groups (and runtime dirs) of apps still running. A test process that tap ends on a
 * timeout exits without running teardowns: its apps are killed on 'exit' all the same.
 */
const running = new Map<number, string>();
process.once('exit', () => {
  for (const [pgid, dir] of running) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // gone already
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Starts `node --import tsx <file> start` detached (own process group) with a fresh runtime dir,
 * waits for "Start success", and registers a teardown that kills the group.
 */
export async function startApp(t: Test, env: NodeJS.ProcessEnv, file = faultApp): Promise<App> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-'));
  const fullEnv: NodeJS.ProcessEnv = { ...process.env, GATEWAYWORKER_RUNTIME_DIR: dir, FAULTS_WATCHDOG: '1', ...env };
  delete fullEnv.TAP;
  delete fullEnv.NODE_V8_COVERAGE;
  for (const key of Object.keys(fullEnv)) if (key.startsWith('TAP_')) delete fullEnv[key];
  const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', file, 'start'], {
    cwd: repoRoot,
    env: fullEnv,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  running.set(proc.pid!, dir);
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));
  const kill = (): void => {
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // gone already
    }
  };
  t.teardown(async () => {
    kill();
    await Promise.race([exited, sleep(2000)]);
    fs.rmSync(dir, { recursive: true, force: true });
    running.delete(proc.pid!);
  });
  const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', file, ...args], { cwd: repoRoot, env: fullEnv, timeout: 30_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });
  const processes = async (): Promise<StatusProcess[]> => {
    const result = await cli('status', '--json');
    if (result.code !== 0) throw new Error(`status --json failed: ${result.stderr}${result.stdout}`);
    return (JSON.parse(result.stdout) as { processes: StatusProcess[] }).processes;
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start banner in 60 s:\n${text}`)), 60_000);
    const check = (): void => {
      // On a loaded machine the banner may come before every child reported ready.
      if (/Start (success|finished)/.test(text)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.on('data', check);
    proc.stderr!.on('data', check);
    proc.on('exit', () => {
      clearTimeout(timer);
      reject(new Error(`app exited during start:\n${text}`));
    });
  });
  // Every child up and answering status (the banner does not wait for slow children).
  const everyone = await waitFor(async () => {
    const result = await cli('status', '--json');
    if (result.code !== 0) return false;
    const status = JSON.parse(result.stdout) as { master: { processes: number }; processes: Array<StatusProcess & { status: string }> };
    return status.processes.length === status.master.processes && status.processes.every((p) => p.pid > 0 && p.status === 'idle');
  }, 20_000, 250);
  if (!everyone) throw new Error(`not every child came up:\n${text}`);
  return {
    pid: proc.pid!,
    env: fullEnv,
    output: () => text,
    exited,
    cli,
    processes,
    async pids(name) {
      return (await processes()).filter((p) => p.name === name).sort((a, b) => a.id - b.id).map((p) => p.pid);
    },
    async port(name) {
      const row = (await processes()).find((p) => p.name === name);
      const port = Number(/:(\d+)$/.exec(row?.listening ?? '')?.[1]);
      if (!port) throw new Error(`no port for ${name}`);
      return port;
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      await cli('stop');
      const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) kill();
    },
    kill,
  };
}

/** Lines of the app output at error level (`<time> error <role> ...`). */
export function errorLines(output: string): string[] {
  return output.split('\n').filter((line) => /^\S+\s+error\s/.test(line));
}

/** One test client (WebSocket or text) that parses every JSON message it gets. */
export interface Client {
  /** The client id from the welcome message ('' until it came). */
  id: string;
  messages: Array<Record<string, unknown>>;
  closed: boolean;
  send(text: string): void;
  /** The next message matching `pred`, waiting up to `ms`. */
  next(pred: (m: Record<string, unknown>) => boolean, ms?: number): Promise<Record<string, unknown>>;
  close(): void;
  onMessage?: (m: Record<string, unknown>) => void;
  /** WebSocket clients: stop reading from the socket (a slow consumer), and read again. */
  pause?(): void;
  resume?(): void;
}

function makeClient(send: (text: string) => void, close: () => void): Client & { deliver(raw: string): void } {
  const waiters: Array<{ pred: (m: Record<string, unknown>) => boolean; resolve(m: Record<string, unknown>): void }> = [];
  const client = {
    id: '',
    messages: [] as Array<Record<string, unknown>>,
    closed: false,
    send,
    close,
    onMessage: undefined as ((m: Record<string, unknown>) => void) | undefined,
    deliver(raw: string): void {
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        m = { raw };
      }
      if (m.type === 'welcome') client.id = String(m.clientId);
      client.messages.push(m);
      client.onMessage?.(m);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i].pred(m)) {
          waiters[i].resolve(m);
          waiters.splice(i, 1);
        }
      }
    },
    next(pred: (m: Record<string, unknown>) => boolean, ms = 5000): Promise<Record<string, unknown>> {
      const seen = client.messages.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching message in ${ms} ms (client ${client.id})`)), ms);
        waiters.push({
          pred,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
      });
    },
  };
  return client;
}

/** Connects a WebSocket client; resolves once open (the welcome comes later, from a worker). */
export async function wsClient(t: Test, host: string, port: number): Promise<Client> {
  const ws = new WebSocket(`ws://${host}:${port}/`);
  const client = makeClient(
    (text) => ws.send(text),
    () => ws.terminate(),
  );
  client.pause = () => ws.pause();
  client.resume = () => ws.resume();
  ws.on('message', (data) => client.deliver(data.toString()));
  ws.on('close', () => (client.closed = true));
  ws.on('error', () => {});
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return client;
}

/** Connects a newline-delimited text client. */
export async function textClient(t: Test, host: string, port: number): Promise<Client> {
  const socket = net.connect(port, host);
  const client = makeClient(
    (text) => socket.write(`${text}\n`),
    () => socket.destroy(),
  );
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    let at: number;
    while ((at = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, at).replace(/\r$/, '');
      buffered = buffered.slice(at + 1);
      client.deliver(line);
    }
  });
  socket.on('close', () => (client.closed = true));
  socket.on('error', () => {});
  t.teardown(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return client;
}

/** Connects `n` clients and waits for every welcome. */
export async function wsClients(t: Test, host: string, port: number, n: number): Promise<Client[]> {
  const clients = await Promise.all(Array.from({ length: n }, () => wsClient(t, host, port)));
  await Promise.all(clients.map((c) => c.next((m) => m.type === 'welcome', 10_000)));
  return clients;
}

/**
 * Each client sends `echo <client>:<seq>` every `intervalMs` and counts the replies per message.
 * `stop()` ends sending and waits (up to `settleMs`) until every message has a reply.
 */
export class Traffic {
  /** send time by `client:seq`. */
  readonly sentAt = new Map<string, number>();
  /** replies by `client:seq`. */
  readonly replies = new Map<string, Array<{ at: number; n: number; pid: number; v: number }>>();
  private arrivals = 0;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly seqs: number[];

  constructor(
    readonly clients: Client[],
    private readonly intervalMs = 20,
    private readonly prefix = 'm',
  ) {
    this.seqs = clients.map(() => 0);
    clients.forEach((client, i) => {
      const previous = client.onMessage;
      client.onMessage = (m) => {
        previous?.(m);
        if (m.cmd !== 'echo' || typeof m.value !== 'string' || !m.value.startsWith(`${this.prefix}${i}:`)) return;
        const list = this.replies.get(m.value) ?? [];
        list.push({ at: Date.now(), n: ++this.arrivals, pid: Number(m.pid), v: Number(m.v) });
        this.replies.set(m.value, list);
      };
    });
  }

  start(): this {
    this.clients.forEach((client, i) => {
      // Spread the clients over the interval.
      const begin = setTimeout(() => {
        const timer = setInterval(() => this.sendOne(client, i), this.intervalMs);
        this.timers.push(timer);
      }, (i * this.intervalMs) / this.clients.length);
      this.timers.push(begin);
    });
    return this;
  }

  sendOne(client: Client, i: number): void {
    if (client.closed) return;
    const key = `${this.prefix}${i}:${++this.seqs[i]}`;
    this.sentAt.set(key, Date.now());
    client.send(`echo ${key}`);
  }

  async stop(settleMs = 5000): Promise<void> {
    for (const timer of this.timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    await waitFor(() => this.lost().length === 0, settleMs);
  }

  get sent(): number {
    return this.sentAt.size;
  }

  lost(): string[] {
    return [...this.sentAt.keys()].filter((key) => !this.replies.has(key));
  }

  doubled(): string[] {
    return [...this.replies].filter(([, list]) => list.length > 1).map(([key]) => key);
  }

  /** Replies per client that arrived out of send order. */
  outOfOrder(): number {
    let n = 0;
    const last = new Map<string, number>();
    const all = [...this.replies].flatMap(([key, list]) => list.map((r) => ({ key, n: r.n })));
    all.sort((a, b) => a.n - b.n);
    for (const { key } of all) {
      const [client, seq] = key.split(':');
      if (Number(seq) < (last.get(client) ?? 0)) n++;
      last.set(client, Math.max(Number(seq), last.get(client) ?? 0));
    }
    return n;
  }
}

/** Sends a process SIGKILL. */
export function kill9(pid: number): void {
  process.kill(pid, 'SIGKILL');
}

// ---- load and fault helpers of the counted fault tests ---------------------------------------

/** Resident set size of a process in bytes (from /proc; 0 when it is gone). */
export function rssOf(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

/** Pids of the live (not zombie) processes of process group `pgid`, from /proc. */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command (which may hold spaces and parentheses): state ppid pgrp ...
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === pgid && state !== 'Z' && state !== 'X') out.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return out;
}

/** True while a process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The internal port of the gateway process that handed out a client id (ids carry it: see internal/clientId.ts). */
export function gatewayPortOf(clientId: string): number {
  return parseInt(clientId.slice(8, 12), 16);
}

/** Connects `n` WebSocket clients `batch` at a time (a moderate connect burst on two shared cores) and waits for every welcome. */
export async function manyWsClients(t: Test, host: string, port: number, n: number, batch = 100): Promise<Client[]> {
  const clients: Client[] = [];
  for (let at = 0; at < n; at += batch) clients.push(...(await wsClients(t, host, port, Math.min(batch, n - at))));
  return clients;
}

/** Nearest-rank percentile of `values` (p in 0..100); NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/**
 * Load of the counted tests: each client sends `echo <prefix><i>:<seq>` every `minMs`–`maxMs`
 * (first sends spread over `maxMs`), on top of {@link Traffic}'s counting.
 */
export class JitteredTraffic extends Traffic {
  private readonly jitterTimers = new Set<NodeJS.Timeout>();
  private running = false;

  constructor(
    clients: Client[],
    private readonly minMs: number,
    private readonly maxMs: number,
    prefix = 'm',
  ) {
    super(clients, minMs, prefix);
  }

  override start(): this {
    this.running = true;
    this.clients.forEach((client, i) => this.schedule(client, i, Math.random() * this.maxMs));
    return this;
  }

  private schedule(client: Client, i: number, delay: number): void {
    const timer = setTimeout(() => {
      this.jitterTimers.delete(timer);
      if (!this.running) return;
      this.sendOne(client, i);
      this.schedule(client, i, this.minMs + Math.random() * (this.maxMs - this.minMs));
    }, delay);
    this.jitterTimers.add(timer);
  }

  override async stop(settleMs = 5000): Promise<void> {
    this.running = false;
    for (const timer of this.jitterTimers) clearTimeout(timer);
    this.jitterTimers.clear();
    await super.stop(settleMs);
  }

  /**
   * Stops sending and waits until every message is answered, or until the answers stop coming
   * for `quietMs` (messages that will never be answered do not hold the test up), at most `settleMs`.
   */
  async stopQuiet(settleMs = 10_000, quietMs = 2000): Promise<void> {
    await this.stop(0);
    const deadline = Date.now() + settleMs;
    let answered = this.received;
    let since = Date.now();
    while (this.lost().length > 0 && Date.now() < deadline && Date.now() - since < quietMs) {
      await sleep(100);
      if (this.received !== answered) {
        answered = this.received;
        since = Date.now();
      }
    }
  }

  /** Messages sent so far that have at least one reply. */
  get received(): number {
    return this.replies.size;
  }

  /** Reply delays in ms (first reply of each message). */
  delays(filter: (key: string, sentAt: number) => boolean = () => true): number[] {
    const out: number[] = [];
    for (const [key, list] of this.replies) {
      const sent = this.sentAt.get(key);
      if (sent !== undefined && filter(key, sent)) out.push(list[0].at - sent);
    }
    return out;
  }
}

/**
 * A TCP proxy the test controls, standing for the network between two hosts. `partition()`
 * freezes it like a cable pulled out: bytes in flight stay where they are, nothing is delivered,
 * no close or reset crosses, and new connections are accepted but not passed on. `heal()` lets
 * everything through again: held bytes flow, closes that happened meanwhile reach the other
 * side, held connections are dialled upstream.
 */
export class TcpProxy {
  partitioned = false;
  /** Connections accepted so far, and how many were held by a partition. */
  accepted = 0;
  heldConnections = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Live connections: [from the dialling side, to the upstream]. */
  readonly pairs: Array<[net.Socket, net.Socket]> = [];
  private held: Array<() => void> = [];
  private readonly whenHealed: Array<() => void> = [];

  constructor(
    readonly upstreamHost: string,
    readonly upstreamPort: number,
  ) {
    this.server = net.createServer((downstream) => {
      this.accepted++;
      this.track(downstream);
      downstream.pause();
      const go = (): void => this.connect(downstream);
      if (this.partitioned) {
        this.heldConnections++;
        this.held.push(go);
      } else go();
    });
  }

  async listen(t: Test, host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, host, resolve));
    t.teardown(() => this.close());
    return (this.server.address() as net.AddressInfo).port;
  }

  partition(): void {
    this.partitioned = true;
    for (const socket of this.sockets) socket.pause();
  }

  heal(): void {
    this.partitioned = false;
    for (const socket of this.sockets) if (!socket.destroyed) socket.resume();
    const held = this.held.splice(0);
    for (const go of held) go();
    const deferred = this.whenHealed.splice(0);
    for (const fn of deferred) fn();
  }

  close(): void {
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
  }

  /** Resets one connection (both ends see it closed), like a router dropping its state. */
  reset(index = 0): void {
    const pair = this.pairs[index];
    if (!pair) throw new Error(`no connection #${index} through the proxy`);
    for (const socket of pair) socket.destroy();
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
  }

  private later(fn: () => void): void {
    if (this.partitioned) this.whenHealed.push(fn);
    else fn();
  }

  private connect(downstream: net.Socket): void {
    if (downstream.destroyed) return;
    const upstream = net.connect(this.upstreamPort, this.upstreamHost);
    this.track(upstream);
    const pair: [net.Socket, net.Socket] = [downstream, upstream];
    this.pairs.push(pair);
    upstream.on('close', () => {
      const at = this.pairs.indexOf(pair);
      if (at >= 0) this.pairs.splice(at, 1);
    });
    this.pipe(downstream, upstream);
    this.pipe(upstream, downstream);
    downstream.resume();
  }

  private pipe(from: net.Socket, to: net.Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (this.partitioned) {
        // Read just before the freeze: it stays in the network until the heal.
        from.pause();
        this.whenHealed.push(() => {
          if (!to.destroyed) to.write(chunk);
        });
        return;
      }
      if (!to.destroyed && !to.write(chunk)) from.pause();
    });
    to.on('drain', () => {
      if (!this.partitioned && !from.destroyed) from.resume();
    });
    from.on('end', () => this.later(() => to.end()));
    from.on('close', () =>
      this.later(() => {
        to.end();
        setTimeout(() => to.destroy(), 1000).unref();
      }),
    );
  }
}

/** What the counted tests report: messages sent, answered, never answered, answered twice, and clients disconnected. */
export interface Counts {
  sent: number;
  received: number;
  lost: number;
  dup: number;
  dropped: number;
}

/** Counts of `traffic`, optionally only for the clients whose index passes `only`. */
export function countsOf(traffic: Traffic, clients: Client[], only: (index: number) => boolean = () => true): Counts {
  const mine = (key: string): boolean => only(Number(/^[a-z]+(\d+):/.exec(key)?.[1] ?? -1));
  const keys = [...traffic.sentAt.keys()].filter(mine);
  return {
    sent: keys.length,
    received: keys.filter((key) => traffic.replies.has(key)).length,
    lost: keys.filter((key) => !traffic.replies.has(key)).length,
    dup: keys.filter((key) => (traffic.replies.get(key)?.length ?? 0) > 1).length,
    dropped: clients.filter((c, i) => only(i) && c.closed).length,
  };
}

/** `sent=… received=… lost=… dup=… dropped=…` */
export function countLine(c: Counts): string {
  return `sent=${c.sent} received=${c.received} lost=${c.lost} dup=${c.dup} dropped=${c.dropped}`;
}

/**
 * The children of a master (its process group), by the title each child sets
 * (`gatewayworker: <name>#<id> ...`), read from /proc: no CLI round trip, so it is cheap to poll
 * on a loaded machine. A child shows up here as soon as it is forked, before it is ready.
 */
export function childrenOf(pgid: number): Array<{ pid: number; name: string; id: number }> {
  const out: Array<{ pid: number; name: string; id: number }> = [];
  for (const pid of groupMembers(pgid)) {
    try {
      const title = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      const match = /^gatewayworker: (\S+)#(\d+)/.exec(title);
      if (match) out.push({ pid, name: match[1], id: Number(match[2]) });
    } catch {
      // Gone while we looked.
    }
  }
  return out.sort((a, b) => (a.name === b.name ? a.id - b.id : a.name < b.name ? -1 : 1));
}

/** Pids of one worker's children (by id), from /proc. */
export function childPids(pgid: number, name: string): number[] {
  return childrenOf(pgid).filter((c) => c.name === name).map((c) => c.pid);
}

/** Waits until worker `name` of the master `pgid` has `count` children, none of them in `old`; returns their pids or null. */
export async function replaced(pgid: number, name: string, old: number[], count: number, ms = 15_000): Promise<number[] | null> {
  return waitFor(() => {
    const pids = childPids(pgid, name);
    return pids.length === count && pids.some((pid) => old.includes(pid)) === false ? pids : null;
  }, ms, 50);
}

/** Env that lets a test make a child collect garbage (SIGUSR2, see the fault app) before reading its RSS. */
export const GC_ENV = { NODE_OPTIONS: '--expose-gc', GC_ON_SIGUSR2: '1' };

/** RSS of a child of an app started with {@link GC_ENV}, read after it collected garbage twice. */
export async function settledRss(pid: number): Promise<number> {
  for (let i = 0; i < 2; i++) {
    process.kill(pid, 'SIGUSR2');
    await sleep(300);
  }
  return rssOf(pid);
}

/** Wall time per phase of a test, for its report: `lap('start')` ends the phase named so. */
export function stopwatch(): { lap(name: string): void; line(): string } {
  let last = Date.now();
  const laps: string[] = [];
  return {
    lap(name) {
      const now = Date.now();
      laps.push(`${name} ${((now - last) / 1000).toFixed(1)}s`);
      last = now;
    },
    line: () => `phases: ${laps.join(', ')}`,
  };
}

/** The first `n` lines of an app's output at warn or error level (for a failing test's report). */
export function warnings(output: string, n = 8): string[] {
  return output.split('\n').filter((line) => /^\S+\s+(warn|error)\s/.test(line)).slice(0, n);
}

/** With $FAULTS_DUMP set to a directory, writes an app's whole output there (to look into a failure). */
export function dumpOutput(name: string, app: App): void {
  const dir = process.env.FAULTS_DUMP;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${name}.log`), app.output());
}

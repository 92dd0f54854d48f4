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
 * Starts `node --import tsx <file> start` detached (own process group) with a fresh runtime dir,
 * waits for "Start success", and registers a teardown that kills the group.
 */
export async function startApp(t: Test, env: NodeJS.ProcessEnv, file = faultApp): Promise<App> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-'));
  const fullEnv: NodeJS.ProcessEnv = { ...process.env, GATEWAYWORKER_RUNTIME_DIR: dir, ...env };
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
    const timer = setTimeout(() => reject(new Error(`no start banner in 30 s:\n${text}`)), 30_000);
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

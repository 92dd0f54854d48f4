/**
 * End-to-end helpers: generate a project with the real CLI and install it, run the generated app
 * the way its README says (`tsx start.ts start` in the project), always stop it, and talk to it
 * with JSON-over-WebSocket clients.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { WebSocket, type RawData } from 'ws';
import { isAlive, parseBannerPorts, sleep, waitFor, waitForStart, type StatusJson } from '../helpers/app.ts';

export { isAlive, sleep, waitFor, type StatusJson };

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'generator/bin.js');

// ---- processes that must not outlive the test file -------------------------------------------

/** Process groups (detached leaders) still to be killed, whatever happens to the test process. */
const groups = new Set<number>();

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  groups.delete(pid);
}

process.on('exit', () => {
  for (const pid of groups) killGroup(pid);
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    for (const pid of groups) killGroup(pid);
    process.kill(process.pid, signal);
  });
}

/** The environment of a child: tap's variables out, so the app reports neither TAP nor coverage. */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(TAP|_TAPJS_|NODE_V8_COVERAGE$|NODE_OPTIONS$|npm_config_user_agent$)/.test(key)) delete env[key];
  return { ...env, ...extra };
}

/**
 * `cmd args` as an argv that runs without NODE_OPTIONS. tap's process tracking hooks every spawn
 * of the test process and puts its loader (and, with coverage, V8 coverage) back into NODE_OPTIONS;
 * in a generated app that loads into every role and makes a start take seconds longer than a
 * user's. `env -u` takes it out again right before the command runs.
 */
function plain(cmd: string, args: string[]): [string, string[]] {
  return ['/usr/bin/env', ['-u', 'NODE_OPTIONS', cmd, ...args]];
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args` in its own process group (killed on timeout or when the test process ends). */
export function runCommand(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(...plain(cmd, args), { cwd: opts.cwd, env: childEnv(opts.env), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    groups.add(child.pid!);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d));
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.timeoutMs} ms]`;
      killGroup(child.pid!);
    }, opts.timeoutMs ?? 120_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      killGroup(child.pid!); // anything it left behind
      resolve({ code, stdout, stderr });
    });
  });
}

/** `node generator/bin.js …args` in `cwd`, non-interactive. */
export function generator(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return runCommand(process.execPath, [BIN, ...args], {
    cwd,
    // Installs come from the npm cache when they can (offline machine, and ~25 s instead of more).
    env: { CI: 'true', npm_config_prefer_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false', ...env },
  });
}

/** A temporary folder removed at the end of `t`. */
export function tempDir(t: Test, prefix = 'gw-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Generated apps depend on `file:<repo>/runtime`, whose entry point is the built dist/. */
export async function ensureRuntimeBuilt(): Promise<void> {
  if (existsSync(join(ROOT, 'runtime/dist/index.js'))) return;
  const r = await runCommand('npm', ['run', 'build'], { cwd: ROOT, timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`npm run build failed:\n${r.stdout}${r.stderr}`);
}

// ---- ports -----------------------------------------------------------------------------------

const handedOut = new Set<number>();

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * The first of `span` consecutive ports that are free right now (listen, read, close). Listen
 * ports stay below 32768: above it the kernel hands the same numbers out as ephemeral source
 * ports (DESIGN §5), and port 0 would pick from exactly that range. Internal gateway ports
 * (START_PORT + n) cannot be 0 anyway, since workers must know them.
 */
export async function freePort(span = 1): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const base = 10_000 + Math.floor(Math.random() * (22_000 - span));
    let ok = true;
    for (let p = base; p < base + span && ok; p++) ok = !handedOut.has(p) && (await canBind(p));
    if (!ok) continue;
    for (let p = base; p < base + span; p++) handedOut.add(p);
    return base;
  }
  throw new Error('no free port found below 32768');
}

// ---- a running generated app -----------------------------------------------------------------

export interface RunningApp {
  /** The master's pid, also its process group id. */
  pid: number;
  proc: ChildProcess;
  /** Everything the master printed so far. */
  output(): string;
  /** Worker name → listening port, from the start banner. */
  ports: Record<string, number>;
  exited: Promise<number | string | null>;
  /** `tsx start.ts …args` in the project, against this app's runtime dir. */
  cli(...args: string[]): Promise<Run>;
  status(): Promise<StatusJson>;
  /** Every pid `status` reports (master and children). */
  pids(): Promise<number[]>;
  /** `start.ts stop`, then waits for the master to exit; the group is SIGKILLed if it does not. */
  stop(): Promise<void>;
}

// Generous: with the whole suite running on 2 shared cores, an app can take a minute to start.
const START_TIMEOUT_MS = 90_000;

/**
 * `node --import tsx start.ts start` in `projectDir` (the app's own tsx, as `npm start` does) in
 * a process group of its own, with a fresh runtime dir (pid file, control socket); resolves at
 * "Start success". It is stopped (and its group killed) at the end of `t` whatever happens.
 */
export async function startApp(t: Test, projectDir: string, env: NodeJS.ProcessEnv): Promise<RunningApp> {
  const runtimeDir = mkdtempSync(join(tmpdir(), 'gw-e2e-run-'));
  const fullEnv = childEnv({ GATEWAYWORKER_RUNTIME_DIR: runtimeDir, ...env });
  const proc = spawn(...plain(process.execPath, ['--import', 'tsx', 'start.ts', 'start']), { cwd: projectDir, env: fullEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  groups.add(proc.pid!);
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  const exited = new Promise<number | string | null>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));

  const cli = (...args: string[]): Promise<Run> =>
    new Promise((resolve) => {
      execFile(...plain(process.execPath, ['--import', 'tsx', 'start.ts', ...args]), { cwd: projectDir, env: fullEnv, timeout: 60_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      });
    });
  const status = async (): Promise<StatusJson> => {
    const r = await cli('status', '--json');
    if (r.code !== 0) throw new Error(`status --json failed (${r.code}): ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as StatusJson;
  };
  const app: RunningApp = {
    pid: proc.pid!,
    proc,
    output: () => text,
    ports: {},
    exited,
    cli,
    status,
    async pids() {
      const s = await status();
      return [s.master.pid, ...s.processes.map((p) => p.pid)];
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        await cli('stop');
        await Promise.race([exited, sleep(10_000)]);
      }
      killGroup(proc.pid!);
    },
  };
  t.teardown(async () => {
    try {
      await app.stop();
    } finally {
      killGroup(proc.pid!);
      rmSync(runtimeDir, { recursive: true, force: true });
    }
  });

  await waitForStart(proc, () => text, exited, START_TIMEOUT_MS);
  app.ports = parseBannerPorts(text);
  return app;
}

// ---- JSON-over-WebSocket clients -------------------------------------------------------------

export type Message = Record<string, any>;

/** A message type, or a predicate on messages. */
export type Match = string | ((m: Message) => boolean);

export interface JsonSocket {
  ws: WebSocket;
  /** Every text frame received, in order, as sent (pings included). */
  raw: string[];
  /** Parsed messages not taken yet, oldest first (changed in place). */
  queue: Message[];
  send(message: object): void;
  sendRaw(text: string): void;
  /** Waits until `take` finds what it wants in the queue (taking it out is up to `take`). */
  wait<T>(take: () => T | undefined, timeoutMs: number, what: string): Promise<T>;
  /** The next message (not yet taken) of this type (or matching); other messages stay queued. */
  next(match: Match, timeoutMs?: number): Promise<Message>;
  /** Drops every queued message. */
  drain(): void;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export interface JsonSocketOptions {
  host?: string;
  /** Sees every parsed message first; returning false keeps it out of the queue. */
  onMessage?: (m: Message, ws: WebSocket) => boolean;
  /** What a timeout error shows of the queue (all of it by default). */
  showQueue?: (queue: Message[]) => unknown;
}

/** Connects a WebSocket client to the gateway and parses every frame as JSON into a queue. */
export async function jsonSocket(t: Test, port: number, opts: JsonSocketOptions = {}): Promise<JsonSocket> {
  const ws = new WebSocket(`ws://${opts.host ?? '127.0.0.1'}:${port}/`, { perMessageDeflate: false });
  const raw: string[] = [];
  const queue: Message[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (data: RawData) => {
    const text = String(data);
    raw.push(text);
    let message: Message;
    try {
      message = JSON.parse(text);
    } catch {
      message = { type: '<not JSON>', text };
    }
    if (opts.onMessage && !opts.onMessage(message, ws)) return;
    queue.push(message);
    for (const check of [...waiters]) check();
  });
  ws.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });

  const wait = <T>(take: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${what} within ${timeoutMs} ms; queued: ${JSON.stringify(opts.showQueue ? opts.showQueue(queue) : queue)}`));
      }, timeoutMs);
      const check = (): void => {
        const found = take();
        if (found === undefined) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(found);
      };
      waiters.add(check);
      check();
    });

  return {
    ws,
    raw,
    queue,
    send: (message) => ws.send(JSON.stringify(message)),
    sendRaw: (text) => ws.send(text),
    wait,
    next: (match, timeoutMs = 5000) =>
      wait(
        () => {
          const i = queue.findIndex(typeof match === 'string' ? (m) => m.type === match : match);
          return i === -1 ? undefined : queue.splice(i, 1)[0];
        },
        timeoutMs,
        typeof match === 'string' ? `"${match}" message` : 'matching message',
      ),
    drain: () => {
      queue.length = 0;
    },
    closed,
    close: () => ws.close(),
  };
}

// ---- chat clients ----------------------------------------------------------------------------

export interface ChatClient extends JsonSocket {
  /**
   * Takes every queued message up to and including the first that `match`es (waiting for it) and
   * returns the ones before it, pings left out: "what did this client get before X".
   */
  until(match: (m: Message) => boolean, timeoutMs?: number): Promise<Message[]>;
  /** Logs in and waits for its own login (the one with client_list) and the history. */
  login(name: string, room: string): Promise<{ login: Message; history: Message }>;
  /** This client's id, once logged in. */
  id?: string;
}

/** A chat client on the gateway; pings are queued like any message (the tests answer them). */
export async function chatClient(t: Test, port: number, host = '127.0.0.1'): Promise<ChatClient> {
  const socket = await jsonSocket(t, port, { host });
  const { queue } = socket;
  const client: ChatClient = {
    ...socket,
    until: (match, timeoutMs = 5000) =>
      socket.wait(
        () => {
          const i = queue.findIndex(match);
          return i === -1 ? undefined : queue.splice(0, i + 1).slice(0, i).filter((m) => m.type !== 'ping');
        },
        timeoutMs,
        'the awaited message',
      ),
    async login(name, room) {
      client.send({ type: 'login', client_name: name, room_id: room });
      const login = await client.next((m) => m.type === 'login' && m.client_list !== undefined);
      client.id = login.client_id;
      const history = await client.next('history');
      return { login, history };
    },
  };
  return client;
}

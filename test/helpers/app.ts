/**
 * Shared helpers for runtime tests: run a fixture start file as a real process tree (and always
 * clean it up), plus small text / WebSocket clients with timeouts.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { WebSocket, type ClientOptions, type RawData } from 'ws';
import type { ConnectionInfo, ProcessStatus } from '../../runtime/src/worker/ipc.js';
import type { MasterStatus } from '../../runtime/src/worker/master/types.js';

export const fixturesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

/** Resolves once the master printed "Start success"; rejects with its output if it exits first or takes too long. */
export function waitForStart(proc: ChildProcess, output: () => string, exited: Promise<unknown>, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "Start success" within ${timeoutMs} ms; output:\n${output()}`)), timeoutMs);
    const check = (): void => {
      if (!output().includes('Start success')) return;
      clearTimeout(timer);
      proc.stdout!.off('data', check);
      resolve();
    };
    proc.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the master exited (${String(code)}) before "Start success"; output:\n${output()}`));
    });
  });
}

/** `status --json` as printed by the CLI. */
export interface StatusJson {
  master: MasterStatus;
  /** Rows loosened: tests read the stats without narrowing away busy rows. */
  processes: Array<ProcessStatus & { status: string }>;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface App {
  /** Master pid (also its process group id). */
  pid: number;
  proc: ChildProcess;
  /** The runtime dir (GATEWAYWORKER_RUNTIME_DIR). */
  dir: string;
  env: NodeJS.ProcessEnv;
  /** Everything the master printed on stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or signal) of the master. */
  exited: Promise<number | string | null>;
  cli(...args: string[]): Promise<CliResult>;
  status(): Promise<StatusJson>;
  connections(): Promise<ConnectionInfo[]>;
  /** Bound port by worker name (from the banner). */
  ports: Record<string, number>;
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 60_000;

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** Worker name → port, from the `WORKERS` table of the start banner. */
export function parseBannerPorts(output: string): Record<string, number> {
  const ports: Record<string, number> = {};
  const section = output.split(/-+ WORKERS -+/)[1] ?? '';
  for (const line of section.split('\n')) {
    const match = /^(\S+)\s+[a-z][a-z0-9+.-]*:\/\/\S*:(\d+)\s/i.exec(line);
    if (match) ports[match[1]!] = Number(match[2]);
    if (line.startsWith('Start ')) break;
  }
  return ports;
}

/**
 * Starts `node --import tsx <fixture> start` in its own process group with a fresh runtime dir
 * and waits for `Start success`. Call {@link registerTeardown} right after.
 */
export async function startApp(fixture: string, opts: { env?: NodeJS.ProcessEnv; args?: string[] } = {}): Promise<App> {
  const file = path.isAbsolute(fixture) ? fixture : path.join(fixturesDir, fixture);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-rt-'));
  const env: NodeJS.ProcessEnv = { ...process.env, GATEWAYWORKER_RUNTIME_DIR: dir, ...opts.env };
  // tap sets these for its own children; the app must not report coverage or TAP.
  delete env.TAP;
  delete env.NODE_V8_COVERAGE;
  const proc = spawn(process.execPath, ['--import', 'tsx', file, 'start', ...(opts.args ?? [])], {
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  const exited = new Promise<number | string | null>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));

  const cli = (...args: string[]): Promise<CliResult> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', file, ...args], { env, timeout: 30_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  const app: App = {
    pid: proc.pid!,
    proc,
    dir,
    env,
    output: () => text,
    exited,
    cli,
    async status() {
      const result = await cli('status', '--json');
      if (result.code !== 0) throw new Error(`status --json failed (${result.code}): ${result.stderr}${result.stdout}`);
      return JSON.parse(result.stdout) as StatusJson;
    },
    async connections() {
      const result = await cli('connections', '--json');
      if (result.code !== 0) throw new Error(`connections --json failed (${result.code}): ${result.stderr}${result.stdout}`);
      return JSON.parse(result.stdout) as ConnectionInfo[];
    },
    ports: {},
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      await cli('stop');
      const timeout = new Promise((resolve) => setTimeout(resolve, 5000).unref());
      await Promise.race([exited, timeout]);
    },
  };

  try {
    await waitForStart(proc, () => text, exited, START_TIMEOUT_MS);
  } catch (error) {
    killGroup(proc.pid!);
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  app.ports = parseBannerPorts(text);
  if (Object.keys(app.ports).length === 0) {
    for (const p of (await app.status()).processes) {
      const port = /:(\d+)$/.exec(p.listening)?.[1];
      if (port) app.ports[p.name] = Number(port);
    }
  }
  return app;
}

/** Stops the app at the end of `t`; whatever happens, kills its process group and removes its dir. */
export function registerTeardown(t: Test, app: App): void {
  t.teardown(async () => {
    try {
      await app.stop();
    } catch {
      // The group is killed below anyway.
    } finally {
      killGroup(app.pid);
      fs.rmSync(app.dir, { recursive: true, force: true });
    }
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` (sync or async) until it returns a truthy value. */
export async function waitFor<T>(predicate: () => T | Promise<T>, timeoutMs = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await predicate();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
    }
    await sleep(25);
  }
}

/** A queue of items with a timed `next()`. */
class Inbox<T> {
  private items: T[] = [];
  private waiters: Array<(item: T) => void> = [];

  push(item: T): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  get size(): number {
    return this.items.length;
  }

  drain(): T[] {
    const items = this.items;
    this.items = [];
    return items;
  }

  next(timeoutMs: number, what: string): Promise<T> {
    if (this.items.length > 0) return Promise.resolve(this.items.shift()!);
    return new Promise((resolve, reject) => {
      const waiter = (item: T): void => {
        clearTimeout(timer);
        resolve(item);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

export interface TextClient {
  socket: net.Socket;
  /** Writes `line` + `\n`. */
  send(line: string): void;
  /** The next line the server sent (without its newline). */
  next(timeoutMs?: number): Promise<string>;
  /** Lines received and not yet taken. */
  pending(): string[];
  /** Resolves when the socket closed. */
  closed: Promise<void>;
  /** True once the server ended or closed the socket. */
  isClosed(): boolean;
  close(): void;
}

/** A newline-delimited text client on a TCP port, a unix socket path, or an already connecting socket. */
export async function textClient(target: number | string | net.Socket, host = '127.0.0.1'): Promise<TextClient> {
  const socket = typeof target === 'number' ? net.connect(target, host) : typeof target === 'string' ? net.connect(target) : target;
  const inbox = new Inbox<string>();
  let rest = '';
  let closed = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    rest += chunk;
    let at: number;
    while ((at = rest.indexOf('\n')) !== -1) {
      inbox.push(rest.slice(0, at));
      rest = rest.slice(at + 1);
    }
  });
  socket.on('error', () => {});
  const closedPromise = new Promise<void>((resolve) => socket.once('close', () => {
    closed = true;
    resolve();
  }));
  if (typeof target === 'number' || typeof target === 'string') {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
  }
  return {
    socket,
    send: (line) => void socket.write(`${line}\n`),
    next: (timeoutMs = 3000) => inbox.next(timeoutMs, 'line'),
    pending: () => inbox.drain(),
    closed: closedPromise,
    isClosed: () => closed,
    close: () => socket.destroy(),
  };
}

export interface WsMessage {
  data: string | Buffer;
  isBinary: boolean;
}

export interface WsClient {
  ws: WebSocket;
  /** The next message: strings for text frames, Buffers for binary ones. */
  next(timeoutMs?: number): Promise<string | Buffer>;
  /** Resolves with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

/** Connects a `ws` client and waits for the handshake to finish. */
export async function wsClient(url: string, options: ClientOptions = {}): Promise<WsClient> {
  const ws = new WebSocket(url, { perMessageDeflate: false, ...options });
  const inbox = new Inbox<string | Buffer>();
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
    inbox.push(isBinary ? buffer : buffer.toString('utf8'));
  });
  ws.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
  });
  return { ws, next: (timeoutMs = 3000) => inbox.next(timeoutMs, 'message'), closed, close: () => ws.terminate() };
}

/** Raw bytes exchange: connect, write `data`, collect everything until the server closes (or timeout). */
export function rawExchange(port: number, data: Buffer | string | null, timeoutMs = 5000): Promise<{ text: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', () => {});
    socket.on('connect', () => {
      if (data !== null) socket.write(data);
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text, closed: false, ms: Date.now() - started });
    }, timeoutMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true, ms: Date.now() - started });
    });
  });
}

/** A port that nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Port number from `worker.listen()`'s answer. */
export function portOf(listening: string): number {
  const port = Number(/:(\d+)$/.exec(listening)?.[1]);
  if (!port) throw new Error(`no port in "${listening}"`);
  return port;
}

/** Captures what the runtime logs (it writes to process.stdout/stderr) while `fn` runs or until `stop()`. */
export function captureLogs(): { text(): string; stop(): void } {
  let text = '';
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  const grab = (chunk: unknown): boolean => {
    text += String(chunk);
    return true;
  };
  // Only runtime log lines (ISO timestamp first) are taken; TAP output passes through.
  process.stdout.write = ((chunk: unknown, ...rest: unknown[]) =>
    /^\d{4}-\d\d-\d\dT/.test(String(chunk)) ? grab(chunk) : out(chunk as string, ...(rest as []))) as typeof process.stdout.write;
  process.stderr.write = ((chunk: unknown, ...rest: unknown[]) =>
    /^\d{4}-\d\d-\d\dT/.test(String(chunk)) ? grab(chunk) : err(chunk as string, ...(rest as []))) as typeof process.stderr.write;
  return {
    text: () => text,
    stop: () => {
      process.stdout.write = out as typeof process.stdout.write;
      process.stderr.write = err as typeof process.stderr.write;
    },
  };
}

/** An in-process Worker that listens on an ephemeral port and is closed at the end of `t`. */
export async function listenWorker<W extends { listen(): Promise<string>; close(): Promise<void> }>(t: Test, worker: W): Promise<{ worker: W; port: number; address: string }> {
  const address = await worker.listen();
  t.teardown(async () => {
    // Worker.close() polls with an unref'd timer: keep the loop alive until it settles (see connection.test.ts).
    const keepAlive = setInterval(() => {}, 1000);
    try {
      await worker.close();
    } finally {
      clearInterval(keepAlive);
    }
  });
  const port = /:(\d+)$/.test(address) ? portOf(address) : 0;
  return { worker, port, address };
}

/** Makes a self-signed certificate with the openssl CLI; null when openssl is missing. */
export function selfSignedCert(): { cert: Buffer; key: Buffer } | null {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-cert-'));
  try {
    const result = spawnSyncSafe('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
      '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    if (!result) return null;
    return { cert: fs.readFileSync(path.join(dir, 'cert.pem')), key: fs.readFileSync(path.join(dir, 'key.pem')) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function spawnSyncSafe(cmd: string, args: string[]): boolean {
  const result = spawnSync(cmd, args, { stdio: 'ignore', timeout: 20_000 });
  return !result.error && result.status === 0;
}

/**
 * Live-target helpers of the fuzz suites: the server fixture process (test/fixtures/fuzz/
 * servers.ts) started on loopback port 0 and always killed in teardown, a raw TCP client that
 * records every byte and the close, and bounded waits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export const fuzzFixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'fuzz');

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` every few ms until true or `timeoutMs`; resolves with the last answer. */
export async function until(predicate: () => boolean, timeoutMs: number, step = 2): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (predicate()) return true;
    if (Date.now() > deadline) return false;
    await sleep(step);
  }
}

/** Rejects when `promise` has not settled after `ms` (a live case that hangs is a failure, not a stuck run). */
export async function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Process groups started by this file, killed if tap's timeout ends the file before teardown runs. */
const started = new Set<ChildProcess>();
let hooked = false;
function killOnExit(proc: ChildProcess): void {
  started.add(proc);
  proc.once('exit', () => started.delete(proc));
  if (hooked) return;
  hooked = true;
  const killAll = (): void => {
    for (const p of started) {
      try {
        if (p.pid) process.kill(-p.pid, 'SIGKILL');
      } catch {
        p.kill('SIGKILL');
      }
    }
  };
  process.once('exit', killAll);
  process.on('message', (message: unknown) => {
    if (message && typeof message === 'object' && (message as { tapAbort?: unknown }).tapAbort) killAll();
  });
}

/**
 * Spawns `node --import tsx <file>` in its own process group, killed (whole group) in teardown.
 * Output is kept as a tail (a long run logs a line per refused client); lines matching `watch`
 * are kept whole in `watched`, however long the run.
 */
export function spawnFixture(
  t: Test,
  file: string,
  env: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
  args: string[] = [],
  watch?: RegExp,
): { proc: ChildProcess; output(): string; watched: string[]; exited: Promise<number | string | null> } {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete childEnv.TAP;
  delete childEnv.NODE_V8_COVERAGE;
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', file, ...args], { env: childEnv, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
  killOnExit(proc);
  let text = '';
  const watched: string[] = [];
  const partial = { stdout: '', stderr: '' };
  const keep = (stream: 'stdout' | 'stderr') => (d: Buffer): void => {
    const chunk = d.toString();
    text += chunk;
    if (text.length > 2_000_000) text = text.slice(-1_000_000);
    if (!watch) return;
    const lines = (partial[stream] + chunk).split('\n');
    partial[stream] = lines.pop() ?? '';
    for (const line of lines) if (watch.test(line) && watched.length < 1000) watched.push(line);
  };
  proc.stdout!.on('data', keep('stdout'));
  proc.stderr!.on('data', keep('stderr'));
  const exited = new Promise<number | string | null>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal)));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      try {
        process.kill(-proc.pid!, 'SIGKILL');
      } catch {
        proc.kill('SIGKILL');
      }
      await Promise.race([exited, sleep(3000)]);
    }
  });
  return { proc, output: () => text, watched, exited };
}

export interface ServerStats {
  connections: { text: number; frame: number; websocket: number; link: number; linkProduction: number };
  links: number;
  heapUsed: number;
  rss: number;
}

export interface Servers {
  ports: { text: number; frame: number; websocket: number; link: number; linkProduction: number; control: number };
  pid: number;
  max: number;
  linkMax: number;
  /** The fixture process is still running. */
  alive(): boolean;
  output(): string;
  /** Connection counts and heap (after a full GC) of the fixture process. */
  stats(): Promise<ServerStats>;
}

/** Starts test/fixtures/fuzz/servers.ts and waits for its ports. */
export async function startServers(t: Test, env: NodeJS.ProcessEnv = {}): Promise<Servers> {
  const { proc, output } = spawnFixture(t, path.join(fuzzFixtures, 'servers.ts'), env, ['--expose-gc']);
  const ready = await until(() => /FUZZ-READY (\{.*\})/.test(output()) || proc.exitCode !== null, 20_000, 20);
  const match = /FUZZ-READY (\{.*\})/.exec(output());
  if (!ready || !match) throw new Error(`fuzz servers did not start:\n${output()}`);
  const info = JSON.parse(match[1]) as Servers['ports'] & { pid: number; max: number; linkMax: number };
  const control = await RawClient.connect(info.control);
  t.teardown(() => control.destroy());
  let seen = 0;
  return {
    ports: { text: info.text, frame: info.frame, websocket: info.websocket, link: info.link, linkProduction: info.linkProduction, control: info.control },
    pid: info.pid,
    max: info.max,
    linkMax: info.linkMax,
    alive: () => proc.exitCode === null && proc.signalCode === null,
    output,
    async stats() {
      control.write(Buffer.from('stats\n'));
      const lines = (): string[] => control.bytes().toString().split('\n').filter(Boolean);
      if (!(await control.waitUntil(() => lines().length > seen, 5000))) throw new Error(`no stats from the fuzz servers (alive: ${proc.exitCode === null})\n${output().slice(-4000)}`);
      return JSON.parse(lines()[seen++]) as ServerStats;
    },
  };
}

/** A TCP client that records what it receives and how the connection ended. */
export class RawClient {
  private readonly chunks: Buffer[] = [];
  private length = 0;
  /** The server sent FIN. */
  ended = false;
  /** The socket is closed (either way). */
  closed = false;
  error: string | null = null;

  private readonly waiters = new Set<() => void>();

  private constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.length += chunk.length;
      this.poke();
    });
    socket.on('end', () => {
      this.ended = true;
      this.poke();
    });
    socket.on('close', () => {
      this.closed = true;
      this.poke();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => (this.error = error.code ?? error.message));
  }

  private poke(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves true as soon as `predicate` holds (checked whenever bytes arrive or the socket ends), false after `timeoutMs`. */
  waitUntil(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
    if (predicate()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (value: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(value);
      };
      const check = (): void => {
        if (predicate()) done(true);
        else if (this.closed) done(predicate());
      };
      const timer = setTimeout(() => done(predicate()), timeoutMs);
      this.waiters.add(check);
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host);
      const client = new RawClient(socket);
      socket.once('connect', () => resolve(client));
      socket.once('error', reject);
    });
  }

  get received(): number {
    return this.length;
  }

  bytes(): Buffer {
    if (this.chunks.length > 1) {
      const all = Buffer.concat(this.chunks);
      this.chunks.length = 0;
      this.chunks.push(all);
    }
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  /** Writes without waiting (errors after a server close are expected and ignored). */
  write(bytes: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(bytes);
  }

  /** Writes `parts` one by one, each in its own write and event-loop turn (so they tend to arrive as separate reads). */
  async writeChunks(parts: readonly Buffer[]): Promise<void> {
    for (const part of parts) {
      if (this.socket.destroyed || !this.socket.writable) return;
      await new Promise<void>((resolve) => this.socket.write(part, () => resolve()));
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Half-closes (FIN) our side. */
  end(): void {
    if (!this.socket.destroyed) this.socket.end();
  }

  /** Closes with RST: no TIME_WAIT left behind, whatever the count of cases. */
  destroy(): void {
    if (this.socket.destroyed) return;
    if (typeof this.socket.resetAndDestroy === 'function' && this.socket.readyState === 'open') this.socket.resetAndDestroy();
    else this.socket.destroy();
  }
}

/**
 * Distinct free ports for fixed listeners (a fixture's internal ports), below the ephemeral range
 * so that no outgoing connection takes them meanwhile: a random candidate is bound once, then closed.
 */
export async function freePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (out.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) out.add(port);
  }
  return [...out];
}

/** Whether a process exists. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Resident memory of a process (Linux /proc), bytes; 0 when unknown. */
export function rssOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

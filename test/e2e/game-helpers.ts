/**
 * Helpers of the game room end-to-end test: generate the template with the real CLI, run the
 * generated app in a process group of its own (killed whatever happens), ask it for its status,
 * and play with JSON-over-WebSocket clients.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import { WebSocket, type RawData } from 'ws';
import { sleep, waitFor, type StatusJson } from '../helpers/app.ts';

export { sleep, waitFor, type StatusJson };

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

// ---- process groups that must not outlive the test ------------------------------------------

const groups = new Set<number>();

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone already
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

/** The child's environment without tap's variables (no TAP output, no coverage, no loader). */
function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(TAP|_TAPJS_|NODE_V8_COVERAGE$|NODE_OPTIONS$|npm_config_user_agent$)/.test(key)) delete env[key];
  return { ...env, ...extra };
}

/** tap puts its loader back into NODE_OPTIONS of every spawn; `env -u` takes it out again. */
const plain = (cmd: string, args: string[]): [string, string[]] => ['/usr/bin/env', ['-u', 'NODE_OPTIONS', cmd, ...args]];

export interface Run {
  code: number | null;
  output: string;
}

/** `cmd args` in its own process group, killed after timeoutMs or when the test process ends. */
export function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(...plain(cmd, args), { cwd, env: childEnv(env), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    groups.add(child.pid!);
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d));
    child.stderr!.on('data', (d: Buffer) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[killed after ${timeoutMs} ms]`;
      killGroup(child.pid!);
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      killGroup(child.pid!);
      resolve({ code, output });
    });
  });
}

/** A temporary folder, removed at the end of `t`. */
export function tempDir(t: Test, prefix = 'gw-game-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `create-gatewayworker-app <name> --template game-room --yes` in `cwd` (installs from the npm cache). */
export async function generateGameApp(cwd: string, name = 'game'): Promise<string> {
  if (!existsSync(join(ROOT, 'runtime/dist/index.js'))) {
    const build = await run('npm', ['run', 'build'], ROOT);
    if (build.code !== 0) throw new Error(`npm run build failed:\n${build.output}`);
  }
  const r = await run(process.execPath, [join(ROOT, 'generator/bin.js'), name, '--template', 'game-room', '--yes'], cwd, {
    CI: 'true',
    npm_config_prefer_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
  });
  if (r.code !== 0) throw new Error(`the generator failed (${r.code}):\n${r.output}`);
  return join(cwd, name);
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

/** The first of `span` consecutive ports free right now, below 32768 (DESIGN §5). */
export async function freePort(span = 1): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const base = 10_000 + Math.floor(Math.random() * (22_000 - span));
    let ok = true;
    for (let p = base; p < base + span && ok; p++) ok = !handedOut.has(p) && (await canBind(p));
    if (!ok) continue;
    for (let p = base; p < base + span; p++) handedOut.add(p);
    return base;
  }
  throw new Error('no free port below 32768');
}

// ---- the running app -------------------------------------------------------------------------

export interface GameApp {
  port: number;
  output(): string;
  cli(...args: string[]): Promise<Run>;
  status(): Promise<StatusJson>;
  /** Live timers (`Timer`) of one process, from `status --json`. */
  timersOf(pid: number): Promise<number>;
}

/**
 * Starts the generated app (`node --import tsx start.ts start`, as `npm start` does) on free ports
 * in a process group of its own; resolves at "Start success". Stopped at the end of `t` — with
 * `start.ts stop`, then SIGKILL to the whole group — whatever happened.
 */
export async function startGameApp(t: Test, dir: string, env: NodeJS.ProcessEnv = {}): Promise<GameApp> {
  const port = await freePort();
  const runtimeDir = mkdtempSync(join(tmpdir(), 'gw-game-run-'));
  const fullEnv = childEnv({
    GATEWAYWORKER_RUNTIME_DIR: runtimeDir,
    GATEWAY_PORT: String(port),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort(8)),
    ...env,
  });
  const proc = spawn(...plain(process.execPath, ['--import', 'tsx', 'start.ts', 'start']), { cwd: dir, env: fullEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  groups.add(proc.pid!);
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));

  const cli = (...args: string[]): Promise<Run> =>
    new Promise((resolve) => {
      execFile(...plain(process.execPath, ['--import', 'tsx', 'start.ts', ...args]), { cwd: dir, env: fullEnv, timeout: 30_000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: stdout + stderr });
      });
    });
  const status = async (): Promise<StatusJson> => {
    const r = await cli('status', '--json');
    if (r.code !== 0) throw new Error(`status --json failed (${r.code}): ${r.output}`);
    return JSON.parse(r.output) as StatusJson;
  };

  t.teardown(async () => {
    try {
      if (proc.exitCode === null && proc.signalCode === null) {
        await cli('stop');
        await Promise.race([exited, sleep(10_000)]);
      }
    } finally {
      killGroup(proc.pid!);
      rmSync(runtimeDir, { recursive: true, force: true });
    }
  });

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "Start success" within 30 s:\n${text}`)), 30_000);
    const check = (): void => {
      if (!text.includes('Start success')) return;
      clearTimeout(timer);
      resolve();
    };
    proc.stdout!.on('data', check);
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`the app exited before "Start success":\n${text}`));
    });
  });

  return {
    port,
    output: () => text,
    cli,
    status,
    async timersOf(pid) {
      const row = (await status()).processes.find((p) => p.pid === pid);
      if (!row) throw new Error(`pid ${pid} is not in status`);
      return row.timers;
    },
  };
}

// ---- players ---------------------------------------------------------------------------------

export type Message = Record<string, any>;

export interface Player {
  ws: WebSocket;
  /** Every message received so far, in order. */
  all: Message[];
  send(message: object): void;
  sendRaw(text: string): void;
  /** Takes the first queued (or next) message of this type, or matching; others stay queued. */
  next(match: string | ((m: Message) => boolean), timeoutMs?: number): Promise<Message>;
  /** Drops every queued message. */
  drain(): void;
  /** join (or resume) and wait for `joined`; the joined message is returned. */
  join(name: string, room?: string): Promise<Message>;
  /** Asks for a pong and returns the pid of the worker that answered. */
  pid(): Promise<number>;
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

/** A WebSocket player on the app's gateway; it answers the gateway's heartbeat like the page. */
export async function player(t: Test, port: number): Promise<Player> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
  const all: Message[] = [];
  let queue: Message[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (data: RawData) => {
    let m: Message;
    try {
      m = JSON.parse(String(data));
    } catch {
      m = { type: '<not JSON>', text: String(data) };
    }
    if (m.type === 'ping') {
      ws.send('{"type":"pong"}');
      return;
    }
    all.push(m);
    queue.push(m);
    for (const check of [...waiters]) check();
  });
  ws.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });

  const next = (match: string | ((m: Message) => boolean), timeoutMs = 5000): Promise<Message> =>
    new Promise((resolve, reject) => {
      const test = typeof match === 'string' ? (m: Message) => m.type === match : match;
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${typeof match === 'string' ? `"${match}"` : 'matching'} message within ${timeoutMs} ms; queued: ${JSON.stringify(queue.filter((m) => m.type !== 'state').slice(-10))}`));
      }, timeoutMs);
      const check = (): void => {
        const i = queue.findIndex(test);
        if (i === -1) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(queue.splice(i, 1)[0]);
      };
      waiters.add(check);
      check();
    });

  const p: Player = {
    ws,
    all,
    send: (message) => ws.send(JSON.stringify(message)),
    sendRaw: (text) => ws.send(text),
    next,
    drain: () => {
      queue = [];
    },
    async join(name, room) {
      p.send(room === undefined ? { type: 'join', name } : { type: 'join', name, room });
      return next((m) => m.type === 'joined' || m.type === 'error');
    },
    async pid() {
      const t0 = Math.random();
      p.send({ type: 'ping', t: t0 });
      return (await next((m) => m.type === 'pong' && m.t === t0)).pid;
    },
    closed,
    close: () => ws.close(),
  };
  return p;
}

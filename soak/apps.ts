/**
 * The soak's apps: each template generated with the real CLI into a temp dir, started the way its
 * README says (`tsx start.ts start`) on free ports, reloaded, its BusinessWorkers killed, its
 * processes measured, and always stopped. Generating, ports, the hub's env and devices are the
 * e2e tests' helpers (test/e2e/helpers.ts, mqtt-helpers.ts); /proc reading is bench/lib/proc.ts.
 * Starting is done here (the e2e `startApp` gives a start 30 s, which a busy 2-core machine can
 * need and more; and its failed attempt keeps running until the test ends).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cmdline, groupPids, rssKb } from '../bench/lib/proc.ts';
import { ROOT, ensureRuntimeBuilt, freePort, generator, sleep, waitFor, type Run, type RunningApp, type StatusJson } from '../test/e2e/helpers.ts';
import { addDevice, hubEnv } from '../test/e2e/mqtt-helpers.ts';
import { parseBannerPorts, waitForStart } from '../test/helpers/app.ts';

export type AppKey = 'chat' | 'game' | 'mqtt';
export const APP_KEYS: AppKey[] = ['chat', 'game', 'mqtt'];
export const TEMPLATES: Record<AppKey, string> = { chat: 'chat', game: 'game-room', mqtt: 'mqtt-hub' };

/** Clean-ups to run at the end, last registered first. */
export class Scope {
  private readonly fns: Array<() => unknown> = [];

  teardown(fn: () => unknown): void {
    this.fns.push(fn);
  }

  async close(): Promise<void> {
    while (this.fns.length > 0) {
      const fn = this.fns.pop()!;
      try {
        await fn();
      } catch (error) {
        process.stderr.write(`soak: clean-up step failed: ${(error as Error).message}\n`);
      }
    }
  }
}

// ---- processes (and temp dirs) that must not outlive the soak ----------------------------------

/** Process groups (app masters started detached) not known to be gone yet. */
const groups = new Set<number>();
/** Temp dirs to remove if the soak dies without its clean-up. */
const dirs = new Set<string>();

/**
 * A watchdog for the case no exit hook runs (the soak SIGKILLed — e.g. by tsx's CLI, which
 * SIGKILLs its child when the child does not confirm a relayed Ctrl+C within 30 ms, as happens on
 * a busy machine): a detached process that checks every second whether the soak still runs, and
 * if not SIGKILLs the app groups listed in WATCH_FILE and removes the dirs. It ends when the file
 * is gone (the soak ended normally).
 */
const WATCH_FILE = join(tmpdir(), `gw-soak-watch-${process.pid}.json`);
let watching = false;

const WATCHDOG = `
const fs = require('node:fs');
const [file, parent] = [process.argv[1], Number(process.argv[2])];
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; } };
setInterval(() => {
  let list;
  try { list = JSON.parse(fs.readFileSync(file, 'utf8')); } catch { process.exit(0); }
  if (alive(parent)) return;
  for (const g of list.groups) { try { process.kill(-g, 'SIGKILL'); } catch {} }
  setTimeout(() => {
    for (const d of list.dirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch {} }
    try { fs.unlinkSync(file); } catch {}
    process.exit(0);
  }, 500);
}, 1000);`;

function updateWatch(): void {
  if (!watching && groups.size === 0) return;
  writeFileSync(WATCH_FILE, JSON.stringify({ groups: [...groups], dirs: [...dirs] }));
  if (watching) return;
  watching = true;
  spawn(process.execPath, ['-e', WATCHDOG, WATCH_FILE, String(process.pid)], { detached: true, stdio: 'ignore', env: childEnv({}) }).unref();
}

/** Removes `dir` at the end; the watchdog does if the soak dies first. */
export function tempDirToRemove(dir: string): void {
  dirs.add(dir);
  updateWatch();
}

export function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
  groups.delete(pid);
  updateWatch();
}

process.on('exit', () => {
  for (const pid of groups) killGroup(pid);
  rmSync(WATCH_FILE, { force: true });
});

/** The apps' environment: no tap variables, no NODE_OPTIONS (a loader there would load into every role). */
function childEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(TAP|_TAPJS_|NODE_V8_COVERAGE$|NODE_OPTIONS$|npm_)/.test(key)) delete env[key];
  return { ...env, ...extra };
}

/**
 * `node --import tsx start.ts start` in `projectDir` (what `npm start` runs), in a process group
 * of its own with a fresh runtime dir; resolves at "Start success". On failure its group is
 * killed at once. The app is stopped (and its group killed) when `scope` closes.
 */
export async function startApp(scope: Scope, projectDir: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunningApp> {
  const runtimeDir = mkdtempSync(join(tmpdir(), 'gw-soak-run-'));
  const fullEnv = childEnv({ GATEWAYWORKER_RUNTIME_DIR: runtimeDir, ...env });
  const proc = spawn(process.execPath, ['--import', 'tsx', 'start.ts', 'start'], { cwd: projectDir, env: fullEnv, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  groups.add(proc.pid!);
  dirs.add(runtimeDir);
  updateWatch();
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  const exited = new Promise<number | string | null>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal)));
  const cli = (...args: string[]): Promise<Run> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', 'start.ts', ...args], { cwd: projectDir, env: fullEnv, timeout: 120_000 }, (err, stdout, stderr) => {
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
        await Promise.race([exited, sleep(30_000)]);
      }
      killGroup(proc.pid!);
    },
  };
  const cleanUp = (): void => {
    killGroup(proc.pid!);
    rmSync(runtimeDir, { recursive: true, force: true });
    dirs.delete(runtimeDir);
  };
  try {
    await waitForStart(proc, () => text, exited, timeoutMs);
  } catch (error) {
    cleanUp();
    throw error;
  }
  scope.teardown(async () => {
    try {
      await app.stop();
    } finally {
      cleanUp();
    }
  });
  app.ports = parseBannerPorts(text);
  return app;
}

export interface SoakApp {
  key: AppKey;
  project: string;
  env: Record<string, string>;
  app: RunningApp;
  /** Gateway processes and BusinessWorker processes: every worker links to every gateway. */
  gateways: number;
  workers: number;
  /** The MQTT hub's device (npm run device:add). */
  device?: { id: string; password: string };
}

/** Built runtime older than its sources: the soak runs runtime/dist, as a generated app does. */
export function runtimeStaleness(): string | null {
  const dist = join(ROOT, 'runtime/dist/index.js');
  if (!existsSync(dist)) return null;
  const built = statSync(dist).mtimeMs;
  const newer: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && statSync(path).mtimeMs > built) newer.push(path.slice(ROOT.length));
    }
  };
  walk(join(ROOT, 'runtime/src'));
  return newer.length === 0 ? null : `runtime/dist (built ${new Date(built).toISOString()}) is older than ${newer.length} file(s) of runtime/src (${newer.slice(0, 3).join(', ')}${newer.length > 3 ? ', …' : ''}): the soak ran the built code; \`npm run build\` to soak the sources`;
}

/**
 * `create-gatewayworker-app <key> --template … --yes` in `workDir`. With `install` false the
 * generator skips `npm install` and the project's node_modules is a link to the repo's (which has
 * everything the templates need: the runtime as a workspace, tsx, ws, mqtt) — seconds instead of
 * half a minute per app.
 */
export async function generate(key: AppKey, workDir: string, install: boolean): Promise<string> {
  await ensureRuntimeBuilt();
  const r = await generator([key, '--template', TEMPLATES[key], '--yes', '--package-manager', 'npm', ...(install ? [] : ['--skip-install'])], workDir);
  if (r.code !== 0) throw new Error(`generating the ${TEMPLATES[key]} app failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  const project = join(workDir, key);
  if (!install) symlinkSync(join(ROOT, 'node_modules'), join(project, 'node_modules'), 'dir');
  return project;
}

/** Free ports and settings of one app (names from each template's README, "Configuration"). */
export async function appEnv(key: AppKey, dataDir: string, opts: { tickRate: number }): Promise<Record<string, string>> {
  const common = { REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`, WORKER_COUNT: '2' };
  switch (key) {
    case 'chat':
      return { ...common, GATEWAY_PORT: String(await freePort()), START_PORT: String(await freePort(4)), GATEWAY_COUNT: '2', DATA_DIR: dataDir };
    case 'game':
      return { ...common, GATEWAY_PORT: String(await freePort()), START_PORT: String(await freePort(4)), GATEWAY_COUNT: '2', TICK_RATE: String(opts.tickRate) };
    case 'mqtt':
      // One MQTT-over-TCP and one MQTT-over-WebSocket gateway (the template's default), devices only.
      return hubEnv(dataDir, { ...common, GATEWAY_COUNT: '1' });
  }
}

/** Gateway and worker process counts of an app with `env`. */
export function shape(key: AppKey, env: Record<string, string>): { gateways: number; workers: number } {
  const perKind = Number(env.GATEWAY_COUNT);
  return { gateways: key === 'mqtt' ? 2 * perKind : perKind, workers: Number(env.WORKER_COUNT) };
}

/** `npm run device:add <id>` in the hub's project (its DATA_DIR): the one device the soak uses. */
export async function hubDevice(project: string, env: Record<string, string>, id: string): Promise<{ id: string; password: string }> {
  const device = await addDevice(project, env, id);
  return { id: device.id, password: device.password };
}

/** "business worker linked" lines the gateways logged so far. */
export function linkCount(app: RunningApp): number {
  return (app.output().match(/business worker linked/g) ?? []).length;
}

/**
 * Starts the app on the ports of `makeEnv()` and waits until every worker linked to every
 * gateway. One retry on fresh ports (a port taken meanwhile, a start slower than `timeoutMs`).
 */
export async function startSoakApp(
  scope: Scope,
  key: AppKey,
  project: string,
  makeEnv: () => Promise<Record<string, string>>,
  log: (line: string) => void,
  /** Gets what a failed attempt printed. */
  onFailure: (attempt: number, output: string) => void,
  timeoutMs = 120_000,
): Promise<SoakApp> {
  for (let attempt = 1; ; attempt++) {
    const env = await makeEnv();
    const { gateways, workers } = shape(key, env);
    let app: RunningApp | undefined;
    try {
      app = await startApp(scope, project, env, timeoutMs);
      const started = app;
      await waitFor(() => linkCount(started) >= gateways * workers, 60_000, `${gateways * workers} worker links`).catch((error: Error) => {
        throw new Error(`${error.message}; output:\n${started.output().slice(-3000)}`);
      });
      return { key, project, env, app, gateways, workers };
    } catch (error) {
      if (app) killGroup(app.pid);
      onFailure(attempt, app ? app.output() : (error as Error).message);
      if (attempt >= 2) throw error;
      log(`${key}: start failed (${(error as Error).message.split('\n').slice(0, 3).join(' / ')}); once more on other ports`);
    }
  }
}

export type Role = 'gateway' | 'worker' | 'other';

export interface Proc {
  pid: number;
  role: Role;
  title: string;
  rssKb: number;
}

/** Every process of the app's group (master, register, store, gateways, workers, tsx's esbuild). */
export function processes(app: SoakApp): Proc[] {
  return groupPids(app.app.pid).map((pid) => {
    const title = cmdline(pid);
    const role: Role = /Gateway#\d/.test(title) ? 'gateway' : /BusinessWorker#\d/.test(title) ? 'worker' : 'other';
    return { pid, role, title, rssKb: rssKb(pid) };
  });
}

export interface Memory {
  totalKb: number;
  gatewayKb: number;
  workerKb: number;
  procs: number;
}

export function memory(app: SoakApp): Memory {
  const list = processes(app);
  const sum = (role?: Role): number => list.filter((p) => role === undefined || p.role === role).reduce((a, p) => a + p.rssKb, 0);
  return { totalKb: sum(), gatewayKb: sum('gateway'), workerKb: sum('worker'), procs: list.length };
}

export interface Action {
  kind: 'reload' | 'kill';
  app: AppKey;
  /** ms since the load started. */
  at: number;
  ok: boolean;
  /** Reload: until `start.ts reload` returned. Kill: until the restarted worker linked to every gateway. */
  ms: number | null;
  detail: string;
  /** Error replies the app's clients got during it or within 5 s after (filled in at the end). */
  clientErrors?: number;
}

/** `start.ts reload`: returns when every BusinessWorker was replaced (the CLI waits for it). */
export async function reload(app: SoakApp): Promise<{ ok: boolean; ms: number; detail: string }> {
  const t0 = Date.now();
  const r = await app.app.cli('reload');
  const text = `${r.stdout}${r.stderr}`.trim();
  const done = /reload done: (\d+) processes replaced/.exec(text);
  const ok = r.code === 0 && done !== null && Number(done[1]) === app.workers;
  return { ok, ms: Date.now() - t0, detail: done ? `${done[1]} processes replaced` : `exit ${r.code}: ${text.split('\n').slice(-2).join(' | ')}` };
}

/**
 * SIGKILLs BusinessWorker #(n mod workers) (found by its process title in /proc), then waits until
 * its replacement (same name and id) linked to every gateway again.
 */
export async function killWorker(app: SoakApp, n: number, timeoutMs = 60_000): Promise<{ ok: boolean; ms: number | null; detail: string }> {
  const workers = processes(app).filter((p) => p.role === 'worker');
  const wanted = n % app.workers;
  const target = workers.find((p) => new RegExp(`BusinessWorker#${wanted}\\b`).test(p.title)) ?? workers[0];
  if (!target) return { ok: false, ms: null, detail: 'no BusinessWorker process found' };
  const name = /(\S*BusinessWorker#\d+)/.exec(target.title)?.[1] ?? target.title;
  const mark = app.app.output().length;
  const t0 = Date.now();
  try {
    process.kill(target.pid, 'SIGKILL');
  } catch (error) {
    return { ok: false, ms: null, detail: `kill ${target.pid}: ${(error as Error).message}` };
  }
  const relinked = (): boolean => app.app.output().slice(mark).split(`business worker linked worker=${name} `).length - 1 >= app.gateways;
  const linked = await waitFor(relinked, timeoutMs, 'the restarted worker to link').then(
    () => true,
    () => false,
  );
  const ms = Date.now() - t0;
  return { ok: linked, ms: linked ? ms : null, detail: `${name} pid ${target.pid}${linked ? '' : `: not linked again within ${timeoutMs / 1000} s`}` };
}

/**
 * Warning and error lines the app logged, counted by role and message: `run` before the master
 * started stopping, `stop` after.
 */
export function logSummary(app: SoakApp): { run: Record<string, number>; stop: Record<string, number> } {
  const out = { run: {} as Record<string, number>, stop: {} as Record<string, number> };
  let phase: 'run' | 'stop' = 'run';
  for (const line of app.app.output().split('\n')) {
    if (/ master pid=\d+ stopping\b/.test(line)) phase = 'stop';
    const m = /^\S+T\S+Z (warn|error)\s+(\S+) pid=\d+ (.*?)(?: \w+=|$)/.exec(line);
    if (!m) continue;
    const key = `${m[1]} ${m[2].replace(/#\d+$/, '')}: ${m[3]}`;
    out[phase][key] = (out[phase][key] ?? 0) + 1;
  }
  return out;
}

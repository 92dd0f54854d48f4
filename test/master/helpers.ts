/** Helpers for master tests: run the fixture entry as a real process tree and always clean up. */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';
import type { StatusReport } from '../../runtime/src/worker/master/index.js';

export const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'app.ts');

/** One isolated app instance: its own runtime dir and env. */
export interface App {
  dir: string;
  env: NodeJS.ProcessEnv;
  pidFile: string;
  sockFile: string;
  logFile: string;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Gone already.
  }
}

/** A fresh runtime dir; teardown kills every process group this app started. */
export function makeApp(t: Test, extraEnv: NodeJS.ProcessEnv = {}): App {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-master-'));
  const app: App = {
    dir,
    env: { ...process.env, GATEWAYWORKER_RUNTIME_DIR: dir, ...extraEnv },
    pidFile: path.join(dir, 'app.ts.pid'),
    sockFile: path.join(dir, 'app.ts.sock'),
    logFile: path.join(dir, 'app.ts.log'),
  };
  t.teardown(() => {
    // A daemon has its own group: find it through the pid file.
    const pid = Number.parseInt(fs.existsSync(app.pidFile) ? fs.readFileSync(app.pidFile, 'utf8') : '', 10);
    if (pid > 0) killGroup(pid);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return app;
}

export interface Foreground {
  proc: ChildProcess;
  pid: number;
  port: number;
  output: () => string;
  exited: Promise<number | null>;
}

/** Start a foreground master (own process group) and wait for its banner. */
export function startForeground(t: Test, app: App, args: string[] = ['start']): Promise<Foreground> {
  const proc = spawn(process.execPath, ['--import', 'tsx', fixture, ...args], { env: app.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => killGroup(proc.pid!));
  let text = '';
  proc.stdout!.on('data', (d: Buffer) => (text += d));
  proc.stderr!.on('data', (d: Buffer) => (text += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner in time:\n${text}`)), 20_000);
    const check = (): void => {
      // A child that crashes on purpose may do so before all others are ready: the banner then says so.
      if (!text.includes('Start success') && !text.includes('Start finished')) return;
      clearTimeout(timer);
      const port = Number(/text:\/\/127\.0\.0\.1:(\d+)/.exec(text)?.[1]);
      resolve({ proc, pid: proc.pid!, port, output: () => text, exited });
    };
    proc.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`master exited (${code}):\n${text}`));
    });
  });
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run one CLI command against the app. */
export function cli(app: App, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', fixture, ...args], { env: app.env, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export async function status(app: App): Promise<StatusReport> {
  const result = await cli(app, 'status', '--json');
  if (result.code !== 0) throw new Error(`status failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as StatusReport;
}

/** Connect, read until the server ends: the fixture answers `pid <pid> <name> <id>`. */
export function request(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (text += d));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
  });
}

export async function waitFor<T>(what: string, fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** `start -d`: run the master detached, its output in the log file, and report how it went. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DAEMON_ENV, type StartedMessage } from './master.js';

export interface DaemonOptions {
  entry: string;
  execArgv: string[];
  /** Arguments after the entry, e.g. `['start']`. */
  args: string[];
  logFile: string;
  /** How long to wait for the daemon's `started` message, ms. */
  timeout?: number;
}

/** Last `lines` lines of a file (for start failures). */
export function tail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function isStarted(message: unknown): message is StartedMessage {
  return typeof message === 'object' && message !== null && (message as { gw?: unknown }).gw === 'started';
}

/**
 * Spawn the detached master and wait until it reports started (prints its banner, pid and log
 * path) or fails (prints the log tail).
 * @returns exit code for this CLI process.
 */
export function daemonize(opts: DaemonOptions): Promise<number> {
  fs.mkdirSync(path.dirname(opts.logFile), { recursive: true });
  const fd = fs.openSync(opts.logFile, 'a');
  const offset = fs.fstatSync(fd).size;
  const child = spawn(process.execPath, [...opts.execArgv, opts.entry, ...opts.args], {
    detached: true,
    stdio: ['ignore', fd, fd, 'ipc'],
    env: { ...process.env, [DAEMON_ENV]: '1' },
  });
  fs.closeSync(fd);

  return new Promise((resolve) => {
    const finish = (code: number): void => {
      clearTimeout(timer);
      child.removeAllListeners();
      if (child.connected) child.disconnect();
      child.unref();
      resolve(code);
    };
    const fail = (why: string): void => {
      const log = tail(opts.logFile);
      process.stderr.write(`${why}; log ${opts.logFile}:\n${log.length > 0 && fs.statSync(opts.logFile).size > offset ? log : '(empty)'}\n`);
      finish(1);
    };
    const timer = setTimeout(() => {
      if (child.pid) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          // Already gone.
        }
      }
      fail('daemon did not report started in time');
    }, opts.timeout ?? 60_000);
    child.on('message', (message: unknown) => {
      if (!isStarted(message)) return;
      process.stdout.write(`${message.banner}\nRunning as daemon: pid ${message.pid}, log ${opts.logFile}\n`);
      finish(0);
    });
    child.on('exit', (code, signal) => fail(`daemon exited during start (${signal ?? `code ${code}`})`));
    child.on('error', (err) => fail(`daemon could not be spawned (${err.message})`));
  });
}

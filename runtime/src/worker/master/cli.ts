/**
 * The command line of a non-child process: `start|stop|restart|reload|status|connections`.
 * `start` runs the master here (or as a daemon); the others talk to the running master over
 * its control socket.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectionInfo } from '../ipc.js';
import { ControlUnavailableError, sendCommand, type ControlCommand, type ControlProgress } from './control.js';
import { daemonize } from './daemon.js';
import { connectionsText, statusText } from './format.js';
import { DAEMON_ENV, runMasterProcess } from './master.js';
import { resolvePaths, type MasterPaths } from './paths.js';
import { isAlive, readPid } from './pidfile.js';
import type { MasterSettings, StatusReport, SupervisedWorker } from './types.js';

/** Parsed command line. */
export interface CliArgs {
  command: string | undefined;
  daemon: boolean;
  graceful: boolean;
  json: boolean;
}

/** Parse `argv` (`[node, entry, command, ...flags]`). */
export function parseArgs(argv: readonly string[]): CliArgs {
  const flags = new Set(argv.slice(3));
  return {
    command: argv[2],
    daemon: flags.has('-d') || flags.has('--daemon'),
    graceful: flags.has('-g') || flags.has('--graceful'),
    json: flags.has('--json'),
  };
}

/** Usage text for `entry`. */
export function usage(entry: string): string {
  const name = path.basename(entry);
  return [
    `Usage: ${name} <command> [options]`,
    'Commands:',
    '  start [-d]              start the master (-d: as a daemon)',
    '  stop [-g]               stop (-g: gracefully, let connections end)',
    '  restart [-d] [-g]       stop if running, then start',
    '  reload [-g]             replace reloadable processes one at a time',
    '  status [-d] [--json]    process status (-d: refresh every second)',
    '  connections [--json]    every connection of every process',
  ].join('\n');
}

interface Cli {
  workers: readonly SupervisedWorker[];
  settings: MasterSettings;
  args: CliArgs;
  entry: string;
  paths: MasterPaths;
  /** `gatewayworker[start.ts]` prefix of user-facing lines. */
  tag: string;
}

const out = (line: string): void => void process.stdout.write(line + '\n');
const err = (line: string): void => void process.stderr.write(line + '\n');

/** On Linux, make sure a pid from the pid file still runs our entry (pids get reused). */
function runsEntry(pid: number, entry: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(path.basename(entry));
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT' || !fs.existsSync('/proc/self');
  }
}

/** Pid of the live master for this entry, or null. */
function liveMaster(cli: Cli): number | null {
  const pid = readPid(cli.paths.pidFile);
  if (pid === null || pid === process.pid || !isAlive(pid) || !runsEntry(pid, cli.entry)) return null;
  return pid;
}

function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const deadline = Date.now() + timeoutMs;
    const poll = (): void => {
      if (!isAlive(pid)) resolve(true);
      else if (Date.now() > deadline) resolve(false);
      else setTimeout(poll, 50);
    };
    poll();
  });
}

function describe(progress: ControlProgress): string {
  if (progress.event === 'reloaded') {
    const s = progress.step;
    return `reloaded ${s.name}#${s.id}: pid ${s.oldPid} -> ${s.newPid}${s.ready ? '' : ' (not ready yet)'}`;
  }
  return `pid ${progress.step.pid}: waiting for ${progress.step.connections} connections`;
}

/** Send a command; when the control socket is gone, fall back to a signal (stop/reload only). */
async function command(cli: Cli, pid: number, cmd: ControlCommand, fallback: NodeJS.Signals | null): Promise<unknown> {
  try {
    return await sendCommand(cli.paths.controlSocket, cmd, (p) => out(describe(p)));
  } catch (e) {
    if (!(e instanceof ControlUnavailableError) || !fallback) throw e;
    err(`${cli.tag} control socket unavailable (${e.code}), sending ${fallback} to ${pid}`);
    process.kill(pid, fallback);
    return null;
  }
}

async function stop(cli: Cli): Promise<number> {
  const pid = liveMaster(cli);
  if (pid === null) {
    out(`${cli.tag} not running`);
    return 0;
  }
  const graceful = cli.args.graceful;
  out(`${cli.tag} stopping${graceful ? ' gracefully' : ''} (pid ${pid})`);
  try {
    await command(cli, pid, { cmd: 'stop', graceful }, graceful ? 'SIGQUIT' : 'SIGTERM');
  } catch (e) {
    // The master may close the socket as it exits: judge by the pid below.
    if (!(e instanceof Error && e.message.startsWith('control connection closed'))) throw e;
  }
  const timeout = graceful ? 24 * 3600_000 : (cli.settings.stopTimeout + 5) * 1000;
  if (!(await waitGone(pid, timeout))) {
    err(`${cli.tag} stop failed: pid ${pid} still running`);
    return 1;
  }
  out(`${cli.tag} stop success`);
  return 0;
}

async function start(cli: Cli): Promise<number> {
  const pid = liveMaster(cli);
  if (pid !== null) {
    err(`${cli.tag} already running (pid ${pid}, pid file ${cli.paths.pidFile})`);
    return 1;
  }
  fs.rmSync(cli.paths.pidFile, { force: true });
  const isDaemon = process.env[DAEMON_ENV] === '1';
  if (cli.args.daemon && !isDaemon) {
    return daemonize({ entry: cli.entry, execArgv: process.execArgv, args: ['start'], logFile: cli.paths.logFile });
  }
  delete process.env[DAEMON_ENV];
  return runMasterProcess(cli.workers, cli.settings, { entry: cli.entry, execArgv: process.execArgv, paths: cli.paths, daemon: isDaemon });
}

function notRunning(cli: Cli): number {
  err(`${cli.tag} not running`);
  return 1;
}

async function reload(cli: Cli): Promise<number> {
  const pid = liveMaster(cli);
  if (pid === null) return notRunning(cli);
  const graceful = cli.args.graceful;
  out(`${cli.tag} reloading${graceful ? ' gracefully' : ''} (pid ${pid})`);
  const steps = await command(cli, pid, { cmd: 'reload', graceful }, graceful ? 'SIGUSR2' : 'SIGUSR1');
  out(`${cli.tag} reload ${Array.isArray(steps) ? `done: ${steps.length} processes replaced` : 'signalled'}`);
  return 0;
}

async function status(cli: Cli): Promise<number> {
  const pid = liveMaster(cli);
  if (pid === null) return notRunning(cli);
  const once = async (): Promise<StatusReport> => (await sendCommand(cli.paths.controlSocket, { cmd: 'status' })) as StatusReport;
  if (cli.args.json) {
    out(JSON.stringify(await once(), null, 2));
    return 0;
  }
  if (!cli.args.daemon) {
    out(statusText(await once()));
    return 0;
  }
  // Live view until Ctrl+C or until the master goes away.
  let running = true;
  const onInt = (): void => void (running = false);
  process.on('SIGINT', onInt);
  try {
    while (running && isAlive(pid)) {
      const text = statusText(await once());
      process.stdout.write(`\x1b[2J\x1b[H${text}\nPress Ctrl+C to quit.\n`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    process.off('SIGINT', onInt);
  }
  return 0;
}

async function connections(cli: Cli): Promise<number> {
  const pid = liveMaster(cli);
  if (pid === null) return notRunning(cli);
  const rows = (await sendCommand(cli.paths.controlSocket, { cmd: 'connections' })) as ConnectionInfo[];
  out(cli.args.json ? JSON.stringify(rows, null, 2) : connectionsText(rows));
  return 0;
}

/**
 * Run one CLI command.
 * @returns the exit code (a foreground `start` returns after the master stopped).
 */
export async function runCli(workers: readonly SupervisedWorker[], settings: MasterSettings, argv: readonly string[]): Promise<number> {
  const entry = path.resolve(argv[1] ?? 'start');
  const args = parseArgs(argv);
  const cli: Cli = { workers, settings, args, entry, paths: resolvePaths(entry, settings), tag: `gatewayworker[${path.basename(entry)}]` };
  try {
    switch (args.command) {
      case 'start':
        return await start(cli);
      case 'stop':
        return await stop(cli);
      case 'restart': {
        const code = await stop(cli);
        return code === 0 ? await start(cli) : code;
      }
      case 'reload':
        return await reload(cli);
      case 'status':
        return await status(cli);
      case 'connections':
        return await connections(cli);
      default:
        err(usage(entry));
        return 1;
    }
  } catch (e) {
    err(`${cli.tag} ${args.command ?? ''} failed: ${(e as Error).message}`);
    return 1;
  }
}

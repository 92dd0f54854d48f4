/**
 * The running master: owns the pid file, the shared listening handles, the control socket and
 * the signals, and drives a Supervisor. Returns when every child has stopped.
 */
import type net from 'node:net';
import os from 'node:os';
import fs from 'node:fs';
import type { ConnectionInfo } from '../ipc.js';
import { serveControl, type ControlProgress } from './control.js';
import { banner, type BannerRow } from './format.js';
import { createSharedHandle, resolvedAddress, type SharedHandle } from './listen.js';
import { log } from './log.js';
import type { MasterPaths } from './paths.js';
import { removePid, writePid } from './pidfile.js';
import { Supervisor, type ReloadStep } from './Supervisor.js';
import type { MasterSettings, StatusReport, SupervisedWorker } from './types.js';
import { packageVersion } from './version.js';

/** Env var set on a daemonized master; its parent waits for the `started` message. */
export const DAEMON_ENV = 'GATEWAYWORKER_DAEMON';

/** Sent by a daemonized master to the process that spawned it. */
export interface StartedMessage {
  gw: 'started';
  pid: number;
  banner: string;
}

export interface MasterContext {
  /** Absolute path of the entry script. */
  entry: string;
  execArgv: string[];
  paths: MasterPaths;
  /** Running detached (no terminal). */
  daemon: boolean;
}

async function openHandles(workers: readonly SupervisedWorker[]): Promise<Map<number, SharedHandle | null>> {
  const handles = new Map<number, SharedHandle | null>();
  try {
    for (const worker of workers) {
      handles.set(worker.index, worker.listenSpec ? await createSharedHandle(worker.listenSpec, worker.name) : null);
    }
  } catch (err) {
    for (const shared of handles.values()) shared?.close();
    throw err;
  }
  return handles;
}

/**
 * Run the master until it is stopped (signal or control command).
 * The caller has checked that no other master owns the pid file.
 * @returns the process exit code.
 */
export async function runMasterProcess(workers: readonly SupervisedWorker[], settings: MasterSettings, ctx: MasterContext): Promise<number> {
  const { paths } = ctx;
  const startedAt = Date.now();
  writePid(paths.pidFile);
  let handles: Map<number, SharedHandle | null>;
  try {
    handles = await openHandles(workers);
  } catch (err) {
    removePid(paths.pidFile);
    log.error('start failed', { error: (err as Error).message });
    process.stderr.write(`${(err as Error).message}\n`);
    return 1;
  }

  const supervisor = new Supervisor(workers, {
    entry: ctx.entry,
    execArgv: ctx.execArgv,
    stopTimeout: settings.stopTimeout,
    readyTimeout: settings.readyTimeout === undefined ? undefined : settings.readyTimeout * 1000,
    handles,
  });
  // Last resort: whatever ends the master, no child outlives it and no stale files stay.
  process.on('exit', () => {
    supervisor.killAll();
    removePid(paths.pidFile);
    try {
      if (fs.statSync(paths.controlSocket).isSocket()) fs.rmSync(paths.controlSocket, { force: true });
    } catch {
      // Already removed.
    }
  });

  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  let stopPromise: Promise<void> | null = null;

  const stop = (graceful: boolean, progress?: (p: ControlProgress) => void): Promise<void> => {
    if (!stopPromise) log.info('stopping', { graceful });
    const done = supervisor.stop(graceful, (step) => {
      log.info('waiting for connections', { pid: step.pid, connections: step.connections });
      progress?.({ event: 'stopping', step });
    });
    if (!stopPromise) {
      stopPromise = done.then(() => {
        for (const shared of handles.values()) shared?.close();
        log.info('stopped');
        resolveStopped();
      });
    }
    return stopPromise;
  };

  const reload = async (graceful: boolean, progress?: (p: ControlProgress) => void): Promise<ReloadStep[]> => {
    log.info('reloading', { graceful });
    const steps = await supervisor.reload(graceful, (step) => {
      log.info('reloaded', { name: step.name, id: step.id, old_pid: step.oldPid, new_pid: step.newPid, ready: step.ready });
      progress?.({ event: 'reloaded', step });
    });
    log.info('reload done', { replaced: steps.length });
    return steps;
  };

  const status = async (): Promise<StatusReport> => {
    const processes = await supervisor.status();
    return {
      master: {
        pid: process.pid,
        version: packageVersion(),
        node: process.version,
        startedAt,
        loadavg: os.loadavg(),
        workers: workers.length,
        processes: processes.length,
        exits: supervisor.exitCounts(),
      },
      processes,
    };
  };

  const connections = (): Promise<ConnectionInfo[]> => supervisor.connections();

  const onSignal = (signal: NodeJS.Signals): void => {
    log.info('signal', { signal });
    const reloadFailed = (err: Error): void => log.warn('reload refused', { error: err.message });
    switch (signal) {
      case 'SIGINT':
      case 'SIGTERM':
      case 'SIGHUP':
        void stop(false);
        break;
      case 'SIGQUIT':
        void stop(true);
        break;
      case 'SIGUSR1':
        reload(false).catch(reloadFailed);
        break;
      case 'SIGUSR2':
        reload(true).catch(reloadFailed);
        break;
    }
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
  // A closed terminal stops a foreground master; a daemon has no terminal to lose.
  signals.push('SIGHUP');
  const listeners = signals.map((signal) => {
    const listener = ctx.daemon && signal === 'SIGHUP' ? (): void => log.info('signal ignored', { signal }) : onSignal;
    process.on(signal, listener);
    return [signal, listener] as const;
  });

  let control: net.Server | null = null;
  try {
    control = await serveControl(paths.controlSocket, { status, connections, reload, stop });
  } catch (err) {
    log.warn('control socket unavailable, use signals', { path: paths.controlSocket, error: (err as Error).message });
  }

  const ready = await supervisor.start();
  const rows: BannerRow[] = workers.map((w) => ({
    name: w.name,
    listen: resolvedAddress(w.address, handles.get(w.index) ?? null),
    processes: w.count,
    ready: ready.get(w.index) ?? 0,
  }));
  const text = banner({ version: packageVersion(), pid: process.pid, rows, daemon: ctx.daemon });
  if (!supervisor.isStopping) {
    process.stdout.write(text + '\n');
    log.info('started', { workers: workers.length, processes: supervisor.pids().length });
    if (ctx.daemon && process.send) {
      const message: StartedMessage = { gw: 'started', pid: process.pid, banner: text };
      process.send(message, () => process.disconnect());
    }
  }

  await stopped;
  if (control) await closeServer(control, 1000);
  removePid(paths.pidFile);
  for (const [signal, listener] of listeners) process.off(signal, listener);
  return 0;
}

/** Close and wait for open control connections, but not longer than `ms`. */
function closeServer(server: net.Server, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * What the master needs to know about the program it supervises. The Worker class satisfies
 * these shapes; the master takes them as parameters so it does not depend on Worker.ts.
 */
import type { ProcessStatus } from '../ipc.js';
import type { ListenSpec } from './listen.js';

/** The master's view of one Worker definition. */
export interface SupervisedWorker {
  /** Position in `Worker.all`; becomes the first half of the child's `CHILD_ENV`. */
  index: number;
  name: string;
  /** Number of child processes. */
  count: number;
  /** Whether `reload` replaces its processes (otherwise they only run `onWorkerReload`). */
  reloadable: boolean;
  /** Socket the master opens once and shares with every child, or null. */
  listenSpec: ListenSpec | null;
  /** Display address, e.g. `websocket://0.0.0.0:8080`; port 0 is replaced by the real port. */
  address: string | null;
}

/** Process-wide settings (Worker statics). */
export interface MasterSettings {
  pidFile?: string;
  /** Log file of a daemonized master. */
  logFile?: string;
  /** Seconds a non-graceful stop waits before SIGKILL. */
  stopTimeout: number;
  /** Seconds a (re)started child has to report ready before start/reload move on without it. */
  readyTimeout?: number;
}

/** One process row of `status`: full stats, or only what the master knows when it did not answer. */
export type ProcessRow =
  | (ProcessStatus & { status: 'idle' })
  | { pid: number; name: string; id: number; listening: string; status: 'busy' };

/** The master's own block of `status`. */
export interface MasterStatus {
  pid: number;
  version: string;
  node: string;
  /** ms since the epoch. */
  startedAt: number;
  loadavg: number[];
  workers: number;
  processes: number;
  /** Worker name → exit status (code or signal) → count. */
  exits: Record<string, Record<string, number>>;
}

/** The object `status --json` prints. */
export interface StatusReport {
  master: MasterStatus;
  processes: ProcessRow[];
}

/**
 * Keeps `count` children alive per worker: forks them with the shared handle, restarts the ones
 * that die (same id, exponential back-off), and drives stop and reload. Knows nothing about the
 * CLI, pid files or signals.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import { HandoverRelay, type RelayPeer } from '../handover/relay.js';
import { CHILD_ENV, isChildMessage, type ChildMessage, type ConnectionInfo, type MasterMessage } from '../ipc.js';
import { resolvedAddress, type SharedHandle } from './listen.js';
import { log } from './log.js';
import type { ProcessRow, SupervisedWorker } from './types.js';

/** Restart back-off: first delay, cap, and the uptime after which it resets. */
const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 10_000;
const STABLE_AFTER_MS = 10_000;
/** How long `status`/`connections` wait for a child before calling it busy. */
const QUERY_TIMEOUT_MS = 1000;

export interface SupervisorOptions {
  /** Script the children run (the same entry as the master). */
  entry: string;
  /** Node flags for the children (carries the tsx loader). */
  execArgv: string[];
  /** Seconds a non-graceful stop/reload waits before SIGKILL. */
  stopTimeout: number;
  /** How long to wait for a (re)started child's `ready`, ms. */
  readyTimeout?: number;
  /** Shared listening handle per worker index (absent or null: the worker listens on nothing). */
  handles: ReadonlyMap<number, SharedHandle | null>;
}

/** One reloaded process, reported as progress. */
export interface ReloadStep {
  name: string;
  id: number;
  oldPid: number;
  newPid: number;
  /** The replacement answered `ready` in time. */
  ready: boolean;
}

/** Graceful-stop progress from one child. */
export interface StopStep {
  pid: number;
  connections: number;
}

/** A (worker, id) position; its process changes across restarts. */
interface Slot {
  worker: SupervisedWorker;
  id: number;
  child: ChildProcess | null;
  pid: number;
  listening: string;
  ready: boolean;
  spawnedAt: number;
  /** Delay before the next unexpected-exit restart. */
  delay: number;
  timer: NodeJS.Timeout | null;
  /** The coming exit is part of a stop/reload: do not restart. */
  expectExit: boolean;
  /** Resolves when the current child exits. */
  exited: Promise<void>;
  readyWaiters: Array<() => void>;
  /** Its `ready` did not come in time; say so when it finally does. */
  late?: boolean;
  /** A replacement/restart, so its `ready` is worth a log line. */
  restarted: boolean;
}

export class Supervisor {
  readonly workers: readonly SupervisedWorker[];
  private readonly options: SupervisorOptions;
  private readonly slots: Slot[] = [];
  private readonly exits = new Map<string, Map<string, number>>();
  private readonly pending = new Map<number, (message: ChildMessage) => void>();
  private reqSeq = 0;
  private stopping: Promise<void> | null = null;
  private stopGraceful = false;
  private reloading = false;
  private onStopStep: ((step: StopStep) => void) | null = null;
  /** Moves of live connections between children of one worker. */
  private readonly relay = new HandoverRelay({
    count: (index) => this.workers.find((w) => w.index === index)?.count ?? 0,
    peer: (index, id) => {
      const slot = this.slots.find((s) => s.worker.index === index && s.id === id);
      if (!slot?.child || !slot.ready || slot.expectExit || this.stopping) return null;
      return this.peer(slot, slot.child);
    },
  });

  constructor(workers: readonly SupervisedWorker[], options: SupervisorOptions) {
    this.workers = workers;
    this.options = options;
    for (const worker of workers) {
      for (let id = 0; id < worker.count; id++) {
        this.slots.push({
          worker, id, child: null, pid: 0, listening: '', ready: false, spawnedAt: 0,
          delay: FIRST_DELAY_MS, timer: null, expectExit: false, exited: Promise.resolve(),
          readyWaiters: [], restarted: false,
        });
      }
    }
  }

  /** Fork every child and wait (up to `readyTimeout`) for each to report ready; returns ready counts by worker index. */
  async start(): Promise<Map<number, number>> {
    for (const slot of this.slots) this.spawn(slot);
    await Promise.all(this.slots.map((slot) => this.waitReady(slot)));
    const ready = new Map<number, number>();
    for (const slot of this.slots) {
      ready.set(slot.worker.index, (ready.get(slot.worker.index) ?? 0) + (slot.ready ? 1 : 0));
    }
    return ready;
  }

  /** Pids of the live children. */
  pids(): number[] {
    return this.slots.filter((slot) => slot.child).map((slot) => slot.pid);
  }

  /** Exit counts: worker name → exit status (code or signal name) → count. */
  exitCounts(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [name, byStatus] of this.exits) out[name] = Object.fromEntries(byStatus);
    return out;
  }

  /** Ask every live child for its status in parallel; a child silent for 1 s is shown as busy. */
  async status(): Promise<ProcessRow[]> {
    const live = this.slots.filter((slot) => slot.child);
    return Promise.all(live.map(async (slot): Promise<ProcessRow> => {
      const reply = await this.query(slot, 'status');
      // Children may only know the configured port (0); show the one the master bound.
      const shared = this.options.handles.get(slot.worker.index) ?? null;
      if (reply?.gw === 'status') return { ...reply.data, listening: this.display(reply.data.listening, shared), status: 'idle' };
      const listening = this.display(slot.listening || slot.worker.address, shared);
      return { pid: slot.pid, name: slot.worker.name, id: slot.id, listening, status: 'busy' };
    }));
  }

  private display(address: string | null, shared: SharedHandle | null): string {
    return address === 'none' ? address : resolvedAddress(address || null, shared);
  }

  /** Every connection of every child that answers within 1 s. */
  async connections(): Promise<ConnectionInfo[]> {
    const live = this.slots.filter((slot) => slot.child);
    const replies = await Promise.all(live.map((slot) => this.query(slot, 'connections')));
    return replies.flatMap((reply) => (reply?.gw === 'connections' ? reply.data : []));
  }

  /**
   * Stop every child. Non-graceful: SIGKILL survivors after `stopTimeout` s. Graceful: wait for
   * them, reporting their `stopping` progress. A non-graceful stop during a graceful one escalates.
   */
  stop(graceful: boolean, onStep?: (step: StopStep) => void): Promise<void> {
    if (onStep) this.onStopStep = onStep;
    if (this.stopping) {
      if (this.stopGraceful && !graceful) {
        this.stopGraceful = false;
        this.stopChildren(false);
      }
      return this.stopping;
    }
    this.stopGraceful = graceful;
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = null;
    }
    this.stopChildren(graceful);
    this.stopping = Promise.all(this.slots.map((slot) => slot.exited)).then(() => undefined);
    return this.stopping;
  }

  /** True once `stop` was called. */
  get isStopping(): boolean {
    return this.stopping !== null;
  }

  /**
   * Replace the processes of reloadable workers one at a time (each waits for the previous
   * replacement's `ready`); children of other workers only get the reload message.
   * @throws Error when a reload or stop is already running.
   */
  async reload(graceful: boolean, onStep?: (step: ReloadStep) => void): Promise<ReloadStep[]> {
    if (this.stopping) throw new Error('stopping');
    if (this.reloading) throw new Error('reload already in progress');
    this.reloading = true;
    const steps: ReloadStep[] = [];
    try {
      for (const slot of this.slots) {
        if (!slot.worker.reloadable && slot.child) this.send(slot.child, { gw: 'reload', graceful });
      }
      for (const slot of this.slots) {
        if (!slot.worker.reloadable) continue;
        const child = slot.child;
        // A slot waiting for its back-off restart will start with the new code anyway.
        if (!child || this.stopping) continue;
        const oldPid = slot.pid;
        slot.expectExit = true;
        this.send(child, { gw: 'reload', graceful });
        await this.waitExitOrKill(slot, graceful);
        if (this.stopping) break;
        slot.delay = FIRST_DELAY_MS;
        this.spawn(slot);
        const ready = await this.waitReady(slot);
        const step: ReloadStep = { name: slot.worker.name, id: slot.id, oldPid, newPid: slot.pid, ready };
        if (!ready) log.warn('replacement not ready in time', { name: step.name, id: step.id, pid: step.newPid });
        steps.push(step);
        onStep?.(step);
      }
    } finally {
      this.reloading = false;
    }
    return steps;
  }

  /** Synchronous last resort on master exit: no child may outlive the master. */
  killAll(): void {
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = null;
      if (slot.child) {
        try {
          slot.child.kill('SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
  }

  private stopChildren(graceful: boolean): void {
    const live = this.slots.filter((slot) => slot.child);
    for (const slot of live) {
      slot.expectExit = true;
      if (slot.child) this.send(slot.child, { gw: 'stop', graceful });
    }
    if (graceful) return;
    const timer = setTimeout(() => {
      for (const slot of live) {
        if (!slot.child) continue;
        log.warn('child did not stop in time, killing', { name: slot.worker.name, id: slot.id, pid: slot.pid });
        slot.child.kill('SIGKILL');
      }
    }, this.options.stopTimeout * 1000);
    timer.unref();
  }

  private async waitExitOrKill(slot: Slot, graceful: boolean): Promise<void> {
    const child = slot.child;
    let timer: NodeJS.Timeout | null = null;
    if (!graceful && child) {
      timer = setTimeout(() => {
        if (slot.child !== child) return;
        log.warn('child did not exit for reload in time, killing', { name: slot.worker.name, id: slot.id, pid: slot.pid });
        child.kill('SIGKILL');
      }, this.options.stopTimeout * 1000);
    }
    await slot.exited;
    if (timer) clearTimeout(timer);
  }

  private waitReady(slot: Slot): Promise<boolean> {
    if (slot.ready) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        slot.readyWaiters = slot.readyWaiters.filter((w) => w !== done);
        slot.late = true;
        resolve(false);
      }, this.options.readyTimeout ?? 30_000);
      slot.readyWaiters.push(done);
    });
  }

  private spawn(slot: Slot, restarted = false): void {
    const { worker, id } = slot;
    const child = fork(this.options.entry, [], {
      execArgv: this.options.execArgv,
      env: { ...process.env, [CHILD_ENV]: `${worker.index}:${id}` },
    });
    let exit!: () => void;
    slot.exited = new Promise((resolve) => (exit = resolve));
    slot.child = child;
    slot.pid = child.pid ?? 0;
    slot.ready = false;
    slot.listening = '';
    slot.spawnedAt = Date.now();
    slot.expectExit = false;
    slot.restarted = restarted;

    let gone = false;
    const onGone = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (gone) return;
      gone = true;
      this.onExit(slot, child, code, signal);
      exit();
    };
    child.on('message', (message: unknown, handle: unknown) => this.onMessage(slot, child, message, handle));
    child.once('exit', onGone);
    child.on('error', (err) => {
      log.error('child process error', { name: worker.name, id, pid: slot.pid, error: err.message });
      // A failed fork emits 'error' and never 'exit'.
      if (child.pid === undefined) onGone(null, null);
    });

    const shared = this.options.handles.get(worker.index) ?? null;
    // The raw TCP/Pipe handle is accepted by send() at run time (net.Native); the types only know net.Server.
    const handle = shared ? (shared.handle as unknown as net.Server) : undefined;
    this.send(child, { gw: 'listen', handle: shared !== null }, handle);
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    const status = signal ?? String(code);
    const byStatus = this.exits.get(slot.worker.name) ?? new Map<string, number>();
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
    this.exits.set(slot.worker.name, byStatus);
    if (child.pid !== undefined) this.relay.onExit(child.pid);
    if (slot.child !== child) return;
    slot.child = null;
    slot.ready = false;
    const fields = { name: slot.worker.name, id: slot.id, pid: slot.pid, code, signal };
    if (this.stopping || slot.expectExit) {
      slot.expectExit = false;
      return;
    }
    if (Date.now() - slot.spawnedAt >= STABLE_AFTER_MS) slot.delay = FIRST_DELAY_MS;
    const delay = slot.delay;
    slot.delay = Math.min(delay * 2, MAX_DELAY_MS);
    log.warn('child exited unexpectedly', { ...fields, restart_in: `${delay / 1000}s` });
    slot.timer = setTimeout(() => {
      slot.timer = null;
      if (!this.stopping) this.spawn(slot, true);
    }, delay);
  }

  private onMessage(slot: Slot, child: ChildProcess, message: unknown, handle?: unknown): void {
    if (!isChildMessage(message) || slot.child !== child) {
      // A handle nobody will use must not leak its fd in the master.
      if (handle && typeof (handle as { close?: unknown }).close === 'function') (handle as { close(): void }).close();
      return;
    }
    switch (message.gw) {
      case 'handover':
        this.relay.onMessage(this.peer(slot, child), message, handle);
        break;
      case 'ready': {
        slot.ready = true;
        slot.listening = message.listening;
        if (slot.late) log.info('child ready late', { name: slot.worker.name, id: slot.id, pid: slot.pid });
        else if (slot.restarted) log.info('child started', { name: slot.worker.name, id: slot.id, pid: slot.pid });
        slot.late = false;
        const waiters = slot.readyWaiters;
        slot.readyWaiters = [];
        for (const waiter of waiters) waiter();
        break;
      }
      case 'status':
      case 'connections':
        this.pending.get(message.req)?.(message);
        break;
      case 'stopping':
        this.onStopStep?.({ pid: message.pid, connections: message.connections });
        break;
    }
  }

  /** A child as the handover relay sees it. */
  private peer(slot: Slot, child: ChildProcess): RelayPeer {
    return {
      pid: child.pid ?? 0,
      workerIndex: slot.worker.index,
      id: slot.id,
      send: (message, handle, done) => {
        if (!child.connected) {
          done?.(false);
          return;
        }
        try {
          child.send(message, handle as net.Server | undefined, (err) => {
            if (err) log.warn('ipc send failed', { pid: child.pid, message: message.gw, error: err.message });
            done?.(!err);
          });
        } catch (err) {
          log.warn('ipc send failed', { pid: child.pid, message: message.gw, error: (err as Error).message });
          done?.(false);
        }
      },
    };
  }

  private query(slot: Slot, kind: 'status' | 'connections'): Promise<ChildMessage | null> {
    const child = slot.child;
    if (!child) return Promise.resolve(null);
    const req = ++this.reqSeq;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(req);
        resolve(null);
      }, QUERY_TIMEOUT_MS);
      this.pending.set(req, (message) => {
        clearTimeout(timer);
        this.pending.delete(req);
        resolve(message);
      });
      this.send(child, { gw: kind, req });
    });
  }

  /** Send, ignoring a channel that just closed (the exit handler deals with the child). */
  private send(child: ChildProcess, message: MasterMessage, handle?: net.Server): void {
    if (!child.connected) return;
    try {
      child.send(message, handle, (err) => {
        if (err) log.warn('ipc send failed', { pid: child.pid, message: message.gw, error: err.message });
      });
    } catch (err) {
      log.warn('ipc send failed', { pid: child.pid, message: message.gw, error: (err as Error).message });
    }
  }
}

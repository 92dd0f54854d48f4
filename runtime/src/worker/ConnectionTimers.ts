import { Timer } from './Timer.js';

/** A named timer as it travels with a moving connection. */
export interface CarriedTimer {
  name: string;
  /** Interval in ms. */
  interval: number;
  persistent: boolean;
  /** Ms until it fires next. */
  dueIn: number;
}

interface Running {
  interval: number;
  persistent: boolean;
  /** When it fires next (ms since the epoch). */
  due: number;
  timer: number;
}

/**
 * Timers that belong to one connection: named rather than closures, so that they can follow the
 * connection to another process (`transferTo`) and fire there through the Worker's `onTimer`.
 * They stop when the connection closes.
 */
export class ConnectionTimers {
  private readonly running = new Map<string, Running>();

  /** @param fire called with the timer's name each time one fires. */
  constructor(private readonly fire: (name: string) => void) {}

  /**
   * Starts (or restarts) the timer `name`: `onTimer(conn, name)` after `seconds`, and every
   * `seconds` after that when `persistent`.
   */
  add(name: string, seconds: number, persistent = true): void {
    if (typeof name !== 'string' || name === '') throw new TypeError('connection timer name must be a non-empty string');
    this.start(name, seconds * 1000, persistent, seconds * 1000);
  }

  /** Stops the timer `name`; false if there was none. */
  del(name: string): boolean {
    const running = this.running.get(name);
    if (!running) return false;
    Timer.del(running.timer);
    this.running.delete(name);
    return true;
  }

  /** Stops every timer of the connection. */
  delAll(): void {
    for (const name of [...this.running.keys()]) this.del(name);
  }

  /** Names of the running timers. */
  get names(): string[] {
    return [...this.running.keys()];
  }

  /** Describes the running timers for the process the connection moves to. @internal */
  snapshot(): CarriedTimer[] {
    const now = Date.now();
    return [...this.running].map(([name, r]) => ({ name, interval: r.interval, persistent: r.persistent, dueIn: Math.max(0, r.due - now) }));
  }

  /** Restarts timers carried from another process, keeping their phase. @internal */
  import(timers: readonly CarriedTimer[]): void {
    for (const t of timers) this.start(t.name, t.interval, t.persistent, t.dueIn);
  }

  private start(name: string, interval: number, persistent: boolean, firstIn: number): void {
    if (!Number.isFinite(interval) || interval < 0) throw new RangeError(`connection timer "${name}": interval must be >= 0 seconds`);
    this.del(name);
    const entry: Running = { interval, persistent, due: Date.now() + firstIn, timer: 0 };
    const tick = (): void => {
      if (this.running.get(name) !== entry) return;
      if (persistent) {
        entry.due = Date.now() + interval;
        if (entry.timer === first) entry.timer = Timer.add(interval / 1000, tick);
      } else {
        this.running.delete(name);
      }
      this.fire(name);
    };
    // The first shot may come sooner than the interval (a timer that moved keeps its phase).
    const first = Timer.add(firstIn / 1000, tick, [], false);
    entry.timer = first;
    this.running.set(name, entry);
  }
}

import { describeError, log } from './log.js';

type TimerCallback<A extends unknown[]> = (...args: A) => unknown;

interface Entry {
  handle: NodeJS.Timeout;
  persistent: boolean;
}

const timers = new Map<number, Entry>();
let nextId = 1;

/**
 * Workerman's timer API on Node's event loop. A callback that throws (or rejects) is logged and
 * the timer keeps running: one bad tick must not take the process down.
 */
export const Timer = {
  /**
   * Runs `callback(...args)` every `intervalSeconds` (or once when `persistent` is false).
   * @returns the timer id for {@link Timer.del}.
   */
  add<A extends unknown[]>(
    intervalSeconds: number,
    callback: TimerCallback<A>,
    args?: A,
    persistent = true,
  ): number {
    if (!Number.isFinite(intervalSeconds) || intervalSeconds < 0) {
      throw new RangeError(`Timer.add: interval must be a finite number of seconds >= 0, got ${intervalSeconds}`);
    }
    const id = nextId++;
    const ms = Math.max(1, Math.round(intervalSeconds * 1000));
    const run = (): void => {
      if (!persistent) timers.delete(id);
      try {
        const result = callback(...((args ?? []) as A));
        if (result instanceof Promise) result.catch((error: unknown) => reportTimerError(id, error));
      } catch (error) {
        reportTimerError(id, error);
      }
    };
    const handle = persistent ? setInterval(run, ms) : setTimeout(run, ms);
    timers.set(id, { handle, persistent });
    return id;
  },

  /** Stops a timer; returns false if it did not exist (already fired or deleted). */
  del(id: number): boolean {
    const entry = timers.get(id);
    if (!entry) return false;
    clearTimeout(entry.handle);
    timers.delete(id);
    return true;
  },

  /** Stops every timer of this process. */
  delAll(): void {
    for (const entry of timers.values()) clearTimeout(entry.handle);
    timers.clear();
  },

  /** Number of live timers (shown by `status`). */
  count(): number {
    return timers.size;
  },
};

function reportTimerError(id: number, error: unknown): void {
  log.error('timer callback threw', { timer: id, error: describeError(error) });
}

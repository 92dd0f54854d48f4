/**
 * What a test client received, in order, with waits: `next` takes the first match (waiting for
 * it) and leaves the rest, so a test can look for replies out of order.
 */
export class Queue<T> {
  /** Not taken yet, oldest first. */
  readonly items: T[] = [];
  /** Everything ever pushed. */
  readonly all: T[] = [];
  private readonly waiters = new Set<() => void>();
  /** @param show how one item appears in a timeout message */
  constructor(private readonly show: (item: T) => unknown = (item) => item) {}

  push(item: T): void {
    this.items.push(item);
    this.all.push(item);
    this.poke();
  }

  /** Re-runs the pending waits (something they look at besides the queue changed). */
  poke(): void {
    for (const check of [...this.waiters]) check();
  }

  /** Waits until `take` returns something, or rejects after `timeoutMs` naming `what`. */
  wait<R>(take: () => R | undefined, timeoutMs: number, what: string): Promise<R> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`no ${what} within ${timeoutMs} ms; queued: ${JSON.stringify(this.items.map(this.show)).slice(0, 2000)}`));
      }, timeoutMs);
      const check = (): void => {
        const found = take();
        if (found === undefined) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(found);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Takes the first item matching `match`, waiting for it. */
  next(match: (item: T) => boolean = () => true, timeoutMs = 5000, what = 'matching item'): Promise<T> {
    return this.wait(
      () => {
        const i = this.items.findIndex(match);
        return i === -1 ? undefined : this.items.splice(i, 1)[0];
      },
      timeoutMs,
      what,
    );
  }

  /** Takes everything up to and including the first match (waiting for it); returns what came before. */
  until(match: (item: T) => boolean, timeoutMs = 5000, what = 'the awaited item'): Promise<T[]> {
    return this.wait(
      () => {
        const i = this.items.findIndex(match);
        return i === -1 ? undefined : this.items.splice(0, i + 1).slice(0, i);
      },
      timeoutMs,
      what,
    );
  }

  /** Takes `n` items matching `match` (waiting for them), in arrival order. */
  async take(n: number, match: (item: T) => boolean = () => true, timeoutMs = 5000, what = 'items'): Promise<T[]> {
    const out: T[] = [];
    const deadline = Date.now() + timeoutMs;
    while (out.length < n) out.push(await this.next(match, Math.max(1, deadline - Date.now()), `${what} #${out.length + 1} of ${n}`));
    return out;
  }

  /** Forgets what was not taken yet. */
  drain(): void {
    this.items.length = 0;
  }
}

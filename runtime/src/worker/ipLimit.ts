/**
 * Per-IP connection limit of a Worker process (`maxConnectionsPerIp`): counts the open connections
 * of each remote address, refuses the ones over the limit at accept, and says so in the log at most
 * once per address per interval however many it refuses.
 */
import type net from 'node:net';
import { log } from './log.js';

/** Milliseconds between two log lines about the same refused address. */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** Refusal log entries kept before old ones are swept (an attack from many addresses stays bounded). */
const MAX_LOG_ENTRIES = 4096;

interface RefusalLog {
  /** When this address was last logged. */
  at: number;
  /** Refusals since then, not yet logged. */
  suppressed: number;
}

export interface IpLimiterOptions {
  /** Worker name, for the log. */
  worker: string;
  /** Milliseconds between two log lines about one address. Default {@link REFUSAL_LOG_INTERVAL_MS}. */
  logIntervalMs?: number;
  /** Clock (tests). Default `Date.now`. */
  now?: () => number;
  /** Writes one refusal line (tests). Default: a `warn` line in the process log. */
  report?: (message: string, fields: { worker: string; remote: string; limit: number; refused: number }) => void;
}

/** The key an address is counted under: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) counts as its IPv4. */
export function ipKey(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * Open connections per remote address, with a ceiling. {@link admit} a socket right after accept:
 * it either counts it (until it closes) or refuses it.
 */
export class IpLimiter {
  /** Connections refused so far by this limiter. */
  refused = 0;
  private readonly open = new Map<string, number>();
  private readonly logged = new Map<string, RefusalLog>();
  private readonly logIntervalMs: number;
  private readonly now: () => number;
  private readonly report: NonNullable<IpLimiterOptions['report']>;

  constructor(
    readonly limit: number,
    private readonly options: IpLimiterOptions,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`worker "${options.worker}": maxConnectionsPerIp must be a positive integer, got ${limit}`);
    this.logIntervalMs = options.logIntervalMs ?? REFUSAL_LOG_INTERVAL_MS;
    this.now = options.now ?? Date.now;
    this.report = options.report ?? ((message, fields) => log.warn(message, fields));
  }

  /** Open connections counted for `address` now. */
  count(address: string): number {
    return this.open.get(ipKey(address)) ?? 0;
  }

  /** Addresses with at least one counted connection. */
  get addresses(): number {
    return this.open.size;
  }

  /**
   * Counts a freshly accepted socket against its remote address until it closes, or refuses it
   * (destroys it, counts and maybe logs the refusal) when that address is at the limit.
   * Sockets without a remote address (unix sockets) are always admitted and not counted.
   * @returns whether the socket was admitted.
   */
  admit(socket: net.Socket): boolean {
    const address = socket.remoteAddress;
    if (address === undefined) return true;
    if (!this.acquire(address)) {
      socket.destroy();
      return false;
    }
    socket.once('close', () => this.release(address));
    return true;
  }

  /** Counts one connection of `address`; false (and the refusal recorded) when it is at the limit. */
  acquire(address: string): boolean {
    const key = ipKey(address);
    const open = this.open.get(key) ?? 0;
    if (open >= this.limit) {
      this.refuse(key);
      return false;
    }
    this.open.set(key, open + 1);
    return true;
  }

  /** Uncounts one connection of `address` (once per successful {@link acquire}). */
  release(address: string): void {
    const key = ipKey(address);
    const open = this.open.get(key) ?? 0;
    if (open <= 1) this.open.delete(key);
    else this.open.set(key, open - 1);
  }

  private refuse(key: string): void {
    this.refused++;
    const now = this.now();
    const entry = this.logged.get(key);
    if (entry && now - entry.at < this.logIntervalMs) {
      entry.suppressed++;
      return;
    }
    // The first refusal of an interval is logged, with what the previous interval left unsaid.
    const refused = (entry?.suppressed ?? 0) + 1;
    if (entry) this.logged.delete(key); // re-inserted last: the map stays ordered by time
    this.logged.set(key, { at: now, suppressed: 0 });
    this.report('connection refused: too many connections from this address', { worker: this.options.worker, remote: key, limit: this.limit, refused });
    if (this.logged.size > MAX_LOG_ENTRIES) this.sweep(now);
  }

  /** Forgets refusal entries older than the interval (oldest first), or the oldest ones if all are recent. */
  private sweep(now: number): void {
    for (const [key, entry] of this.logged) {
      if (this.logged.size <= MAX_LOG_ENTRIES / 2) break;
      if (now - entry.at < this.logIntervalMs && this.logged.size <= MAX_LOG_ENTRIES) break;
      this.logged.delete(key);
    }
  }
}

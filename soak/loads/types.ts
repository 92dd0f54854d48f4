/** What every traffic driver of the soak offers the runner. */

/** Cumulative figures of one app's traffic (read at every sample). */
export interface Counters {
  /** Messages the clients sent (chat: `say`s; game: inputs; MQTT: QoS 1 publishes). */
  sent: number;
  /** Messages the clients got (duplicates included; game: `state` messages). */
  received: number;
  /** Deliveries owed (sent × audience); undefined where nothing is owed (game). */
  expected?: number;
  /** Distinct deliveries of what was owed. */
  delivered?: number;
  /** Deliveries that arrived more than once. */
  dup: number;
  /** Client connections that closed without the soak closing them. */
  disconnects: number;
  /** Error replies the clients got (`{"type":"error"}`, refused publishes…). */
  errors: number;
}

export interface Load {
  /** chat | game | mqtt */
  readonly key: string;
  /** Connections it holds. */
  readonly clients: number;
  /** Connects every client (and logs in / joins / subscribes); resolves when all are ready. */
  connect(): Promise<void>;
  /** Starts the steady traffic. */
  start(): void;
  /** Stops sending new messages (what is in flight still arrives). */
  stopSending(): void;
  /** After stopSending: waits until everything owed arrived (or `timeoutMs`); true when it did. */
  drain(timeoutMs: number): Promise<boolean>;
  counters(): Counters;
  /** Failures of the promises this load checks (empty when it passed). */
  problems(): string[];
  /** When each error reply arrived (ms since epoch; the first 10,000). */
  errorTimes(): number[];
  /** Load-specific figures for the report (JSON-able). */
  details(): Record<string, unknown>;
  /** Closes every client. */
  close(): Promise<void>;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** `ms` ± `spread` (a fraction), so that clients do not send in lockstep. */
export const jitter = (ms: number, spread = 0.3): number => ms * (1 - spread + 2 * spread * Math.random());

/** Polls `check` every 100 ms until it is true or `timeoutMs` passed; resolves with the last answer. */
export async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
  return true;
}

/** Runs `fn` over `items` with at most `limit` at a time. */
export async function eachLimited<T>(items: T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

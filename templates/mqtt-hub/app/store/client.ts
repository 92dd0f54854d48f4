/**
 * The workers' side of the store: one {@link StoreClient} per process, holding one connection to
 * the store process (server.ts) that it keeps up by itself. Calls made while the store is away wait
 * for it to come back, up to the request timeout, then reject with a clear error.
 */
import { AsyncConnection, log } from 'gatewayworker';
import { storeProof } from './server.ts';
import {
  decodeJson,
  encodeJson,
  type CloseOptions,
  type DueWill,
  type OpenedSession,
  type OpenOptions,
  type ResumedSession,
  type StoredInflight,
  type StoredMessage,
  type StoredSubscription,
  type WillOutcome,
} from './state.ts';

export type {
  CloseOptions,
  DueWill,
  MessageProperties,
  OpenedSession,
  OpenOptions,
  ResumedSession,
  StoredInflight,
  StoredMessage,
  StoredSubscription,
  WillOutcome,
} from './state.ts';

export { pickProperties, sizeOf } from './state.ts';

/** Counts the store reports (see {@link StoreClient.stats}). */
export interface StoreStats {
  retained: number;
  sessions: number;
  online: number;
  queued: number;
  /** Wills waiting out their delay. */
  wills: number;
}

/** A store call that failed: not reachable in time, the link dropped mid-call, or refused by the store. */
export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

/** Options of a {@link StoreClient}. */
export interface StoreClientOptions {
  /** Milliseconds a call may take, waiting for a reconnect included. Default 5000. */
  timeoutMs?: number;
  /** The store's SECRET_KEY, if it has one. Default: the SECRET_KEY environment variable. */
  secretKey?: string;
}

interface Pending {
  op: string;
  body: string;
  sent: boolean;
  timer: NodeJS.Timeout;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

/** Request id of the authentication step (calls count from 1). */
const AUTH_ID = 0;

/** Reconnect delays grow to this (ms); short, so that calls waiting for the store are not kept long. */
const MAX_BACKOFF_MS = 1000;

/**
 * A link up but without the store's hello this long is dropped and made again: the TCP handshake
 * alone succeeds against a listening socket nobody accepts from (a store stopping or hung).
 */
const HELLO_TIMEOUT_MS = 2000;

/** Talks to the store process (store/server.ts describes the wire format). */
export class StoreClient {
  private conn: AsyncConnection<Buffer> | null = null;
  /** The store said hello (and we proved the key): requests can go. */
  private ready = false;
  private closed = false;
  private nextId = 1;
  private backoffMs = 50;
  private lastError = '';
  private downSince: number | null = null;
  private helloTimer: NodeJS.Timeout | null = null;
  /** The setup problem last logged, so a retry loop logs it once. */
  private reported = '';
  private readonly pending = new Map<number, Pending>();
  private readonly timeoutMs: number;
  private readonly secretKey: string | undefined;

  /** @param address host:port of the store (config.storeAddress). It connects on the first call. */
  constructor(
    readonly address: string,
    options: StoreClientOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.secretKey = (options.secretKey ?? process.env.SECRET_KEY) || undefined;
  }

  /** Keeps `message` as its topic's retained message; an empty payload clears the topic. */
  async setRetained(message: StoredMessage): Promise<void> {
    await this.call('setRetained', [message]);
  }

  /** Retained messages matching any of `filters`, each once. */
  retainedFor(filters: string[]): Promise<StoredMessage[]> {
    return this.call('retainedFor', [filters]) as Promise<StoredMessage[]>;
  }

  /**
   * A device connects. `clean` drops any old session; `expirySeconds` > 0 keeps the session that
   * long after the connection ends. Returns what a persistent session kept — subscriptions, what
   * its last connection left in flight (`inflight`, `awaitingRelease`: for
   * `Gateway.restoreMqttSession`) and queued QoS ≥ 1 messages oldest first — and marks it online
   * under a new `generation` (the latest one wins: a `replaced` connection lost). What it hands out
   * stays in the store until {@link ackSession}, so a lost answer loses nothing. Pass the
   * generation to the calls below. With `resume: 'later'`, see {@link resumeSession}.
   */
  openSession(clientId: string, opts: OpenOptions): Promise<OpenedSession> {
    return this.call('openSession', [clientId, opts]) as Promise<OpenedSession>;
  }

  /**
   * After `openSession(…, { resume: 'later' })`, once the session's subscriptions are live on the
   * gateway again: stops queueing for it and returns what was queued meanwhile (deliver it like
   * `queued`, then {@link ackSession}). Closes the gap in which a publish would find the device
   * neither offline nor subscribed. `current` false: a newer connection has the session.
   */
  resumeSession(clientId: string, generation: number): Promise<ResumedSession> {
    return this.call('resumeSession', [clientId, generation]) as Promise<ResumedSession>;
  }

  /** Everything openSession and resumeSession handed to connection `generation` was delivered: the store forgets it. */
  async ackSession(clientId: string, generation: number): Promise<void> {
    await this.call('ackSession', [clientId, generation]);
  }

  /** Records subscriptions of a persistent session (no-op for others). */
  async addSubscriptions(clientId: string, subs: StoredSubscription[]): Promise<void> {
    await this.call('addSubscriptions', [clientId, subs]);
  }

  /** Forgets subscriptions of a session. */
  async removeSubscriptions(clientId: string, filters: string[]): Promise<void> {
    await this.call('removeSubscriptions', [clientId, filters]);
  }

  /**
   * A device left: a persistent session goes offline (its expiry starts) and keeps `unacked`
   * (`ctx.unacked`: packet ids, released flags and properties as they are) and
   * `opts.awaitingRelease` (`ctx.awaitingRelease`) for its next connection; others end. What the
   * connection was handed and never acknowledged is kept too. With `generation` (from
   * openSession), a late close of a connection that was taken over leaves the newer connection's
   * session alone (its unreleased messages are queued instead). `expirySeconds` replaces the
   * session's expiry (an MQTT 5 DISCONNECT may change it).
   */
  async closeSession(clientId: string, unacked: readonly (StoredInflight | StoredMessage)[], opts: CloseOptions = {}): Promise<void> {
    await this.call('closeSession', [clientId, unacked, opts]);
  }

  /** A QoS ≥ 1 publish: queued for every offline persistent session whose subscriptions match. */
  async queueForOffline(message: StoredMessage): Promise<void> {
    await this.call('queueForOffline', [message]);
  }

  /**
   * The will of connection `generation`, which ended without a goodbye, waits out its MQTT 5 will
   * delay in the store (due earlier if the session ends first). `'reconnected'`: the session is
   * back, drop the will; `'ended'`: publish it now.
   */
  delayWill(clientId: string, generation: number, will: StoredMessage, delaySeconds: number): Promise<WillOutcome> {
    return this.call('delayWill', [clientId, generation, will, delaySeconds]) as Promise<WillOutcome>;
  }

  /** Delayed wills that are due, now out of the store: the caller publishes them. */
  takeDueWills(): Promise<DueWill[]> {
    return this.call('takeDueWills', []) as Promise<DueWill[]>;
  }

  /** Counts of retained topics, sessions, online sessions, queued messages and delayed wills. */
  stats(): Promise<StoreStats> {
    return this.call('stats', []) as Promise<StoreStats>;
  }

  /** Drops the connection and rejects calls still waiting. The client cannot be used afterwards. */
  close(): void {
    this.closed = true;
    this.ready = false;
    this.clearHelloTimer();
    this.failAll(new StoreError('store client closed'), () => true);
    this.conn?.close();
    this.conn = null;
  }

  private call(op: string, args: unknown[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new StoreError(`store ${op}: the store client is closed`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const request = this.pending.get(id);
        if (!request) return;
        this.pending.delete(id);
        const why = request.sent
          ? 'no answer'
          : `not reachable${this.lastError ? ` (${this.lastError})` : ''}; is start_store.ts running?`;
        reject(new StoreError(`store ${op} at ${this.address} failed: ${why} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { op, body: encodeJson({ id, op, args }), sent: false, timer, resolve, reject });
      if (this.ready) this.flush();
      else this.connect();
    });
  }

  /** Sends every request not sent yet, in call order. */
  private flush(): void {
    for (const request of this.pending.values()) {
      if (request.sent) continue;
      request.sent = true;
      this.conn?.send(request.body);
    }
  }

  private connect(): void {
    if (this.conn) return;
    const conn = new AsyncConnection<Buffer>(`frame://${this.address}`, {
      connectTimeout: 3,
      maxPackageSize: 64 * 1024 * 1024,
      maxSendBufferSize: 64 * 1024 * 1024,
    });
    conn.onConnect = () => {
      this.clearHelloTimer();
      this.helloTimer = setTimeout(() => {
        this.lastError = `connected, but no hello from the store within ${HELLO_TIMEOUT_MS} ms`;
        conn.destroy();
      }, HELLO_TIMEOUT_MS);
    };
    conn.onMessage = (_conn, data) => this.onMessage(data);
    conn.onError = (_conn, _code, message) => {
      this.lastError = message;
    };
    conn.onClose = () => this.onClose();
    this.conn = conn;
    conn.connect();
  }

  private onMessage(data: Buffer): void {
    let answer: Record<string, unknown>;
    try {
      answer = decodeJson(data.toString('utf8')) as Record<string, unknown>;
    } catch {
      log.error(`store at ${this.address} sent something that is not JSON; reconnecting`);
      this.conn?.destroy();
      return;
    }
    if (typeof answer.hello === 'string') {
      this.clearHelloTimer();
      this.onHello(answer.hello, answer.auth === true);
      return;
    }
    if (answer.id === AUTH_ID) {
      if (typeof answer.error === 'string') this.misconfigured(answer.error); // the store closes the link
      else this.becomeReady();
      return;
    }
    const request = typeof answer.id === 'number' ? this.pending.get(answer.id) : undefined;
    if (!request) return; // the answer to a call that already timed out
    this.pending.delete(answer.id as number);
    clearTimeout(request.timer);
    if (typeof answer.error === 'string') request.reject(new StoreError(`store ${request.op} refused: ${answer.error}`));
    else request.resolve(answer.ok);
  }

  private onHello(nonce: string, auth: boolean): void {
    if (!auth) return this.becomeReady();
    if (!this.secretKey) {
      this.misconfigured('the store needs SECRET_KEY, and this process has none');
      this.conn?.destroy();
      return;
    }
    // Requests wait for the store's answer: it closes the link on a wrong key.
    this.conn?.send(encodeJson({ id: AUTH_ID, op: 'auth', args: [storeProof(this.secretKey, nonce)] }));
  }

  private becomeReady(): void {
    this.ready = true;
    this.backoffMs = 50;
    if (this.downSince !== null) log.info(`store at ${this.address} is back`, { downMs: Date.now() - this.downSince });
    this.downSince = null;
    this.lastError = '';
    this.reported = '';
    this.flush();
  }

  /** A setup problem (wrong or missing SECRET_KEY): one log line, then calls fail with it until fixed. */
  private misconfigured(problem: string): void {
    this.lastError = problem;
    if (this.reported !== problem) log.error(`store at ${this.address}: ${problem}`);
    this.reported = problem;
  }

  private clearHelloTimer(): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
  }

  private onClose(): void {
    const wasReady = this.ready;
    this.ready = false;
    this.clearHelloTimer();
    // A request sent on the dropped link may or may not have been applied: say so rather than
    // send it twice (takeDueWills hands wills out once, setRetained may be outdated by then).
    this.failAll(new StoreError(`store at ${this.address}: connection lost before the answer`), (r) => r.sent);
    if (this.closed || !this.conn) return;
    // One line when an established link drops (not per retry, nor while the hub is starting).
    if (wasReady) {
      this.downSince = Date.now();
      log.warn(`store at ${this.address} is not reachable${this.lastError ? ` (${this.lastError})` : ''}; reconnecting`);
    }
    this.conn.reconnect(this.backoffMs / 1000);
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
  }

  private failAll(error: StoreError, which: (request: Pending) => boolean): void {
    for (const [id, request] of this.pending) {
      if (!which(request)) continue;
      this.pending.delete(id);
      clearTimeout(request.timer);
      request.reject(error);
    }
  }
}

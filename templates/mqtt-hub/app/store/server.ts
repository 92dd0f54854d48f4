/**
 * The store process: one Worker (one process, so one copy of the state) answering JSON requests
 * from the BusinessWorkers' {@link StoreClient}s over length-prefixed frames.
 *
 * Wire format, one JSON object per frame, Buffers as `{ "$b64": "<base64>" }`:
 * - on connect the store sends `{ "hello": "<nonce>", "auth": <bool> }`;
 * - a request is `{ "id": <n>, "op": "<method>", "args": [ … ] }`, answered in order with
 *   `{ "id": <n>, "ok": <result or null> }` or `{ "id": <n>, "error": "<message>" }`;
 * - with a SECRET_KEY the first request must be `auth` with HMAC-SHA256(key, "store|" + nonce) in
 *   hex: the key never crosses the wire, and anything else is refused and the connection closed.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { log, Worker, type Connection } from 'gatewayworker';
import { decodeJson, encodeJson, StoreFile, StoreState, toInflight, toMessage, toSubscription, type StoredInflight, type StoredMessage, type StoredSubscription } from './state.ts';

/** Settings of {@link createStoreWorker}. */
export interface StoreServerOptions {
  /** host:port to listen on (keep it private: see `secretKey`). */
  address: string;
  /** The state's file (`<dataDir>/store.json`). */
  file: string;
  maxQueuedPerSession: number;
  /** Bytes (payloads and topics) one session keeps, queued and in flight. */
  maxQueuedBytesPerSession: number;
  /** Persistent sessions one device keeps; opening more ends its longest-offline ones. */
  maxSessionsPerDevice: number;
  maxRetained: number;
  /** Worker name in status and logs. */
  name: string;
  /** Shared secret clients must prove (the app's SECRET_KEY); none: any local process may connect. */
  secretKey?: string;
  /** Seconds between sweeps for expired sessions. Default 60 (expiry is also checked whenever a session is used). */
  sweepSeconds?: number;
}

/** A request the store refuses; its message goes back to the client. */
class RequestError extends Error {}

/** The proof a client sends for `nonce` (see the wire format above). */
export function storeProof(secretKey: string, nonce: string): string {
  return createHmac('sha256', secretKey).update(`store|${nonce}`).digest('hex');
}

function text(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') throw new RequestError(`${what} must be a non-empty string`);
  return value;
}

function texts(value: unknown, what: string): string[] {
  if (!Array.isArray(value)) throw new RequestError(`${what} must be an array of strings`);
  return value.map((item, i) => text(item, `${what}[${i}]`));
}

function message(value: unknown, what: string): StoredMessage {
  const m = toMessage(value);
  if (!m) throw new RequestError(`${what} must be a message { topic, payload: Buffer, qos }`);
  return m;
}

/** Unacknowledged messages of a closing connection: messages with an optional packet id and released flag. */
function inflight(value: unknown, what: string): StoredInflight[] {
  if (!Array.isArray(value)) throw new RequestError(`${what} must be an array of messages`);
  return value.map((item, i) => {
    const m = toInflight(item);
    const { packetId, released } = (item ?? {}) as Record<string, unknown>;
    const validId = packetId === undefined || (typeof packetId === 'number' && Number.isInteger(packetId) && packetId >= 0 && packetId <= 0xffff);
    if (!m || !validId || (released !== undefined && typeof released !== 'boolean')) {
      throw new RequestError(`${what}[${i}] must be a message { topic, payload: Buffer, qos: 1 | 2, packetId?: 0–65535, released?: boolean }`);
    }
    return m;
  });
}

function packetIdList(value: unknown, what: string): number[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((id) => typeof id === 'number' && Number.isInteger(id) && id >= 1 && id <= 0xffff)) {
    throw new RequestError(`${what} must be an array of packet ids (1–65535)`);
  }
  return value as number[];
}

function subscriptions(value: unknown, what: string): StoredSubscription[] {
  if (!Array.isArray(value)) throw new RequestError(`${what} must be an array of subscriptions`);
  return value.map((item, i) => {
    const sub = toSubscription(item);
    if (!sub) throw new RequestError(`${what}[${i}] must be a subscription { filter, qos }`);
    return sub;
  });
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new RequestError(`${what} must be an object`);
  return value as Record<string, unknown>;
}

function seconds(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new RequestError(`${what} must be a number of seconds ≥ 0`);
  return Math.floor(value);
}

/** The operations of the wire protocol, each validating its arguments. */
function operations(state: StoreState): Record<string, (args: unknown[]) => unknown> {
  return {
    setRetained: ([m]) => state.setRetained(message(m, 'message')),
    retainedFor: ([filters]) => state.retainedFor(texts(filters, 'filters')),
    openSession: ([clientId, opts]) => {
      const o = record(opts, 'opts');
      if (typeof o.clean !== 'boolean') throw new RequestError('opts.clean must be a boolean');
      if (o.resume !== undefined && o.resume !== 'now' && o.resume !== 'later') throw new RequestError("opts.resume must be 'now' or 'later'");
      if (o.owner !== undefined) text(o.owner, 'opts.owner');
      return state.openSession(text(clientId, 'clientId'), {
        clean: o.clean,
        expirySeconds: seconds(o.expirySeconds, 'opts.expirySeconds'),
        resume: o.resume,
        owner: o.owner as string | undefined,
      });
    },
    resumeSession: ([clientId, generation]) => state.resumeSession(text(clientId, 'clientId'), seconds(generation, 'generation')),
    ackSession: ([clientId, generation]) => state.ackSession(text(clientId, 'clientId'), seconds(generation, 'generation')),
    addSubscriptions: ([clientId, subs]) => state.addSubscriptions(text(clientId, 'clientId'), subscriptions(subs, 'subscriptions')),
    removeSubscriptions: ([clientId, filters]) => state.removeSubscriptions(text(clientId, 'clientId'), texts(filters, 'filters')),
    closeSession: ([clientId, unacked, opts]) => {
      const o = record(opts, 'opts');
      const generation = o.generation === undefined ? undefined : seconds(o.generation, 'opts.generation');
      const expirySeconds = o.expirySeconds === undefined ? undefined : seconds(o.expirySeconds, 'opts.expirySeconds');
      const awaitingRelease = packetIdList(o.awaitingRelease, 'opts.awaitingRelease');
      state.closeSession(text(clientId, 'clientId'), inflight(unacked ?? [], 'unacked'), { generation, expirySeconds, awaitingRelease });
    },
    queueForOffline: ([m]) => state.queueForOffline(message(m, 'message')),
    delayWill: ([clientId, generation, will, delay]) =>
      state.delayWill(text(clientId, 'clientId'), seconds(generation, 'generation'), message(will, 'will'), seconds(delay, 'delaySeconds')),
    takeDueWills: () => state.takeDueWills(),
    stats: () => state.stats(),
  };
}

/**
 * Defines the store Worker (one process on `frame://<address>`): loads the file at start, saves
 * after changes and at stop, and sweeps expired sessions. Not restarted by `reload`, so requests
 * never find it gone while the workers reload.
 */
export function createStoreWorker(options: StoreServerOptions): Worker {
  const state = new StoreState({
    maxQueuedPerSession: options.maxQueuedPerSession,
    maxQueuedBytesPerSession: options.maxQueuedBytesPerSession,
    maxSessionsPerDevice: options.maxSessionsPerDevice,
    maxRetained: options.maxRetained,
  });
  const file = new StoreFile(options.file, state);
  const ops = operations(state);
  const secretKey = options.secretKey || undefined;
  const nonces = new WeakMap<Connection, string>();
  const authed = new WeakSet<Connection>();
  let sweeper: NodeJS.Timeout | null = null;

  const reply = (conn: Connection, answer: Record<string, unknown>): void => {
    conn.send(encodeJson(answer));
  };

  const handle = (conn: Connection, data: Buffer): void => {
    let request: Record<string, unknown>;
    try {
      const parsed = decodeJson(data.toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      request = parsed as Record<string, unknown>;
    } catch (error) {
      log.warn(`store: closing a connection that sent a malformed request (${(error as Error).message})`, { remote: conn.remoteAddress });
      conn.close(encodeJson({ id: null, error: 'malformed request' }));
      return;
    }
    const { id, op } = request;
    const args = Array.isArray(request.args) ? request.args : [];
    if (op === 'auth') {
      const nonce = nonces.get(conn) ?? '';
      const expected = Buffer.from(secretKey ? storeProof(secretKey, nonce) : '');
      const given = Buffer.from(typeof args[0] === 'string' ? args[0] : '');
      if (secretKey && (given.length !== expected.length || !timingSafeEqual(given, expected))) {
        log.warn('store: refused a client with a wrong SECRET_KEY', { remote: conn.remoteAddress });
        conn.close(encodeJson({ id, error: 'authentication failed: the SECRET_KEY differs from the store’s' }));
        return;
      }
      authed.add(conn);
      reply(conn, { id, ok: true });
      return;
    }
    if (secretKey && !authed.has(conn)) {
      conn.close(encodeJson({ id, error: 'authentication required: set the same SECRET_KEY as the store' }));
      return;
    }
    const run = typeof op === 'string' && Object.hasOwn(ops, op) ? ops[op] : undefined;
    if (!run) {
      reply(conn, { id, error: `unknown op ${JSON.stringify(op)}` });
      return;
    }
    try {
      reply(conn, { id, ok: run(args) ?? null });
    } catch (error) {
      if (!(error instanceof RequestError)) log.error(`store: ${op} failed: ${(error as Error).stack ?? String(error)}`);
      reply(conn, { id, error: `${op}: ${(error as Error).message}` });
    }
  };

  return new Worker(`frame://${options.address}`, {
    name: options.name,
    count: 1,
    reloadable: false,
    // Requests carry whole retained messages and queues; allow more than the 10 MB default.
    maxPackageSize: 64 * 1024 * 1024,
    maxSendBufferSize: 64 * 1024 * 1024,
    onWorkerStart: async () => {
      await file.load();
      sweeper = setInterval(() => state.sweep(), (options.sweepSeconds ?? 60) * 1000);
      sweeper.unref();
    },
    onWorkerStop: async () => {
      if (sweeper) clearInterval(sweeper);
      await file.flush();
    },
    onConnect: (conn) => {
      const nonce = randomBytes(16).toString('hex');
      nonces.set(conn, nonce);
      reply(conn, { hello: nonce, auth: secretKey !== undefined });
    },
    onMessage: (conn, data) => handle(conn, Buffer.isBuffer(data) ? data : Buffer.from(String(data))),
  });
}

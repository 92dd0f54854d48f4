/**
 * The store's model, in memory: retained messages and persistent sessions (subscriptions, the
 * QoS 1/2 messages queued while the device is away, and the delivery state its last connection left
 * in flight), and its file, `<dataDir>/store.json`.
 * Pure apart from {@link StoreFile}: the store process (server.ts) drives it, tests use it directly.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { log, TopicTree } from 'gatewayworker';

/** MQTT 5 properties a stored message keeps (the ones a publish carries on to subscribers). */
export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  /** Seconds the message lives; counted down while it waits in the store. */
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: Record<string, string | string[]>;
}

/** A retained or queued message. */
export interface StoredMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain?: boolean;
  properties?: MessageProperties;
}

/**
 * A message the hub sent to a client that the client had not acknowledged when its connection
 * ended (MQTT §4.4): the next connection resends it with the same packet id and DUP set, or, when
 * `released`, sends only its PUBREL again.
 */
export interface StoredInflight extends StoredMessage {
  qos: 1 | 2;
  retain: boolean;
  /** The packet id it was sent with; 0: never sent (held back by the client's receive maximum), goes out fresh. */
  packetId: number;
  /** QoS 2 the client already received (PUBREC came, PUBREL was sent): only the release is left. */
  released: boolean;
}

/** A subscription of a persistent session, as granted. */
export interface StoredSubscription {
  filter: string;
  qos: 0 | 1 | 2;
  noLocal?: boolean;
  retainAsPublished?: boolean;
  subscriptionId?: number;
}

/** What {@link StoreState.openSession} gives back. */
export interface OpenedSession {
  /** A session was there (MQTT's "session present"). */
  present: boolean;
  subscriptions: StoredSubscription[];
  /**
   * What the last connection left in flight, oldest first, as it was (packet ids, released):
   * for `Gateway.restoreMqttSession`, before anything else is delivered. Now out of the store.
   */
  inflight: StoredInflight[];
  /** Packet ids of the client's own QoS 2 PUBLISHes still awaiting its PUBREL (for `restoreMqttSession`). */
  awaitingRelease: number[];
  /** QoS ≥ 1 messages kept while the device was away, oldest first, to deliver fresh; now out of the queue. */
  queued: StoredMessage[];
  /** Queued messages dropped since the last connection because the queue was full. */
  dropped: number;
  /** Number of this connection of the session; pass it to closeSession so a late close of a taken-over connection does not end the new one. */
  generation: number;
}

/** Options of {@link StoreState.openSession}. */
export interface OpenOptions {
  /** Drop any old session first (MQTT clean session / clean start). */
  clean: boolean;
  /** Seconds the session outlives the connection; 0: it ends with it. */
  expirySeconds: number;
  /** 'later': keep queueing publishes until {@link StoreState.resumeSession}. Default: stop now. */
  resume?: 'now' | 'later';
}

/** Options of {@link StoreState.closeSession}. */
export interface CloseOptions {
  /** The generation openSession returned; a close of an older connection keeps the session online. */
  generation?: number;
  /** A new expiry (MQTT 5 DISCONNECT may change it); 0 ends the session now. */
  expirySeconds?: number;
  /** Packet ids of the client's QoS 2 PUBLISHes awaiting its PUBREL (`ctx.awaitingRelease`). */
  awaitingRelease?: readonly number[];
}

/** Limits and clock of a {@link StoreState}. */
export interface StoreLimits {
  /** Messages queued per offline session; the oldest go first. */
  maxQueuedPerSession: number;
  /** Retained topics kept; new topics beyond it are refused. */
  maxRetained: number;
  /** Milliseconds since the epoch (tests move it). */
  now?: () => number;
}

/** MQTT 5's largest Session Expiry Interval means "never". */
const NEVER = 0xffffffff;

/** A message with the time it was stored, for its expiry interval. */
interface Entry {
  message: StoredMessage;
  at: number;
}

interface Session {
  clientId: string;
  /** 0: ends with the connection (nothing kept). */
  expirySeconds: number;
  online: boolean;
  /**
   * Its subscriptions are in the offline index, so publishes are queued for it: while offline,
   * and while resuming (online, but its subscriptions not live on the gateway yet).
   */
  indexed: boolean;
  offlineSince: number | null;
  generation: number;
  subscriptions: Map<string, StoredSubscription>;
  queue: Entry[];
  dropped: number;
  /** Delivery state the last connection left (MQTT §4.4), kept apart from the queue; empty while online. */
  inflight: StoredInflight[];
  awaitingRelease: number[];
}

interface RetainedNode {
  children: Map<string, RetainedNode>;
  entry?: Entry;
}

/**
 * Retained messages by topic level, so that a filter finds its messages without looking at
 * every retained topic.
 */
class RetainedTree {
  private readonly root: RetainedNode = { children: new Map() };
  size = 0;

  get(topic: string): Entry | undefined {
    let node: RetainedNode | undefined = this.root;
    for (const level of topic.split('/')) node = node?.children.get(level);
    return node?.entry;
  }

  set(topic: string, entry: Entry): void {
    let node = this.root;
    for (const level of topic.split('/')) {
      let child = node.children.get(level);
      if (!child) node.children.set(level, (child = { children: new Map() }));
      node = child;
    }
    if (!node.entry) this.size++;
    node.entry = entry;
  }

  delete(topic: string): boolean {
    const path: RetainedNode[] = [this.root];
    const levels = topic.split('/');
    for (const level of levels) {
      const child = path[path.length - 1].children.get(level);
      if (!child) return false;
      path.push(child);
    }
    const node = path[path.length - 1];
    if (!node.entry) return false;
    node.entry = undefined;
    this.size--;
    // Prune the branch back to the last node still in use.
    for (let i = levels.length; i > 0 && !path[i].entry && path[i].children.size === 0; i--) {
      path[i - 1].children.delete(levels[i - 1]);
    }
    return true;
  }

  /** Every entry whose topic `filter` matches (a leading wildcard skips `$`-topics). */
  match(filter: string, visit: (entry: Entry) => void): void {
    const levels = filter.split('/');
    const walk = (node: RetainedNode, i: number): void => {
      if (i === levels.length) {
        if (node.entry) visit(node.entry);
        return;
      }
      const level = levels[i];
      if (level === '#') {
        if (i !== levels.length - 1) return; // not a valid filter: matches nothing
        if (node.entry && i > 0) visit(node.entry); // `a/#` matches `a` too
        const all = (n: RetainedNode, top: boolean): void => {
          for (const [name, child] of n.children) {
            if (top && name.startsWith('$')) continue;
            if (child.entry) visit(child.entry);
            all(child, false);
          }
        };
        all(node, i === 0);
      } else if (level === '+') {
        for (const [name, child] of node.children) if (i > 0 || !name.startsWith('$')) walk(child, i + 1);
      } else {
        const child = node.children.get(level);
        if (child) walk(child, i + 1);
      }
    };
    walk(this.root, 0);
  }

  entries(): Entry[] {
    const out: Entry[] = [];
    this.match('#', (entry) => out.push(entry));
    // `#` leaves out `$`-topics; the hub keeps none, but a snapshot must not lose any.
    for (const [name, child] of this.root.children) if (name.startsWith('$')) collect(child, out);
    return out;
  }
}

function collect(node: RetainedNode, out: Entry[]): void {
  if (node.entry) out.push(node.entry);
  for (const child of node.children.values()) collect(child, out);
}

/** Keeps only the properties a stored message may carry (not topic aliases or subscription ids). */
export function pickProperties(properties: unknown): MessageProperties | undefined {
  if (typeof properties !== 'object' || properties === null) return undefined;
  const p = properties as Record<string, unknown>;
  const out: MessageProperties = {};
  if (typeof p.payloadFormatIndicator === 'boolean') out.payloadFormatIndicator = p.payloadFormatIndicator;
  if (typeof p.messageExpiryInterval === 'number' && p.messageExpiryInterval >= 0) out.messageExpiryInterval = p.messageExpiryInterval;
  if (typeof p.contentType === 'string') out.contentType = p.contentType;
  if (typeof p.responseTopic === 'string') out.responseTopic = p.responseTopic;
  if (Buffer.isBuffer(p.correlationData)) out.correlationData = p.correlationData;
  if (isUserProperties(p.userProperties)) out.userProperties = p.userProperties;
  return Object.keys(out).length > 0 ? out : undefined;
}

function isUserProperties(value: unknown): value is Record<string, string | string[]> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return Object.values(value).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string')));
}

/**
 * The message as it leaves the store: null if its expiry interval ran out while it waited,
 * otherwise with the interval counted down (MQTT 5 §3.3.2.3.3).
 */
function deliverable(entry: Entry, now: number): StoredMessage | null {
  const interval = entry.message.properties?.messageExpiryInterval;
  if (interval === undefined) return entry.message;
  const left = interval - Math.floor((now - entry.at) / 1000);
  if (left <= 0) return null;
  return { ...entry.message, properties: { ...entry.message.properties, messageExpiryInterval: left } };
}

const qosMin = (a: 0 | 1 | 2, b: 0 | 1 | 2): 0 | 1 | 2 => (a < b ? a : b);

/**
 * Retained messages and persistent sessions in memory. Every change calls `onChange` (the file
 * saver hooks in there).
 */
export class StoreState {
  /** Called after every change. */
  onChange: () => void = () => {};
  /** Retained messages refused because {@link StoreLimits.maxRetained} was reached. */
  retainedRefused = 0;
  private readonly retained = new RetainedTree();
  private readonly sessions = new Map<string, Session>();
  /** Subscriptions of offline sessions only: who a publish is queued for. */
  private readonly offline = new TopicTree<StoredSubscription>();
  private readonly now: () => number;
  /**
   * Generations are unique across sessions and restarts, not counted per session: a session
   * dropped and made again (clean start) must not reuse the number a late close still carries.
   * Starting from the clock (µs) keeps them growing across a restart that loses unsaved sessions.
   */
  private nextGeneration: number;

  constructor(private readonly limits: StoreLimits) {
    this.now = limits.now ?? Date.now;
    this.nextGeneration = Date.now() * 1000;
  }

  /** Keeps `message` as the topic's retained message; an empty payload clears the topic. False: refused (store full). */
  setRetained(message: StoredMessage): boolean {
    if (message.payload.length === 0) {
      if (this.retained.delete(message.topic)) this.onChange();
      return true;
    }
    if (this.retained.size >= this.limits.maxRetained && !this.retained.get(message.topic)) {
      if (this.retainedRefused++ % 1000 === 0) {
        log.warn(`retained store full (maxRetained ${this.limits.maxRetained}): new retained topics are not kept`, { topic: message.topic });
      }
      return false;
    }
    const stored: StoredMessage = { topic: message.topic, payload: message.payload, qos: message.qos, retain: true };
    const properties = pickProperties(message.properties);
    if (properties) stored.properties = properties;
    this.retained.set(message.topic, { message: stored, at: this.now() });
    this.onChange();
    return true;
  }

  /** Retained messages matching any of `filters`, each once (`retain: true`). */
  retainedFor(filters: readonly string[]): StoredMessage[] {
    const now = this.now();
    const seen = new Set<Entry>();
    const out: StoredMessage[] = [];
    const expired: string[] = [];
    for (const filter of filters) {
      this.retained.match(filter, (entry) => {
        if (seen.has(entry)) return;
        seen.add(entry);
        const message = deliverable(entry, now);
        if (message) out.push(message);
        else expired.push(entry.message.topic);
      });
    }
    for (const topic of expired) this.retained.delete(topic);
    if (expired.length > 0) this.onChange();
    return out;
  }

  /** Number of retained topics. */
  get retainedCount(): number {
    return this.retained.size;
  }

  /**
   * A client connects. `clean` drops an old session. `expirySeconds` > 0 makes the session
   * persistent (kept that long after the connection ends; 0xFFFFFFFF: for ever).
   *
   * With `resume: 'later'` publishes keep being queued for the session until
   * {@link resumeSession}: call that once its subscriptions are live on the gateway again, so a
   * publish in between is not lost (it may arrive twice instead).
   */
  openSession(clientId: string, opts: OpenOptions): OpenedSession {
    const now = this.now();
    let session = this.sessions.get(clientId);
    if (session && (opts.clean || this.hasExpired(session, now))) {
      this.dropSession(session);
      session = undefined;
    }
    const present = session !== undefined;
    if (!session) {
      session = {
        clientId,
        expirySeconds: 0,
        online: false,
        indexed: false,
        offlineSince: null,
        generation: 0,
        subscriptions: new Map(),
        queue: [],
        dropped: 0,
        inflight: [],
        awaitingRelease: [],
      };
      this.sessions.set(clientId, session);
    }
    if (opts.resume === 'later') this.index(session);
    else this.unindex(session);
    session.online = true;
    session.offlineSince = null;
    session.expirySeconds = Math.max(0, opts.expirySeconds);
    session.generation = this.nextGeneration++;
    const queued = session.queue.map((entry) => deliverable(entry, now)).filter((m): m is StoredMessage => m !== null);
    const dropped = session.dropped;
    if (dropped > 0) log.warn(`session ${clientId}: ${dropped} queued messages were dropped while it was away (queue full)`);
    const { inflight, awaitingRelease } = session;
    session.queue = [];
    session.dropped = 0;
    session.inflight = [];
    session.awaitingRelease = [];
    if (present || session.expirySeconds > 0) this.onChange();
    return { present, subscriptions: [...session.subscriptions.values()], inflight, awaitingRelease, queued, dropped, generation: session.generation };
  }

  /**
   * Ends the resuming phase of `openSession(…, { resume: 'later' })`: publishes are no longer
   * queued for the session. Returns what was queued since openSession (oldest first). A stale
   * `generation` (the connection was taken over or closed meanwhile) returns nothing.
   */
  resumeSession(clientId: string, generation: number): StoredMessage[] {
    const session = this.sessions.get(clientId);
    if (!session || !session.online || session.generation !== generation) return [];
    this.unindex(session);
    const now = this.now();
    const queued = session.queue.map((entry) => deliverable(entry, now)).filter((m): m is StoredMessage => m !== null);
    if (session.queue.length > 0) {
      session.queue = [];
      session.dropped = 0;
      this.onChange();
    }
    return queued;
  }

  /** Records subscriptions of a persistent session (no-op for others); same filter replaces. */
  addSubscriptions(clientId: string, subscriptions: readonly StoredSubscription[]): void {
    const session = this.sessions.get(clientId);
    if (!session || session.expirySeconds === 0 || subscriptions.length === 0) return;
    for (const sub of subscriptions) {
      session.subscriptions.set(sub.filter, sub);
      if (session.indexed) this.offline.add(sub.filter, clientId, sub); // replaces the old options
    }
    this.onChange();
  }

  /** Forgets subscriptions of a session. */
  removeSubscriptions(clientId: string, filters: readonly string[]): void {
    const session = this.sessions.get(clientId);
    if (!session) return;
    let changed = false;
    for (const filter of filters) {
      if (!session.subscriptions.delete(filter)) continue;
      if (session.indexed) this.offline.remove(filter, clientId);
      changed = true;
    }
    if (changed) this.onChange();
  }

  /**
   * A client left. A persistent session goes offline (its expiry starts) and keeps what the
   * connection left in flight — `unacked` as it is (packet ids, released) and
   * `opts.awaitingRelease` — apart from its queue, for the next connection to restore; any other
   * session ends. A close from an older connection than the current one (a take-over that did not
   * wait for it) leaves the session online: the current connection has restored its state
   * already, so that close's unreleased messages are queued (first) to be delivered fresh, and
   * its released ones and awaitingRelease ids, meaningless on another connection, are dropped.
   */
  closeSession(clientId: string, unacked: readonly (StoredMessage | StoredInflight)[], opts: CloseOptions = {}): void {
    const session = this.sessions.get(clientId);
    if (!session) return;
    const now = this.now();
    const inflight = unacked.map((m) => toInflight(m)).filter((m): m is StoredInflight => m !== null);
    if (opts.generation !== undefined && opts.generation !== session.generation) {
      const entries = inflight.filter((m) => !m.released).map((m) => ({ message: plainMessage(m), at: now }));
      if (session.expirySeconds > 0 && entries.length > 0) this.enqueue(session, entries, true);
      return;
    }
    const wasPersistent = session.expirySeconds > 0;
    if (opts.expirySeconds !== undefined) session.expirySeconds = Math.max(0, opts.expirySeconds);
    if (session.expirySeconds === 0) {
      this.dropSession(session);
      if (wasPersistent) this.onChange();
      return;
    }
    if (session.online) {
      session.online = false;
      session.offlineSince = now;
    }
    this.index(session);
    // Normally empty here (openSession handed it out); should a close come twice, the older
    // state is not lost: its unreleased messages go out fresh.
    const older = session.inflight.filter((m) => !m.released).map((m) => ({ message: plainMessage(m), at: now }));
    if (older.length > 0) this.enqueue(session, older, true);
    session.inflight = inflight;
    session.awaitingRelease = packetIds(opts.awaitingRelease ?? []);
    this.onChange();
  }

  /**
   * A QoS ≥ 1 publish: queued for each offline persistent session with a matching subscription,
   * at the lower of the message's QoS and the best granted one. Returns how many sessions got it.
   */
  queueForOffline(message: StoredMessage): number {
    if (message.qos === 0 || this.offline.size === 0) return 0;
    const now = this.now();
    // One delivery per session, at the best QoS any of its matching subscriptions was granted.
    const best = new Map<string, { qos: 0 | 1 | 2; retainAsPublished: boolean }>();
    this.offline.match(message.topic, (clientId, sub) => {
      const seen = best.get(clientId);
      best.set(clientId, {
        qos: seen && seen.qos > sub.qos ? seen.qos : sub.qos,
        retainAsPublished: (seen?.retainAsPublished ?? false) || sub.retainAsPublished === true,
      });
    });
    let count = 0;
    const properties = pickProperties(message.properties);
    for (const [clientId, sub] of best) {
      const session = this.sessions.get(clientId);
      if (!session || !session.indexed || sub.qos === 0 || this.hasExpired(session, now)) continue;
      const queued: StoredMessage = { topic: message.topic, payload: message.payload, qos: qosMin(message.qos, sub.qos), retain: sub.retainAsPublished ? (message.retain ?? false) : false };
      if (properties) queued.properties = properties;
      this.enqueue(session, [{ message: queued, at: now }], false);
      count++;
    }
    if (count > 0) this.onChange();
    return count;
  }

  /** Ends offline sessions whose expiry has passed; returns how many. */
  sweep(): number {
    const now = this.now();
    let ended = 0;
    for (const session of this.sessions.values()) {
      if (!this.hasExpired(session, now)) continue;
      this.dropSession(session);
      ended++;
    }
    if (ended > 0) this.onChange();
    return ended;
  }

  /** A read-only view of one session (for tests and diagnostics). */
  inspect(clientId: string):
    | { online: boolean; expirySeconds: number; subscriptions: StoredSubscription[]; queued: StoredMessage[]; dropped: number; inflight: StoredInflight[]; awaitingRelease: number[] }
    | undefined {
    const s = this.sessions.get(clientId);
    if (!s) return undefined;
    return {
      online: s.online,
      expirySeconds: s.expirySeconds,
      subscriptions: [...s.subscriptions.values()],
      queued: s.queue.map((e) => e.message),
      dropped: s.dropped,
      inflight: [...s.inflight],
      awaitingRelease: [...s.awaitingRelease],
    };
  }

  /** Counts for logs and status. */
  stats(): { retained: number; sessions: number; online: number; queued: number } {
    let online = 0;
    let queued = 0;
    for (const s of this.sessions.values()) {
      if (s.online) online++;
      queued += s.queue.length;
    }
    return { retained: this.retained.size, sessions: this.sessions.size, online, queued };
  }

  /** Everything worth keeping, for the file: retained messages and persistent sessions. */
  snapshot(): Snapshot {
    const sessions: SessionSnapshot[] = [];
    for (const s of this.sessions.values()) {
      if (s.expirySeconds === 0) continue;
      sessions.push({
        clientId: s.clientId,
        expirySeconds: s.expirySeconds,
        offlineSince: s.offlineSince,
        generation: s.generation,
        subscriptions: [...s.subscriptions.values()],
        queue: s.queue,
        dropped: s.dropped,
        inflight: s.inflight,
        awaitingRelease: s.awaitingRelease,
      });
    }
    return { version: 1, savedAt: new Date(this.now()).toISOString(), retained: this.retained.entries(), sessions };
  }

  /**
   * Replaces the contents with a snapshot. Sessions that were online are taken as offline from
   * now: their connections did not survive the store's restart as far as it can tell (a device
   * still connected gets the session back on its next connect; it may see a QoS 1 message twice).
   * Returns how many entries were skipped as malformed.
   */
  restore(data: unknown): number {
    if (!isRecord(data) || data.version !== 1 || !Array.isArray(data.retained) || !Array.isArray(data.sessions)) {
      throw new Error('not a store snapshot (version 1)');
    }
    const now = this.now();
    let skipped = 0;
    for (const raw of data.retained) {
      const entry = toEntry(raw);
      if (entry && entry.message.payload.length > 0) this.retained.set(entry.message.topic, entry);
      else skipped++;
    }
    for (const raw of data.sessions) {
      const session = toSession(raw, now);
      if (!session) {
        skipped++;
        continue;
      }
      this.sessions.set(session.clientId, session);
      this.index(session);
      if (session.generation >= this.nextGeneration) this.nextGeneration = session.generation + 1;
    }
    return skipped;
  }

  private hasExpired(session: Session, now: number): boolean {
    if (session.online || session.offlineSince === null || session.expirySeconds >= NEVER) return false;
    return now - session.offlineSince >= session.expirySeconds * 1000;
  }

  private enqueue(session: Session, entries: Entry[], first: boolean): void {
    session.queue = first ? [...entries, ...session.queue] : (session.queue.push(...entries), session.queue);
    const excess = session.queue.length - this.limits.maxQueuedPerSession;
    if (excess > 0) {
      session.queue.splice(0, excess);
      if (session.dropped === 0) log.warn(`session ${session.clientId}: queue full (${this.limits.maxQueuedPerSession}), dropping its oldest messages`);
      session.dropped += excess;
    }
  }

  private dropSession(session: Session): void {
    this.unindex(session);
    this.sessions.delete(session.clientId);
  }

  private index(session: Session): void {
    if (session.indexed) return;
    for (const sub of session.subscriptions.values()) this.offline.add(sub.filter, session.clientId, sub);
    session.indexed = true;
  }

  private unindex(session: Session): void {
    if (!session.indexed) return;
    for (const filter of session.subscriptions.keys()) this.offline.remove(filter, session.clientId);
    session.indexed = false;
  }
}

/** The file's contents (Buffers as `{ "$b64": … }`). */
export interface Snapshot {
  version: 1;
  savedAt: string;
  retained: Array<{ message: StoredMessage; at: number }>;
  sessions: SessionSnapshot[];
}

/** One persistent session in a {@link Snapshot}. */
export interface SessionSnapshot {
  clientId: string;
  expirySeconds: number;
  offlineSince: number | null;
  generation: number;
  subscriptions: StoredSubscription[];
  queue: Array<{ message: StoredMessage; at: number }>;
  dropped: number;
  /** Absent in files written before it was kept: nothing in flight. */
  inflight?: StoredInflight[];
  awaitingRelease?: number[];
}

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isQos = (value: unknown): value is 0 | 1 | 2 => value === 0 || value === 1 || value === 2;

/** A message from JSON (or a request), or null if it is not one. */
export function toMessage(value: unknown): StoredMessage | null {
  if (!isRecord(value) || typeof value.topic !== 'string' || value.topic === '' || !Buffer.isBuffer(value.payload) || !isQos(value.qos)) return null;
  const message: StoredMessage = { topic: value.topic, payload: value.payload, qos: value.qos };
  if (typeof value.retain === 'boolean') message.retain = value.retain;
  const properties = pickProperties(value.properties);
  if (properties) message.properties = properties;
  return message;
}

/**
 * An in-flight message from JSON (or a request), or null if it is not one (QoS 0 is never in
 * flight). A message without a packet id counts as never sent: it goes out fresh.
 */
export function toInflight(value: unknown): StoredInflight | null {
  const message = toMessage(value);
  if (!message || message.qos === 0) return null;
  const v = value as Record<string, unknown>;
  return { ...message, qos: message.qos, retain: message.retain === true, packetId: isPacketId(v.packetId) ? v.packetId : 0, released: v.released === true };
}

/** The message without its delivery state (to queue it for a fresh delivery). */
function plainMessage(m: StoredInflight): StoredMessage {
  const { packetId: _id, released: _released, ...message } = m;
  return message;
}

const isPacketId = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value > 0 && value <= 0xffff;

/** Valid packet ids (1–65535), each once. */
export function packetIds(values: readonly unknown[]): number[] {
  return [...new Set(values.filter(isPacketId))];
}

/** A subscription from JSON (or a request), or null if it is not one. */
export function toSubscription(value: unknown): StoredSubscription | null {
  if (!isRecord(value) || typeof value.filter !== 'string' || value.filter === '' || !isQos(value.qos)) return null;
  const sub: StoredSubscription = { filter: value.filter, qos: value.qos };
  if (typeof value.noLocal === 'boolean') sub.noLocal = value.noLocal;
  if (typeof value.retainAsPublished === 'boolean') sub.retainAsPublished = value.retainAsPublished;
  if (typeof value.subscriptionId === 'number' && Number.isInteger(value.subscriptionId)) sub.subscriptionId = value.subscriptionId;
  return sub;
}

function toEntry(value: unknown): Entry | null {
  if (!isRecord(value) || typeof value.at !== 'number') return null;
  const message = toMessage(value.message);
  return message ? { message, at: value.at } : null;
}

function toSession(value: unknown, now: number): Session | null {
  if (!isRecord(value) || typeof value.clientId !== 'string' || typeof value.expirySeconds !== 'number' || value.expirySeconds <= 0) return null;
  if (!Array.isArray(value.subscriptions) || !Array.isArray(value.queue)) return null;
  const subscriptions = new Map<string, StoredSubscription>();
  for (const raw of value.subscriptions) {
    const sub = toSubscription(raw);
    if (sub) subscriptions.set(sub.filter, sub);
  }
  return {
    clientId: value.clientId,
    expirySeconds: value.expirySeconds,
    online: false,
    indexed: false,
    offlineSince: typeof value.offlineSince === 'number' ? value.offlineSince : now,
    generation: typeof value.generation === 'number' ? value.generation : 0,
    subscriptions,
    queue: value.queue.map(toEntry).filter((e): e is Entry => e !== null),
    dropped: typeof value.dropped === 'number' ? value.dropped : 0,
    inflight: Array.isArray(value.inflight) ? value.inflight.map((m) => toInflight(m)).filter((m): m is StoredInflight => m !== null) : [],
    awaitingRelease: Array.isArray(value.awaitingRelease) ? packetIds(value.awaitingRelease) : [],
  };
}

/** JSON with Buffers as `{ "$b64": "<base64>" }`: the store's wire format and file format. */
export function encodeJson(value: unknown, space?: number): string {
  return JSON.stringify(
    value,
    function (this: Record<string, unknown>, key: string, v: unknown) {
      // Buffer#toJSON has already run on `v`; the holder still has the Buffer itself.
      const original = this[key];
      return Buffer.isBuffer(original) ? { $b64: original.toString('base64') } : v;
    },
    space,
  );
}

/** Parses {@link encodeJson} output back, Buffers included. */
export function decodeJson(text: string): unknown {
  return JSON.parse(text, (_key, v: unknown) => {
    if (isRecord(v) && typeof v.$b64 === 'string' && Object.keys(v).length === 1) return Buffer.from(v.$b64, 'base64');
    return v;
  });
}

/**
 * The state's file: loaded once at start, then rewritten whole (temp file + rename, so a crash
 * mid-write leaves the previous version) at most every `delayMs` while changes come in, and at stop.
 */
export class StoreFile {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  private dirty = false;
  private lastWriteMs = 0;
  private failing = false;

  constructor(
    readonly file: string,
    private readonly state: StoreState,
    private readonly delayMs = 50,
  ) {
    state.onChange = () => this.schedule();
  }

  /**
   * Reads the file into the state. A missing file is an empty store; an unreadable or corrupt one
   * is renamed aside (`store.json.corrupt-<time>`) with a log line and the store starts empty.
   */
  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      return this.setAside(error);
    }
    try {
      const skipped = this.state.restore(decodeJson(text));
      if (skipped > 0) log.warn(`${this.file}: ${skipped} malformed entries skipped`);
      const stats = this.state.stats();
      log.info(`store loaded from ${this.file}`, { retained: stats.retained, sessions: stats.sessions, queued: stats.queued });
    } catch (error) {
      await this.setAside(error);
    }
  }

  /** Saves soon: at most `delayMs` after the first unsaved change (longer if writes are slow). */
  schedule(): void {
    this.dirty = true;
    if (this.timer || this.writing) return;
    // A big state takes a while to write: wait a few write-times so saving stays a small share.
    // After a failed write (disk full, permissions), retry every second rather than every change.
    const delay = this.failing ? 1000 : Math.max(this.delayMs, this.lastWriteMs * 4);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, delay);
  }

  /** Writes now if anything changed (and waits for a write under way). Never rejects: failures are logged. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.dirty) return;
    this.dirty = false;
    this.writing = this.write().finally(() => {
      this.writing = null;
      if (this.dirty) this.schedule();
    });
    await this.writing;
  }

  private async write(): Promise<void> {
    const started = Date.now();
    const temp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await mkdir(path.dirname(this.file), { recursive: true });
      await writeFile(temp, encodeJson(this.state.snapshot()), { mode: 0o600 });
      await rename(temp, this.file);
      if (this.failing) log.info(`store saved to ${this.file} again`);
      this.failing = false;
    } catch (error) {
      this.dirty = true;
      if (!this.failing) log.error(`could not save the store to ${this.file}: ${(error as Error).message}; retrying every second`);
      this.failing = true;
      await unlink(temp).catch(() => {});
    }
    this.lastWriteMs = Date.now() - started;
  }

  private async setAside(error: unknown): Promise<void> {
    const aside = `${this.file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    try {
      await rename(this.file, aside);
      log.error(`${this.file} could not be read (${(error as Error).message}); moved to ${aside}, starting with an empty store`);
    } catch (renameError) {
      log.error(`${this.file} could not be read (${(error as Error).message}) nor moved aside (${(renameError as Error).message}); starting with an empty store`);
    }
  }
}

/**
 * The store's model, in memory: retained messages and persistent sessions (subscriptions, the
 * QoS 1/2 messages queued while the device is away, the delivery state its last connection left
 * in flight, and a last will waiting out its MQTT 5 will delay), and its file, `<dataDir>/store.json`.
 * Pure apart from {@link StoreFile}: the store process (server.ts) drives it, tests use it directly.
 *
 * What a connecting client is handed (queue, in-flight state) stays in the store until the handler
 * confirms it delivered it ({@link StoreState.ackSession}): a reply that never arrives loses nothing.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { log, TopicTree } from 'gatewayworker';

/**
 * MQTT 5 properties a stored message keeps (the ones a publish carries on to subscribers). A type,
 * not an interface, so it passes where the runtime takes any `Record<string, unknown>`.
 */
export type MessageProperties = {
  payloadFormatIndicator?: boolean;
  /** Seconds the message lives; counted down while it waits in the store. */
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: Record<string, string | string[]>;
  /**
   * In-flight messages only: the subscription identifiers they were first sent with, so that the
   * resend with DUP is the same PUBLISH. Queued and retained messages get theirs at delivery.
   */
  subscriptionIdentifier?: number | number[];
};

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
   * for `Gateway.restoreMqttSession`, before anything else is delivered. Stays in the store
   * until {@link StoreState.ackSession}.
   */
  inflight: StoredInflight[];
  /** Packet ids of the client's own QoS 2 PUBLISHes still awaiting its PUBREL (for `restoreMqttSession`). */
  awaitingRelease: number[];
  /** QoS ≥ 1 messages kept while the device was away, oldest first, to deliver fresh; queued until {@link StoreState.ackSession}. */
  queued: StoredMessage[];
  /** Queued or in-flight messages dropped since the last acknowledged connection (a cap was reached). */
  dropped: number;
  /**
   * Number of this connection of the session, unique and growing: the latest wins. Pass it to
   * resumeSession, ackSession and closeSession, which leave a newer connection's session alone.
   */
  generation: number;
  /**
   * The connection (`owner` of its openSession) that had the session online until this open
   * superseded it: it lost, close it. Absent when the session was offline or new.
   */
  replaced?: string;
}

/** Options of {@link StoreState.openSession}. */
export interface OpenOptions {
  /** Drop any old session first (MQTT clean session / clean start). */
  clean: boolean;
  /** Seconds the session outlives the connection; 0: it ends with it. */
  expirySeconds: number;
  /** 'later': keep queueing publishes until {@link StoreState.resumeSession}. Default: stop now. */
  resume?: 'now' | 'later';
  /** Who opens it (the gateway client id of the connection): reported as `replaced` to the next opener. */
  owner?: string;
}

/** What {@link StoreState.resumeSession} gives back. */
export interface ResumedSession {
  /** False: a newer connection opened the session meanwhile (or it ended); this one lost and must close. */
  current: boolean;
  /** Queued since openSession, oldest first; like `queued`, kept until {@link StoreState.ackSession}. */
  queued: StoredMessage[];
}

/** A last will waiting out its will delay, as {@link StoreState.takeDueWills} hands it out. */
export interface DueWill {
  /** The session key it belongs to. */
  clientId: string;
  message: StoredMessage;
}

/** What became of a will given to {@link StoreState.delayWill}. */
export type WillOutcome =
  /** Kept; published by whoever calls takeDueWills once the delay (or the session) is over. */
  | 'kept'
  /** A newer connection of the session came first: the will must not be published. */
  | 'reconnected'
  /** The session is gone already: publish the will now. */
  | 'ended';

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
  /**
   * Bytes (payload and topic) one session keeps, queued and in-flight messages together; past
   * it the oldest queued messages go first, then the oldest unreleased in-flight ones. Default:
   * no limit.
   */
  maxQueuedBytesPerSession?: number;
  /**
   * Persistent sessions one device keeps (its keys `<deviceId>:…`; anonymous clients share one
   * count): past it, opening another ends the device's longest-offline ones. Default: no limit.
   */
  maxSessionsPerDevice?: number;
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
  /** The device part of the key (see {@link deviceOf}). */
  device: string;
  /** 0: ends with the connection (nothing kept). */
  expirySeconds: number;
  online: boolean;
  /** The connection that opened it (OpenOptions.owner), while online. */
  owner: string | null;
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
  /** Delivery state the last connection left (MQTT §4.4), kept apart from the queue. */
  inflight: StoredInflight[];
  awaitingRelease: number[];
  /** Bytes of `queue` and `inflight` (see {@link sizeOf}). */
  bytes: number;
  /** What the current connection was handed and has not acknowledged yet. */
  handout: Handout | null;
}

/** What openSession and resumeSession handed to one connection, deleted by ackSession. */
interface Handout {
  generation: number;
  /** Queue entries handed out; they stay queued until acknowledged. */
  entries: Set<Entry>;
  /** The in-flight state handed out (these very arrays: a close replaces them). */
  inflight: StoredInflight[];
  awaitingRelease: number[];
}

/** A will waiting out its delay. */
interface PendingWill {
  message: StoredMessage;
  /** When it is due (ms): the will delay or the session's end, whichever comes first. */
  dueAt: number;
}

/** The device a session key belongs to: what comes before the first `:` (device ids never hold one). */
export function deviceOf(clientId: string): string {
  const at = clientId.indexOf(':');
  return at === -1 ? clientId : clientId.slice(0, at);
}

/** What a message costs a session's byte cap: its payload and topic. */
export function sizeOf(message: StoredMessage): number {
  return message.payload.length + Buffer.byteLength(message.topic);
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

/**
 * Keeps only the properties a stored message may carry: not topic aliases, and subscription ids
 * only with `withSubscriptionIds` (an in-flight message keeps the ones it was sent with).
 */
export function pickProperties(properties: unknown, withSubscriptionIds = false): MessageProperties | undefined {
  if (typeof properties !== 'object' || properties === null) return undefined;
  const p = properties as Record<string, unknown>;
  const out: MessageProperties = {};
  if (withSubscriptionIds && isSubscriptionIds(p.subscriptionIdentifier)) out.subscriptionIdentifier = p.subscriptionIdentifier;
  if (typeof p.payloadFormatIndicator === 'boolean') out.payloadFormatIndicator = p.payloadFormatIndicator;
  if (typeof p.messageExpiryInterval === 'number' && p.messageExpiryInterval >= 0) out.messageExpiryInterval = p.messageExpiryInterval;
  if (typeof p.contentType === 'string') out.contentType = p.contentType;
  if (typeof p.responseTopic === 'string') out.responseTopic = p.responseTopic;
  if (Buffer.isBuffer(p.correlationData)) out.correlationData = p.correlationData;
  if (isUserProperties(p.userProperties)) out.userProperties = p.userProperties;
  return Object.keys(out).length > 0 ? out : undefined;
}

const isSubscriptionId = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 268_435_455;

function isSubscriptionIds(value: unknown): value is number | number[] {
  return isSubscriptionId(value) || (Array.isArray(value) && value.length > 0 && value.every(isSubscriptionId));
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
  /** Sessions by device (see {@link deviceOf}), for {@link StoreLimits.maxSessionsPerDevice}. */
  private readonly byDevice = new Map<string, Set<Session>>();
  /** Subscriptions of offline sessions only: who a publish is queued for. */
  private readonly offline = new TopicTree<StoredSubscription>();
  /** Wills waiting out their delay, by session key (kept apart: a will outlives its session). */
  private readonly wills = new Map<string, PendingWill>();
  private readonly now: () => number;
  private readonly maxBytes: number;
  /**
   * Generations are unique across sessions and restarts, not counted per session: a session
   * dropped and made again (clean start) must not reuse the number a late close still carries.
   * Starting from the clock (µs) keeps them growing across a restart that loses unsaved sessions.
   */
  private nextGeneration: number;

  constructor(private readonly limits: StoreLimits) {
    this.now = limits.now ?? Date.now;
    this.maxBytes = limits.maxQueuedBytesPerSession ?? Infinity;
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
   * persistent (kept that long after the connection ends; 0xFFFFFFFF: for ever). A will still
   * waiting out its delay is cancelled, or, when `clean` ends the old session, due at once.
   *
   * What is handed out (`queued`, `inflight`, `awaitingRelease`) stays in the store until
   * {@link ackSession} with the returned generation: if this answer is lost, or the connection
   * fails before it delivered them, the next connection gets them again.
   *
   * With `resume: 'later'` publishes keep being queued for the session until
   * {@link resumeSession}: call that once its subscriptions are live on the gateway again, so a
   * publish in between is not lost (it may arrive twice instead).
   */
  openSession(clientId: string, opts: OpenOptions): OpenedSession {
    const now = this.now();
    let session = this.sessions.get(clientId);
    const replaced = session?.online && session.owner !== null && session.owner !== opts.owner ? session.owner : undefined;
    const will = this.wills.get(clientId);
    // MQTT 5 §3.1.3.2.2: back before the delay is over, no will; a due one goes out regardless.
    if (will && will.dueAt > now && !opts.clean) this.wills.delete(clientId);
    if (session && (opts.clean || this.hasExpired(session, now))) {
      this.dropSession(session);
      session = undefined;
    }
    const present = session !== undefined;
    if (!session) session = this.createSession(clientId);
    if (opts.resume === 'later') this.index(session);
    else this.unindex(session);
    session.online = true;
    session.owner = opts.owner ?? null;
    session.offlineSince = null;
    session.expirySeconds = Math.max(0, opts.expirySeconds);
    session.generation = this.nextGeneration++;
    if (session.expirySeconds > 0) this.limitDevice(session);
    const queued = session.queue.map((entry) => deliverable(entry, now)).filter((m): m is StoredMessage => m !== null);
    const { dropped, inflight, awaitingRelease } = session;
    if (dropped > 0) log.warn(`session ${clientId}: ${dropped} messages were dropped while it was away (a cap was reached)`);
    session.handout = { generation: session.generation, entries: new Set(session.queue), inflight, awaitingRelease };
    if (present || session.expirySeconds > 0) this.onChange();
    return {
      present,
      subscriptions: [...session.subscriptions.values()],
      inflight: [...inflight],
      awaitingRelease: [...awaitingRelease],
      queued,
      dropped,
      generation: session.generation,
      ...(replaced !== undefined ? { replaced } : {}),
    };
  }

  /**
   * Ends the resuming phase of `openSession(…, { resume: 'later' })`: publishes are no longer
   * queued for the session. Returns what was queued since openSession (oldest first), kept like
   * the rest until {@link ackSession}. `current` false: `generation` is no longer the session's (a
   * newer connection opened it, or it ended), and nothing changed.
   */
  resumeSession(clientId: string, generation: number): ResumedSession {
    const session = this.sessions.get(clientId);
    if (!session || !session.online || session.generation !== generation) return { current: false, queued: [] };
    this.unindex(session);
    const handout = (session.handout ??= { generation, entries: new Set(), inflight: session.inflight, awaitingRelease: session.awaitingRelease });
    const now = this.now();
    const queued: StoredMessage[] = [];
    for (const entry of session.queue) {
      if (handout.entries.has(entry)) continue;
      handout.entries.add(entry);
      const message = deliverable(entry, now);
      if (message) queued.push(message);
    }
    return { current: true, queued };
  }

  /**
   * The connection of `generation` delivered what openSession and resumeSession handed it: it
   * leaves the store now. A stale generation changes nothing.
   */
  ackSession(clientId: string, generation: number): void {
    const session = this.sessions.get(clientId);
    const handout = session?.handout;
    if (!session || !handout || handout.generation !== generation) return;
    session.handout = null;
    let changed = session.dropped > 0;
    session.dropped = 0;
    if (handout.entries.size > 0) {
      session.queue = session.queue.filter((entry) => !handout.entries.has(entry));
      changed = true;
    }
    if (session.inflight === handout.inflight && session.inflight.length > 0) {
      session.inflight = [];
      changed = true;
    }
    if (session.awaitingRelease === handout.awaitingRelease && session.awaitingRelease.length > 0) {
      session.awaitingRelease = [];
      changed = true;
    }
    if (!changed) return;
    this.recount(session);
    if (session.expirySeconds > 0) this.onChange();
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
   * session ends. What it was handed and never acknowledged stays for the next connection.
   *
   * A close from an older connection than the current one (a take-over that did not wait for it)
   * leaves the session online: the current connection has restored its state already, so that
   * close's unreleased messages are queued (first) to be delivered fresh, and its released ones
   * and awaitingRelease ids, meaningless on another connection, are dropped.
   */
  closeSession(clientId: string, unacked: readonly (StoredMessage | StoredInflight)[], opts: CloseOptions = {}): void {
    const session = this.sessions.get(clientId);
    if (!session) return;
    const now = this.now();
    const inflight = unacked.map((m) => toInflight(m)).filter((m): m is StoredInflight => m !== null);
    if (opts.generation !== undefined && opts.generation !== session.generation) {
      const entries = inflight.filter((m) => !m.released).map((m) => ({ message: plainMessage(m), at: now }));
      if (session.expirySeconds > 0 && entries.length > 0) {
        this.enqueue(session, entries, true);
        this.onChange();
      }
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
    session.owner = null;
    session.handout = null;
    this.index(session);
    // Normally empty (acknowledged). Else it was handed out and never confirmed (the connection
    // failed while restoring): what the connection reports again is in `unacked`; the rest stays
    // in flight under its packet id, or, when this connection used that id for another message,
    // goes out fresh. Duplicates rather than losses.
    const used = new Set(inflight.map((m) => m.packetId).filter((id) => id > 0));
    const reported = (m: StoredInflight): boolean => inflight.some((n) => n.packetId === m.packetId && n.topic === m.topic && n.payload.equals(m.payload));
    const kept: StoredInflight[] = [];
    const fresh: Entry[] = [];
    for (const m of session.inflight) {
      if (m.released ? used.has(m.packetId) : reported(m)) continue;
      if (m.packetId === 0 || !used.has(m.packetId)) kept.push(m);
      else if (!m.released) fresh.push({ message: plainMessage(m), at: now });
    }
    // Only the PUBREL of a released message is left to send: its payload is not kept.
    session.inflight = [...kept, ...inflight.map((m) => (m.released ? { ...m, payload: Buffer.alloc(0) } : m))];
    session.awaitingRelease = packetIds(opts.awaitingRelease ?? []);
    this.recount(session);
    this.enqueue(session, fresh, true);
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

  /**
   * The connection of `generation` ended without a goodbye and its will has an MQTT 5 will delay:
   * the will waits here, due after `delaySeconds` or when the session ends, whichever comes
   * first, unless the session is opened again before. See {@link WillOutcome}.
   */
  delayWill(clientId: string, generation: number, will: StoredMessage, delaySeconds: number): WillOutcome {
    const session = this.sessions.get(clientId);
    if (!session) return 'ended';
    if (session.online || session.generation !== generation) return 'reconnected';
    const expiry = session.expirySeconds >= NEVER ? Infinity : session.expirySeconds;
    const stored: StoredMessage = { topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain === true };
    const properties = pickProperties(will.properties);
    if (properties) stored.properties = properties;
    this.wills.set(clientId, { message: stored, dueAt: (session.offlineSince ?? this.now()) + Math.min(delaySeconds, expiry) * 1000 });
    this.onChange();
    return 'kept';
  }

  /** Wills whose delay is over (or whose session ended), now out of the store: publish them. */
  takeDueWills(): DueWill[] {
    const now = this.now();
    const due: DueWill[] = [];
    for (const [clientId, will] of this.wills) {
      if (will.dueAt > now) continue;
      this.wills.delete(clientId);
      due.push({ clientId, message: will.message });
    }
    if (due.length > 0) this.onChange();
    return due;
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
    | {
        online: boolean;
        expirySeconds: number;
        subscriptions: StoredSubscription[];
        queued: StoredMessage[];
        dropped: number;
        inflight: StoredInflight[];
        awaitingRelease: number[];
        bytes: number;
        will: { message: StoredMessage; dueAt: number } | null;
      }
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
      bytes: s.bytes,
      will: this.wills.get(clientId) ?? null,
    };
  }

  /** Counts for logs and status. */
  stats(): { retained: number; sessions: number; online: number; queued: number; wills: number } {
    let online = 0;
    let queued = 0;
    for (const s of this.sessions.values()) {
      if (s.online) online++;
      queued += s.queue.length;
    }
    return { retained: this.retained.size, sessions: this.sessions.size, online, queued, wills: this.wills.size };
  }

  /** Everything worth keeping, for the file: retained messages, persistent sessions, delayed wills. */
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
    const wills = [...this.wills].map(([clientId, will]) => ({ clientId, message: will.message, dueAt: will.dueAt }));
    return { version: 1, savedAt: new Date(this.now()).toISOString(), retained: this.retained.entries(), sessions, wills };
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
      this.deviceSessions(session.device).add(session);
      this.recount(session);
      this.index(session);
      if (session.generation >= this.nextGeneration) this.nextGeneration = session.generation + 1;
    }
    // Absent in files written before wills were delayed.
    for (const raw of Array.isArray(data.wills) ? data.wills : []) {
      const message = isRecord(raw) && typeof raw.clientId === 'string' && typeof raw.dueAt === 'number' ? toMessage(raw.message) : null;
      if (message && isRecord(raw)) this.wills.set(raw.clientId as string, { message, dueAt: raw.dueAt as number });
      else skipped++;
    }
    return skipped;
  }

  private createSession(clientId: string): Session {
    const session: Session = {
      clientId,
      device: deviceOf(clientId),
      expirySeconds: 0,
      online: false,
      owner: null,
      indexed: false,
      offlineSince: null,
      generation: 0,
      subscriptions: new Map(),
      queue: [],
      dropped: 0,
      inflight: [],
      awaitingRelease: [],
      bytes: 0,
      handout: null,
    };
    this.sessions.set(clientId, session);
    this.deviceSessions(session.device).add(session);
    return session;
  }

  private deviceSessions(device: string): Set<Session> {
    let set = this.byDevice.get(device);
    if (!set) this.byDevice.set(device, (set = new Set()));
    return set;
  }

  /**
   * One device may not keep more than maxSessionsPerDevice persistent sessions (a device making
   * up client ids must not fill the store): its longest-offline ones end. Online ones stay.
   */
  private limitDevice(session: Session): void {
    const max = this.limits.maxSessionsPerDevice;
    if (max === undefined) return;
    const persistent = [...this.deviceSessions(session.device)].filter((s) => s.expirySeconds > 0);
    const excess = persistent.length - max;
    if (excess <= 0) return;
    const offline = persistent.filter((s) => !s.online).sort((a, b) => (a.offlineSince ?? 0) - (b.offlineSince ?? 0));
    for (const old of offline.slice(0, excess)) {
      log.warn(`device ${JSON.stringify(session.device)} has more than ${max} persistent sessions: ending the longest offline one`, { session: old.clientId });
      this.dropSession(old);
    }
  }

  private hasExpired(session: Session, now: number): boolean {
    if (session.online || session.offlineSince === null || session.expirySeconds >= NEVER) return false;
    return now - session.offlineSince >= session.expirySeconds * 1000;
  }

  /** Adds to the queue (`first`: before what is there), then enforces the caps. */
  private enqueue(session: Session, entries: Entry[], first: boolean): void {
    if (entries.length > 0) session.queue = first ? [...entries, ...session.queue] : (session.queue.push(...entries), session.queue);
    for (const entry of entries) session.bytes += sizeOf(entry.message);
    this.trim(session);
  }

  /**
   * Past maxQueuedPerSession messages or maxQueuedBytesPerSession bytes, the oldest queued
   * messages are dropped; past the bytes with the queue empty, the oldest unreleased in-flight
   * ones. Each is counted in `dropped` (logged once per episode, and when the device is back).
   */
  private trim(session: Session): void {
    let drop = 0;
    let bytes = session.bytes;
    while (drop < session.queue.length && (session.queue.length - drop > this.limits.maxQueuedPerSession || bytes > this.maxBytes)) {
      bytes -= sizeOf(session.queue[drop].message);
      drop++;
    }
    if (drop > 0) session.queue.splice(0, drop);
    let dropped = drop;
    while (bytes > this.maxBytes) {
      const i = session.inflight.findIndex((m) => !m.released);
      if (i === -1) break;
      bytes -= sizeOf(session.inflight[i]);
      session.inflight = session.inflight.filter((_, j) => j !== i);
      dropped++;
    }
    session.bytes = bytes;
    if (dropped === 0) return;
    if (session.dropped === 0) {
      log.warn(
        `session ${session.clientId}: over its cap (${this.limits.maxQueuedPerSession} messages, ${this.maxBytes} bytes), dropping its oldest QoS 1/2 messages`,
      );
    }
    session.dropped += dropped;
  }

  private recount(session: Session): void {
    let bytes = 0;
    for (const entry of session.queue) bytes += sizeOf(entry.message);
    for (const m of session.inflight) bytes += sizeOf(m);
    session.bytes = bytes;
  }

  /** Ends a session; a will still waiting for it is due now (MQTT 5: the session ended). */
  private dropSession(session: Session): void {
    this.unindex(session);
    this.sessions.delete(session.clientId);
    const devices = this.byDevice.get(session.device);
    devices?.delete(session);
    if (devices?.size === 0) this.byDevice.delete(session.device);
    const will = this.wills.get(session.clientId);
    if (will) will.dueAt = Math.min(will.dueAt, this.now());
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
  /** Wills waiting out their delay (absent in files written before they were kept). */
  wills?: Array<{ clientId: string; message: StoredMessage; dueAt: number }>;
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
  const inflight: StoredInflight = { ...message, qos: message.qos, retain: message.retain === true, packetId: isPacketId(v.packetId) ? v.packetId : 0, released: v.released === true };
  // Sent once already: it goes out again as it was, subscription identifiers included.
  const properties = pickProperties(v.properties, true);
  if (properties) inflight.properties = properties;
  else delete inflight.properties;
  return inflight;
}

/** The message without its delivery state (to queue it for a fresh delivery, which adds its own subscription ids). */
function plainMessage(m: StoredInflight): StoredMessage {
  const { packetId: _id, released: _released, properties, ...message } = m;
  const kept = pickProperties(properties);
  return kept ? { ...message, properties: kept } : message;
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
    device: deviceOf(value.clientId),
    expirySeconds: value.expirySeconds,
    online: false,
    owner: null,
    indexed: false,
    offlineSince: typeof value.offlineSince === 'number' ? value.offlineSince : now,
    generation: typeof value.generation === 'number' ? value.generation : 0,
    subscriptions,
    queue: value.queue.map(toEntry).filter((e): e is Entry => e !== null),
    dropped: typeof value.dropped === 'number' ? value.dropped : 0,
    inflight: Array.isArray(value.inflight) ? value.inflight.map((m) => toInflight(m)).filter((m): m is StoredInflight => m !== null) : [],
    awaitingRelease: Array.isArray(value.awaitingRelease) ? packetIds(value.awaitingRelease) : [],
    bytes: 0,
    handout: null,
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

/**
 * The MQTT hub's broker logic (templates/mqtt-hub/app/Events.ts and handlers/), rendered from the
 * template and run in this process against a model cluster: the Gateway API is a fake that keeps
 * connections, uids, groups, sessions and what was sent (installed the way a BusinessWorker
 * installs its own), and the store client talks to a StoreState in memory through the wire's JSON.
 * Events of one connection run one after another, as in a worker, and a closed connection gets
 * its close event — so the races between connections can be staged step by step.
 */
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import t, { type Test } from 'tap';
import {
  decodeMqttPacket,
  encodeMqttPacket,
  type Context,
  type GatewayApi,
  type MqttDeliveryState,
  type MqttPacket,
  type PublishOptions,
  type SubscribeOptions,
  type UnackedMessage,
} from 'gatewayworker';
import { setCurrentApi } from '../../runtime/dist/api/current.js';
import { HUB_HANDLER_FILES, renderHub } from './render.ts';

type EventsModule = typeof import('../../templates/mqtt-hub/app/Events.ts');
type ContextModule = typeof import('../../templates/mqtt-hub/app/handlers/context.ts');
type StoreModule = typeof import('../../templates/mqtt-hub/app/handlers/store.ts');
type WillModule = typeof import('../../templates/mqtt-hub/app/handlers/will.ts');
type StateModule = typeof import('../../templates/mqtt-hub/app/store/state.ts');
type CredentialsModule = typeof import('../../templates/mqtt-hub/app/credentials.ts');
type StoreState = import('../../templates/mqtt-hub/app/store/state.ts').StoreState;
type StoredMessage = import('../../templates/mqtt-hub/app/store/state.ts').StoredMessage;

const hub = renderHub(t, HUB_HANDLER_FILES);
// config.ts reads the environment once, when first imported.
process.env.DATA_DIR = path.join(hub.root, 'data');
process.env.STORE_ADDRESS = '127.0.0.1:1'; // never dialled: the store client is replaced below
process.env.GATEWAYWORKER_LOG_LEVEL ??= 'warn';
const events = await hub.load<EventsModule>('Applications/Hub/Events.ts');
const { hubSession } = await hub.load<ContextModule>('Applications/Hub/handlers/context.ts');
const { store } = await hub.load<StoreModule>('Applications/Hub/handlers/store.ts');
const { publishDueWills } = await hub.load<WillModule>('Applications/Hub/handlers/will.ts');
const { StoreState: State, encodeJson, decodeJson } = await hub.load<StateModule>('Applications/Hub/store/state.ts');
const { CredentialStore } = await hub.load<CredentialsModule>('Applications/Hub/credentials.ts');

const password = await new CredentialStore(path.join(process.env.DATA_DIR, 'devices.json')).addDevice('dev1');

// ---- the model cluster -----------------------------------------------------------------------

/** One client connection, as its gateway and its worker see it. */
interface Conn {
  id: string;
  version: 4 | 5;
  /** The gateway's copy of the session. */
  session: Record<string, unknown>;
  ctx: Context;
  uid: string | null;
  groups: Set<string>;
  open: boolean;
  /** What the hub sent it: ctx.send, and the packet a close was given. */
  sent: Buffer[];
  closeData: Buffer | null;
  /** Gateway.publish with this connection as `clientId` (retained, queued messages). */
  deliveries: Array<{ topic: string; payload: Buffer; options: PublishOptions }>;
  restored: Array<Partial<MqttDeliveryState>>;
  subscriptions: Map<string, SubscribeOptions>;
  /** What its close event carries. */
  unacked: UnackedMessage[];
  awaitingRelease: number[];
  /** Its events, one after another. */
  chain: Promise<void>;
  /** Resolves when its close event was handled. */
  closed: Promise<void>;
  markClosed: () => void;
}

type Hook = (...args: unknown[]) => unknown;

/** Gateway API and store in one model; `calls` lists every call in order (`gw.<method>`, `store.<op>`). */
class Cluster {
  readonly conns = new Map<string, Conn>();
  readonly calls: string[] = [];
  readonly published: Array<{ topic: string; payload: Buffer; options: PublishOptions }> = [];
  /** Runs at the start of a Gateway API method / store operation (may wait, may throw). */
  readonly gatewayHooks: Record<string, Hook> = {};
  readonly storeHooks: Record<string, Hook> = {};
  readonly clock = { now: Date.now() };
  readonly state: StoreState = new State({ maxQueuedPerSession: 100, maxQueuedBytesPerSession: 1 << 20, maxSessionsPerDevice: 100, maxRetained: 100, now: () => this.clock.now });

  constructor() {
    setCurrentApi(this.api() as unknown as GatewayApi);
    this.patchStore();
  }

  connection(id: string, version: 4 | 5 = 5): Conn {
    let markClosed!: () => void;
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const conn: Conn = {
      id,
      version,
      session: {},
      ctx: null as unknown as Context,
      uid: null,
      groups: new Set(),
      open: true,
      sent: [],
      closeData: null,
      deliveries: [],
      restored: [],
      subscriptions: new Map(),
      unacked: [],
      awaitingRelease: [],
      chain: Promise.resolve(),
      closed,
      markClosed,
    };
    conn.ctx = {
      clientId: id,
      session: {},
      clientIp: '127.0.0.1',
      clientPort: 50000,
      gatewayAddress: '127.0.0.1:2900',
      get unacked() {
        return conn.unacked;
      },
      get awaitingRelease() {
        return conn.awaitingRelease;
      },
      send: async (message) => {
        conn.sent.push(Buffer.from(message as Buffer));
      },
      close: (message) => this.closeClient(id, message as Buffer | undefined),
    };
    this.conns.set(id, conn);
    return conn;
  }

  /** One event of `conn`, after those before it; the session goes in and back as the runtime carries it. */
  event(conn: Conn, run: () => Promise<void>): Promise<void> {
    conn.chain = conn.chain.then(async () => {
      conn.ctx.session = structuredClone(conn.session);
      await run();
      Object.assign(conn.session, conn.ctx.session);
    });
    return conn.chain;
  }

  /** A packet from the client. */
  packet(conn: Conn, packet: MqttPacket.Packet): Promise<void> {
    return this.event(conn, () => events.onMessage(conn.id, encodeMqttPacket(packet, conn.version), conn.ctx));
  }

  /** The connection ends (network gone, or closed by the hub): its close event follows its other events. */
  drop(conn: Conn): Promise<void> {
    if (conn.open) {
      conn.open = false;
      conn.uid = null;
      conn.groups.clear();
      void this.event(conn, () => events.onClose(conn.id, conn.ctx)).then(conn.markClosed);
    }
    return conn.closed;
  }

  /** Packets the hub sent to `conn`, decoded (the one it was closed with last). */
  packets(conn: Conn): MqttPacket.Packet[] {
    return [...conn.sent, ...(conn.closeData ? [conn.closeData] : [])].map((bytes) => decodeMqttPacket(bytes, conn.version));
  }

  private async closeClient(id: string, message?: Buffer): Promise<void> {
    const conn = this.conns.get(id);
    if (!conn?.open) return;
    if (message) conn.closeData = Buffer.from(message);
    void this.drop(conn);
  }

  private api(): Record<string, Hook> {
    const open = (id: unknown): Conn | undefined => {
      const conn = this.conns.get(id as string);
      return conn?.open ? conn : undefined;
    };
    const methods: Record<string, Hook> = {
      bindUid: (id, uid) => void (open(id) && (open(id)!.uid = uid as string)),
      joinGroup: (id, group) => void open(id)?.groups.add(group as string),
      getClientIdByUid: (uid) => [...this.conns.values()].filter((c) => c.open && c.uid === uid).map((c) => c.id),
      getClientIdCountByGroup: (group) => [...this.conns.values()].filter((c) => c.open && c.groups.has(group as string)).length,
      getSession: (id) => (open(id) ? structuredClone(open(id)!.session) : null),
      updateSession: (id, patch) => {
        const conn = open(id);
        if (!conn) return;
        for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
          const old = conn.session[key];
          conn.session[key] = isObject(old) && isObject(value) ? { ...old, ...value } : value;
        }
      },
      closeClient: (id, message) => this.closeClient(id as string, message as Buffer | undefined),
      restoreMqttSession: (id, state) => void open(id)?.restored.push(state as Partial<MqttDeliveryState>),
      subscribe: (id, filter, options) => void open(id)?.subscriptions.set(filter as string, options as SubscribeOptions),
      unsubscribe: (id, filter) => void open(id)?.subscriptions.delete(filter as string),
      publish: (topic, payload, options) => {
        const entry = { topic: topic as string, payload: Buffer.from(payload as Buffer), options: (options ?? {}) as PublishOptions };
        this.published.push(entry);
        if (entry.options.clientId !== undefined) open(entry.options.clientId)?.deliveries.push(entry);
      },
    };
    return Object.fromEntries(
      Object.entries(methods).map(([name, method]) => [
        name,
        async (...args: unknown[]) => {
          this.calls.push(`gw.${name}`);
          await this.gatewayHooks[name]?.(...args);
          return method(...args);
        },
      ]),
    );
  }

  /** The worker's store client, answered by `state` through the wire's JSON (Buffers as base64). */
  private patchStore(): void {
    const client = store() as unknown as Record<string, Hook>;
    const wire = <T>(value: T): T => decodeJson(encodeJson(value)) as T;
    const state = this.state as unknown as Record<string, Hook>;
    for (const op of ['setRetained', 'retainedFor', 'openSession', 'resumeSession', 'ackSession', 'addSubscriptions', 'removeSubscriptions', 'closeSession', 'queueForOffline', 'delayWill', 'takeDueWills', 'stats']) {
      client[op] = async (...args: unknown[]) => {
        this.calls.push(`store.${op}`);
        await this.storeHooks[op]?.(...args);
        return wire(state[op].apply(this.state, wire(args)) ?? null);
      };
    }
  }
}

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);

/** A CONNECT of device dev1. */
function connectPacket(conn: Conn, clientId: string, opts: { clean?: boolean; expiry?: number; will?: MqttPacket.IConnectPacket['will'] } = {}): MqttPacket.IConnectPacket {
  return {
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: conn.version,
    clean: opts.clean ?? false,
    keepalive: 60,
    clientId,
    username: 'dev1',
    password: Buffer.from(password),
    ...(conn.version === 5 ? { properties: { sessionExpiryInterval: opts.expiry ?? 300 } } : {}),
    ...(opts.will ? { will: opts.will } : {}),
  };
}

/** Connects `conn` (the whole CONNECT handled) and returns its CONNACK. */
async function connect(cluster: Cluster, conn: Conn, clientId: string, opts: Parameters<typeof connectPacket>[2] = {}): Promise<MqttPacket.IConnackPacket> {
  await cluster.packet(conn, connectPacket(conn, clientId, opts));
  const connack = cluster.packets(conn).find((p) => p.cmd === 'connack');
  if (!connack) throw new Error(`no CONNACK for ${conn.id}`);
  return connack as MqttPacket.IConnackPacket;
}

function subscribe(cluster: Cluster, conn: Conn, filter: string, subscriptionIdentifier?: number): Promise<void> {
  return cluster.packet(conn, {
    cmd: 'subscribe',
    messageId: 1,
    subscriptions: [{ topic: filter, qos: 1 }],
    ...(subscriptionIdentifier !== undefined ? { properties: { subscriptionIdentifier } } : {}),
  });
}

const msg = (topic: string, payload: string, qos: 0 | 1 | 2 = 1): StoredMessage => ({ topic, payload: Buffer.from(payload), qos });
const payloads = (list: Array<{ payload: Buffer }>): string[] => list.map((m) => m.payload.toString());

/** A promise and its resolve, to hold a hook until the test lets it go on. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

async function until(t: Test, what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  t.ok(check(), what);
}

// ---- the tests -------------------------------------------------------------------------------

t.test('close: the session is offline in the store before anything else is awaited (finding 5)', async (t) => {
  const cluster = new Cluster();
  const a = cluster.connection('gw-a', 4);
  await connect(cluster, a, 'sensor', { clean: false });
  await subscribe(cluster, a, 'devices/dev1/cmd');
  let queuedMeanwhile = -1;
  cluster.gatewayHooks.getClientIdByUid = () => {
    // A publish while the close asks the gateways about the session key.
    queuedMeanwhile = cluster.state.queueForOffline(msg('devices/dev1/cmd', 'meanwhile'));
  };
  cluster.calls.length = 0;
  await cluster.drop(a);
  t.ok(cluster.calls.indexOf('store.closeSession') !== -1 && cluster.calls.indexOf('store.closeSession') < cluster.calls.indexOf('gw.getClientIdByUid'), `closeSession first: ${cluster.calls.join(' ')}`);
  t.equal(queuedMeanwhile, 1, 'a publish meanwhile is queued for the offline session, not lost');
  t.same(payloads(cluster.state.inspect('dev1:sensor')!.queued), ['meanwhile']);
});

t.test('close: unacknowledged messages go to the store with their properties (finding 11)', async (t) => {
  const cluster = new Cluster();
  const a = cluster.connection('gw-a', 5);
  await connect(cluster, a, 'props');
  const properties = { contentType: 'application/json', correlationData: Buffer.from([7, 8]), userProperties: { trace: 'x1' }, responseTopic: 'devices/dev1/reply', subscriptionIdentifier: 4 };
  a.unacked = [{ topic: 'devices/dev1/cmd', payload: Buffer.from('{}'), qos: 1, retain: false, packetId: 12, released: false, properties }];
  await cluster.drop(a);
  t.same(cluster.state.inspect('dev1:props')!.inflight[0].properties, properties, 'kept in the store as sent');

  const b = cluster.connection('gw-b', 5);
  await connect(cluster, b, 'props');
  const [restored] = b.restored.filter((r) => r.unacked);
  t.same(restored.unacked?.map((m) => [m.packetId, m.properties]), [[12, properties]], 'and restored with them: the resend is the same PUBLISH');
});

t.test('restoring fails: the connection is closed and nothing is lost (findings 7, 12)', async (t) => {
  const cluster = new Cluster();
  const a = cluster.connection('gw-a', 5);
  await connect(cluster, a, 'fragile');
  await subscribe(cluster, a, 'devices/dev1/cmd');
  await cluster.drop(a);
  cluster.state.queueForOffline(msg('devices/dev1/cmd', 'one'));
  cluster.state.queueForOffline(msg('devices/dev1/cmd', 'two'));

  cluster.gatewayHooks.subscribe = () => {
    throw new Error('gateway link down');
  };
  const b = cluster.connection('gw-b', 5);
  const connack = await connect(cluster, b, 'fragile');
  t.equal(connack.sessionPresent, true);
  await until(t, 'the connection is closed, not left half restored', () => !b.open);
  if (b.open) return;
  await b.closed;
  t.match(b.closeData && decodeMqttPacket(b.closeData, 5), { cmd: 'disconnect', reasonCode: 0x80 }, 'with DISCONNECT 0x80');
  const view = cluster.state.inspect('dev1:fragile')!;
  t.equal(view.online, false, 'its close handed the session back (not stuck online)');
  t.same(payloads(view.queued), ['one', 'two'], 'the queued messages are still in the store');

  delete cluster.gatewayHooks.subscribe;
  const c = cluster.connection('gw-c', 5);
  await connect(cluster, c, 'fragile');
  t.same(payloads(c.deliveries), ['one', 'two'], 'the next connection gets them');
  t.same(cluster.state.inspect('dev1:fragile')!.queued, [], 'and acknowledges them');
});

t.test('the answer to openSession is lost: nothing handed out is lost (finding 7)', async (t) => {
  const cluster = new Cluster();
  const a = cluster.connection('gw-a', 5);
  await connect(cluster, a, 'lossy');
  await subscribe(cluster, a, 'devices/dev1/cmd');
  await cluster.drop(a);
  cluster.state.queueForOffline(msg('devices/dev1/cmd', 'kept'));
  // The store applies the call; the answer never arrives (link dropped, frame too big, timeout).
  const real = (store() as unknown as Record<string, Hook>).openSession;
  (store() as unknown as Record<string, Hook>).openSession = async (...args: unknown[]) => {
    await real(...args);
    throw new Error('store openSession at 127.0.0.1:1: connection lost before the answer');
  };
  const b = cluster.connection('gw-b', 5);
  const refused = await connect(cluster, b, 'lossy');
  t.equal(refused.reasonCode, 0x88, 'CONNECT refused: server unavailable');
  (store() as unknown as Record<string, Hook>).openSession = real;
  await cluster.drop(b);
  const c = cluster.connection('gw-c', 5);
  await connect(cluster, c, 'lossy');
  t.same(payloads(c.deliveries), ['kept'], 'the reconnect gets the message');
});

t.test('two connections of one session at once: the later store generation wins (finding 9)', async (t) => {
  const cluster = new Cluster();
  // Ids ordered so that a tie-break by client id would leave the first one alone.
  const a = cluster.connection('gw-2', 5);
  const b = cluster.connection('gw-1', 5);
  const held = gate();
  const reached = gate();
  cluster.storeHooks.resumeSession = async () => {
    if (b.sent.length > 0) return;
    reached.open();
    await held.wait; // a's CONNECT stops between opening and resuming its session
  };
  const will = { topic: 'devices/dev1/will', payload: Buffer.from('a died'), qos: 1 as const, retain: false };
  const first = cluster.packet(a, connectPacket(a, 'twin', { will }));
  await reached.wait;
  t.ok(cluster.packets(a).some((p) => p.cmd === 'connack'), 'a got its CONNACK and is restoring its session');

  await connect(cluster, b, 'twin');
  await until(t, 'a, whose generation is older, is closed', () => !a.open);
  t.match(decodeMqttPacket(a.closeData!, 5), { cmd: 'disconnect', reasonCode: 0x8e }, 'with DISCONNECT 0x8E (session taken over)');
  held.open();
  await first;
  await a.closed;
  t.equal(b.open, true, 'b, the later one, stays');
  const view = cluster.state.inspect('dev1:twin')!;
  t.equal(view.online, true, "the loser's close left the winner's session online");
  t.equal(hubSession(b.ctx).generation !== undefined && hubSession(b.ctx).generation! > (hubSession(a.ctx).generation ?? 0), true, 'b holds the later generation');
  t.notOk(cluster.published.some((p) => p.topic === 'devices/dev1/will'), 'the loser publishes no will');
  t.notOk(cluster.published.some((p) => p.topic === 'devices/dev1/online' && p.payload.toString() === '0'), 'and no presence 0');
});

t.test('a loser that finds out first closes itself (finding 9)', async (t) => {
  const cluster = new Cluster();
  const a = cluster.connection('gw-a', 4);
  const b = cluster.connection('gw-b', 4);
  const held = gate();
  const reached = gate();
  let calls = 0;
  cluster.storeHooks.resumeSession = async () => {
    if (calls++ === 0) {
      reached.open();
      await held.wait;
    }
  };
  // b's close of a does not get through (a gateway hiccup): a must still find out.
  cluster.gatewayHooks.updateSession = (id, patch) => {
    if (id === 'gw-a' && isObject(patch) && 'takenOverBy' in patch) throw new Error('gateway unreachable');
  };
  const first = cluster.packet(a, connectPacket(a, 'twin4', { clean: false }));
  await reached.wait;
  await connect(cluster, b, 'twin4', { clean: false });
  t.equal(a.open, true, 'b could not close a');
  held.open();
  await first;
  await a.closed;
  t.equal(a.open, false, 'a found its generation superseded at resume and closed itself');
  t.equal(hubSession(a.ctx).superseded, true);
  t.equal(b.open, true, 'b stays');
  t.equal(cluster.state.inspect('dev1:twin4')!.online, true);
});

t.test('take-over of an established connection: its in-flight state moves over', async (t) => {
  const cluster = new Cluster();
  const a = cluster.connection('gw-a', 5);
  await connect(cluster, a, 'moving');
  a.unacked = [{ topic: 'devices/dev1/x', payload: Buffer.from('pending'), qos: 2, retain: false, packetId: 33, released: false }];
  a.awaitingRelease = [5];
  const b = cluster.connection('gw-b', 5);
  await connect(cluster, b, 'moving');
  t.equal(a.open, false, 'the old connection is closed');
  t.same(
    b.restored.flatMap((r) => r.unacked ?? []).map((m) => [m.payload.toString(), m.packetId]),
    [['pending', 33]],
    'the new one resends its unacknowledged message under the same packet id',
  );
  t.same(b.restored.flatMap((r) => r.awaitingRelease ?? []), [5]);
  t.ok(b.restored.length > 0 && cluster.state.inspect('dev1:moving')!.inflight.length === 0, 'then the store forgets it (acknowledged)');
});

t.test('subscription identifiers on retained and queued messages (finding 10)', async (t) => {
  const cluster = new Cluster();
  cluster.state.setRetained({ ...msg('devices/dev1/state', 'on'), retain: true });
  const a = cluster.connection('gw-a', 5);
  await connect(cluster, a, 'ids');
  await subscribe(cluster, a, 'devices/dev1/+', 42);
  const retained = a.deliveries.find((d) => d.topic === 'devices/dev1/state');
  t.match(retained, { options: { retain: true, properties: { subscriptionIdentifier: 42 } } }, 'a retained message sent at SUBSCRIBE carries its subscription identifier');
  await subscribe(cluster, a, 'devices/dev1/#', 43);
  await cluster.drop(a);
  cluster.state.queueForOffline(msg('devices/dev1/cmd', 'while away'));
  cluster.state.queueForOffline(msg('devices/dev1/a/b', 'deeper'));

  const b = cluster.connection('gw-b', 5);
  await connect(cluster, b, 'ids');
  t.same(
    b.deliveries
      .filter((d) => d.topic !== 'devices/dev1/online')
      .map((d) => [d.payload.toString(), d.options.properties && (d.options.properties as { subscriptionIdentifier?: unknown }).subscriptionIdentifier]),
    [
      ['while away', [42, 43]],
      ['deeper', 43],
    ],
    'queued messages carry the identifiers of the subscriptions they match',
  );
  const plain = cluster.connection('gw-c', 5);
  await connect(cluster, plain, 'no-ids');
  await subscribe(cluster, plain, 'devices/dev1/+');
  t.ok(plain.deliveries.length > 0 && plain.deliveries.every((d) => d.options.properties === undefined), 'none without one');
});

t.test('will delay: published after the delay, not when the client is back first (finding 10)', async (t) => {
  const cluster = new Cluster();
  const will = (payload: string, delay: number): MqttPacket.IConnectPacket['will'] => ({
    topic: 'devices/dev1/status',
    payload: Buffer.from(payload),
    qos: 1,
    retain: false,
    properties: { willDelayInterval: delay },
  });
  const wills = (): string[] => cluster.published.filter((p) => p.topic === 'devices/dev1/status').map((p) => p.payload.toString());

  const a = cluster.connection('gw-a', 5);
  await connect(cluster, a, 'late', { will: will('late gone', 10) });
  await cluster.drop(a);
  t.same(wills(), [], 'not at once');
  cluster.clock.now += 9_000;
  t.equal(await publishDueWills(), 0, 'not before the delay');
  cluster.clock.now += 1_000;
  t.equal(await publishDueWills(), 1);
  t.same(wills(), ['late gone'], 'after it');

  const b = cluster.connection('gw-b', 5);
  await connect(cluster, b, 'back', { will: will('back gone', 10) });
  await cluster.drop(b);
  cluster.clock.now += 5_000;
  const b2 = cluster.connection('gw-b2', 5);
  await connect(cluster, b2, 'back');
  cluster.clock.now += 60_000;
  await publishDueWills();
  t.same(wills(), ['late gone'], 'back before the delay: no will');

  const c = cluster.connection('gw-c', 5);
  await connect(cluster, c, 'short', { will: will('short gone', 10), expiry: 0 });
  await cluster.drop(c);
  t.same(wills(), ['late gone', 'short gone'], 'a session that ends with its connection: its will at once');

  const d = cluster.connection('gw-d', 5);
  await connect(cluster, d, 'polite', { will: will('polite gone', 10) });
  await cluster.packet(d, { cmd: 'disconnect', reasonCode: 0 });
  await d.closed;
  cluster.clock.now += 60_000;
  await publishDueWills();
  t.same(wills(), ['late gone', 'short gone'], 'a DISCONNECT: no will');
});

/**
 * A client whose events moved to another worker process, or that closed there: this worker never
 * sees its close, and the runtime drops its ctx. Returns a weak reference to its state here.
 */
async function abandoned(cluster: Cluster): Promise<WeakRef<object>> {
  const moved = cluster.connection('gw-moved', 4);
  await connect(cluster, moved, 'moved', { clean: true });
  cluster.conns.delete('gw-moved');
  return new WeakRef(hubSession(moved.ctx));
}

t.test('per-connection state goes with its ctx (finding 14)', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const state = await abandoned(new Cluster());
  // deref() keeps its target alive to the end of the job it runs in: collect in jobs of their own.
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    gc();
  }
  await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(state.deref(), undefined, 'its state is gone with its ctx, no close event needed');
});

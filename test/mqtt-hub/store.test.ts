/**
 * The MQTT hub's store (templates/mqtt-hub/app/store/): the in-memory model with a fake clock,
 * its file, and the store process driven through StoreClient (started with tsx, killed at the end).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { topicMatches } from 'gatewayworker';
import { freePort } from '../e2e/helpers.ts';
import { registerTeardown, sleep, startApp, waitFor, type App } from '../helpers/app.ts';
import { HUB_CORE_FILES, renderHub } from './render.ts';

type StateModule = typeof import('../../templates/mqtt-hub/app/store/state.ts');
type ClientModule = typeof import('../../templates/mqtt-hub/app/store/client.ts');
type StoredMessage = import('../../templates/mqtt-hub/app/store/state.ts').StoredMessage;
type StoredInflight = import('../../templates/mqtt-hub/app/store/state.ts').StoredInflight;

// The store processes start slowly on a loaded machine: more than tap's default 120 s.
t.setTimeout(300_000);

const hub = renderHub(t, HUB_CORE_FILES);
const { StoreState, StoreFile, encodeJson, decodeJson } = await hub.load<StateModule>('Applications/Hub/store/state.ts');
const { StoreClient, StoreError } = await hub.load<ClientModule>('Applications/Hub/store/client.ts');

const msg = (topic: string, payload: string, qos: 0 | 1 | 2 = 1, extra: Partial<StoredMessage> = {}): StoredMessage => ({
  topic,
  payload: Buffer.from(payload),
  qos,
  ...extra,
});
/** An unacknowledged message as `ctx.unacked` gives it at close. */
const sent = (topic: string, payload: string, packetId: number, opts: { qos?: 1 | 2; released?: boolean; retain?: boolean } = {}): StoredInflight => ({
  topic,
  payload: Buffer.from(payload),
  qos: opts.qos ?? 1,
  retain: opts.retain ?? false,
  packetId,
  released: opts.released ?? false,
});
/** `payload@packetId` (`+rel` when released), in order. */
const flights = (messages: StoredInflight[]): string[] => messages.map((m) => `${m.payload.toString()}@${m.packetId}${m.released ? '+rel' : ''}`);
const texts = (messages: StoredMessage[]): string[] => messages.map((m) => `${m.topic}=${m.payload.toString()}`).sort();

/** A state with a clock the test moves. */
function model(limits: { maxQueuedPerSession?: number; maxQueuedBytesPerSession?: number; maxSessionsPerDevice?: number; maxRetained?: number } = {}) {
  const clock = { now: 1_700_000_000_000 };
  const state = new StoreState({
    maxQueuedPerSession: limits.maxQueuedPerSession ?? 100,
    maxQueuedBytesPerSession: limits.maxQueuedBytesPerSession,
    maxSessionsPerDevice: limits.maxSessionsPerDevice,
    maxRetained: limits.maxRetained ?? 100,
    now: () => clock.now,
  });
  return { state, clock };
}

t.test('retained messages: set, replace, clear, match', async (t) => {
  const { state } = model();
  for (const topic of ['a', 'a/b', 'a/b/c', 'a//c', '/x', 'x/y', '$SYS/load', '$SYS/a/b']) state.setRetained(msg(topic, topic));
  t.equal(state.retainedCount, 8);
  t.same(texts(state.retainedFor(['a/b'])), ['a/b=a/b']);
  t.same(texts(state.retainedFor(['a/#'])), ['a//c=a//c', 'a/b/c=a/b/c', 'a/b=a/b', 'a=a'], '`a/#` includes `a` itself');
  t.same(texts(state.retainedFor(['a/+'])), ['a/b=a/b']);
  t.same(texts(state.retainedFor(['a/+/c'])), ['a//c=a//c', 'a/b/c=a/b/c'], '`+` matches an empty level');
  t.same(texts(state.retainedFor(['#'])).length, 6, '`#` leaves out $-topics');
  t.same(texts(state.retainedFor(['+/load'])), [], '`+` at the start leaves out $-topics');
  t.same(texts(state.retainedFor(['$SYS/#'])), ['$SYS/a/b=$SYS/a/b', '$SYS/load=$SYS/load']);
  t.same(texts(state.retainedFor(['a', 'a/#', '#'])).length, 6, 'overlapping filters give each message once');
  t.ok(state.retainedFor(['a']).every((m) => m.retain === true), 'retained messages come back with retain set');

  state.setRetained(msg('a/b', 'new', 2));
  const [replaced] = state.retainedFor(['a/b']);
  t.equal(replaced.payload.toString(), 'new', 'a second retained publish replaces the first');
  t.equal(replaced.qos, 2);
  state.setRetained(msg('a/b', ''));
  t.same(state.retainedFor(['a/b']), [], 'an empty payload clears the topic');
  t.same(texts(state.retainedFor(['a/#'])), ['a//c=a//c', 'a/b/c=a/b/c', 'a=a'], 'clearing a/b keeps a/b/c');
  state.setRetained(msg('nothing/here', ''));
  t.equal(state.retainedCount, 7, 'clearing an unknown topic is a no-op');
});

t.test('retained matching agrees with topicMatches on random topics and filters', async (t) => {
  const { state } = model({ maxRetained: 10_000 });
  const levels = ['a', 'b', '', '$x', 'c'];
  const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)];
  const topics = new Set<string>();
  for (let i = 0; i < 300; i++) {
    const topic = Array.from({ length: 1 + Math.floor(Math.random() * 4) }, () => pick(levels)).join('/');
    if (topic === '') continue; // not a valid topic name
    topics.add(topic);
    state.setRetained(msg(topic, topic));
  }
  let checked = 0;
  for (let i = 0; i < 300; i++) {
    const parts = Array.from({ length: 1 + Math.floor(Math.random() * 4) }, () => pick([...levels, '+', '+']));
    if (Math.random() < 0.3) parts.push('#');
    const filter = parts.join('/');
    const expected = [...topics].filter((topic) => topicMatches(filter, topic)).sort();
    const actual = state.retainedFor([filter]).map((m) => m.topic).sort();
    if (JSON.stringify(actual) !== JSON.stringify(expected)) t.fail(`filter ${filter}`, { actual, expected });
    checked++;
  }
  t.equal(checked, 300);
});

t.test('maxRetained refuses new topics but still replaces and clears', async (t) => {
  const { state } = model({ maxRetained: 2 });
  t.ok(state.setRetained(msg('a', '1')));
  t.ok(state.setRetained(msg('b', '1')));
  t.notOk(state.setRetained(msg('c', '1')), 'third topic refused');
  t.ok(state.setRetained(msg('a', '2')), 'existing topic replaced');
  t.ok(state.setRetained(msg('a', '')), 'cleared');
  t.ok(state.setRetained(msg('c', '1')), 'room again after a clear');
  t.same(texts(state.retainedFor(['#'])), ['b=1', 'c=1']);
  t.equal(state.retainedRefused, 1);
});

t.test('message expiry counts down while a message waits', async (t) => {
  const { state, clock } = model();
  state.setRetained(msg('r', 'x', 1, { properties: { messageExpiryInterval: 10, contentType: 'text/plain' } }));
  clock.now += 4_000;
  const [m] = state.retainedFor(['r']);
  t.equal(m.properties?.messageExpiryInterval, 6, 'interval reduced by the time it waited');
  t.equal(m.properties?.contentType, 'text/plain');
  clock.now += 6_000;
  t.same(state.retainedFor(['r']), [], 'gone once expired');
  t.equal(state.retainedCount, 0, 'and removed');

  state.openSession('dev', { clean: true, expirySeconds: 100 });
  state.addSubscriptions('dev', [{ filter: 'q/#', qos: 1 }]);
  state.closeSession('dev', []);
  state.queueForOffline(msg('q/1', 'short', 1, { properties: { messageExpiryInterval: 2 } }));
  state.queueForOffline(msg('q/2', 'long', 1, { properties: { messageExpiryInterval: 60 } }));
  clock.now += 5_000;
  const { queued } = state.openSession('dev', { clean: false, expirySeconds: 100 });
  t.same(texts(queued), ['q/2=long'], 'an expired queued message is not delivered');
  t.equal(queued[0].properties?.messageExpiryInterval, 55);
});

t.test('persistent sessions: subscriptions and QoS ≥ 1 messages kept while offline', async (t) => {
  const { state } = model();
  const first = state.openSession('dev1', { clean: false, expirySeconds: 3600 });
  t.equal(first.present, false, 'no session yet');
  state.addSubscriptions('dev1', [
    { filter: 'devices/dev1/#', qos: 2 },
    { filter: 'broadcast/+', qos: 1, retainAsPublished: true },
    { filter: 'broadcast/#', qos: 0 },
  ]);
  state.removeSubscriptions('dev1', ['nothing', 'devices/dev1/#']);
  state.addSubscriptions('dev1', [{ filter: 'devices/dev1/#', qos: 2 }]);

  state.queueForOffline(msg('devices/dev1/cmd', 'too early', 1));
  t.equal(state.inspect('dev1')?.queued.length, 0, 'nothing queued while the device is online');

  state.closeSession('dev1', [sent('devices/dev1/cmd', 'unacked', 7, { qos: 2 })]);
  t.equal(state.inspect('dev1')?.online, false);
  t.equal(state.queueForOffline(msg('devices/dev1/cmd', 'q2', 2)), 1);
  t.equal(state.queueForOffline(msg('broadcast/all', 'b1', 2, { retain: true })), 1, 'several matching filters: queued once');
  t.equal(state.queueForOffline(msg('broadcast/x/y', 'b0', 1)), 0, 'only a QoS 0 subscription matches: not queued');
  t.equal(state.queueForOffline(msg('devices/dev1/cmd', 'qos0', 0)), 0, 'QoS 0 messages are not queued');
  t.equal(state.queueForOffline(msg('devices/other/cmd', 'other', 1)), 0);

  const again = state.openSession('dev1', { clean: false, expirySeconds: 3600 });
  t.equal(again.present, true);
  t.same(again.subscriptions.map((s) => s.filter).sort(), ['broadcast/#', 'broadcast/+', 'devices/dev1/#']);
  t.same(
    again.queued.map((m) => [m.topic, m.payload.toString(), m.qos, m.retain]),
    [
      ['devices/dev1/cmd', 'q2', 2, false],
      ['broadcast/all', 'b1', 1, true],
    ],
    'in publish order; qos = min(publish, granted); retain kept only with retainAsPublished',
  );
  t.same(flights(again.inflight), ['unacked@7'], 'the unacknowledged message apart, with its packet id');
  state.ackSession('dev1', again.generation);
  const handed = state.openSession('dev1', { clean: false, expirySeconds: 3600 });
  t.equal(handed.queued.length + handed.inflight.length, 0, 'the queue and the in-flight state were handed over once, once acknowledged');

  const clean = state.openSession('dev1', { clean: true, expirySeconds: 3600 });
  t.equal(clean.present, false, 'clean start drops the old session');
  t.same(clean.subscriptions, []);
});

t.test('non-persistent sessions keep nothing', async (t) => {
  const { state } = model();
  state.openSession('c', { clean: true, expirySeconds: 0 });
  state.addSubscriptions('c', [{ filter: 'x', qos: 1 }]);
  t.same(state.inspect('c')?.subscriptions, [], 'subscriptions are not stored');
  state.closeSession('c', [msg('x', 'lost')]);
  t.equal(state.inspect('c'), undefined, 'the session ends with its connection');
  t.equal(state.queueForOffline(msg('x', 'y')), 0);
  t.equal(state.openSession('c', { clean: false, expirySeconds: 0 }).present, false);

  // A v5 DISCONNECT may set the expiry to 0: the session ends then.
  state.openSession('d', { clean: false, expirySeconds: 60 });
  state.closeSession('d', [], { expirySeconds: 0 });
  t.equal(state.inspect('d'), undefined);
});

t.test('a bounded queue drops its oldest messages and counts them', async (t) => {
  const { state } = model({ maxQueuedPerSession: 3 });
  state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.addSubscriptions('dev', [{ filter: 't', qos: 1 }]);
  state.closeSession('dev', []);
  for (let i = 1; i <= 5; i++) state.queueForOffline(msg('t', String(i)));
  t.equal(state.inspect('dev')?.dropped, 2);
  const opened = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.same(opened.queued.map((m) => m.payload.toString()), ['3', '4', '5'], 'the newest are kept');
  t.equal(opened.dropped, 2, 'openSession reports the drops');
  state.ackSession('dev', opened.generation);
  t.equal(state.inspect('dev')?.dropped, 0, 'and the acknowledgement resets the count');
});

t.test('offline sessions expire', async (t) => {
  const { state, clock } = model();
  state.openSession('short', { clean: false, expirySeconds: 10 });
  state.addSubscriptions('short', [{ filter: 't', qos: 1 }]);
  state.closeSession('short', []);
  state.openSession('forever', { clean: false, expirySeconds: 0xffffffff });
  state.closeSession('forever', []);
  state.openSession('online', { clean: false, expirySeconds: 1 });

  clock.now += 9_000;
  t.equal(state.sweep(), 0, 'not yet');
  t.equal(state.queueForOffline(msg('t', 'x')), 1);
  clock.now += 1_000;
  t.equal(state.queueForOffline(msg('t', 'y')), 0, 'an expired session gets nothing, even before a sweep');
  t.equal(state.openSession('short', { clean: false, expirySeconds: 10 }).present, false, 'and is not present');
  state.closeSession('short', []);
  clock.now += 365 * 24 * 3600_000;
  t.equal(state.sweep(), 1, 'the sweep ends it');
  t.equal(state.inspect('short'), undefined);
  t.ok(state.inspect('forever'), '0xFFFFFFFF never expires');
  t.ok(state.inspect('online'), 'an online session never expires');
});

t.test('a late close of a dropped session does not end a new one', async (t) => {
  const { state } = model();
  const old = state.openSession('c', { clean: true, expirySeconds: 0 });
  const fresh = state.openSession('c', { clean: true, expirySeconds: 60 });
  t.not(fresh.generation, old.generation, 'generations are never reused, even for a new session');
  state.closeSession('c', [], { generation: old.generation });
  t.equal(state.inspect('c')?.online, true);
});

t.test('a late close of a taken-over connection leaves the new one alone', async (t) => {
  const { state } = model();
  const old = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.addSubscriptions('dev', [{ filter: 't', qos: 1 }]);
  const current = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.equal(current.present, true);
  t.not(current.generation, old.generation);
  state.closeSession('dev', [msg('t', 'unacked by the old connection')], { generation: old.generation });
  t.equal(state.inspect('dev')?.online, true, 'still online');
  t.equal(state.queueForOffline(msg('t', 'live')), 0, 'so nothing is queued for it');
  state.closeSession('dev', [], { generation: current.generation });
  t.equal(state.inspect('dev')?.online, false);
  t.same(texts(state.openSession('dev', { clean: false, expirySeconds: 60 }).queued), ['t=unacked by the old connection'], 'the old unacked messages are not lost');
});

t.test('in-flight state: kept as it is, apart from the offline queue, handed out once', async (t) => {
  const { state } = model({ maxQueuedPerSession: 2 });
  const first = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.same([first.inflight, first.awaitingRelease], [[], []], 'a new session has none');
  state.addSubscriptions('dev', [{ filter: 't', qos: 2 }]);
  state.closeSession(
    'dev',
    [
      sent('t', 'q1', 5),
      sent('t', 'q2', 6, { qos: 2, retain: true }),
      sent('t', 'rel', 7, { qos: 2, released: true }),
      sent('t', 'held back', 0),
      { ...sent('t', 'no id', 0), packetId: undefined } as unknown as StoredInflight,
      msg('t', 'qos 0 is never in flight', 0),
    ],
    { generation: first.generation, awaitingRelease: [9, 9, 12, 0, 70_000] },
  );
  t.same(flights(state.inspect('dev')!.inflight), ['q1@5', 'q2@6', '@7+rel', 'held back@0', 'no id@0'], 'stored as given (a released one without its payload: only its PUBREL is left); no packet id is 0 (goes out fresh)');
  t.same(state.inspect('dev')!.awaitingRelease, [9, 12], 'awaitingRelease: valid ids, each once');
  t.same(state.inspect('dev')!.queued, [], 'nothing of it in the queue');
  for (let i = 1; i <= 3; i++) state.queueForOffline(msg('t', `later-${i}`));
  t.equal(state.inspect('dev')!.dropped, 1, 'the queue stays bounded on its own');

  const back = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.equal(back.present, true);
  t.same(flights(back.inflight), ['q1@5', 'q2@6', '@7+rel', 'held back@0', 'no id@0'], 'in flight, oldest first, untouched by the queue bound');
  t.same(
    back.inflight.map((m) => [m.qos, m.retain]),
    [
      [1, false],
      [2, true],
      [2, false],
      [1, false],
      [1, false],
    ],
    'QoS and retain kept',
  );
  t.same(back.awaitingRelease, [9, 12]);
  t.same(back.queued.map((m) => m.payload.toString()), ['later-2', 'later-3'], 'the queue, apart');
  state.ackSession('dev', back.generation);
  const again = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.same([again.inflight, again.awaitingRelease, again.queued], [[], [], []], 'handed out once, once acknowledged');

  // A close replaces nothing it should not: the state of this connection only.
  state.closeSession('dev', [sent('t', 'next', 1)], { generation: again.generation, awaitingRelease: [3] });
  const third = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.same([flights(third.inflight), third.awaitingRelease], [['next@1'], [3]]);

  // Clean start, or a session ending with its connection, drops it.
  state.closeSession('dev', [sent('t', 'x', 2)], { generation: third.generation, awaitingRelease: [4] });
  const clean = state.openSession('dev', { clean: true, expirySeconds: 60 });
  t.same([clean.present, clean.inflight, clean.awaitingRelease], [false, [], []], 'clean start drops the in-flight state');
  state.closeSession('dev', [sent('t', 'y', 2)], { generation: clean.generation, awaitingRelease: [4], expirySeconds: 0 });
  t.equal(state.inspect('dev'), undefined, 'expiry 0 at close: the session ends, in-flight state and all');
  const temp = state.openSession('tmp', { clean: true, expirySeconds: 0 });
  state.closeSession('tmp', [sent('t', 'z', 2)], { generation: temp.generation, awaitingRelease: [4] });
  t.equal(state.inspect('tmp'), undefined, 'a non-persistent session keeps nothing');
  t.same(state.openSession('tmp', { clean: false, expirySeconds: 60 }).inflight, []);
});

t.test('in-flight state of a late close (take-over that did not wait): unreleased messages queued fresh', async (t) => {
  const { state } = model();
  const old = state.openSession('dev', { clean: false, expirySeconds: 60 });
  const current = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.closeSession('dev', [sent('t', 'unacked', 3), sent('t', 'rel', 4, { qos: 2, released: true }), sent('t', 'waiting', 0)], {
    generation: old.generation,
    awaitingRelease: [8],
  });
  const view = state.inspect('dev')!;
  t.equal(view.online, true, 'the current connection stays online');
  t.same([view.inflight, view.awaitingRelease], [[], []], 'nothing in flight: the current connection has restored its state already');
  t.same(
    view.queued.map((m) => [m.payload.toString(), 'packetId' in m, 'released' in m]),
    [
      ['unacked', false, false],
      ['waiting', false, false],
    ],
    'unreleased ones queued as plain messages (new packet ids); the released one, received already, is not',
  );
  state.closeSession('dev', [], { generation: current.generation });
  t.same(texts(state.openSession('dev', { clean: false, expirySeconds: 60 }).queued), ['t=unacked', 't=waiting']);
});

t.test('in-flight state in the snapshot; a file without it loads', async (t) => {
  const { state, clock } = model();
  const opened = state.openSession('p', { clean: false, expirySeconds: 100 });
  state.closeSession('p', [sent('q/a', 'bin\u0000', 65_535, { qos: 2 }), sent('q/b', 'rel', 1, { qos: 2, released: true })], { generation: opened.generation, awaitingRelease: [77] });
  const snapshot = JSON.parse(encodeJson(state.snapshot())) as { sessions: Array<Record<string, unknown>> };
  t.match(snapshot.sessions[0], { inflight: [{ topic: 'q/a', packetId: 65_535, released: false }, { topic: 'q/b', packetId: 1, released: true }], awaitingRelease: [77] });

  const copy = new StoreState({ maxQueuedPerSession: 100, maxRetained: 100, now: () => clock.now });
  t.equal(copy.restore(decodeJson(JSON.stringify(snapshot))), 0);
  const back = copy.openSession('p', { clean: false, expirySeconds: 100 });
  t.same(flights(back.inflight), ['bin\u0000@65535', '@1+rel']);
  t.same(back.inflight[0].payload, Buffer.from('bin\u0000'));
  t.same(back.awaitingRelease, [77]);

  // Written before in-flight state was kept: no inflight / awaitingRelease keys.
  delete snapshot.sessions[0].inflight;
  delete snapshot.sessions[0].awaitingRelease;
  const older = new StoreState({ maxQueuedPerSession: 100, maxRetained: 100, now: () => clock.now });
  t.equal(older.restore(decodeJson(JSON.stringify(snapshot))), 0, 'nothing skipped');
  const old = older.openSession('p', { clean: false, expirySeconds: 100 });
  t.same([old.present, old.inflight, old.awaitingRelease], [true, [], []], 'present, nothing in flight');
});

t.test("resume: 'later' keeps queueing until the subscriptions are live again", async (t) => {
  const { state } = model();
  state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.addSubscriptions('dev', [{ filter: 't/#', qos: 1 }]);
  state.closeSession('dev', []);
  state.queueForOffline(msg('t/1', 'before'));
  const opened = state.openSession('dev', { clean: false, expirySeconds: 60, resume: 'later' });
  t.same(texts(opened.queued), ['t/1=before']);
  t.equal(state.queueForOffline(msg('t/2', 'in between')), 1, 'a publish while the gateway subscriptions are restored is queued');
  state.addSubscriptions('dev', [{ filter: 'u', qos: 2 }]);
  t.equal(state.queueForOffline(msg('u', 'new sub')), 1, 'a subscription added while resuming counts too');
  const resumed = state.resumeSession('dev', opened.generation);
  t.equal(resumed.current, true);
  t.same(texts(resumed.queued), ['t/2=in between', 'u=new sub'], 'handed over at resume');
  t.equal(state.queueForOffline(msg('t/3', 'live')), 0, 'after resume the gateway delivers, nothing is queued');
  t.same(state.resumeSession('dev', opened.generation), { current: true, queued: [] }, 'a second resume hands out nothing again');
  state.ackSession('dev', opened.generation);
  t.same(state.inspect('dev')?.queued, [], 'acknowledged: all of it leaves the store');

  const again = state.openSession('dev', { clean: false, expirySeconds: 60, resume: 'later' });
  state.queueForOffline(msg('t/4', 'x'));
  state.closeSession('dev', [], { generation: again.generation });
  t.same(state.resumeSession('dev', again.generation), { current: false, queued: [] }, 'closed before resuming: not current, nothing handed out');
  const next = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.same(texts(next.queued), ['t/4=x'], 'the next connection gets it');
  t.same(state.resumeSession('dev', again.generation), { current: false, queued: [] }, 'a stale generation gets nothing');
  t.same(texts(state.resumeSession('dev', next.generation).queued), [], 'what openSession handed out is not handed out again at resume');
});

t.test('snapshot and restore, Buffers included', async (t) => {
  const { state, clock } = model();
  state.setRetained(msg('r/1', 'bin\u0000ary', 1, { properties: { correlationData: Buffer.from([1, 2, 3]), userProperties: { a: ['1', '2'] } } }));
  state.openSession('p', { clean: false, expirySeconds: 100 });
  state.addSubscriptions('p', [{ filter: 'q/+', qos: 2, noLocal: true, subscriptionId: 7 }]);
  state.closeSession('p', []);
  state.queueForOffline(msg('q/a', 'queued', 2));
  state.openSession('live', { clean: false, expirySeconds: 100 });
  state.openSession('temp', { clean: true, expirySeconds: 0 });

  const json = encodeJson(state.snapshot());
  t.notMatch(json, /"type":"Buffer"/, 'Buffers are not written as byte arrays');
  const copy = new StoreState({ maxQueuedPerSession: 100, maxRetained: 100, now: () => clock.now });
  t.equal(copy.restore(decodeJson(json)), 0, 'nothing skipped');
  const [r] = copy.retainedFor(['r/#']);
  t.same(r.payload, Buffer.from('bin\u0000ary'));
  t.same(r.properties?.correlationData, Buffer.from([1, 2, 3]));
  t.same(r.properties?.userProperties, { a: ['1', '2'] });
  t.equal(copy.inspect('temp'), undefined, 'non-persistent sessions are not saved');
  t.equal(copy.inspect('live')?.online, false, 'a session online at save time comes back offline');
  t.equal(copy.queueForOffline(msg('q/b', 'after restore', 1)), 1, 'restored offline sessions get queued messages');
  const opened = copy.openSession('p', { clean: false, expirySeconds: 100 });
  t.same(opened.subscriptions, [{ filter: 'q/+', qos: 2, noLocal: true, subscriptionId: 7 }]);
  t.same(texts(opened.queued), ['q/a=queued', 'q/b=after restore']);
  t.throws(() => copy.restore({ version: 2 }), /not a store snapshot/);
});

t.test('the store file: debounced atomic saves, corrupt files set aside', async (t) => {
  const dir = fs.mkdtempSync(path.join(hub.root, 'file-'));
  const file = path.join(dir, 'sub', 'store.json');
  const state = new StoreState({ maxQueuedPerSession: 10, maxRetained: 10 });
  const store = new StoreFile(file, state, 50);
  await store.load();
  t.notOk(fs.existsSync(file), 'a missing file is an empty store, nothing written yet');
  state.setRetained(msg('a', '1'));
  state.setRetained(msg('b', '2'));
  t.notOk(fs.existsSync(file), 'not written at once');
  await waitFor(() => fs.existsSync(file), 2000, 'the debounced save');
  t.same(fs.readdirSync(path.dirname(file)), ['store.json'], 'no temp file left behind');
  t.equal(fs.statSync(file).mode & 0o777, 0o600);

  state.setRetained(msg('c', '3'));
  await store.flush();
  const reloaded = new StoreState({ maxQueuedPerSession: 10, maxRetained: 10 });
  await new StoreFile(file, reloaded).load();
  t.same(texts(reloaded.retainedFor(['#'])), ['a=1', 'b=2', 'c=3'], 'flush writes what changed');

  fs.writeFileSync(file, '{"version":1,"retained":[');
  const fresh = new StoreState({ maxQueuedPerSession: 10, maxRetained: 10 });
  await new StoreFile(file, fresh).load();
  t.equal(fresh.retainedCount, 0, 'a corrupt file gives an empty store');
  t.notOk(fs.existsSync(file), 'the corrupt file is moved away');
  t.match(fs.readdirSync(path.dirname(file)), [/^store\.json\.corrupt-/]);
});

t.test('two-phase hand-out: what openSession gives stays in the store until ackSession', async (t) => {
  const { state } = model();
  const first = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.addSubscriptions('dev', [{ filter: 't', qos: 2 }]);
  state.closeSession('dev', [sent('t', 'in flight', 5), sent('t', 'rel', 6, { qos: 2, released: true })], { generation: first.generation, awaitingRelease: [9] });
  state.queueForOffline(msg('t', 'q1'));
  state.queueForOffline(msg('t', 'q2'));

  // The answer to this open is lost (or the connection fails before delivering): nothing acknowledged.
  const lost = state.openSession('dev', { clean: false, expirySeconds: 60, resume: 'later' });
  t.same([texts(lost.queued), flights(lost.inflight), lost.awaitingRelease], [['t=q1', 't=q2'], ['in flight@5', '@6+rel'], [9]]);
  state.queueForOffline(msg('t', 'q3'));
  t.same(texts(state.inspect('dev')!.queued), ['t=q1', 't=q2', 't=q3'], 'still queued, and queueing goes on');

  // The next connection gets all of it again, the in-flight state under its packet ids.
  const next = state.openSession('dev', { clean: false, expirySeconds: 60, resume: 'later' });
  t.same([texts(next.queued), flights(next.inflight), next.awaitingRelease], [['t=q1', 't=q2', 't=q3'], ['in flight@5', '@6+rel'], [9]], 'handed out again');
  state.ackSession('dev', lost.generation);
  t.equal(state.inspect('dev')!.queued.length, 3, 'an acknowledgement of a superseded connection changes nothing');
  state.queueForOffline(msg('t', 'q4'));
  const resumed = state.resumeSession('dev', next.generation);
  t.same(texts(resumed.queued), ['t=q4'], 'resume hands out only what came since');
  state.queueForOffline(msg('t', 'live, not queued'));
  state.ackSession('dev', next.generation);
  t.same([state.inspect('dev')!.queued, state.inspect('dev')!.inflight, state.inspect('dev')!.awaitingRelease, state.inspect('dev')!.bytes], [[], [], [], 0], 'acknowledged: gone');

  // A connection that fails after the hand-out: its close keeps what it did not confirm.
  state.closeSession('dev', [], { generation: next.generation });
  state.queueForOffline(msg('t', 'q5'));
  const failing = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.closeSession('dev', [], { generation: failing.generation });
  t.same(texts(state.openSession('dev', { clean: false, expirySeconds: 60 }).queued), ['t=q5'], 'not acknowledged: kept for the next connection');
});

t.test('a close after an unacknowledged hand-out: in-flight messages kept once, by packet id', async (t) => {
  const { state } = model();
  const first = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.closeSession('dev', [sent('t', 'restored', 1), sent('t', 'acked meanwhile', 2), sent('t', 'id reused', 3), sent('t', 'rel', 4, { qos: 2, released: true })], {
    generation: first.generation,
  });
  const failed = state.openSession('dev', { clean: false, expirySeconds: 60 });
  // The connection restored them, acknowledged #2, used #3 for a new message, then failed.
  state.closeSession('dev', [sent('t', 'restored', 1), sent('t', 'new one', 3)], { generation: failed.generation });
  const back = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.same(flights(back.inflight), ['acked meanwhile@2', '@4+rel', 'restored@1', 'new one@3'], 'each packet id once; what the connection reported as it reported it');
  t.same(texts(back.queued), ['t=id reused'], 'a message whose packet id went to another goes out fresh');
});

t.test('byte cap per session: oldest queued first, then oldest unreleased in flight', async (t) => {
  const { state } = model({ maxQueuedBytesPerSession: 30 });
  const first = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.addSubscriptions('dev', [{ filter: 't', qos: 1 }]);
  state.closeSession('dev', [sent('t', 'x'.repeat(9), 1)], { generation: first.generation }); // 10 bytes with its topic
  for (const payload of ['aaaaaaaaa', 'bbbbbbbbb', 'ccccccccc']) state.queueForOffline(msg('t', payload));
  const view = state.inspect('dev')!;
  t.same([texts(view.queued), view.bytes, view.dropped], [['t=bbbbbbbbb', 't=ccccccccc'], 30, 1], 'the oldest queued message went; payload and topic bytes counted');
  t.equal(state.queueForOffline(msg('t', 'y'.repeat(40))), 1, 'a message larger than the cap is queued…');
  t.same(
    [state.inspect('dev')!.queued, flights(state.inspect('dev')!.inflight), state.inspect('dev')!.dropped],
    [[], ['xxxxxxxxx@1'], 4],
    '…and the queue, oldest first, gives way until the session fits: itself included; the in-flight state stays',
  );

  const second = state.openSession('dev', { clean: false, expirySeconds: 60 });
  t.equal(second.dropped, 4, 'the connection hears how many were dropped');
  state.ackSession('dev', second.generation);
  state.closeSession('dev', [sent('t', 'r'.repeat(40), 1, { qos: 2, released: true }), sent('t', 'u'.repeat(20), 2), sent('t', 'v'.repeat(20), 3)], { generation: second.generation });
  t.same(flights(state.inspect('dev')!.inflight), ['@1+rel', 'vvvvvvvvvvvvvvvvvvvv@3'], 'a released message costs nothing (only its PUBREL is kept); the oldest unreleased one went');
});

t.test('a device keeps at most maxSessionsPerDevice persistent sessions', async (t) => {
  const { state, clock } = model({ maxSessionsPerDevice: 2 });
  for (const id of ['a', 'b']) {
    const s = state.openSession(`dev:${id}`, { clean: false, expirySeconds: 600 });
    clock.now += 1000;
    state.closeSession(`dev:${id}`, [], { generation: s.generation });
  }
  state.openSession('other:a', { clean: false, expirySeconds: 600 });
  state.openSession(':anon-1', { clean: false, expirySeconds: 600 });
  state.openSession('dev:c', { clean: false, expirySeconds: 600 });
  t.equal(state.inspect('dev:a'), undefined, 'a third one ends the one offline the longest');
  t.ok(state.inspect('dev:b') && state.inspect('dev:c') && state.inspect('other:a') && state.inspect(':anon-1'), 'the others stay, other devices are not counted');
  state.openSession('dev:d', { clean: false, expirySeconds: 600 });
  t.equal(state.inspect('dev:b'), undefined);
  state.openSession('dev:e', { clean: false, expirySeconds: 600 });
  t.ok(state.inspect('dev:c') && state.inspect('dev:d') && state.inspect('dev:e'), 'online sessions are never ended for it');
  state.openSession('dev:tmp', { clean: true, expirySeconds: 0 });
  t.ok(state.inspect('dev:tmp'), 'sessions that end with their connection do not count');
  t.equal(state.stats().sessions, 6);
});

t.test('generations: the later openSession wins and names the connection it replaced', async (t) => {
  const { state } = model();
  const a = state.openSession('dev', { clean: false, expirySeconds: 60, resume: 'later', owner: 'conn-a' });
  t.equal(a.replaced, undefined, 'a new session replaces nobody');
  const b = state.openSession('dev', { clean: false, expirySeconds: 60, resume: 'later', owner: 'conn-b' });
  t.ok(b.generation > a.generation);
  t.equal(b.replaced, 'conn-a', 'conn-a still had it online: it lost');
  t.same(state.resumeSession('dev', a.generation), { current: false, queued: [] }, 'and finds out at resume');
  t.equal(state.resumeSession('dev', b.generation).current, true);
  state.closeSession('dev', [], { generation: a.generation });
  t.equal(state.inspect('dev')!.online, true, "the loser's close leaves the winner's session alone");
  const c = state.openSession('dev', { clean: true, expirySeconds: 60, owner: 'conn-c' });
  t.equal(c.replaced, 'conn-b', 'a clean start replaces the online connection too');
  state.closeSession('dev', [], { generation: c.generation });
  t.equal(state.openSession('dev', { clean: false, expirySeconds: 60, owner: 'conn-d' }).replaced, undefined, 'after a close, nobody is replaced');
});

t.test('in-flight messages keep their properties and subscription identifiers', async (t) => {
  const { state } = model();
  const props = { contentType: 'text/plain', correlationData: Buffer.from([1, 2]), userProperties: { k: 'v' }, subscriptionIdentifier: [3, 4] };
  const first = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.closeSession('dev', [{ ...sent('t', 'p', 7), properties: props }], { generation: first.generation });
  const [back] = state.openSession('dev', { clean: false, expirySeconds: 60 }).inflight;
  t.same(back.properties, props, 'as they were sent: the resend is the same PUBLISH');
  const current = state.openSession('dev', { clean: false, expirySeconds: 60 });
  state.closeSession('dev', [{ ...sent('t', 'late', 8), properties: props }], { generation: first.generation });
  const [fresh] = state.inspect('dev')!.queued;
  t.same(fresh.properties, { contentType: 'text/plain', correlationData: Buffer.from([1, 2]), userProperties: { k: 'v' } }, 'queued fresh: its subscription ids come anew at delivery');
  t.ok(current);
});

t.test('delayed wills: due after the delay or at the session end, cancelled by a reconnect', async (t) => {
  const { state, clock } = model();
  const will = msg('devices/d/status', 'gone', 1, { retain: true, properties: { contentType: 'text/plain' } });
  const close = (key: string, expirySeconds = 600): number => {
    const s = state.openSession(key, { clean: false, expirySeconds });
    state.closeSession(key, [], { generation: s.generation });
    return s.generation;
  };

  const g = close('d:a');
  t.equal(state.delayWill('d:a', g - 1, will, 10), 'reconnected', 'a stale generation: the session moved on');
  t.equal(state.delayWill('d:a', g, will, 10), 'kept');
  t.equal(state.delayWill('d:none', 1, will, 10), 'ended', 'no session: publish now');
  clock.now += 9_000;
  t.same(state.takeDueWills(), [], 'not yet');
  clock.now += 1_000;
  const due = state.takeDueWills();
  t.same(due.map((w) => [w.clientId, w.message.topic, w.message.payload.toString(), w.message.retain, w.message.properties?.contentType]), [['d:a', 'devices/d/status', 'gone', true, 'text/plain']], 'due after the delay');
  t.same(state.takeDueWills(), [], 'handed out once');

  const b = close('d:b');
  state.delayWill('d:b', b, will, 30);
  clock.now += 5_000;
  state.openSession('d:b', { clean: false, expirySeconds: 600 });
  clock.now += 60_000;
  t.same(state.takeDueWills(), [], 'back before the delay: no will');

  const c = close('d:c');
  state.delayWill('d:c', c, will, 30);
  state.openSession('d:c', { clean: true, expirySeconds: 600 });
  t.same(state.takeDueWills().map((w) => w.clientId), ['d:c'], 'a clean start ends the session: its will is due at once');

  const e = close('d:e', 5);
  t.equal(state.delayWill('d:e', e, will, 30), 'kept');
  clock.now += 5_000;
  t.same(state.takeDueWills().map((w) => w.clientId), ['d:e'], 'the session expiring first makes it due');

  const f = close('d:f');
  state.delayWill('d:f', f, will, 100);
  const copy = new StoreState({ maxQueuedPerSession: 10, maxRetained: 10, now: () => clock.now });
  t.equal(copy.restore(decodeJson(encodeJson(state.snapshot()))), 0);
  t.equal(copy.stats().wills, 1, 'kept in the snapshot');
  clock.now += 100_000;
  t.same(copy.takeDueWills().map((w) => [w.clientId, w.message.payload.toString()]), [['d:f', 'gone']], 'and due after a restart too');
});

// ---- the store process ----------------------------------------------------------------------

/** Master pids of the stores started here, killed if this process is stopped before its teardowns run. */
const started = new Set<number>();
const killStarted = (): void => {
  for (const pid of started) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
};
process.once('exit', killStarted);
process.once('SIGTERM', () => {
  killStarted();
  process.exit(1);
});

/** Starts Applications/Hub/start_store.ts in its own master on `port`, data in `dataDir`. */
async function startStore(t: Test, port: number, dataDir: string, env: NodeJS.ProcessEnv = {}): Promise<App> {
  const app = await startApp(path.join(hub.app, 'start_store.ts'), {
    env: { STORE_ADDRESS: `127.0.0.1:${port}`, DATA_DIR: dataDir, GATEWAYWORKER_LOG_LEVEL: 'info', ...env },
  });
  started.add(app.pid);
  void app.exited.then(() => started.delete(app.pid));
  registerTeardown(t, app);
  return app;
}

/** Stops the store as `stop` would (SIGTERM to its master: it saves), without spawning the CLI. */
async function stopStore(app: App): Promise<void> {
  process.kill(app.pid, 'SIGTERM');
  const timer = setTimeout(() => process.kill(-app.pid, 'SIGKILL'), 15_000);
  await app.exited;
  clearTimeout(timer);
}

/** Kills the store's whole process group at once (no save at stop). */
async function kill9(app: App): Promise<void> {
  process.kill(-app.pid, 'SIGKILL');
  await app.exited;
}

t.test('the store process, through StoreClient: persistence, outages', async (t) => {
  const port = await freePort();
  const dataDir = path.join(hub.root, 'data-process');
  const client = new StoreClient(`127.0.0.1:${port}`, { timeoutMs: 1000, secretKey: '' });
  // Generous: it waits through a store start, which can be slow on a loaded machine.
  const patient = new StoreClient(`127.0.0.1:${port}`, { timeoutMs: 60_000, secretKey: '' });
  t.teardown(() => {
    client.close();
    patient.close();
  });

  const before = Date.now();
  await t.rejects(client.stats(), { name: 'StoreError', message: /stats at 127\.0\.0\.1:\d+ failed: not reachable .*is start_store\.ts running\?/ }, 'no store: a clear error');
  t.ok(Date.now() - before < 2500, 'after the timeout, not later');

  let store = await startStore(t, port, dataDir);
  t.same(await patient.stats(), { retained: 0, sessions: 0, online: 0, queued: 0, wills: 0 });
  await patient.setRetained(msg('devices/a/state', 'on', 1));
  await patient.setRetained(msg('devices/b/state', 'off', 0));
  await patient.setRetained(msg('devices/b/state', 'on', 0));
  await patient.setRetained(msg('devices/c/state', 'on', 0));
  await patient.setRetained(msg('devices/c/state', '', 0));
  const retained = await patient.retainedFor(['devices/+/state', 'devices/a/#']);
  t.same(texts(retained), ['devices/a/state=on', 'devices/b/state=on'], 'set, replaced, cleared, each once');
  t.ok(Buffer.isBuffer(retained[0].payload), 'payloads come back as Buffers');

  const opened = await patient.openSession('dev', { clean: false, expirySeconds: 3600 });
  t.match(opened, { present: false, subscriptions: [], inflight: [], awaitingRelease: [], queued: [], dropped: 0, generation: Number });
  await patient.addSubscriptions('dev', [{ filter: 'devices/dev/#', qos: 2 }]);
  await patient.closeSession('dev', [sent('devices/dev/cmd', 'unacked', 12), sent('devices/dev/cmd', 'released', 13, { qos: 2, released: true })], {
    generation: opened.generation,
    awaitingRelease: [40, 41],
  });
  await patient.queueForOffline(msg('devices/dev/cmd', 'while away', 2));
  await patient.queueForOffline(msg('devices/dev/cmd', 'never stored', 0));
  const resuming = await patient.openSession('dev2', { clean: false, expirySeconds: 60, resume: 'later' });
  await patient.addSubscriptions('dev2', [{ filter: 'devices/dev2/#', qos: 1 }]);
  await patient.queueForOffline(msg('devices/dev2/x', 'between', 1));
  const resumed = await patient.resumeSession('dev2', resuming.generation);
  t.same([resumed.current, texts(resumed.queued)], [true, ['devices/dev2/x=between']], 'resumeSession over the wire');
  await patient.ackSession('dev2', resuming.generation);
  await patient.closeSession('dev2', [], { generation: resuming.generation, expirySeconds: 0 });

  // Two connections of one session: the later opening wins, and is told whom it replaced.
  const first = await patient.openSession('dev3', { clean: false, expirySeconds: 3600, resume: 'later', owner: 'conn-a' });
  const second = await patient.openSession('dev3', { clean: false, expirySeconds: 3600, resume: 'later', owner: 'conn-b' });
  t.equal(second.replaced, 'conn-a', 'the later openSession names the connection it replaced');
  t.same(await patient.resumeSession('dev3', first.generation), { current: false, queued: [] }, 'the earlier one finds out at resume');
  await patient.closeSession('dev3', [], { generation: second.generation });
  t.equal(await patient.delayWill('dev3', second.generation, msg('devices/dev3/status', 'gone'), 3600), 'kept', 'a delayed will is kept');

  await t.rejects(patient.retainedFor([42 as unknown as string]), { name: 'StoreError', message: /filters\[0\] must be a non-empty string/ }, 'bad arguments are refused with a reason');
  await t.rejects(patient.closeSession('dev', [sent('t', 'x', 70_000)]), { name: 'StoreError', message: /unacked\[0\] must be a message .*packetId/ }, 'a packet id out of range is refused');
  await t.rejects(patient.closeSession('dev', [], { awaitingRelease: [0] }), { name: 'StoreError', message: /opts\.awaitingRelease must be an array of packet ids/ }, 'so is an awaitingRelease id 0');
  t.same((await patient.stats()).sessions, 2, 'and the connection stays usable');

  // A clean stop saves; a new store process finds everything.
  await stopStore(store);
  store = await startStore(t, port, dataDir);
  t.same(texts(await patient.retainedFor(['#'])), ['devices/a/state=on', 'devices/b/state=on'], 'retained messages survive a restart');
  const back = await patient.openSession('dev', { clean: false, expirySeconds: 3600 });
  t.equal(back.present, true, 'the session survives a restart');
  t.same(back.subscriptions, [{ filter: 'devices/dev/#', qos: 2 }]);
  t.same(back.queued.map((m) => [m.payload.toString(), m.qos]), [['while away', 2]], 'the offline queue survives a restart');
  t.same(flights(back.inflight), ['unacked@12', '@13+rel'], 'and the in-flight state, packet ids and released flags included');
  t.ok(back.inflight.every((m) => Buffer.isBuffer(m.payload)), 'in-flight payloads come back as Buffers');
  t.same(back.awaitingRelease, [40, 41], 'and the ids awaiting PUBREL');
  t.same(await client.stats(), { retained: 2, sessions: 2, online: 1, queued: 1, wills: 1 }, 'the short-timeout client connects once the store is up; the delayed will survived the restart');

  // kill -9 after the debounce: the change is on disk already.
  await patient.setRetained(msg('late', 'saved', 1));
  await sleep(300);
  await kill9(store);
  await t.rejects(client.stats(), StoreError, 'rejects while the store is down');
  // Both clients' links dropped with the store; on a loaded machine the second may hear of it a
  // little later, and a call sent on a link about to drop fails (it may have been applied).
  await sleep(500);
  const during = patient.retainedFor(['late']);
  store = await startStore(t, port, dataDir);
  t.same(texts(await during), ['late=saved'], 'a call made during the outage is answered after it, and a change is on disk ~50 ms later, kill -9 or not');
  t.equal((await client.stats()).retained, 3, 'the other client reconnected by itself');

  client.close();
  await t.rejects(client.stats(), /closed/, 'a closed client refuses calls');
  await kill9(store);
});

t.test('StoreClient drops a link that never says hello', async (t) => {
  // Accepts TCP connections and says nothing, like a store that is stopping or hung.
  const sockets: net.Socket[] = [];
  const mute = net.createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    mute.close();
  });
  const client = new StoreClient(`127.0.0.1:${(mute.address() as net.AddressInfo).port}`, { timeoutMs: 4500, secretKey: '' });
  t.teardown(() => client.close());
  await t.rejects(client.stats(), { name: 'StoreError', message: /no hello from the store within 2000 ms/ });
  t.ok(sockets.length >= 2, 'and tried again');
});

t.test('the store process: corrupt file, and SECRET_KEY', async (t) => {
  const port = await freePort();
  const dataDir = path.join(hub.root, 'data-corrupt');
  fs.mkdirSync(dataDir, { recursive: true });
  fs.writeFileSync(path.join(dataDir, 'store.json'), 'not json at all');
  const store = await startStore(t, port, dataDir, { SECRET_KEY: 's3cret' });

  const good = new StoreClient(`127.0.0.1:${port}`, { timeoutMs: 3000, secretKey: 's3cret' });
  const bad = new StoreClient(`127.0.0.1:${port}`, { timeoutMs: 1500, secretKey: 'wrong' });
  const none = new StoreClient(`127.0.0.1:${port}`, { timeoutMs: 1500, secretKey: '' });
  t.teardown(() => [good, bad, none].forEach((c) => c.close()));

  t.same(await good.stats(), { retained: 0, sessions: 0, online: 0, queued: 0, wills: 0 }, 'started empty');
  t.match(store.output(), /store\.json could not be read .* moved to .*store\.json\.corrupt-/, 'with a log line');
  t.match(fs.readdirSync(dataDir), [/^store\.json\.corrupt-/]);
  await t.rejects(bad.stats(), { name: 'StoreError', message: /authentication failed/ }, 'a wrong key is refused');
  await t.rejects(none.stats(), { name: 'StoreError', message: /needs SECRET_KEY/ }, 'no key is refused');
  await kill9(store);
});

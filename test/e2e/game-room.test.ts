/**
 * End to end, the game room template as a person gets it: `create-gatewayworker-app --template
 * game-room` generates and installs it, `tsx start.ts start` runs it on free ports with 2 gateway
 * and 2 business worker processes, and real `ws` clients play: matchmaking, the tick rate, inputs
 * and acks, resume within and after the grace period, rooms owned by one worker, leaving and
 * disposal stopping the room's timer, bad input and flooding, a reload; then two Chromium pages.
 */
import { existsSync } from 'node:fs';
import t from 'tap';
import { generateGameApp, player, sleep, startGameApp, tempDir, waitFor, type GameApp, type Message, type Player } from './game-helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const GRACE_SECONDS = 2;
const EMPTY_ROOM_SECONDS = 1;
const MAX_MESSAGES_PER_SECOND = 20;
const TICK_RATE = 20;
const SPEED = 200;
const RADIUS = 12;

let app: GameApp;

t.before(async () => {
  const dir = await generateGameApp(tempDir(t));
  app = await startGameApp(t, dir, {
    WORKER_COUNT: '2',
    GATEWAY_COUNT: '2',
    GRACE_SECONDS: String(GRACE_SECONDS),
    EMPTY_ROOM_SECONDS: String(EMPTY_ROOM_SECONDS),
    MAX_MESSAGES_PER_SECOND: String(MAX_MESSAGES_PER_SECOND),
  });
});

/** The next state message from now on (older ones are dropped). */
async function freshState(p: Player): Promise<Message> {
  p.drain();
  return p.next('state');
}

const find = (state: Message, id: string) => state.players.find((q: Message) => q.id === id);

/** Players leave at the end of a subtest, so the next one starts with no open room. */
async function leaveAll(players: Player[]): Promise<void> {
  for (const p of players) {
    if (p.ws.readyState !== p.ws.OPEN) continue;
    p.send({ type: 'leave' });
    await p.next('left').catch(() => {});
  }
}

t.test('matchmaking: the first four share a room, the fifth opens a second; one worker per room', async (t) => {
  const players: Player[] = [];
  for (let i = 0; i < 5; i++) players.push(await player(t, app.port));
  // Before joining, the default router spreads the clients over both workers.
  const before = new Set(await Promise.all(players.map((p) => p.pid())));
  t.equal(before.size, 2, 'before joining, clients are served by both workers');

  const joined: Message[] = [];
  for (const [i, p] of players.entries()) {
    joined.push(await p.join(`p${i}`));
    t.equal(joined[i].type, 'joined', `p${i} joined: ${JSON.stringify(joined[i])}`);
  }
  const [first, second] = joined;
  t.equal(second.room, first.room, 'two players land in the same room');
  t.same(second.players.map((q: Message) => q.name).sort(), ['p0', 'p1'], 'the second sees the first in joined.players');
  t.equal(first.tickRate, TICK_RATE);
  t.match(first, { playerId: String, token: String, maxPlayers: 4 });
  const seen = await players[0].next((m) => m.type === 'state' && m.players.some((q: Message) => q.id === second.playerId));
  t.ok(find(seen, second.playerId), 'the first sees the second in the state');
  t.same(new Set(joined.slice(0, 4).map((j) => j.room)).size, 1, 'players 1-4 share one room');
  t.not(joined[4].room, first.room, 'the fifth player opens a second room (a full room is never joined)');
  t.same(joined[4].players.length, 1);

  // Every message of a room is served by its owner, whichever worker had the client before.
  const owner = first.pid;
  t.same(new Set(joined.slice(0, 4).map((j) => j.pid)), new Set([owner]), 'joined came from one worker for the whole room');
  for (const [i, p] of players.slice(0, 4).entries()) {
    const pids = new Set([await p.pid(), await p.pid(), await p.pid()]);
    t.same([...pids], [owner], `p${i}: every ping in the room answered by pid ${owner}`);
    p.send({ type: 'input', seq: 1, keys: { up: true } });
    await p.next((m) => m.type === 'state' && m.ack === 1);
  }
  t.pass('the inputs of all four reached the room (acked)');
  players[0].send({ type: 'rooms' });
  const lobby = await players[0].next('rooms');
  t.same(
    lobby.rooms.filter((r: Message) => r.id === first.room || r.id === joined[4].room).map((r: Message) => r.players),
    [4, 1],
    'the lobby lists both rooms, fullest first',
  );
  t.equal(lobby.pid, owner, 'the lobby request of a player in the room also went to its owner');

  const gone = players[1].next((m) => m.type === 'left' && m.playerId === first.playerId);
  players[0].send({ type: 'leave' });
  t.equal((await players[0].next('left')).playerId, first.playerId, 'leave → left');
  await gone;
  t.pass('the room hears who left');
  await leaveAll(players);
});

t.test('state arrives at the tick rate; inputs move the player; ack follows seq', async (t) => {
  const p = await player(t, app.port);
  const me = await p.join('runner');
  t.equal(me.type, 'joined');
  await p.next('state');
  // Count the states of a 2 s window.
  const t0 = Date.now();
  let count = 0;
  const counting = (data: unknown) => {
    if (String(data).startsWith('{"type":"state"')) count++;
  };
  p.ws.on('message', counting);
  await sleep(2000);
  p.ws.off('message', counting);
  const elapsed = (Date.now() - t0) / 1000;
  const expected = TICK_RATE * elapsed;
  t.ok(Math.abs(count - expected) <= expected * 0.2, `${count} states in ${elapsed.toFixed(2)} s (expected ${expected.toFixed(0)} ± 20%)`);

  const start = find(await freshState(p), me.playerId);
  p.send({ type: 'input', seq: 1, keys: { right: true, x: 9999 } });
  const moving = await p.next((m) => m.type === 'state' && m.ack === 1);
  const t1 = Date.now();
  const x1 = find(moving, me.playerId).x;
  await sleep(500);
  p.send({ type: 'input', seq: 2, keys: {} });
  const stopped = await p.next((m) => m.type === 'state' && m.ack === 2);
  const dt = (Date.now() - t1) / 1000;
  const x2 = find(stopped, me.playerId).x;
  t.ok(x2 > x1, `moved right: ${x1} → ${x2}`);
  t.ok(x2 - x1 <= SPEED * (dt + 0.1) + 1, `no faster than the speed limit (${(x2 - x1).toFixed(1)} in ${dt.toFixed(2)} s)`);
  t.equal(find(stopped, me.playerId).y, start.y, 'only the x axis moved; the forged "x" key did nothing');
  const still = find(await freshState(p), me.playerId);
  t.equal(still.x, x2, 'keys released: the player stays');

  // Several inputs within one tick: the last one counts; late ones are ignored.
  for (let seq = 3; seq <= 7; seq++) p.send({ type: 'input', seq, keys: { left: seq === 7 } });
  p.send({ type: 'input', seq: 5, keys: { right: true } });
  const burst = await p.next((m) => m.type === 'state' && m.ack >= 7);
  t.equal(burst.ack, 7, 'ack = the last applied seq (a stale seq 5 is ignored)');
  // Walk into the left wall: the arena bounds hold.
  const wall = await p.next((m) => m.type === 'state' && find(m, me.playerId).x <= RADIUS, 6000);
  t.equal(find(wall, me.playerId).x, RADIUS, 'stopped by the left wall at the player radius');
  await sleep(200);
  t.equal(find(await freshState(p), me.playerId).x, RADIUS, 'and stays inside the arena');
  await leaveAll([p]);
});

t.test('resume within the grace period keeps the player, its place and room; after it, an error', async (t) => {
  const a = await player(t, app.port);
  const b = await player(t, app.port);
  const ja = await a.join('alice');
  const jb = await b.join('bob');
  t.equal(jb.room, ja.room);
  a.send({ type: 'input', seq: 1, keys: { down: true } });
  await a.next((m) => m.type === 'state' && m.ack === 1);
  await sleep(200);
  a.send({ type: 'input', seq: 2, keys: {} });
  const at = find(await a.next((m) => m.type === 'state' && m.ack === 2), ja.playerId);

  a.ws.terminate();
  const away = await b.next((m) => m.type === 'state' && find(m, ja.playerId)?.away === true);
  t.same(find(away, ja.playerId), { id: ja.playerId, name: 'alice', x: at.x, y: at.y, away: true }, 'the others see alice away, in place');

  const a2 = await player(t, app.port);
  a2.send({ type: 'resume', token: ja.token });
  const back = await a2.next((m) => m.type === 'joined' || m.type === 'error');
  t.match(back, { type: 'joined', resumed: true, room: ja.room, playerId: ja.playerId, token: ja.token, pid: ja.pid }, 'resumed: same player and room');
  t.same(find(back, ja.playerId), { id: ja.playerId, name: 'alice', x: at.x, y: at.y }, 'at the same position');
  a2.send({ type: 'input', seq: 1, keys: { up: true } });
  const moved = await b.next((m) => m.type === 'state' && find(m, ja.playerId).y < at.y);
  t.ok(moved, 'the resumed player plays on (its new connection numbers inputs from 1)');
  a2.send({ type: 'input', seq: 2, keys: {} });

  // After the grace period the seat is gone.
  const c = await player(t, app.port);
  const jc = await c.join('carol');
  t.equal(jc.room, ja.room, 'carol joins the open room');
  c.ws.terminate();
  const timeout = await b.next((m) => m.type === 'left' && m.playerId === jc.playerId, (GRACE_SECONDS + 3) * 1000);
  t.equal(timeout.reason, 'timeout', 'the room hears that carol timed out');
  const c2 = await player(t, app.port);
  c2.send({ type: 'resume', token: jc.token });
  t.match(await c2.next('error'), { code: 'resume_failed', message: /grace period/ }, 'resume after the grace period fails cleanly');
  c2.send({ type: 'resume', token: 'nonsense' });
  t.match(await c2.next('error'), { code: 'resume_failed' }, 'a made-up token too');
  await leaveAll([a2, b]);
});

/** Timers of each BusinessWorker process (pid → count), from `status --json`. */
async function workerTimers(): Promise<Map<number, number>> {
  const { processes } = await app.status();
  return new Map(processes.filter((p) => p.name.endsWith('BusinessWorker')).map((p) => [p.pid, p.timers]));
}

/** A worker without rooms runs one timer: its reconcile pass. Each running room adds its loop. */
const IDLE_TIMERS = 1;

/** Waits until no worker has a room left (rooms of earlier subtests are disposed by then). */
async function noRoomsLeft(timeoutMs: number): Promise<void> {
  await waitFor(async () => ([...(await workerTimers()).values()].every((n) => n === IDLE_TIMERS) ? true : null), timeoutMs, 'every room to be disposed');
}

t.test('leaving stops the room timer, and the empty room is disposed', async (t) => {
  await noRoomsLeft((GRACE_SECONDS + EMPTY_ROOM_SECONDS + 4) * 1000);
  const p = await player(t, app.port);
  const me = await p.join('solo');
  t.equal(me.players.length, 1, 'a room of its own');
  await p.next('state');
  t.equal((await workerTimers()).get(me.pid), IDLE_TIMERS + 1, "the owner runs the room's loop timer");
  p.send({ type: 'leave' });
  await p.next('left');
  await sleep(100); // a state already on its way may still arrive
  const after = p.all.length;
  await sleep(300);
  t.equal(p.all.filter((m, i) => i >= after && m.type === 'state').length, 0, 'no state after leaving: the loop stopped');
  await noRoomsLeft((EMPTY_ROOM_SECONDS + 3) * 1000);
  t.pass('the empty room was disposed: no timer of it left');
  p.send({ type: 'rooms' });
  const lobby = await p.next('rooms');
  t.notOk(lobby.rooms.some((r: Message) => r.id === me.room), 'the room is gone from the lobby');
  const again = await p.join('solo', me.room);
  t.match(again, { type: 'error', message: 'no such room' }, 'joining a disposed room by id: error');

  // A player who drops and never comes back: grace, then disposal, then the timers are back.
  const q = await player(t, app.port);
  const jq = await q.join('ghost');
  t.equal(jq.players.length, 1, 'a room of its own');
  await q.next('state');
  q.ws.terminate();
  await noRoomsLeft((GRACE_SECONDS + EMPTY_ROOM_SECONDS + 4) * 1000);
  t.pass('after the grace period and the empty-room timeout, the room and its timers are gone');
});

t.test('bad input gets an error; the connection stays', async (t) => {
  const p = await player(t, app.port);
  const cases: Array<[string, RegExp]> = [
    ['not json', /invalid JSON/],
    ['[1,2]', /JSON object/],
    ['{"type":"dance"}', /unknown message type/],
    ['{"type":"input","seq":1,"keys":{"up":true}}', /before join/],
    ['{"type":"leave"}', /not in a room/],
    ['{"type":"join","name":"x","room":42}', /room id/],
    ['{"type":"join","name":"x","room":"lobby"}', /no such room/],
    ['{"type":"resume"}', /token/],
  ];
  for (const [raw, message] of cases) {
    p.sendRaw(raw);
    t.match(await p.next('error'), { message }, raw);
  }
  await p.join('checker');
  const invalid: Array<[object, RegExp]> = [
    [{ type: 'input', seq: -1, keys: {} }, /seq/],
    [{ type: 'input', seq: 'one', keys: {} }, /seq/],
    [{ type: 'input', seq: 1.5, keys: {} }, /seq/],
    [{ type: 'input', seq: 1, keys: 5 }, /keys/],
    [{ type: 'input', seq: 1, keys: { up: 'yes' } }, /keys\.up/],
    [{ type: 'join', name: 'again' }, /already in a room/],
  ];
  for (const [message, expected] of invalid) {
    p.send(message);
    t.match(await p.next('error'), { message: expected }, JSON.stringify(message));
  }
  t.equal(p.ws.readyState, p.ws.OPEN, 'still connected');
  await leaveAll([p]);
});

t.test('a client that floods is warned, then disconnected; others are not affected', async (t) => {
  const calm = await player(t, app.port);
  const flood = await player(t, app.port);
  for (let i = 0; i < MAX_MESSAGES_PER_SECOND; i++) flood.send({ type: 'ping', t: i });
  await flood.next((m) => m.type === 'pong' && m.t === MAX_MESSAGES_PER_SECOND - 1);
  t.notOk(flood.all.some((m) => m.type === 'warning'), `${MAX_MESSAGES_PER_SECOND} a second are fine`);
  for (let i = 0; i < MAX_MESSAGES_PER_SECOND * 3; i++) flood.send({ type: 'ping', t: 100 + i });
  t.match(await flood.next('warning'), { code: 'flood' }, 'warned');
  t.match(await flood.next('error'), { code: 'flood', message: /disconnected/ }, 'then told why');
  await flood.closed;
  t.pass('and disconnected');
  t.equal(typeof (await calm.pid()), 'number', 'another client is still served');
});

t.test('reload: the room freezes while its owner restarts, then continues where it was', async (t) => {
  const a = await player(t, app.port);
  const b = await player(t, app.port);
  const ja = await a.join('alice');
  const jb = await b.join('bob');
  t.equal(jb.room, ja.room);
  await sleep(500);
  const before = await freshState(b);
  const reload = await app.cli('reload');
  t.equal(reload.code, 0, `reload succeeds ${reload.stdout}${reload.stderr}`);
  t.not(await a.pid(), ja.pid, 'the room is served by a new process');
  const after = await b.next((m) => m.type === 'state' && m.tick > 0 && m.tick < before.tick, 5000);
  t.same(
    after.players.map((p: Message) => [p.id, p.name, p.x, p.y]).sort(),
    before.players.map((p: Message) => [p.id, p.name, p.x, p.y]).sort(),
    'same players at the same places (tick starts again)',
  );
  a.send({ type: 'input', seq: 100, keys: { down: true } });
  t.ok(await b.next((m) => m.type === 'state' && find(m, ja.playerId).y !== find(before, ja.playerId).y), 'and plays on');
  a.send({ type: 'input', seq: 101, keys: {} });
  await leaveAll([a, b]);
});

const noChromium = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)`;

t.test('Chromium: two pages; one player moves, the other page sees it', { skip: noChromium }, async (t) => {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  t.teardown(() => browser.close());
  const open = async (name: string) => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${app.port}/?name=${name}`);
    await page.waitForSelector('#players li.me', { timeout: 10_000 });
    return page;
  };
  const one = await open('one');
  const two = await open('two');
  t.equal(await two.textContent('#room'), await one.textContent('#room'), 'both pages are in one room');
  const id = await one.getAttribute('#players li.me', 'data-id');
  const xOnTwo = async () => Number(await two.getAttribute(`#players li[data-id="${id}"]`, 'data-x'));
  await two.waitForSelector(`#players li[data-id="${id}"]`);
  const x0 = await xOnTwo();
  await one.focus('#arena');
  await one.keyboard.down(x0 < 400 ? 'ArrowRight' : 'ArrowLeft');
  await sleep(500);
  await one.keyboard.up(x0 < 400 ? 'ArrowRight' : 'ArrowLeft');
  await waitFor(async () => (Math.abs((await xOnTwo()) - x0) >= 40 ? true : null), 3000, 'page two to see player one move');
  t.pass(`page two saw player one move from x=${x0} to x=${await xOnTwo()}`);
});

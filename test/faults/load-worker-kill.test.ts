/**
 * kill -9 of a BusinessWorker under steady load: 500 WebSocket clients, each sending an echo every
 * 1–2 s (about 330 messages/s, spread out so that two shared cores cope). README, "Guarantees":
 * clients see nothing; events the dead worker had not acknowledged go to
 * another worker (at least once), so nothing is lost and only messages in flight at the kill may
 * be answered twice.
 */
import t from 'tap';
import { JitteredTraffic, childPids, countLine, countsOf, freePort, freshEnv, kill9, manyWsClients, replaced, sleep, startApp, stopwatch, wsClients } from './lib.js';

const CLIENTS = 500;
/** A duplicate must have been sent this close to the kill (the dead worker's unacknowledged window). */
const IN_FLIGHT_MS = 1000;

t.test('kill -9 of a BusinessWorker under 500 clients: nothing lost, nobody dropped', async (t) => {
  const clock = stopwatch();
  const port = await freePort();
  const app = await startApp(t, await freshEnv({ WORKER_COUNT: '2', WS_PORT: String(port) }));
  const before = childPids(app.pid, 'Business');
  t.equal(before.length, 2, 'two business workers');
  clock.lap('start');
  const clients = await manyWsClients(t, '127.0.0.1', port, CLIENTS);
  const welcomePids = new Set(clients.map((c) => Number(c.messages.find((m) => m.type === 'welcome')?.pid)));
  t.same([...welcomePids].sort(), [...before].sort(), 'clients are spread over both workers');

  clock.lap('connect');
  const traffic = new JitteredTraffic(clients, 1000, 2000).start();
  await sleep(3000);
  const [victim, survivor] = before;
  const killedAt = Date.now();
  kill9(victim);
  const after = await replaced(app.pid, 'Business', [victim], 2);
  await sleep(3000);
  clock.lap('traffic, kill, restart');
  await traffic.stop(10_000);
  clock.lap('settle');

  const counts = countsOf(traffic, clients);
  const late = traffic.doubled().filter((key) => Math.abs((traffic.sentAt.get(key) ?? 0) - killedAt) > IN_FLIGHT_MS);
  const byVictim = [...traffic.replies.values()].filter((list) => list.some((r) => r.pid === victim)).length;
  t.comment(`worker kill: ${countLine(counts)} (answered by the killed worker before the kill ${byVictim}; dups sent more than ${IN_FLIGHT_MS} ms from the kill ${late.length})`);
  t.ok(byVictim > 0, 'the killed worker was answering before the kill');
  t.equal(counts.dropped, 0, 'no client was disconnected');
  t.same(traffic.lost().slice(0, 10), [], `nothing lost (lost ${counts.lost})`);
  t.same(late.slice(0, 10), [], 'duplicates only for messages in flight at the kill');
  t.ok(after?.includes(survivor), `the supervisor restarted the worker, the other one kept running (${before} -> ${after})`);

  // Clients stay with the worker they moved to (sticky routing): new clients go to the restarted one.
  const restarted = after?.find((pid) => pid !== survivor);
  const fresh = await wsClients(t, '127.0.0.1', port, 4);
  clock.lap('new clients');
  t.comment(clock.line());
  t.ok(fresh.some((c) => c.messages.find((m) => m.type === 'welcome')?.pid === restarted), 'new clients reach the restarted worker');
});

/**
 * A BusinessWorker killed with SIGKILL under traffic (README, "Guarantees"):
 * clients stay connected, every message gets a reply (events the dead worker had not acknowledged
 * are handed to the other worker: at-least-once), and the supervisor brings the worker back.
 *
 * Duplicates are allowed only for messages in flight at the kill: a duplicate is a message the
 * dead worker handled and answered but whose (batched, cumulative) ack had not reached the gateway.
 * The test requires each duplicate to have been sent shortly (< 1 s) before the kill.
 */
import t from 'tap';
import { Traffic, kill9, sleep, startApp, waitFor, wsClients, freshEnv } from './lib.js';

const CLIENTS = 50;
const INTERVAL_MS = 20;

t.test('SIGKILL of a BusinessWorker under traffic loses nothing', async (t) => {
  const app = await startApp(t, await freshEnv({
    WORKER_COUNT: '2',
  }));
  const port = await app.port('WsGateway');
  const before = await app.pids('Business');
  t.equal(before.length, 2, 'two business workers');

  const clients = await wsClients(t, '127.0.0.1', port, CLIENTS);
  // Both workers must be carrying traffic, or the kill proves nothing.
  const welcomePids = new Set(clients.map((c) => Number(c.messages.find((m) => m.type === 'welcome')?.pid)));
  t.same([...welcomePids].sort(), [...before].sort(), 'clients are spread over both workers');

  const traffic = new Traffic(clients, INTERVAL_MS).start();
  await sleep(1500);
  const victim = before[0];
  const killedAt = Date.now();
  const sentBeforeKill = traffic.sent;
  kill9(victim);
  await sleep(2000);
  await traffic.stop(8000);

  const lost = traffic.lost();
  const doubled = traffic.doubled();
  const closes = clients.filter((c) => c.closed).length;
  const lateDoubles = doubled.filter((key) => (traffic.sentAt.get(key) ?? 0) < killedAt - 1000 || (traffic.sentAt.get(key) ?? 0) > killedAt + 1000);
  const answeredByVictim = [...traffic.replies.values()].filter((list) => list.some((r) => r.pid === victim)).length;
  t.comment(
    `sent ${traffic.sent} (${sentBeforeKill} before the kill), replies from the killed worker ${answeredByVictim}, ` +
      `lost ${lost.length}, doubled ${doubled.length} (in flight at the kill), client closes ${closes}`,
  );
  t.ok(answeredByVictim > 0, 'the killed worker was answering before the kill');
  t.equal(closes, 0, 'no client was disconnected');
  t.same(lost.slice(0, 10), [], `every message got a reply (lost ${lost.length})`);
  t.same(lateDoubles, [], 'only messages in flight at the kill were handled twice');

  const after = await waitFor(async () => {
    const pids = await app.pids('Business');
    return pids.length === 2 && !pids.includes(victim) ? pids : null;
  }, 10_000, 200);
  t.ok(after, `the supervisor restarted the worker (pids ${before} -> ${after})`);
  t.ok(after && after.includes(before[1]), 'the other worker kept running');
  t.match(app.output(), /child exited unexpectedly/, 'the master logged the crash');

  // The restarted worker takes new clients.
  const fresh = await wsClients(t, '127.0.0.1', port, 4);
  const freshPids = new Set(fresh.map((c) => Number(c.messages.find((m) => m.type === 'welcome')?.pid)));
  t.ok(after && [...freshPids].some((pid) => pid !== before[1] && after.includes(pid)), 'new clients reach the restarted worker');
});

t.test('SIGKILL of the only BusinessWorker: its unacknowledged events wait for the restart', async (t) => {
  const app = await startApp(t, await freshEnv({
    WORKER_COUNT: '1',
  }));
  const port = await app.port('WsGateway');
  const [victim] = await app.pids('Business');
  const clients = await wsClients(t, '127.0.0.1', port, 20);
  const traffic = new Traffic(clients, INTERVAL_MS).start();
  await sleep(1000);
  const killedAt = Date.now();
  kill9(victim);
  // Traffic goes on while no worker is up: those events are held by the gateway.
  const restarted = await waitFor(async () => {
    const [pid] = await app.pids('Business');
    return pid && pid !== victim ? pid : null;
  }, 10_000, 200);
  await sleep(1000);
  await traffic.stop(10_000);
  const lost = traffic.lost();
  const doubled = traffic.doubled();
  const lateDoubles = doubled.filter((key) => Math.abs((traffic.sentAt.get(key) ?? 0) - killedAt) > 1000);
  // The replacement needs well over 500 ms to boot: these were sent while no worker was linked.
  const heldDuringRestart = [...traffic.sentAt.values()].filter((at) => at > killedAt + 50 && at < killedAt + 500).length;
  t.comment(`sent ${traffic.sent}, lost ${lost.length}, doubled ${doubled.length}, client closes ${clients.filter((c) => c.closed).length}`);
  t.ok(restarted, `the worker was restarted (pid ${victim} -> ${restarted})`);
  t.ok(heldDuringRestart > 0, `messages were sent while no worker was up (${heldDuringRestart})`);
  t.equal(clients.filter((c) => c.closed).length, 0, 'no client was disconnected');
  t.same(lost.slice(0, 10), [], `every message got a reply (lost ${lost.length})`);
  t.same(lateDoubles, [], 'only messages in flight at the kill were handled twice');
  t.ok([...traffic.replies.values()].some((list) => list.some((r) => r.pid === restarted)), 'the restarted worker answered');
});

/**
 * kill -9 of the Register under steady load (500 WebSocket clients, an echo every 1–2 s each).
 * README: nothing happens to clients — links that are up stay up, so nothing is dropped, lost or
 * doubled; the supervisor restarts the Register and everyone re-announces.
 */
import t from 'tap';
import { JitteredTraffic, childPids, countLine, countsOf, freePort, freshEnv, kill9, manyWsClients, replaced, sleep, startApp, stopwatch, wsClients } from './lib.js';

const CLIENTS = 500;

t.test('kill -9 of the Register under 500 clients: nothing dropped, lost or doubled', async (t) => {
  const clock = stopwatch();
  const port = await freePort();
  const app = await startApp(t, await freshEnv({ WORKER_COUNT: '2', WS_PORT: String(port) }));
  clock.lap('start');
  const clients = await manyWsClients(t, '127.0.0.1', port, CLIENTS);

  clock.lap('connect');
  const traffic = new JitteredTraffic(clients, 1000, 2000).start();
  await sleep(3000);
  const [register] = childPids(app.pid, 'Register');
  kill9(register);
  const [restarted] = (await replaced(app.pid, 'Register', [register], 1)) ?? [];
  // Gateways re-announce and workers re-subscribe (every second) while the traffic goes on.
  await sleep(3000);
  clock.lap('traffic, kill, restart');
  await traffic.stop(10_000);
  clock.lap('settle');

  const counts = countsOf(traffic, clients);
  t.comment(`register kill: ${countLine(counts)}`);
  t.ok(restarted, `the supervisor restarted the Register (pid ${register} -> ${restarted})`);
  t.equal(counts.dropped, 0, 'no client was disconnected');
  t.same(traffic.lost().slice(0, 10), [], `nothing lost (lost ${counts.lost})`);
  t.same(traffic.doubled().slice(0, 10), [], `nothing doubled (dup ${counts.dup})`);

  // Discovery works again: a query reaches every gateway, new clients are answered.
  const [fresh] = await wsClients(t, '127.0.0.1', port, 1);
  fresh.send('count');
  const count = await fresh.next((m) => m.cmd === 'count');
  clock.lap('query');
  t.comment(clock.line());
  t.equal(count.value, CLIENTS + 1, 'a query after the restart counts every client');
});

/**
 * kill -9 of one gateway process under steady load: two WebSocket gateway processes share the
 * client port (500 clients spread over them by the kernel), each client sends an echo every 1–2 s.
 * README: the dead gateway's clients are disconnected, and only they; the supervisor restarts it;
 * the clients of the other gateway lose nothing.
 */
import t from 'tap';
import {
  JitteredTraffic,
  childPids,
  countLine,
  countsOf,
  freePort,
  freshEnv,
  gatewayPortOf,
  kill9,
  manyWsClients,
  replaced,
  sleep,
  startApp,
  stopwatch,
  wsClients,
} from './lib.js';

const CLIENTS = 500;

t.test('kill -9 of a gateway under 500 clients: only its clients are dropped, it comes back', async (t) => {
  const clock = stopwatch();
  const wsStart = await freePort(2);
  const port = await freePort();
  const app = await startApp(t, await freshEnv({ WORKER_COUNT: '2', GATEWAY_COUNT: '2', WS_START_PORT: String(wsStart), WS_PORT: String(port) }));
  const gateways = childPids(app.pid, 'WsGateway');
  t.equal(gateways.length, 2, 'two ws gateway processes');
  clock.lap('start');

  const clients = await manyWsClients(t, '127.0.0.1', port, CLIENTS);
  // A client id names its gateway's internal port: process n listens on startPort + n.
  const onVictim = (i: number): boolean => gatewayPortOf(clients[i].id) === wsStart;
  const doomed = clients.filter((_, i) => onVictim(i)).length;
  t.ok(doomed > 0 && doomed < CLIENTS, `clients are spread over both gateways (${doomed} on #0, ${CLIENTS - doomed} on #1)`);

  clock.lap('connect');
  const traffic = new JitteredTraffic(clients, 1000, 2000).start();
  await sleep(3000);
  const killedAt = Date.now();
  kill9(gateways[0]);
  const restarted = (await replaced(app.pid, 'WsGateway', [gateways[0]], 2))?.find((pid) => pid !== gateways[1]);
  await sleep(3000);
  clock.lap('kill and restart');
  await traffic.stopQuiet();
  clock.lap('settle');

  const all = countsOf(traffic, clients);
  const victims = countsOf(traffic, clients, onVictim);
  const others = countsOf(traffic, clients, (i) => !onVictim(i));
  const droppedWrongly = clients.filter((c, i) => c.closed && !onVictim(i)).length;
  const notDropped = clients.filter((c, i) => !c.closed && onVictim(i)).length;
  t.comment(`gateway kill, all: ${countLine(all)}`);
  t.comment(`gateway kill, clients of the killed gateway (${doomed}): ${countLine(victims)}`);
  t.comment(`gateway kill, clients of the other gateway (${CLIENTS - doomed}): ${countLine(others)}`);
  t.equal(notDropped, 0, "every client of the killed gateway was disconnected");
  t.equal(droppedWrongly, 0, 'no client of the other gateway was disconnected');
  t.equal(others.lost, 0, 'the other gateway lost nothing');
  t.equal(others.dup, 0, 'the other gateway doubled nothing');
  // The dead gateway's clients lose only what they sent before the kill and it had not answered.
  const lostAfterKill = traffic.lost().filter((key) => onVictim(Number(/^m(\d+):/.exec(key)?.[1])) && (traffic.sentAt.get(key) ?? 0) > killedAt + 500);
  t.same(lostAfterKill, [], 'the disconnected clients sent nothing into the void after the kill');
  t.equal(victims.dup, 0, 'nothing doubled on the killed gateway');
  t.ok(restarted, `the supervisor restarted the gateway (pid ${gateways[0]} -> ${restarted})`);

  // The restarted process serves again: new connections reach it (the kernel spreads them over both).
  const fresh = await wsClients(t, '127.0.0.1', port, 20);
  const back = fresh.find((c) => gatewayPortOf(c.id) === wsStart);
  t.ok(back, 'new clients reach the restarted gateway');
  if (back) {
    back.send('echo back');
    t.equal((await back.next((m) => m.cmd === 'echo')).value, 'back', 'and are answered');
  }
  clock.lap('new clients');
  t.comment(clock.line());
});

/**
 * A network partition between a gateway host and a worker host, then the heal.
 *
 * Layout (each its own app process tree, as in distributed.test.ts): the Register, a gateway host
 * on 127.0.0.3 and a worker host (two BusinessWorkers, links leaving from 127.0.0.5). Every link
 * from the worker host to the gateway host's internal ports goes through a TCP proxy the test
 * controls (the worker host's app reroutes its connections there: $GW_REDIRECT, see
 * test/fixtures/faults/redirect.ts); the Register stays reachable from both hosts.
 *
 * `partition()` freezes the proxy like a pulled cable: nothing crosses, no close or reset either,
 * so each side only learns of it from the silence of its links (internal/link.ts drops a link
 * silent for 3 ping intervals). The partition lasts until both sides have given their links up;
 * then `heal()`.
 *
 * Promised: the links come back by themselves, and nothing is delivered twice. Reported: what the
 * 200 chatting clients see during the partition (answers, disconnects) and afterwards.
 */
import t from 'tap';
import { JitteredTraffic, TcpProxy, countLine, countsOf, errorLines, freePort, percentile, secret, sleep, startApp, stopwatch, waitFor, wsClients, type Client } from './lib.js';

const GATEWAY_HOST = '127.0.0.3';
const WORKER_IP = '127.0.0.5';
const CLIENTS = 200;
/** Longest the partition lasts while waiting for both sides to drop their links (3 × 5 s ping interval, checked every 5 s). */
const MAX_PARTITION_MS = 30_000;

const lines = (output: string, pattern: RegExp): number => output.split('\n').filter((line) => pattern.test(line)).length;

t.test('partition between the gateway host and the worker host, then heal', async (t) => {
  const clock = stopwatch();
  const common = { SECRET_KEY: secret(), REGISTER_ADDRESS: `127.0.0.1:${await freePort()}` };
  const wsInternal = await freePort();
  const textInternal = await freePort();
  const wsPort = await freePort();
  const proxies = [new TcpProxy(GATEWAY_HOST, wsInternal), new TcpProxy(GATEWAY_HOST, textInternal)];
  const [wsProxy, textProxy] = await Promise.all(proxies.map((p) => p.listen(t)));
  const redirect = `${GATEWAY_HOST}:${wsInternal}=127.0.0.1:${wsProxy},${GATEWAY_HOST}:${textInternal}=127.0.0.1:${textProxy}`;

  // All three at once: gateways and workers retry the Register until it is up.
  const [, gateways, workers] = await Promise.all([
    startApp(t, { ...common, ROLES: 'register' }),
    startApp(t, {
      ...common,
      ROLES: 'gateway',
      LAN_IP: GATEWAY_HOST,
      GATEWAY_HOST,
      WS_PORT: String(wsPort),
      WS_START_PORT: String(wsInternal),
      TEXT_START_PORT: String(textInternal),
    }),
    startApp(t, { ...common, ROLES: 'worker', WORKER_COUNT: '2', WORKER_LAN_IP: WORKER_IP, GW_REDIRECT: redirect }),
  ]);
  clock.lap('start');
  const linked = (): number => lines(gateways.output(), /WsGateway#0 .*business worker linked/);
  const unlinked = (): number => lines(gateways.output(), /WsGateway#0 .*business worker (unlinked|left)/);
  t.ok(await waitFor(() => linked() >= 2, 10_000), 'both workers linked to the ws gateway');
  t.ok(proxies.every((p) => p.accepted >= 2), `every worker link goes through the proxies (${proxies.map((p) => p.accepted)} connections)`);
  // Links of a running system came up at different times (restarts, reloads, resets), so they
  // notice a partition at different moments. Here both came up together: one is reset (as a
  // router losing its state would) and comes back a second later, before any client is on.
  proxies[0].reset(0);
  t.ok(await waitFor(() => linked() >= 3, 10_000), 'the reset link came back by itself');

  const clients: Client[] = [];
  for (let at = 0; at < CLIENTS; at += 100) clients.push(...(await wsClients(t, GATEWAY_HOST, wsPort, 100)));
  clock.lap('reset a link, connect');
  const traffic = new JitteredTraffic(clients, 1000, 2000).start();
  await sleep(3000);
  t.ok(traffic.received > 0, `traffic flows before the partition (${traffic.received} answers)`);

  // The partition.
  const linkedBefore = linked();
  const unlinkedBefore = unlinked();
  const workerDrops = (): number => lines(workers.output(), /internal link silent, dropping it/);
  const partitionedAt = Date.now();
  for (const proxy of proxies) proxy.partition();
  const bothSidesGaveUp = await waitFor(() => unlinked() >= unlinkedBefore + 2 && workerDrops() >= 4, MAX_PARTITION_MS, 100);
  const gatewaySawItAfter = Date.now() - partitionedAt;
  await sleep(1000);
  const healedAt = Date.now();
  clock.lap('traffic, partition');
  for (const proxy of proxies) proxy.heal();
  const relinked = await waitFor(() => linked() >= linkedBefore + 2, 15_000, 50);
  const relinkedAt = Date.now();
  await sleep(4000);
  await traffic.stopQuiet(15_000, 3000);
  clock.lap('heal, traffic, settle');
  t.comment(clock.line());

  // What the clients saw.
  const during = (at: number): boolean => at >= partitionedAt && at < healedAt;
  const sentDuring = [...traffic.sentAt].filter(([, at]) => during(at)).map(([key]) => key);
  const answersDuring = [...traffic.replies.values()].flat().filter((r) => during(r.at)).length;
  const answeredLater = sentDuring.filter((key) => traffic.replies.has(key)).length;
  const disconnected = clients.filter((c) => c.closed).length;
  const delays = traffic.delays((_, at) => during(at));
  const afterHeal = [...traffic.sentAt].filter(([, at]) => at > relinkedAt + 500).map(([key]) => key);
  const lostAfterHeal = afterHeal.filter((key) => !traffic.replies.has(key));
  const counts = countsOf(traffic, clients);
  // Events the gateway gave up on: hold queue full, held too long, or handed on once too often.
  const gaveUp = lines(gateways.output(), /hold queue is full|dropped held events|dropped, and its client closed/);
  const handedOn = gateways.output().split('\n').filter((line) => /WsGateway#0 .*business worker left with unacknowledged events/.test(line)).map((line) => /events=(\d+)/.exec(line)?.[1]);
  t.comment(`partition: ${countLine(counts)}`);
  t.comment(
    `partition: lasted ${healedAt - partitionedAt} ms (both sides gave their links up after ${gatewaySawItAfter} ms); ` +
      `sent during it ${sentDuring.length}, answers that arrived during it ${answersDuring}, answered after the heal ${answeredLater}, ` +
      `their delay p50 ${percentile(delays, 50)} ms max ${percentile(delays, 100)} ms; clients disconnected ${disconnected}; ` +
      `gateway log lines about events it gave up on ${gaveUp}; unacknowledged events handed on by dropped links ${handedOn.join(', ') || 'none'}`,
  );
  t.comment(`partition: links back ${relinked ? relinkedAt - healedAt : 'never'} ms after the heal; sent after that ${afterHeal.length}, unanswered ${lostAfterHeal.length}`);

  t.ok(bothSidesGaveUp, `both sides noticed the partition from the silence and dropped their links (${gatewaySawItAfter} ms)`);
  t.ok(relinked, 'the links came back by themselves after the heal');
  // At least once, as for a worker's death: a message the worker handled just before the link
  // went quiet, whose acknowledgement never crossed, is handed on and answered again. Only those
  // may be doubled — nothing sent once the partition began reached a worker before the heal.
  const doubledLater = traffic.doubled().filter((key) => (traffic.sentAt.get(key) ?? 0) >= partitionedAt);
  t.same(doubledLater.slice(0, 10), [], `nothing sent during or after the partition was delivered twice (dup ${counts.dup}, all in flight when it began)`);
  t.equal(disconnected, 0, 'the partition disconnected no client');
  t.same(lostAfterHeal.slice(0, 10), [], 'every message sent after the links came back was answered');
  t.same(errorLines(workers.output()).slice(0, 3), [], 'the worker host logged no error');
});

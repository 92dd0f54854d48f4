/**
 * `reload` twenty times in a row under steady load (200 WebSocket clients, an echo every 1–2 s
 * each). README: workers drain one at a time, so no client notices: nothing lost, nothing doubled,
 * nobody disconnected. The gateway is never reloaded and must not grow with each reload (per-link
 * state of workers that left): its RSS is reported before and after and bounded.
 *
 * The first reload goes through the CLI; the others through SIGUSR1 to the master (the same
 * reload, without starting a CLI process each time on a loaded machine). Each waits for the
 * master's "reload done" line before the next (reloads back to back, as a deploy script run twice
 * would do). One BusinessWorker, so that twenty reloads (one process boot each) fit the time
 * budget on two shared cores: during each swap the gateway holds the events (README: "no worker
 * up at all") and hands them to the replacement. The RSS is read
 * after the gateway collected garbage (GC_ENV), before the first and after the last reload.
 */
import t from 'tap';
import { GC_ENV, JitteredTraffic, childPids, countLine, countsOf, dumpOutput, freePort, freshEnv, manyWsClients, settledRss, sleep, startApp, stopwatch, waitFor, warnings } from './lib.js';

const CLIENTS = 200;
const RELOADS = 20;
const WORKERS = 1;
const RSS_BOUND = 30 * 1024 * 1024;
const MB = (bytes: number): string => (bytes / 1024 / 1024).toFixed(1);

t.test(`reload ${RELOADS} times under ${CLIENTS} clients: nothing lost or dropped, gateway RSS flat`, async (t) => {
  const clock = stopwatch();
  const port = await freePort();
  const app = await startApp(t, await freshEnv({ ...GC_ENV, WORKER_COUNT: String(WORKERS), WS_PORT: String(port) }));
  const [gateway] = childPids(app.pid, 'WsGateway');
  clock.lap('start');
  const clients = await manyWsClients(t, '127.0.0.1', port, CLIENTS);
  const traffic = new JitteredTraffic(clients, 1000, 2000).start();
  await sleep(2000);
  const rssBefore = await settledRss(gateway);

  const reloadsDone = (): number => app.output().split('\n').filter((line) => /master .*reload done/.test(line)).length;
  const startedAt = Date.now();
  const seen = new Set(childPids(app.pid, 'Business'));
  let done = 0;
  for (let round = 1; round <= RELOADS; round++) {
    if (round === 1) {
      const result = await app.cli('reload');
      t.equal(result.code, 0, `reload 1 through the CLI exits 0 (${result.stdout.trim().split('\n').pop()})`);
    } else process.kill(app.pid, 'SIGUSR1');
    if (!(await waitFor(() => reloadsDone() >= round, 20_000, 50))) break;
    done = round;
    for (const pid of childPids(app.pid, 'Business')) seen.add(pid);
  }
  const reloadMs = Date.now() - startedAt;
  clock.lap('connect, traffic, reloads');
  await sleep(2000);
  await traffic.stopQuiet();
  const rssAfter = await settledRss(gateway);
  clock.lap('settle');
  t.comment(clock.line());

  const counts = countsOf(traffic, clients);
  t.comment(`reload x${done}: ${countLine(counts)}; ${reloadMs} ms for the reloads (${Math.round(reloadMs / Math.max(done, 1))} ms each)`);
  // A replaced worker must leave having acknowledged everything it was given.
  const handedOn = app.output().split('\n').filter((line) => /business worker left with unacknowledged events/.test(line)).length;
  t.comment(`reload x${done}: workers that left with unacknowledged events (handed on) ${handedOn}`);
  t.comment(`reload x${done}: gateway RSS before ${MB(rssBefore)} MB, after ${MB(rssAfter)} MB (${rssAfter >= rssBefore ? '+' : ''}${MB(rssAfter - rssBefore)} MB); worker processes seen ${seen.size}`);
  dumpOutput('reload-repeat', app);
  if (counts.lost > 0 || counts.dropped > 0) for (const line of warnings(app.output())) t.comment(`app: ${line}`);
  t.equal(done, RELOADS, `every reload finished (${done} of ${RELOADS})`);
  t.equal(seen.size, WORKERS * (RELOADS + 1), 'each reload replaced every worker');
  t.equal(childPids(app.pid, 'WsGateway')[0], gateway, 'the gateway was never restarted');
  t.equal(counts.dropped, 0, 'no client was disconnected');
  t.same(traffic.lost().slice(0, 10), [], `nothing lost (lost ${counts.lost})`);
  t.same(traffic.doubled().slice(0, 10), [], `nothing doubled (dup ${counts.dup})`);
  t.ok(rssBefore > 0 && rssAfter - rssBefore < RSS_BOUND, `gateway RSS grew less than ${MB(RSS_BOUND)} MB (${MB(rssAfter - rssBefore)} MB)`);
});

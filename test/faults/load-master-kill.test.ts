/**
 * kill -9 of the master under steady load (500 WebSocket clients, an echo every 1–2 s each).
 * SIGKILL gives the master no chance to stop its children or remove its pid file, so:
 * - its children must notice (IPC channel closed, parent changed) and exit by themselves within a
 *   short grace: no orphan keeps serving (or holding the ports) without a supervisor;
 * - the pid file it leaves behind is stale, and a following `start` must not be refused by it.
 * The clients are all disconnected (the whole app went down): reported, not a promise.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import {
  JitteredTraffic,
  alive,
  childrenOf,
  countLine,
  countsOf,
  freePort,
  freshEnv,
  groupMembers,
  kill9,
  manyWsClients,
  sleep,
  startApp,
  stopwatch,
  waitFor,
  wsClients,
} from './lib.js';

const CLIENTS = 500;
/** Children stop within Worker.stopTimeout (2 s) of losing the master; this leaves room for a loaded machine. */
const GRACE_MS = 8000;

function readPid(file: string): number | null {
  try {
    return Number.parseInt(fs.readFileSync(file, 'utf8'), 10) || null;
  } catch {
    return null;
  }
}

t.test('kill -9 of the master under 500 clients: no orphans, a new start is not blocked', async (t) => {
  // One runtime dir (pid file, control socket) for both starts, as on a real host.
  const clock = stopwatch();
  const runtimeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-master-'));
  t.teardown(() => fs.rmSync(runtimeDir, { recursive: true, force: true }));
  const pidFile = path.join(runtimeDir, 'app.ts.pid');
  const port = await freePort();
  const env = await freshEnv({ WORKER_COUNT: '2', WS_PORT: String(port), GATEWAYWORKER_RUNTIME_DIR: runtimeDir });
  const app = await startApp(t, env);
  const children = childrenOf(app.pid);
  t.same(
    children.map((c) => c.name),
    ['Business', 'Business', 'Register', 'TextGateway', 'WsGateway'],
    `the master runs five children (${children.map((c) => `${c.name}#${c.id}=${c.pid}`).join(' ')})`,
  );
  t.equal(readPid(pidFile), app.pid, 'the pid file names the master');

  clock.lap('start');
  const clients = await manyWsClients(t, '127.0.0.1', port, CLIENTS);
  clock.lap('connect');
  const traffic = new JitteredTraffic(clients, 1000, 2000).start();
  await sleep(3000);
  const killedAt = Date.now();
  kill9(app.pid);
  await app.exited;
  const gone = await waitFor(() => children.every((c) => !alive(c.pid)) && groupMembers(app.pid).length === 0, GRACE_MS, 50);
  const goneAfter = Date.now() - killedAt;
  clock.lap('traffic, kill, children exit');
  const orphans = children.filter((c) => alive(c.pid)).map((c) => `${c.name}#${c.id}=${c.pid}`);
  await traffic.stop(500);
  const counts = countsOf(traffic, clients);
  const clientsClosed = await waitFor(() => clients.every((c) => c.closed), 3000);
  t.comment(`master kill: ${countLine(countsOf(traffic, clients))}; children gone after ${gone ? goneAfter : `more than ${GRACE_MS}`} ms; orphans: ${orphans.length ? orphans.join(' ') : 'none'}`);
  t.ok(gone, `every child exited by itself within ${GRACE_MS} ms of the master's death (orphans: ${orphans.join(' ') || 'none'})`);
  t.ok(clientsClosed, `the clients saw their connections close (dropped ${counts.dropped} of ${CLIENTS})`);
  t.equal(readPid(pidFile), app.pid, "the dead master's pid file is left behind (stale)");

  // A new start on the same runtime dir is not refused by the stale pid file (or control socket).
  let again: Awaited<ReturnType<typeof startApp>> | null = null;
  try {
    again = await startApp(t, env);
  } catch (error) {
    t.fail(`start after the master's death failed: ${(error as Error).message}`);
  }
  clock.lap('start again');
  if (!again) return;
  t.pass(`a new start succeeded (master pid ${again.pid})`);
  t.equal(readPid(pidFile), again.pid, 'the pid file names the new master');
  const [fresh] = await wsClients(t, '127.0.0.1', port, 1);
  fresh.send('echo again');
  t.equal((await fresh.next((m) => m.cmd === 'echo')).value, 'again', 'the new app answers on the same port');
  const status = await again.cli('status', '--json');
  t.equal(status.code, 0, 'status reaches the new master over the control socket');
  await again.stop();
  clock.lap('check and stop');
  t.comment(clock.line());
  t.notOk(fs.existsSync(pidFile), 'a clean stop removes the pid file');
});

/**
 * Register restart ("no client notices"): the Register is killed with SIGKILL while
 * clients chat; the supervisor restarts it. No client is disconnected, no message is lost or
 * doubled, the business side does not report any client closed (no onClose: $CLOSE_LOG stays
 * empty), sessions survive, and a gateway started after the Register is back is discovered by
 * the workers.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { Traffic, freePort, kill9, secret, sleep, startApp, waitFor, wsClients } from './lib.js';

const CLIENTS = 30;
const GATEWAYS = 4;
const RESTARTS = 2;

t.test('a Register restart goes unnoticed and new gateways are discovered afterwards', async (t) => {
  const closeLog = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-close-')), 'closed.log');
  t.teardown(() => fs.rmSync(path.dirname(closeLog), { recursive: true, force: true }));
  const env = {
    SECRET_KEY: secret(),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    WORKER_COUNT: '2',
    CLOSE_LOG: closeLog,
  };
  // Four ws gateway processes: after a Register restart each gateway re-announces on its own, so a
  // worker that re-subscribes before some of them is handed a partial list. That race is what this
  // test is about; more gateway processes (and two restarts) make losing it near certain.
  const app = await startApp(t, {
    ...env,
    GATEWAY_COUNT: String(GATEWAYS),
    WS_START_PORT: String(await freePort(GATEWAYS)),
    TEXT_START_PORT: String(await freePort()),
  });
  const port = await app.port('WsGateway');
  const clients = await wsClients(t, '127.0.0.1', port, CLIENTS);
  clients.forEach((c, i) => c.send(`set mark k${i}`));
  await Promise.all(clients.map((c) => c.next((m) => m.cmd === 'set')));

  const traffic = new Traffic(clients, 20).start();
  await sleep(800);
  for (let round = 1; round <= RESTARTS; round++) {
    const [registerPid] = await app.pids('Register');
    kill9(registerPid);
    const restarted = await waitFor(async () => {
      const [pid] = await app.pids('Register');
      return pid && pid !== registerPid ? pid : null;
    }, 10_000, 200);
    t.ok(restarted, `restart ${round}: the supervisor restarted the Register (pid ${registerPid} -> ${restarted})`);
    // Let gateways re-announce and workers re-subscribe (they retry every second), traffic going on.
    await sleep(2500);
  }
  await traffic.stop(8000);

  const lost = traffic.lost();
  const doubled = traffic.doubled();
  const closes = clients.filter((c) => c.closed).length;
  const closeCalls = fs.existsSync(closeLog) ? fs.readFileSync(closeLog, 'utf8').trim().split('\n').filter(Boolean) : [];
  t.comment(`sent ${traffic.sent}, lost ${lost.length}, doubled ${doubled.length}, client closes ${closes}, onClose calls ${closeCalls.length}`);
  t.equal(closes, 0, 'no client was disconnected');
  t.same(lost.slice(0, 10), [], `no message lost (lost ${lost.length})`);
  t.same(doubled.slice(0, 10), [], `no message doubled (doubled ${doubled.length})`);
  t.same(closeCalls.slice(0, 5), [], `the app was not told that live clients closed (onClose calls: ${closeCalls.length})`);

  // Sessions written before the restart are still what handlers see.
  clients.forEach((c) => c.send('session'));
  const sessions = await Promise.all(clients.map((c) => c.next((m) => m.cmd === 'session')));
  const wrong = sessions.filter((m, i) => (m.value as Record<string, unknown> | null)?.mark !== `k${i}`).length;
  t.equal(wrong, 0, `every client still has its session (${wrong} of ${CLIENTS} lost it)`);

  // A gateway that starts after the Register came back is discovered: a worker answers its client.
  const second = await startApp(t, {
    ...env,
    ROLES: 'gateway',
    WS_START_PORT: String(await freePort()),
    TEXT_START_PORT: String(await freePort()),
  });
  const [newcomer] = await wsClients(t, '127.0.0.1', await second.port('WsGateway'), 1);
  newcomer.send('echo discovered');
  const reply = await newcomer.next((m) => m.value === 'discovered');
  t.ok(reply, 'a worker linked to the new gateway and answered its client');
  newcomer.send('count');
  const count = await newcomer.next((m) => m.cmd === 'count');
  t.equal(count.value, CLIENTS + 1, 'queries reach both gateways');
});

/**
 * A gateway process dies (SIGKILL): the supervisor restarts it (new pid, same client
 * port, new epoch), and the business side runs onClose exactly once for each client that was on
 * it — and for no client of the other gateway. Events.onClose appends `<clientId> <pid>` to
 * $CLOSE_LOG.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { kill9, sleep, startApp, textClient, waitFor, wsClients, freshEnv } from './lib.js';

const WS_CLIENTS = 20;
const TEXT_CLIENTS = 3;

t.test('a killed gateway is restarted and the workers report its clients closed', async (t) => {
  const closeLog = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-close-')), 'closed.log');
  t.teardown(() => fs.rmSync(path.dirname(closeLog), { recursive: true, force: true }));
  const app = await startApp(t, await freshEnv({
    WORKER_COUNT: '2',
    CLOSE_LOG: closeLog,
  }));
  const wsPort = await app.port('WsGateway');
  const textPort = await app.port('TextGateway');
  const [gatewayPid] = await app.pids('WsGateway');

  const ws = await wsClients(t, '127.0.0.1', wsPort, WS_CLIENTS);
  const text = await Promise.all(Array.from({ length: TEXT_CLIENTS }, () => textClient(t, '127.0.0.1', textPort)));
  await Promise.all(text.map((c) => c.next((m) => m.type === 'welcome')));
  // Every client has had a message handled, so both workers know their clients.
  for (const client of [...ws, ...text]) client.send('echo before');
  await Promise.all([...ws, ...text].map((c) => c.next((m) => m.value === 'before')));
  const doomed = ws.map((c) => c.id).sort();
  t.equal(new Set(doomed).size, WS_CLIENTS, 'every ws client has its own id');
  t.notOk(fs.existsSync(closeLog), 'no onClose before the crash');

  kill9(gatewayPid);
  t.ok(await waitFor(() => ws.every((c) => c.closed), 5000), 'the clients of the dead gateway lost their connection');

  const restarted = await waitFor(async () => {
    const [pid] = await app.pids('WsGateway');
    return pid && pid !== gatewayPid ? pid : null;
  }, 10_000, 200);
  t.ok(restarted, `the supervisor restarted the gateway (pid ${gatewayPid} -> ${restarted})`);

  const readLog = (): string[] => (fs.existsSync(closeLog) ? fs.readFileSync(closeLog, 'utf8').trim().split('\n').filter(Boolean) : []);
  await waitFor(() => readLog().length >= WS_CLIENTS, 10_000);
  await sleep(1500); // let a second (duplicate) report show up, if there is one
  const lines = readLog();
  const ids = lines.map((line) => line.split(' ')[0]);
  t.comment(`onClose calls ${ids.length} for ${WS_CLIENTS} clients of the dead gateway`);
  t.same([...ids].sort(), doomed, 'onClose ran exactly once for each client of the dead gateway');
  t.notOk(ids.some((id) => text.some((c) => c.id === id)), 'no onClose for clients of the other gateway');
  t.equal(text.filter((c) => c.closed).length, 0, 'clients of the other gateway stay connected');

  // The restarted gateway serves on the same port with a new epoch (new, never reused ids).
  const [fresh] = await wsClients(t, '127.0.0.1', wsPort, 1);
  fresh.send('echo again');
  await fresh.next((m) => m.value === 'again');
  t.notOk(doomed.includes(fresh.id), `the new client got a fresh id (${fresh.id})`);
  text[0].send('echo still');
  await text[0].next((m) => m.value === 'still');
  t.pass('the other gateway kept working');
});

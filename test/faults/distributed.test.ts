/**
 * Distributed layout: Register on 127.0.0.2, gateway host A on 127.0.0.3,
 * gateway host B on 127.0.0.4, a worker host on 127.0.0.5 — each its own app process tree (ROLES, LAN_IP,
 * GATEWAY_HOST). Clients on A and B in one group see each other's group messages; B leaves at run
 * time (stop): A's clients keep working, the workers report B's clients closed and stop dialling
 * B; B joins again and is reachable again.
 *
 * The worker host's links leave from 127.0.0.5 (BusinessWorker `lanIp`), which the gateways log.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { errorLines, freePort, secret, sleep, startApp, waitFor, wsClients, type Client } from './lib.js';

const REGISTER_IP = '127.0.0.2';
const A = '127.0.0.3';
const B = '127.0.0.4';

/** Sends `group room <text>` from `from` and waits until every client in `to` got it. */
async function groupRound(from: Client, to: Client[], text: string): Promise<void> {
  from.send(`group room ${text}`);
  await Promise.all(to.map((c) => c.next((m) => m.type === 'group' && m.text === text, 5000)));
}

t.test('register, two gateway hosts and a worker host on different loopback addresses', async (t) => {
  const closeLog = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-close-')), 'closed.log');
  t.teardown(() => fs.rmSync(path.dirname(closeLog), { recursive: true, force: true }));
  const common = { SECRET_KEY: secret(), REGISTER_ADDRESS: `${REGISTER_IP}:${await freePort()}`, CLOSE_LOG: closeLog };
  const hostEnv = async (ip: string): Promise<NodeJS.ProcessEnv> => ({
    ...common,
    ROLES: 'gateway',
    LAN_IP: ip,
    GATEWAY_HOST: ip,
    WS_START_PORT: String(await freePort()),
    TEXT_START_PORT: String(await freePort()),
  });
  const envA = await hostEnv(A);
  const envB = await hostEnv(B);

  await startApp(t, { ...common, ROLES: 'register' });
  const [hostA, firstB, workers] = await Promise.all([
    startApp(t, envA),
    startApp(t, envB),
    startApp(t, { ...common, ROLES: 'worker', WORKER_COUNT: '2', WORKER_LAN_IP: '127.0.0.5' }),
  ]);
  let hostB = firstB;
  t.ok(
    await waitFor(() => /business worker linked worker=Business#\d remote=127\.0\.0\.5/.test(hostA.output()), 5000),
    'the worker host reaches gateway host A from 127.0.0.5',
  );

  t.match((await hostA.processes()).find((p) => p.name === 'WsGateway')?.listening, `websocket://${A}:`, 'host A serves clients on 127.0.0.3');
  const onA = await wsClients(t, A, await hostA.port('WsGateway'), 2);
  const onB = await wsClients(t, B, await hostB.port('WsGateway'), 2);
  t.ok(onA.every((c) => c.id.startsWith('7f000003')) && onB.every((c) => c.id.startsWith('7f000004')), 'client ids carry the lan address of their gateway');
  for (const c of [...onA, ...onB]) c.send('join room');
  await Promise.all([...onA, ...onB].map((c) => c.next((m) => m.cmd === 'join')));
  await groupRound(onA[0], [...onA, ...onB], 'from-A');
  await groupRound(onB[1], [...onA, ...onB], 'from-B');
  t.pass('clients on A and B see each other\'s group messages');
  onA[0].send('count');
  t.equal((await onA[0].next((m) => m.cmd === 'count')).value, 4, 'a query counts the clients of both hosts');

  // Host B leaves.
  await hostB.stop();
  t.ok(await waitFor(() => onB.every((c) => c.closed), 5000), "B's clients were closed by B's stop");
  const closedIds = (): string[] => (fs.existsSync(closeLog) ? fs.readFileSync(closeLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.split(' ')[0]) : []);
  await waitFor(() => closedIds().length >= onB.length, 5000);
  await sleep(1000); // a second report of the same client, if any, shows up by then
  t.same(closedIds().sort(), onB.map((c) => c.id).sort(), "the workers ran onClose once for each of B's clients");

  // The workers must drop B, not keep dialling it: listen on B's internal port and count dials.
  const bInternal = Number(envB.WS_START_PORT);
  let dials = 0;
  const spy = net.createServer((socket) => {
    dials++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => spy.listen(bInternal, B, resolve));
  const start = Date.now();
  await groupRound(onA[1], onA, 'after-B-left');
  onA[0].send('count');
  t.equal((await onA[0].next((m) => m.cmd === 'count' && m.value !== 4)).value, 2, "queries answer at once with A's clients only");
  t.ok(Date.now() - start < 2000, 'no query waited for the departed host');
  await sleep(2500);
  await new Promise<void>((resolve) => spy.close(() => resolve()));
  t.equal(dials, 0, 'no worker dialled the departed host B again');
  t.equal(onA.filter((c) => c.closed).length, 0, "A's clients stayed connected");

  // B joins again at run time.
  hostB = await startApp(t, envB);
  const [back] = await wsClients(t, B, await hostB.port('WsGateway'), 1);
  back.send('join room');
  await back.next((m) => m.cmd === 'join');
  await groupRound(onA[0], [...onA, back], 'B-is-back');
  await groupRound(back, onA, 'hello-from-new-B');
  t.pass('B is reachable again after it rejoined');

  const errors = errorLines(workers.output());
  t.same(errors, [], 'the worker host logged no error');
});

/**
 * No BusinessWorker up: events that reach a gateway while no worker is linked are held
 * (bounded) and delivered, in order, once a worker is back. The workers run as their own start
 * file / process tree (ROLES=worker), the Register and gateways as another (ROLES=register,gateway).
 */
import t from 'tap';
import { freePort, secret, sleep, startApp, waitFor, wsClient, wsClients } from './lib.js';

const CLIENTS = 5;
const MESSAGES = 40;

t.test('events sent while every worker is stopped are held and delivered in order', async (t) => {
  const env = {
    SECRET_KEY: secret(),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    WS_START_PORT: String(await freePort()),
    TEXT_START_PORT: String(await freePort()),
    WORKER_COUNT: '2',
  };
  const gateways = await startApp(t, { ...env, ROLES: 'register,gateway' });
  let workers = await startApp(t, { ...env, ROLES: 'worker' });
  const port = await gateways.port('WsGateway');
  const clients = await wsClients(t, '127.0.0.1', port, CLIENTS);
  clients[0].send('echo warm');
  await clients[0].next((m) => m.value === 'warm');

  await workers.stop();
  t.equal(await workers.exited.then(() => 'exited'), 'exited', 'the worker app stopped');
  await waitFor(() => /business worker unlinked.*workers=0/.test(gateways.output()), 5000);
  t.match(gateways.output(), /business worker unlinked.*workers=0/, 'the gateway has no worker left');

  for (let n = 1; n <= MESSAGES; n++) for (const [i, client] of clients.entries()) client.send(`echo h${i}:${n}`);
  // A client that connects meanwhile: its connect event is held too.
  const late = await wsClient(t, '127.0.0.1', port);
  late.send('echo late');
  await sleep(1000);
  const early = clients.flatMap((c) => c.messages.filter((m) => typeof m.value === 'string' && m.value.startsWith('h')));
  t.equal(early.length, 0, 'nothing is answered while no worker is up');
  t.equal(late.messages.length, 0, 'the late client is not welcomed yet');

  workers = await startApp(t, { ...env, ROLES: 'worker' });
  const got = await waitFor(
    () => clients.every((c, i) => c.messages.some((m) => m.value === `h${i}:${MESSAGES}`)) && late.messages.length >= 2,
    10_000,
  );
  t.ok(got, 'the held events were delivered once a worker was back');
  let lost = 0;
  let doubled = 0;
  let disordered = 0;
  clients.forEach((client, i) => {
    const seqs = client.messages
      .filter((m) => typeof m.value === 'string' && m.value.startsWith(`h${i}:`))
      .map((m) => Number(String(m.value).split(':')[1]));
    const unique = new Set(seqs);
    lost += MESSAGES - unique.size;
    doubled += seqs.length - unique.size;
    for (let k = 1; k < seqs.length; k++) if (seqs[k] < seqs[k - 1]) disordered++;
  });
  t.comment(`held ${CLIENTS * MESSAGES + 2} events: lost ${lost}, doubled ${doubled}, out of order ${disordered}`);
  t.equal(lost, 0, 'no held message lost');
  t.equal(doubled, 0, 'no held message doubled');
  t.equal(disordered, 0, 'each client got its replies in order');
  t.same(
    late.messages.map((m) => m.type ?? m.value),
    ['welcome', 'late'],
    'the late client got its welcome (connect event), then its echo',
  );
  t.equal(clients.filter((c) => c.closed).length + (late.closed ? 1 : 0), 0, 'no client was disconnected');
  t.match(gateways.output(), /delivering held events/, 'the gateway logged the release of held events');
});

t.test('the hold queue is bounded: events beyond holdLimit are dropped with a log line', async (t) => {
  const LIMIT = 10;
  const SENT = 15;
  const env = {
    SECRET_KEY: secret(),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    WS_START_PORT: String(await freePort()),
    TEXT_START_PORT: String(await freePort()),
    WORKER_COUNT: '1',
    HOLD_LIMIT: String(LIMIT),
  };
  const gateways = await startApp(t, { ...env, ROLES: 'register,gateway' });
  let workers = await startApp(t, { ...env, ROLES: 'worker' });
  const [client] = await wsClients(t, '127.0.0.1', await gateways.port('WsGateway'), 1);
  await workers.stop();
  await waitFor(() => /business worker unlinked.*workers=0/.test(gateways.output()), 5000);

  for (let n = 1; n <= SENT; n++) client.send(`echo b${n}`);
  const dropLines = (): number => gateways.output().split('\n').filter((l) => /hold queue is full: event dropped/.test(l)).length;
  await waitFor(() => dropLines() >= SENT - LIMIT, 3000);
  t.equal(dropLines(), SENT - LIMIT, `each event beyond the bound is dropped with an error line (${dropLines()})`);

  workers = await startApp(t, { ...env, ROLES: 'worker' });
  await client.next((m) => m.value === `b${LIMIT}`, 10_000);
  await sleep(500);
  const got = client.messages.filter((m) => typeof m.value === 'string' && m.value.startsWith('b')).map((m) => m.value);
  t.same(got, Array.from({ length: LIMIT }, (_, i) => `b${i + 1}`), 'the first holdLimit events are delivered, in order, and nothing else');
  t.notOk(client.closed, 'the client stayed connected');
});

// Hostile connection patterns: peers that open a connection and stall in the middle of a handshake
// (slowloris) are cut after handshakeTimeout, on WebSocket and TLS ports; with maxConnectionsPerIp,
// a flood of connections from one address is refused at accept while other addresses are served,
// the address gets its slots back once its connections close, and the process stays up.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t, { type Test } from 'tap';
import { Worker } from '../../runtime/src/index.js';
import { IpLimiter, ipKey } from '../../runtime/src/worker/ipLimit.js';
import {
  captureLogs,
  listenWorker,
  rawExchange,
  registerTeardown,
  selfSignedCert,
  sleep,
  startApp,
  textClient,
  waitFor,
  wsClient,
  type TextClient,
} from '../helpers/app.js';

process.env.GATEWAYWORKER_LOG_LEVEL ??= 'error';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Connects from `localAddress` and resolves once connected (or with the error). */
function connectFrom(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/**
 * `n` connections from `localAddress`, opened all at once. Each one is tracked: `closed` counts
 * the ones the server closed (or reset).
 */
async function flood(port: number, n: number, localAddress = '127.0.0.1'): Promise<{ sockets: net.Socket[]; closed: () => number; destroy: () => void }> {
  const sockets: net.Socket[] = [];
  let closed = 0;
  await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<void>((resolve) => {
        const socket = net.connect({ port, host: '127.0.0.1', localAddress });
        sockets.push(socket);
        socket.on('error', () => {});
        socket.once('close', () => {
          closed++;
          resolve();
        });
        socket.once('connect', () => resolve());
      }),
    ),
  );
  return { sockets, closed: () => closed, destroy: () => sockets.forEach((s) => s.destroy()) };
}

async function echoes(t: Test, client: TextClient, what: string): Promise<void> {
  const token = `ping-${Math.random().toString(36).slice(2)}`;
  client.send(token);
  t.equal(await client.next(5000), token, what);
}

t.test('IpLimiter: counts per address, refuses over the limit, logs once per address per interval', async (t) => {
  let clock = 1_000_000;
  const lines: Array<{ remote: string; refused: number }> = [];
  const limiter = new IpLimiter(2, { worker: 'w', logIntervalMs: 10_000, now: () => clock, report: (_m, f) => void lines.push({ remote: f.remote, refused: f.refused }) });

  t.equal(ipKey('::ffff:10.0.0.1'), '10.0.0.1', 'an IPv4-mapped address counts as its IPv4 address');
  t.equal(ipKey('::1'), '::1');
  t.ok(limiter.acquire('10.0.0.1'));
  t.ok(limiter.acquire('::ffff:10.0.0.1'));
  t.notOk(limiter.acquire('10.0.0.1'), 'the third from one address is refused');
  t.ok(limiter.acquire('10.0.0.2'), 'another address is not affected');
  for (let i = 0; i < 99; i++) limiter.acquire('10.0.0.1');
  t.equal(limiter.refused, 100);
  t.same(lines, [{ remote: '10.0.0.1', refused: 1 }], '100 refusals within the interval: one line');

  clock += 10_000;
  t.notOk(limiter.acquire('10.0.0.1'));
  t.same(lines[1], { remote: '10.0.0.1', refused: 100 }, 'the next interval logs again, with the refusals not logged before');
  t.equal(lines.length, 2);

  limiter.release('10.0.0.1');
  t.equal(limiter.count('10.0.0.1'), 1);
  t.ok(limiter.acquire('10.0.0.1'), 'a released slot can be used again');
  limiter.release('10.0.0.1');
  limiter.release('::ffff:10.0.0.1');
  limiter.release('10.0.0.2');
  t.equal(limiter.addresses, 0, 'nothing left counted once every connection is released');

  // Many addresses refused: the log bookkeeping stays bounded.
  const one = new IpLimiter(1, { worker: 'w', now: () => clock, report: () => {} });
  for (let i = 0; i < 20_000; i++) {
    const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    one.acquire(address);
    one.acquire(address);
    one.release(address);
  }
  t.equal(one.refused, 20_000);
  t.ok((one as unknown as { logged: Map<string, unknown> }).logged.size <= 4096, 'refusal log entries are bounded');

  for (const bad of [0, -1, 1.5, Number.NaN]) {
    t.throws(() => new Worker('text://127.0.0.1:0', { maxConnectionsPerIp: bad }), RangeError, `maxConnectionsPerIp ${bad}: RangeError`);
  }
});

t.test('slowloris on a websocket port: half an upgrade request, then nothing, is cut after handshakeTimeout', async (t) => {
  let connects = 0;
  const { port, worker } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    handshakeTimeout: 1,
    onConnect: () => void connects++,
    onMessage: (conn, data) => conn.send(data),
  }));
  const good = await wsClient(`ws://127.0.0.1:${port}/`);
  t.teardown(() => good.close());

  const half = 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n';
  const stalled = await Promise.all([
    rawExchange(port, half, 8000),
    rawExchange(port, 'GET / HT', 8000),
    rawExchange(port, null, 8000),
  ]);
  for (const [i, r] of stalled.entries()) {
    t.ok(r.closed, `stalled peer ${i}: closed by the server (${r.ms} ms)`);
    t.ok(r.ms >= 800, `stalled peer ${i}: not before handshakeTimeout`);
    t.match(r.text, /^(HTTP\/1\.1 408 |$)/, `stalled peer ${i}: 408 or nothing`);
  }
  t.equal(connects, 1, 'no onConnect for a handshake that never arrived');
  await waitFor(() => worker.connections.size === 1, 3000, 'only the good client left');
  good.ws.send('still here');
  t.equal(await good.next(), 'still here', 'the good client is still served');
});

const pems = selfSignedCert();

t.test('slowloris on TLS ports: a TLS handshake that never finishes is cut after handshakeTimeout', { skip: pems ? false : 'openssl CLI not found' }, async (t) => {
  const tlsOptions = { cert: pems!.cert, key: pems!.key };
  let connects = 0;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    transport: 'ssl',
    tls: tlsOptions,
    handshakeTimeout: 1,
    onConnect: () => void connects++,
    onMessage: (conn, line) => conn.send(line),
  }));
  const { port: wssPort, worker: wss } = await listenWorker(t, new Worker('wss://127.0.0.1:0', {
    tls: tlsOptions,
    handshakeTimeout: 1,
    onMessage: (conn, data) => conn.send(data),
  }));

  // A TLS record header announcing a ClientHello of 512 bytes, and only a few of them.
  const partialHello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
  const stalled = await Promise.all([rawExchange(port, null, 8000), rawExchange(port, partialHello, 8000), rawExchange(wssPort, partialHello, 8000)]);
  for (const [i, r] of stalled.entries()) {
    t.ok(r.closed, `stalled TLS peer ${i}: closed by the server (${r.ms} ms)`);
    t.ok(r.ms >= 800, `stalled TLS peer ${i}: not before handshakeTimeout`);
  }
  t.equal(connects, 0, 'no onConnect for a TLS handshake that never finished');

  // wss: TLS done, then the WebSocket upgrade stalls — the second phase is bounded as well.
  const secured = tls.connect({ host: '127.0.0.1', port: wssPort, ca: pems!.cert, servername: 'localhost' });
  secured.on('error', () => {});
  t.teardown(() => void secured.destroy());
  await new Promise<void>((resolve, reject) => {
    secured.once('secureConnect', resolve);
    secured.once('error', reject);
  });
  const started = Date.now();
  let answer = '';
  secured.setEncoding('latin1');
  secured.on('data', (d: string) => (answer += d));
  secured.write('GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n');
  await Promise.race([new Promise((resolve) => secured.once('close', resolve)), sleep(8000)]);
  t.ok(secured.destroyed || secured.readableEnded, `an upgrade stalled after TLS: closed (${Date.now() - started} ms)`);
  t.match(answer, /^(HTTP\/1\.1 408 |$)/, '408 or nothing');

  // Real clients are still served on both ports.
  const socket = tls.connect({ host: '127.0.0.1', port, ca: pems!.cert, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const c = await textClient(socket);
  t.teardown(() => c.close());
  await echoes(t, c, 'ssl text: a real client is served');
  const ws = await wsClient(`wss://127.0.0.1:${wssPort}/`, { ca: pems!.cert });
  t.teardown(() => ws.close());
  ws.ws.send('secure');
  t.equal(await ws.next(), 'secure', 'wss: a real client is served');
  t.equal(wss.connections.size, 1, 'no stalled peer left on the wss port');
});

t.test('maxConnectionsPerIp: a flood from one address is refused, other addresses are served', async (t) => {
  const LIMIT = 50;
  const FLOOD = 300;
  const logs = captureLogs();
  t.teardown(() => logs.stop());
  const previousLevel = process.env.GATEWAYWORKER_LOG_LEVEL;
  process.env.GATEWAYWORKER_LOG_LEVEL = 'warn';
  t.teardown(() => void (process.env.GATEWAYWORKER_LOG_LEVEL = previousLevel));

  let connects = 0;
  const { port, worker } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    name: 'Flooded',
    maxConnectionsPerIp: LIMIT,
    onConnect: () => void connects++,
    onMessage: (conn, line) => conn.send(line),
  }));

  const started = Date.now();
  const attack = await flood(port, FLOOD);
  t.teardown(() => attack.destroy());
  await waitFor(() => attack.closed() === FLOOD - LIMIT && worker.connections.size === LIMIT, 20_000, 'the flood to settle');
  t.equal(worker.connections.size, LIMIT, `${LIMIT} connections from 127.0.0.1 admitted`);
  t.equal(attack.closed(), FLOOD - LIMIT, `the other ${FLOOD - LIMIT} were closed by the server`);
  t.equal(worker.refusedConnections, FLOOD - LIMIT, 'and counted as refused');
  t.equal(connects, LIMIT, 'refused connections never reached onConnect');

  const admitted = attack.sockets.find((s) => !s.destroyed && s.readyState === 'open');
  t.ok(admitted, 'an admitted flood connection');
  const inside = await textClient(admitted!);
  await echoes(t, inside, 'an admitted connection is served');

  const legit = await textClient(await connectFrom(port, '127.0.0.2'));
  t.teardown(() => legit.close());
  await echoes(t, legit, 'a client from 127.0.0.2 connects and is served during the flood');

  const again = await rawExchange(port, 'one more\n', 3000);
  t.ok(again.closed && again.text === '', 'one more from 127.0.0.1 while it is at the limit: refused');

  const elapsed = Date.now() - started;
  const lines = logs.text().split('\n').filter((l) => l.includes('too many connections') && l.includes('remote=127.0.0.1 '));
  t.ok(lines.length >= 1, 'the refusals are logged');
  t.ok(lines.length <= 1 + Math.floor(elapsed / 10_000), `once per address per 10 s, not per connection (${lines.length} line(s) for ${worker.refusedConnections} refusals)`);
  t.match(lines[0], /worker=Flooded .*limit=50/, 'the line names the worker and the limit');
  t.notOk(logs.text().includes('remote=127.0.0.2'), 'nothing logged about the other address');

  // The flood goes away: 127.0.0.1 gets its slots back.
  attack.destroy();
  await waitFor(() => worker.connections.size === 1, 10_000, 'the flood connections to close on the server');
  const back = await flood(port, LIMIT);
  t.teardown(() => back.destroy());
  await waitFor(() => worker.connections.size === LIMIT + 1, 10_000, 'the new connections');
  t.equal(back.closed(), 0, `${LIMIT} new connections from 127.0.0.1 are all admitted again`);
  t.equal(worker.refusedConnections, FLOOD - LIMIT + 1, 'none of them refused');
  const returning = await textClient(back.sockets[LIMIT - 1]!);
  await echoes(t, returning, '127.0.0.1 is served again');
  const over = await rawExchange(port, null, 3000);
  t.ok(over.closed, 'and the limit still holds');
  back.destroy();
  await echoes(t, legit, 'the other client is still served at the end');
});

t.test('maxConnectionsPerIp under a master: the process survives the flood and keeps serving', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-flood-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const startFile = path.join(dir, 'start.ts');
  const runtime = pathToFileURL(path.join(ROOT, 'runtime/src/index.ts')).href;
  fs.writeFileSync(
    startFile,
    `import { Worker } from ${JSON.stringify(runtime)};
const worker = new Worker('text://127.0.0.1:0', { name: 'Echo', maxConnectionsPerIp: 20 });
worker.onMessage = (conn, line) => conn.send(String(line));
Worker.runAll();
`,
  );
  const app = await startApp(startFile, { env: { GATEWAYWORKER_LOG_LEVEL: 'info' } });
  registerTeardown(t, app);
  const port = app.ports.Echo!;
  t.ok(port > 0, `listening on ${port}`);
  const before = (await app.status()).processes.find((p) => p.name === 'Echo')!;

  const attack = await flood(port, 200);
  t.teardown(() => attack.destroy());
  await waitFor(() => attack.closed() === 180, 20_000, '180 refusals');
  const legit = await textClient(await connectFrom(port, '127.0.0.2'));
  t.teardown(() => legit.close());
  await echoes(t, legit, 'another address is served during the flood');
  const during = (await app.status()).processes.find((p) => p.name === 'Echo')!;
  t.equal(during.connections, 21, '20 from the flooding address and the legitimate one');

  attack.destroy();
  // Until the server has seen the flood close, a new connection from 127.0.0.1 may still be refused.
  const returning = await waitFor(async () => {
    const c = await textClient(port);
    c.send('back?');
    const reply = await c.next(2000).catch(() => null);
    if (reply === 'back?') return c;
    c.close();
    return null;
  }, 10_000, '127.0.0.1 to be admitted again');
  t.teardown(() => returning.close());
  await echoes(t, returning, '127.0.0.1 is served again');
  const after = (await app.status()).processes.find((p) => p.name === 'Echo')!;
  t.equal(after.pid, before.pid, 'the same process served throughout (no crash, no restart)');
  t.ok(after.connections < 21, `the flood connections are gone on the server (${after.connections} left)`);
  const refusals = app.output().split('\n').filter((l) => l.includes('too many connections'));
  t.ok(refusals.length >= 1 && refusals.length < 10, `the refusals are logged once per interval, not per connection (${refusals.length} line(s))`);
});

// Timers of a connection (conn.timers) follow it to the new process and keep their count and phase.
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { registerTeardown, sleep, startApp } from '../helpers/app.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'move-app.ts');
const app = await startApp(fixture, { env: { KINDS: 'Text', COUNT: '2' } });
registerTeardown(t, app);

t.test('a connection timer keeps ticking in the new process, counting on', async (t) => {
  const socket = net.connect(app.ports.Text!, '127.0.0.1');
  t.teardown(() => socket.destroy());
  const lines: Array<{ at: number; line: string }> = [];
  let rest = '';
  socket.on('data', (chunk) => {
    const parts = (rest + chunk.toString()).split('\n');
    rest = parts.pop() ?? '';
    for (const line of parts) lines.push({ at: Date.now(), line });
  });
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write('tick 100\n');
  await sleep(450);
  socket.write('m\n');
  await sleep(650);
  socket.write('pid\n');
  await sleep(200);
  const ticks = lines.filter((l) => l.line.startsWith('k ')).map((l) => ({ at: l.at, pid: Number(l.line.split(' ')[1]), n: Number(l.line.split(' ')[2]) }));
  const pids = [...new Set(ticks.map((k) => k.pid))];
  t.equal(pids.length, 2, `ticks came from two processes (${pids.join(' → ')})`);
  t.same(
    ticks.map((k) => k.n),
    ticks.map((_, i) => i + 1),
    'the count goes on across the move: no tick lost, none repeated',
  );
  const gaps = ticks.slice(1).map((k, i) => k.at - ticks[i]!.at);
  t.ok(Math.max(...gaps) < 400, `no long pause at the move (largest gap ${Math.max(...gaps)} ms)`);
  const pidLine = lines.find((l) => l.line.startsWith('pid '));
  t.equal(Number(pidLine?.line.split(' ')[1]), ticks.at(-1)?.pid, 'the last ticks come from the process that now serves the connection');
  t.ok(ticks.length >= 8, `${ticks.length} ticks in about 1.1 s`);
});

t.test('connection timers: one-shot, restart by name, stopped by close', async (t) => {
  const { Worker } = await import('../../runtime/src/index.js');
  const { listenWorker } = await import('../helpers/app.js');
  const fired: string[] = [];
  let serverConn: import('../../runtime/src/index.js').Connection | null = null;
  const worker = new Worker('text://127.0.0.1:0');
  worker.onConnect = (conn) => {
    serverConn = conn;
    conn.timers.add('once', 0.05, false);
    conn.timers.add('every', 0.05);
    conn.timers.add('every', 0.05); // restarting by name keeps one timer
  };
  worker.onTimer = (conn, name) => fired.push(name);
  const { port } = await listenWorker(t, worker);
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  await sleep(280);
  t.equal(fired.filter((n) => n === 'once').length, 1, 'a one-shot timer fires once');
  const every = fired.filter((n) => n === 'every').length;
  t.ok(every >= 3 && every <= 6, `a persistent timer fires every interval, once per tick (${every} in 280 ms)`);
  t.same(serverConn!.timers.names, ['every'], 'only the persistent timer is left');
  socket.destroy();
  await sleep(100);
  const after = fired.length;
  await sleep(200);
  t.equal(fired.length, after, 'closing the connection stopped its timers');
  t.same(serverConn!.timers.names, [], 'no timer left');
});

// 1,000 moves of text and of WebSocket connections between two processes under full-rate traffic
// both ways, checked message by message; then no fd growth in any process and bounded memory.
// Prints the measured cost of a move (idle and under load).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { registerTeardown, sleep, startApp } from '../helpers/app.js';
import { collectMoveTimes, fdCount, linePipe, percentile, rss, runStream, treePids, wsPipe, type StreamReport } from './lib.js';

const MOVES = Number(process.env.HANDOVER_MOVES ?? 1000);
const CONNECTIONS = 4;

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'move-app.ts');
const app = await startApp(fixture, { env: { KINDS: 'Text,Ws', COUNT: '2' } });
registerTeardown(t, app);
const pids = await treePids(app);
const fdsBefore = new Map(pids.map((pid) => [pid, fdCount(pid)]));
const rssBefore = new Map(pids.map((pid) => [pid, rss(pid)]));
const costs: Record<string, string> = {};

function check(t: Test, reports: StreamReport[], fragmented: boolean): void {
  const total = reports.reduce((n, r) => n + r.moves, 0);
  t.equal(total, MOVES, `${MOVES} moves done`);
  for (const [i, r] of reports.entries()) {
    t.same(r.errors, [], `connection ${i}: every echo and push in order and byte-exact`);
    t.same(r.refusals, [], `connection ${i}: no move refused`);
    t.equal(r.echoed, r.sent, `connection ${i}: ${r.sent} messages echoed`);
    t.equal(r.echoHash, r.sentHash, `connection ${i}: checksums match`);
    t.ok(r.pushes > 0, `connection ${i}: ${r.pushes} pushes received in order across moves`);
    t.equal(r.pids.size, 2, `connection ${i}: served by both processes`);
    t.notOk(r.closed, `connection ${i}: never closed`);
    if (fragmented) t.equal(r.pongs, r.pings, `connection ${i}: ${r.pings} pings between fragments, each answered once`);
  }
}

for (const kind of ['text', 'websocket'] as const) {
  await t.test(`${MOVES} moves of ${kind} connections under load`, async (t) => {
    const open = kind === 'text' ? () => linePipe(app.ports.Text!) : () => wsPipe(app.ports.Ws!);
    const started = Date.now();
    const pipes = await Promise.all(Array.from({ length: CONNECTIONS }, open));
    const reports = await Promise.all(
      pipes.map((pipe) =>
        runStream(pipe, {
          moves: MOVES / CONNECTIONS,
          gap: 8,
          window: 400,
          push: { ms: 2, n: 3 },
          fragmentEvery: kind === 'websocket' ? 29 : undefined,
          timeoutMs: 60_000,
        }),
      ),
    );
    for (const pipe of pipes) pipe.close();
    check(t, reports, kind === 'websocket');
    const sent = reports.reduce((n, r) => n + r.sent, 0);
    t.comment(`${kind}: ${sent} messages echoed, ${reports.reduce((n, r) => n + r.pushes, 0)} pushes, ${MOVES} moves in ${Date.now() - started} ms`);
    const times = await collectMoveTimes(open, pids.slice(1));
    const client = reports.flatMap((r) => r.moveLatencies);
    costs[`${kind} under load`] = `server p50 ${percentile(times, 50).toFixed(2)} ms p99 ${percentile(times, 99).toFixed(2)} ms (n=${times.length}); client-seen p50 ${percentile(client, 50).toFixed(2)} p99 ${percentile(client, 99).toFixed(2)} ms`;
  });
}

for (const kind of ['text', 'websocket'] as const) {
  await t.test(`idle ${kind} moves`, async (t) => {
    const open = kind === 'text' ? () => linePipe(app.ports.Text!) : () => wsPipe(app.ports.Ws!);
    const pipe = await open();
    let waiter: ((text: string) => void) | null = null;
    pipe.onMessage((text) => waiter?.(text));
    const next = (): Promise<string> => new Promise((resolve) => (waiter = resolve));
    const client: number[] = [];
    for (let i = 0; i < 200; i++) {
      const started = performance.now();
      const reply = next();
      pipe.send('mhello');
      const text = await reply;
      if (!text.startsWith('t ')) {
        t.fail(`unexpected ${text}`);
        break;
      }
      client.push(performance.now() - started);
    }
    pipe.close();
    const times = await collectMoveTimes(open, pids.slice(1));
    t.ok(times.length >= 200, 'timings collected');
    costs[`${kind} idle`] = `server p50 ${percentile(times, 50).toFixed(2)} ms p99 ${percentile(times, 99).toFixed(2)} ms (n=${times.length}); client round trip p50 ${percentile(client, 50).toFixed(2)} p99 ${percentile(client, 99).toFixed(2)} ms`;
  });
}

await t.test('no fd growth, bounded memory', async (t) => {
  // Let closes settle, then compare every process of the tree.
  let grown: string[] = [];
  for (let i = 0; i < 40; i++) {
    grown = pids.filter((pid) => fdCount(pid) > fdsBefore.get(pid)!).map((pid) => `${pid}: ${fdsBefore.get(pid)} → ${fdCount(pid)}`);
    if (grown.length === 0) break;
    await sleep(100);
  }
  t.same(grown, [], `fds unchanged in all ${pids.length} processes`);
  for (const pid of pids) {
    const growth = rss(pid) - rssBefore.get(pid)!;
    t.ok(growth < 200 * 1024 * 1024, `pid ${pid}: RSS grew ${(growth / 1048576).toFixed(1)} MB`);
  }
  const connections = await app.connections();
  t.equal(connections.length, 0, 'no connection left behind');
});

t.teardown(() => {
  for (const [what, text] of Object.entries(costs)) console.log(`# move cost, ${what}: ${text}`);
});

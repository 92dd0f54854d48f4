// The master dies (SIGKILL) while connections keep moving: no connection may end up with two
// owners. Each client sees its messages from one process at a time (a change of process only
// where it asked for a move), in order, then a clean close when the orphaned children exit.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { isAlive, registerTeardown, sleep, startApp, waitFor } from '../helpers/app.js';
import { linePipe, runStream, treePids, wsPipe } from './lib.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'move-app.ts');
const ROUNDS = 3;

for (let round = 1; round <= ROUNDS; round++) {
  await t.test(`round ${round}: SIGKILL the master mid-moves`, async (t) => {
    const app = await startApp(fixture, { env: { KINDS: 'Text,Ws', COUNT: '2' } });
    registerTeardown(t, app);
    const children = (await treePids(app)).slice(1);
    const pipes = [
      ...(await Promise.all([1, 2, 3].map(() => linePipe(app.ports.Text!)))),
      ...(await Promise.all([1, 2, 3].map(() => wsPipe(app.ports.Ws!)))),
    ];
    const runs = pipes.map((pipe, i) =>
      runStream(pipe, { moves: 1_000_000, gap: 1, window: 50, push: { ms: 3, n: 2 }, fragmentEvery: i >= 3 ? 7 : undefined, timeoutMs: 20_000 }),
    );
    await sleep(400 + Math.floor(Math.random() * 800));
    process.kill(app.pid, 'SIGKILL');
    const reports = await Promise.all(runs);
    for (const [i, r] of reports.entries()) {
      t.same(r.errors, [], `client ${i}: in order, one process at a time (${r.moves} moves before the master died)`);
      t.ok(r.closed, `client ${i}: closed once its process stopped`);
      t.ok(r.pids.size <= 2, `client ${i}: served by ${r.pids.size} process(es)`);
    }
    t.ok(reports.reduce((n, r) => n + r.moves, 0) > 0, 'moves were happening');
    await waitFor(() => children.every((pid) => !isAlive(pid)), 10_000, 'children exit without their master');
    t.pass('no child outlived the master');
  });
}

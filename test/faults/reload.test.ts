/**
 * `reload` under steady traffic: each old BusinessWorker stops taking new events,
 * finishes what it has and exits; no client disconnects, no message is lost or doubled, and the
 * new processes run the new code (the Events module of a temp copy reads ./version.ts, which the
 * test rewrites on disk before the reload).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { Traffic, repoRoot, sleep, startApp, waitFor, wsClients, freshEnv } from './lib.js';

const CLIENTS = 50;
const INTERVAL_MS = 20;

/** A temp copy of the fault Events module (runtime import made absolute) with its own version.ts. */
function copyEvents(): { events: string; setVersion(v: number): void; dir: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-events-'));
  const source = path.join(repoRoot, 'test', 'fixtures', 'faults');
  const runtime = pathToFileURL(path.join(repoRoot, 'runtime', 'src', 'index.js')).href;
  const events = fs.readFileSync(path.join(source, 'Events.ts'), 'utf8').replace("'../../../runtime/src/index.js'", `'${runtime}'`);
  if (!events.includes(runtime)) throw new Error('could not rewrite the runtime import of Events.ts');
  fs.writeFileSync(path.join(dir, 'Events.ts'), events);
  const setVersion = (v: number): void => fs.writeFileSync(path.join(dir, 'version.ts'), `export const VERSION = ${v};\n`);
  setVersion(1);
  return { events: path.join(dir, 'Events.ts'), setVersion, dir };
}

t.test('reload under steady traffic: no disconnect, nothing lost or doubled, new code runs', async (t) => {
  const copy = copyEvents();
  t.teardown(() => fs.rmSync(copy.dir, { recursive: true, force: true }));
  const app = await startApp(t, await freshEnv({
    WORKER_COUNT: '2',
    EVENTS_FILE: copy.events,
  }));
  const port = await app.port('WsGateway');
  const before = await app.pids('Business');
  const gatewayPid = (await app.pids('WsGateway'))[0];
  const clients = await wsClients(t, '127.0.0.1', port, CLIENTS);
  t.ok(clients.every((c) => c.messages[0]?.v === 1), 'the app starts with version 1');

  const traffic = new Traffic(clients, INTERVAL_MS).start();
  await sleep(1000);
  copy.setVersion(2);
  const reloadStarted = Date.now();
  const reload = await app.cli('reload');
  t.equal(reload.code, 0, `reload exits 0 (${reload.stdout.trim().split('\n').pop()})`);
  const after = await waitFor(async () => {
    const pids = await app.pids('Business');
    return pids.length === 2 && pids.every((pid) => !before.includes(pid)) ? pids : null;
  }, 15_000, 100);
  const reloadedAt = Date.now();
  t.ok(after, `both workers were replaced (${before} -> ${after})`);
  // Traffic goes on for a while on the new code.
  await sleep(1500);
  await traffic.stop(8000);

  const lost = traffic.lost();
  const doubled = traffic.doubled();
  const closes = clients.filter((c) => c.closed).length;
  const afterReload = [...traffic.sentAt].filter(([, at]) => at > reloadedAt + 100).map(([key]) => key);
  const oldCode = afterReload.filter((key) => traffic.replies.get(key)?.some((r) => r.v !== 2));
  const byNew = [...traffic.replies.values()].filter((list) => list.some((r) => after?.includes(r.pid))).length;
  t.comment(
    `sent ${traffic.sent}, reload took ${reloadedAt - reloadStarted} ms, lost ${lost.length}, doubled ${doubled.length}, ` +
      `out of order ${traffic.outOfOrder()}, client closes ${closes}, answered by new workers ${byNew}`,
  );
  t.equal(closes, 0, 'no client was disconnected');
  t.same(lost.slice(0, 10), [], `no message lost (lost ${lost.length})`);
  t.same(doubled.slice(0, 10), [], `no message doubled (doubled ${doubled.length})`);
  t.ok(afterReload.length > 100, `traffic went on after the reload (${afterReload.length} messages)`);
  t.same(oldCode.slice(0, 10), [], 'every message sent after the reload was answered by version 2');
  t.equal((await app.pids('WsGateway'))[0], gatewayPid, 'the gateway was not reloaded');
});

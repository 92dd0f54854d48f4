// The process model through real processes: onWorkerStart/Reload/Stop, status and connections,
// send_fail in status, crash → restart with the same id, reload one at a time, stop.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { isAlive, registerTeardown, sleep, startApp, textClient, waitFor, type App, type StatusJson, type TextClient } from '../helpers/app.js';

const eventsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-events-'));
const eventsFile = path.join(eventsDir, 'events.log');
t.teardown(() => fs.rmSync(eventsDir, { recursive: true, force: true }));

const events = (): string[] => (fs.existsSync(eventsFile) ? fs.readFileSync(eventsFile, 'utf8').trim().split('\n').filter(Boolean) : []);
const pidsOf = (status: StatusJson, name: string): Map<number, number> =>
  new Map(status.processes.filter((p) => p.name === name).map((p) => [p.id, p.pid]));

/** One request on a fresh connection: the reply line. */
async function ask(port: number, line: string, timeoutMs = 3000): Promise<string> {
  const c = await textClient(port);
  try {
    c.send(line);
    return await c.next(timeoutMs);
  } finally {
    c.close();
  }
}

const app: App = await startApp('lifecycle-app.ts', { env: { EVENTS_FILE: eventsFile, COUNT: '2', START_DELAY_MS: '300' } });
registerTeardown(t, app);
const textPort = app.ports.Text!;
const keeperPort = app.ports.Keeper!;

t.test('banner, and onWorkerStart before connections are accepted', async (t) => {
  t.ok(textPort > 0 && keeperPort > 0, `ports from the banner: ${JSON.stringify(app.ports)}`);
  const started = events().filter((e) => e.startsWith('start '));
  t.equal(started.length, 3, 'every process ran onWorkerStart before "Start success"');
  t.same(started.map((e) => e.split(' ').slice(1, 3).join(' ')).sort(), ['Keeper 0', 'Text 0', 'Text 1']);
  const reply = await ask(textPort, 'first');
  t.match(reply, /^ready [01] \d+ first$/, 'the first message sees the state onWorkerStart set');
});

t.test('status and connections list live clients', async (t) => {
  const clients: TextClient[] = [];
  t.teardown(() => clients.forEach((c) => c.close()));
  const perPid = new Map<number, number>();
  for (let i = 0; i < 4; i++) {
    const c = await textClient(textPort);
    clients.push(c);
    c.send(`hello ${i}`);
    const pid = Number((await c.next()).split(' ')[2]);
    perPid.set(pid, (perPid.get(pid) ?? 0) + 1);
  }
  const k = await textClient(keeperPort);
  clients.push(k);
  k.send('hi');
  const keeperPid = Number((await k.next()).split(' ')[2]);

  const status = await app.status();
  t.equal(status.master.pid, app.pid, 'master pid');
  t.equal(status.master.workers, 2);
  t.equal(status.master.processes, 3);
  t.equal(status.processes.length, 3, 'one row per process');
  for (const p of status.processes) {
    t.ok(isAlive(p.pid), `${p.name}#${p.id} pid ${p.pid} is alive`);
    const expected = p.name === 'Keeper' ? (p.pid === keeperPid ? 1 : 0) : (perPid.get(p.pid) ?? 0);
    t.equal(p.connections, expected, `${p.name}#${p.id} reports ${expected} live connections`);
    t.ok(p.memory > 1024 * 1024, 'memory is reported');
    t.match(p.listening, p.name === 'Text' ? `text://127.0.0.1:${textPort}` : `text://127.0.0.1:${keeperPort}`);
  }
  t.same([...pidsOf(status, 'Text').keys()].sort(), [0, 1], 'Text ids 0 and 1');
  const textTotal = status.processes.filter((p) => p.name === 'Text').reduce((n, p) => n + p.totalRequest, 0);
  t.ok(textTotal >= 5, `total_request counts messages (${textTotal})`);

  const text = await app.cli('status');
  t.equal(text.code, 0);
  for (const p of status.processes) {
    const row = text.stdout.split('\n').find((l) => l.startsWith(`${p.pid} `));
    t.ok(row, `status text has a row for pid ${p.pid}`);
    t.match(row, new RegExp(`\\s${p.name}#${p.id}\\s+${p.connections}\\s`), 'with its name#id and connection count');
  }
  t.match(text.stdout, /send_fail/);

  const rows = await app.connections();
  t.equal(rows.length, 5, 'connections --json: one row per live client');
  const ports = clients.map((c) => c.socket.localPort);
  for (const port of ports) {
    const row = rows.find((r) => r.remoteAddress === `127.0.0.1:${port}`);
    t.ok(row, `a row for the client on port ${port}`);
    t.match(row, { protocol: 'text', transport: 'tcp', status: 'established' });
  }
  const keeperRow = rows.find((r) => r.remoteAddress === `127.0.0.1:${k.socket.localPort}`);
  t.match(keeperRow, { pid: keeperPid, worker: 'Keeper', localAddress: `127.0.0.1:${keeperPort}`, bytesRead: 3, bytesWritten: `keeper ready ${keeperPid} hi\n`.length });
  const connText = await app.cli('connections');
  t.equal(connText.code, 0);
  t.match(connText.stdout, /\n5 connections\s*$/, 'the text table counts them');
  for (const port of ports) t.match(connText.stdout, `127.0.0.1:${port}`);

  clients.forEach((c) => c.close());
  await waitFor(async () => (await app.status()).processes.every((p) => p.connections === 0), 5000, 'connections to drop to 0');
  t.pass('counts drop when clients leave');
});

t.test('a client that never reads: send_fail in status, memory bounded', async (t) => {
  const before = await app.status();
  const hog = net.connect(textPort, '127.0.0.1');
  t.teardown(() => void hog.destroy());
  hog.on('error', () => {});
  await new Promise((resolve) => hog.once('connect', resolve));
  hog.write('flood\n');
  hog.pause();
  const row = await waitFor(async () => {
    const rows = await app.connections();
    return rows.find((r) => r.remoteAddress === `127.0.0.1:${hog.localPort}` && r.sendBuffer >= 256 * 1024);
  }, 10_000, 'the hog connection to fill its send buffer');
  t.ok(row.sendBuffer <= 256 * 1024 + 64 * 1024 + 1, `connections shows a bounded send buffer (${row.sendBuffer})`);
  const after = await waitFor(async () => {
    const s = await app.status();
    const p = s.processes.find((x) => x.pid === row.pid);
    return p && p.sendFail > 1000 ? s : null;
  }, 15_000, 'send_fail to climb');
  const p = after.processes.find((x) => x.pid === row.pid)!;
  const b = before.processes.find((x) => x.pid === row.pid)!;
  t.ok(p.sendFail > b.sendFail, `send_fail counted in status (${p.sendFail})`);
  t.ok(p.memory - b.memory < 120 * 1024 * 1024, `process memory stays bounded (+${((p.memory - b.memory) / 1048576).toFixed(1)} MB while ~200 MB were offered)`);
  const answer = await ask(textPort, 'anyone');
  t.match(answer, /^ready /, 'the server keeps answering others');
  const text = await app.cli('status');
  t.match(text.stdout.split('\n').find((l) => l.startsWith(`${row.pid} `)), new RegExp(`\\s${p.sendFail}\\s`), 'status text shows send_fail');
});

t.test('crash → restart with the same id; the new process accepts only after onWorkerStart', async (t) => {
  const before = await app.status();
  const oldKeeper = pidsOf(before, 'Keeper').get(0)!;
  const oldText1 = pidsOf(before, 'Text').get(1)!;

  process.kill(oldKeeper, 'SIGKILL');
  // Connect at once: the connection waits in the shared backlog until the new process is ready.
  const reply = await ask(keeperPort, 'right after the crash', 10_000);
  const [, state, pid] = reply.split(' ');
  t.not(Number(pid), oldKeeper, 'answered by a new process');
  t.equal(state, 'ready', 'which had run onWorkerStart before it accepted');

  process.kill(oldText1, 'SIGKILL');
  const after = await waitFor(async () => {
    const s = await app.status();
    const p = pidsOf(s, 'Text').get(1);
    return p && p !== oldText1 && s.processes.length === 3 ? s : null;
  }, 10_000, 'Text#1 to come back');
  t.ok(isAlive(pidsOf(after, 'Text').get(1)!), 'a new pid with the same worker id');
  t.equal(pidsOf(after, 'Text').get(0), pidsOf(before, 'Text').get(0), 'the sibling was not touched');
  t.equal(pidsOf(after, 'Keeper').get(0), Number(pid));
  t.same(after.master.exits.Keeper, { SIGKILL: 1 }, 'exit counts by status');
  t.same(after.master.exits.Text, { SIGKILL: 1 });
  const out = app.output();
  for (const [name, id, old] of [['Keeper', 0, oldKeeper], ['Text', 1, oldText1]] as const) {
    const line = out.split('\n').find((l) => l.includes('exited') && l.includes(`pid=${old}`));
    t.ok(line, `the master logged the exit of ${name}#${id}`);
    t.match(line, new RegExp(`name=${name}\\b.*id=${id}\\b.*signal=SIGKILL`), 'with name, id and signal');
  }
  const newText1 = pidsOf(after, 'Text').get(1)!;
  await waitFor(() => events().includes(`start Text 1 ${newText1}`), 5000, 'onWorkerStart of the new Text#1');
  t.ok(events().includes(`start Keeper 0 ${pid}`), 'onWorkerStart ran in both new processes');
});

t.test('reload replaces every reloadable process one at a time while clients keep getting answers', async (t) => {
  const before = await app.status();
  const oldText = pidsOf(before, 'Text');
  const oldKeeper = pidsOf(before, 'Keeper').get(0)!;
  const mark = events().length;

  let running = true;
  let answered = 0;
  let retried = 0;
  const failures: string[] = [];
  const seenPids = new Set<number>();
  const loop = (async () => {
    while (running) {
      let ok = false;
      for (let attempt = 0; attempt < 3 && !ok; attempt++) {
        try {
          const reply = await ask(textPort, 'loop', 2000);
          seenPids.add(Number(reply.split(' ')[2]));
          ok = true;
        } catch (error) {
          retried++;
          if (attempt === 2) failures.push(String(error));
        }
      }
      if (ok) answered++;
      await sleep(20);
    }
  })();
  await sleep(200);
  const result = await app.cli('reload');
  await sleep(300);
  running = false;
  await loop;
  t.equal(result.code, 0, `reload exits 0 (${result.stderr.trim()})`);
  t.same(failures, [], `every request got an answer within 3 attempts (${answered} requests, ${retried} retries)`);
  t.ok(answered >= 10, `the client loop ran throughout (${answered})`);

  const after = await app.status();
  const newText = pidsOf(after, 'Text');
  for (const id of [0, 1]) {
    t.not(newText.get(id), oldText.get(id), `Text#${id} has a new pid`);
    t.notOk(isAlive(oldText.get(id)!), `the old Text#${id} is gone`);
    t.ok(seenPids.has(newText.get(id)!) || id === 1, `Text#${id}'s replacement answered the loop`);
  }
  t.equal(pidsOf(after, 'Keeper').get(0), oldKeeper, 'the non-reloadable Keeper kept its pid');

  const log = events().slice(mark);
  const at = (line: string): number => log.indexOf(line);
  t.ok(at(`reload Keeper 0 ${oldKeeper}`) >= 0, 'Keeper got onWorkerReload');
  t.equal(at(`stop Keeper 0 ${oldKeeper}`), -1, 'and did not stop');
  for (const id of [0, 1]) {
    t.ok(at(`reload Text ${id} ${oldText.get(id)}`) >= 0, `Text#${id} got onWorkerReload`);
    t.ok(at(`stop Text ${id} ${oldText.get(id)}`) > at(`reload Text ${id} ${oldText.get(id)}`), `then onWorkerStop`);
    t.ok(at(`start Text ${id} ${newText.get(id)}`) > at(`stop Text ${id} ${oldText.get(id)}`), 'then its replacement started');
  }
  t.ok(at(`start Text 0 ${newText.get(0)}`) < at(`reload Text 1 ${oldText.get(1)}`), 'one at a time: Text#1 was told only once Text#0 was replaced');
});

t.test('stop ends every process', async (t) => {
  const status = await app.status();
  const pids = [app.pid, ...status.processes.map((p) => p.pid)];
  const mark = events().length;
  const result = await app.cli('stop');
  t.equal(result.code, 0, 'stop exits 0');
  t.match(result.stdout, /stop success/);
  await waitFor(() => pids.every((pid) => !isAlive(pid)), 5000, 'every process to exit');
  t.pass(`master and ${pids.length - 1} children are gone`);
  t.equal(await app.exited, 0, 'the master exited with 0');
  const stopped = events().slice(mark).filter((e) => e.startsWith('stop ')).map((e) => e.split(' ').slice(1).join(' ')).sort();
  t.same(stopped, status.processes.map((p) => `${p.name} ${p.id} ${p.pid}`).sort(), 'onWorkerStop ran in every process');
  t.equal((await app.cli('status')).code !== 0, true, 'status fails once stopped');
});

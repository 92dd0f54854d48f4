import fs from 'node:fs';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { cli, isAlive, makeApp, request, startForeground, status, waitFor } from './helpers.js';

t.test('start, serve, status, restart after kill -9, reload, connections, stop', async (t) => {
  const app = makeApp(t);
  const master = await startForeground(t, app);
  t.match(master.output(), /Echo\s+text:\/\/127\.0\.0\.1:\d+\s+2\s+\[OK\]/, 'banner shows the real port');
  t.ok(master.port > 0, 'resolved port');
  t.match(await request(master.port), /^pid \d+ Echo [01]\n$/, 'a child answers on the shared port');

  const before = Date.now();
  const s1 = await status(app);
  t.ok(Date.now() - before < 3000, 'status answers quickly');
  t.equal(s1.processes.length, 3, 'one row per process');
  t.ok(s1.processes.every((p) => p.status === 'idle'), 'all idle');
  t.ok(s1.processes.filter((p) => p.name === 'Echo').every((p) => p.listening === `text://127.0.0.1:${master.port}`), 'rows show the real port');
  t.equal(s1.master.pid, master.pid);
  t.equal(s1.master.version, '0.1.0');

  const text = await cli(app, 'status');
  t.equal(text.code, 0);
  t.match(text.stdout, /GLOBAL STATUS[\s\S]*PROCESS STATUS[\s\S]*Echo#0[\s\S]*idle/);

  // kill -9 one child: restarted with the same id and a new pid.
  const victim = s1.processes.find((p) => p.name === 'Echo' && p.id === 0)!;
  process.kill(victim.pid, 'SIGKILL');
  const s2 = await waitFor('restart', async () => {
    const s = await status(app);
    const row = s.processes.find((p) => p.name === 'Echo' && p.id === 0);
    return row && row.pid !== victim.pid && s.processes.length === 3 ? s : null;
  });
  t.same(s2.master.exits, { Echo: { SIGKILL: 1 } }, 'exit count by status');
  t.match(master.output(), new RegExp(`child exited unexpectedly name=Echo id=0 pid=${victim.pid} code=null signal=SIGKILL restart_in=0.1s`));

  // reload: every Echo pid replaced one at a time, Keeper kept, the port never refuses.
  let failures = 0;
  let served = 0;
  let hammering = true;
  const hammer = (async () => {
    while (hammering) {
      try {
        await request(master.port);
        served++;
      } catch {
        failures++;
      }
    }
  })();
  const reload = await cli(app, 'reload');
  hammering = false;
  await hammer;
  t.equal(reload.code, 0, reload.stderr);
  const lines = reload.stdout.split('\n').filter((l) => l.startsWith('reloaded'));
  t.equal(lines.length, 2, 'one progress line per replaced process');
  t.equal(failures, 0, `no refused connection during reload (${served} served)`);
  const s3 = await status(app);
  const echoBefore = s2.processes.filter((p) => p.name === 'Echo').map((p) => p.pid);
  const echoAfter = s3.processes.filter((p) => p.name === 'Echo').map((p) => p.pid);
  t.equal(echoAfter.length, 2);
  t.ok(echoAfter.every((pid) => !echoBefore.includes(pid)), 'all Echo pids replaced');
  t.equal(s3.processes.find((p) => p.name === 'Keeper')!.pid, s2.processes.find((p) => p.name === 'Keeper')!.pid, 'non-reloadable kept');
  t.same(s3.master.exits.Echo, { SIGKILL: 1, '0': 2 });

  // connections: an open client shows up.
  const held = net.connect(master.port, '127.0.0.1');
  held.on('error', () => {});
  await new Promise((r) => held.once('data', r));
  const conns = await cli(app, 'connections', '--json');
  t.equal(conns.code, 0);
  t.ok(Array.isArray(JSON.parse(conns.stdout)), 'connections --json is an array');
  held.destroy();

  // start twice: refused.
  const second = await cli(app, 'start');
  t.equal(second.code, 1);
  t.match(second.stderr, /already running \(pid \d+/);

  // stop: every process gone, pid file and socket removed.
  const pids = [master.pid, ...s3.processes.map((p) => p.pid)];
  const stop = await cli(app, 'stop');
  t.equal(stop.code, 0, stop.stderr);
  t.match(stop.stdout, /stop success/);
  t.equal(await master.exited, 0, 'master exit code 0');
  await waitFor('children gone', () => pids.every((pid) => !isAlive(pid)), 3000);
  t.notOk(fs.existsSync(app.pidFile), 'pid file removed');
  t.notOk(fs.existsSync(app.sockFile), 'control socket removed');

  const again = await cli(app, 'stop');
  t.equal(again.code, 0);
  t.match(again.stdout, /not running/);
  for (const cmd of ['status', 'reload', 'connections']) {
    const r = await cli(app, cmd);
    t.equal(r.code, 1, `${cmd} when not running`);
    t.match(r.stderr, /not running/);
  }
});

t.test('stale pid file is ignored; SIGTERM stops everything', async (t) => {
  const app = makeApp(t);
  const dead = spawnSync(process.execPath, ['-e', '']).pid;
  fs.writeFileSync(app.pidFile, `${dead}\n`);
  const master = await startForeground(t, app);
  t.equal(Number(fs.readFileSync(app.pidFile, 'utf8')), master.pid, 'pid file taken over');
  const pids = (await status(app)).processes.map((p) => p.pid);
  process.kill(master.pid, 'SIGTERM');
  t.equal(await master.exited, 0);
  await waitFor('children gone', () => pids.every((pid) => !isAlive(pid)), 3000);
  t.notOk(fs.existsSync(app.pidFile));
});

t.test('daemon start and stop', async (t) => {
  const app = makeApp(t);
  const started = await cli(app, 'start', '-d');
  t.equal(started.code, 0, started.stderr);
  t.match(started.stdout, /Start success\./);
  t.notMatch(started.stdout, /Ctrl\+C/);
  const pid = Number(/Running as daemon: pid (\d+)/.exec(started.stdout)?.[1]);
  t.ok(isAlive(pid), 'daemon alive after the CLI exited');
  t.match(started.stdout, app.logFile);
  const s = await status(app);
  t.equal(s.master.pid, pid);
  t.equal(s.processes.length, 3);
  const port = Number(/text:\/\/127\.0\.0\.1:(\d+)/.exec(started.stdout)?.[1]);
  t.match(await request(port), /^pid \d+ Echo/);
  const stop = await cli(app, 'stop', '-g');
  t.equal(stop.code, 0, stop.stderr);
  await waitFor('all gone', () => [pid, ...s.processes.map((p) => p.pid)].every((p) => !isAlive(p)), 5000);
  t.match(fs.readFileSync(app.logFile, 'utf8'), /stopped/);
});

t.test('listen error is reported clearly', async (t) => {
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => blocker.close());
  const port = (blocker.address() as net.AddressInfo).port;
  const app = makeApp(t, { FIXTURE_PORT: String(port) });
  const r = await cli(app, 'start');
  t.equal(r.code, 1);
  t.match(r.stderr, `listen EADDRINUSE 127.0.0.1:${port} (worker "Echo")`);
  t.notOk(fs.existsSync(app.pidFile), 'no pid file left');
});

t.test('usage', async (t) => {
  const app = makeApp(t);
  for (const args of [[], ['bogus']]) {
    const r = await cli(app, ...args);
    t.equal(r.code, 1);
    t.match(r.stderr, /Usage: app\.ts <command>/);
  }
});

t.test('a crashing child is restarted with doubling back-off', async (t) => {
  const app = makeApp(t, { FIXTURE_CRASH_ID: '1' });
  const master = await startForeground(t, app);
  await waitFor('three restarts', () => /restart_in=0\.4s/.test(master.output()), 8000);
  t.match(master.output(), /name=Echo id=1 pid=\d+ code=3 signal=null restart_in=0\.1s[\s\S]*restart_in=0\.2s[\s\S]*restart_in=0\.4s/);
  const s = await status(app);
  t.ok((s.master.exits.Echo?.['3'] ?? 0) >= 3, 'exit code 3 counted');
  t.equal(s.processes.filter((p) => p.name === 'Echo' && p.id === 0).length, 1, 'the healthy sibling keeps running');
  process.kill(master.pid, 'SIGINT');
  t.equal(await master.exited, 0);
});

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { createSharedHandle, resolvedAddress } from '../../runtime/src/worker/master/listen.js';
import { formatLine } from '../../runtime/src/worker/log.js';
import { parseArgs } from '../../runtime/src/worker/master/cli.js';
import { resolvePaths } from '../../runtime/src/worker/master/paths.js';

t.test('tcp handle on port 0 resolves the real port', async (t) => {
  const shared = await createSharedHandle({ kind: 'tcp', host: '127.0.0.1', port: 0 }, 'W');
  t.teardown(() => shared.close());
  t.ok(shared.port !== null && shared.port > 0);
  t.equal(resolvedAddress('websocket://127.0.0.1:0', shared), `websocket://127.0.0.1:${shared.port}`);
  t.equal(resolvedAddress(null, shared), `tcp://127.0.0.1:${shared.port}`);
  t.equal(resolvedAddress(null, null), 'none');
});

t.test('unix handle: stale file replaced, live socket refused, file removed on close', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-listen-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 's.sock');
  // A socket file nobody listens on (left by a killed process).
  const stale = net.createServer().listen(file);
  await new Promise((r) => stale.once('listening', r));
  const kept = path.join(dir, 'kept.sock');
  fs.renameSync(file, kept);
  await new Promise((r) => stale.close(r));
  fs.renameSync(kept, file);
  t.ok(fs.statSync(file).isSocket(), 'stale socket file present');

  const shared = await createSharedHandle({ kind: 'unix', path: file }, 'U');
  t.equal(shared.port, null);
  t.ok(fs.existsSync(file));

  const live = net.createServer().listen(path.join(dir, 'live.sock'));
  await new Promise((r) => live.once('listening', r));
  await t.rejects(createSharedHandle({ kind: 'unix', path: path.join(dir, 'live.sock') }, 'U'), { message: /listen EADDRINUSE .*live\.sock \(worker "U"\)/ });
  live.close();

  shared.close();
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(fs.existsSync(file), 'socket file removed on close');
});

t.test('paths', async (t) => {
  const prev = process.env.GATEWAYWORKER_RUNTIME_DIR;
  t.teardown(() => {
    if (prev === undefined) delete process.env.GATEWAYWORKER_RUNTIME_DIR;
    else process.env.GATEWAYWORKER_RUNTIME_DIR = prev;
  });
  delete process.env.GATEWAYWORKER_RUNTIME_DIR;
  const a = resolvePaths('/srv/app/start.ts');
  t.match(a.runtimeDir, /gatewayworker-[0-9a-f]{12}$/);
  t.equal(a.pidFile, path.join(a.runtimeDir, 'start.ts.pid'));
  t.equal(a.controlSocket, path.join(a.runtimeDir, 'start.ts.sock'));
  t.equal(a.logFile, path.join(a.runtimeDir, 'start.ts.log'));
  t.not(resolvePaths('/srv/other/start.ts').runtimeDir, a.runtimeDir, 'per entry');
  process.env.GATEWAYWORKER_RUNTIME_DIR = '/tmp/rt';
  t.equal(resolvePaths('/x/start.ts').pidFile, '/tmp/rt/start.ts.pid');
  const long = resolvePaths('/x/start.ts', { pidFile: '/tmp/' + 'd'.repeat(120) + '/a.pid' });
  t.ok(Buffer.byteLength(long.controlSocket) <= 100, 'long socket path falls back');
  t.match(long.controlSocket, /gw-[0-9a-f]{16}\.sock$/);
});

t.test('log line and argv', async (t) => {
  const line = formatLine('warn', 'master', 'child exited', { name: 'Echo', id: 1, signal: null, why: 'a b' }, new Date(0));
  t.equal(line, `1970-01-01T00:00:00.000Z warn  master pid=${process.pid} child exited name=Echo id=1 signal=null why="a b"`);
  t.same(parseArgs(['node', 'e', 'stop', '-g']), { command: 'stop', daemon: false, graceful: true, json: false });
  t.same(parseArgs(['node', 'e', 'status', '-d', '--json']), { command: 'status', daemon: true, graceful: false, json: true });
});

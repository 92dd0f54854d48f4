/**
 * `add` puts a second app beside the first, and start.ts loads every app's start files. The
 * runtime is replaced by a stub that records which roles were defined, so this runs before (and
 * without) the real runtime.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { run, tempDir } from './helpers.ts';

const STUB = `
const defined = [];
const record = (role) => class { constructor(a, b) { defined.push({ role, name: (typeof a === 'string' ? b : a)?.name, address: typeof a === 'string' ? a : undefined }); } };
export const Register = record('Register');
export const Gateway = record('Gateway');
export const BusinessWorker = record('BusinessWorker');
export class Worker { static runAll() { console.log(JSON.stringify({ argv: process.argv.slice(2), defined })); } }
`;

/** Installs the stub as node_modules/gatewayworker. */
function stubRuntime(dir: string) {
  mkdirSync(join(dir, 'node_modules/gatewayworker'), { recursive: true });
  writeFileSync(join(dir, 'node_modules/gatewayworker/package.json'), '{"name":"gatewayworker","type":"module","main":"index.js"}');
  writeFileSync(join(dir, 'node_modules/gatewayworker/index.js'), STUB);
}

/** Runs a .ts file of the project like `tsx file start` does; returns what Worker.runAll saw. */
function runTs(dir: string, file: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), file, 'start'], { cwd: dir, encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(r.stderr);
  const lines = r.stdout.trim().split('\n');
  return { calls: lines.length, ...JSON.parse(lines[lines.length - 1]) };
}

t.test('add a second app; start.ts starts both', async (t) => {
  const cwd = tempDir(t);
  t.equal(run(['proj', '--yes', '--skip-install'], cwd).code, 0);
  const dir = join(cwd, 'proj');
  const r = run(['add', 'Lobby', '--template', 'chat', '--dir', 'proj', '--yes'], cwd);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  t.match(r.stdout, 'Added Applications/Lobby');
  t.match(r.stdout, 'LOBBY_');
  t.same(readdirSync(join(dir, 'Applications')).sort(), ['Lobby', 'YourApp']);
  t.same(readdirSync(dir).filter((n) => n.startsWith('.create-')), [], 'no staging folder left');

  // The added app gets its own ports and environment variable names.
  const gateway = readFileSync(join(dir, 'Applications/Lobby/start_gateway.ts'), 'utf8');
  t.match(gateway, 'process.env.LOBBY_GATEWAY_PORT ?? 7273');
  t.match(gateway, 'process.env.LOBBY_START_PORT ?? 3000');
  t.match(gateway, "process.env.LOBBY_REGISTER_ADDRESS ?? '127.0.0.1:1237'");
  t.match(gateway, "name: 'LobbyGateway'");

  stubRuntime(dir);
  const all = runTs(dir, 'start.ts');
  t.equal(all.calls, 1, 'runAll once');
  t.same(all.argv, ['start']);
  t.same(
    all.defined.map((d: { role: string; name?: string; address?: string }) => `${d.role} ${d.name ?? d.address}`),
    [
      'Register text://127.0.0.1:1237',
      'Register text://127.0.0.1:1236',
      'Gateway LobbyGateway',
      'Gateway YourAppGateway',
      'BusinessWorker LobbyBusinessWorker',
      'BusinessWorker YourAppBusinessWorker',
    ],
    'registers, then gateways, then workers, of both apps',
  );

  // Environment variables override the defaults.
  const moved = runTs(dir, 'start.ts', { REGISTER_ADDRESS: '127.0.0.2:4000' });
  t.ok(moved.defined.some((d: { address?: string }) => d.address === 'text://127.0.0.2:4000'));

  // Each start file also runs alone.
  for (const [file, role] of [['start_register.ts', 'Register'], ['start_gateway.ts', 'Gateway'], ['start_businessworker.ts', 'BusinessWorker']]) {
    const alone = runTs(dir, `Applications/YourApp/${file}`);
    t.equal(alone.calls, 1, `${file}: runAll once`);
    t.same(alone.defined.map((d: { role: string }) => d.role), [role], `${file} defines its role alone`);
  }
});

t.test('add into a project without web/ brings the page along', async (t) => {
  const cwd = tempDir(t);
  t.equal(run(['proj', '--template', 'game-room', '--yes', '--skip-install'], cwd).code, 0);
  const dir = join(cwd, 'proj');
  const r = run(['add', 'Chat', '--template', 'chat', '--yes'], dir);
  t.equal(r.code, 0, r.stderr);
  t.match(readFileSync(join(dir, 'web/index.html'), 'utf8'), '<title>Chat chat</title>');
  // game-room's 7273 is taken, chat's 7272 is not.
  t.match(readFileSync(join(dir, 'Applications/Chat/start_gateway.ts'), 'utf8'), 'CHAT_GATEWAY_PORT ?? 7272');
});

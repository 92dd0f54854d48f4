/** Generating a project with --yes --skip-install: layout, contents, options. */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ROOT, files, fixtureTemplates, run, snapshot, tempDir } from './helpers.ts';

const APP_FILES = ['Events.ts', 'start_businessworker.ts', 'start_gateway.ts', 'start_register.ts'];

t.test('defaults: chat template, YourApp, my-gatewayworker-app', async (t) => {
  const cwd = tempDir(t);
  const r = run(['--yes', '--skip-install'], cwd);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  const dir = join(cwd, 'my-gatewayworker-app');
  const all = files(dir);
  for (const f of ['start.ts', 'package.json', 'tsconfig.json', 'README.md', '.gitignore', 'web/index.html', 'test/app.test.ts', ...APP_FILES.map((f) => `Applications/YourApp/${f}`)]) {
    t.ok(all.includes(f), `has ${f}`);
  }
  t.notOk(all.includes('_gitignore'), '_gitignore is renamed');
  t.notOk(all.some((f) => f.includes('template.json')), 'template.json is not copied');
  t.same(readdirSync(cwd), ['my-gatewayworker-app'], 'no staging folder left');

  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  t.equal(pkg.name, 'my-gatewayworker-app');
  t.equal(pkg.scripts.start, 'tsx start.ts start');
  t.equal(pkg.scripts.dev, 'tsx start.ts start --watch');
  t.equal(pkg.scripts.test, 'tap');
  t.ok(pkg.scripts.stop && pkg.scripts.status && pkg.scripts.reload);
  // This test runs from a clone: the runtime is linked, so installs work offline.
  t.equal(pkg.dependencies.gatewayworker, `file:${join(ROOT, 'runtime')}`);
  t.ok(pkg.dependencies.tsx);
  for (const dev of ['tap', 'typescript', '@types/node', 'ws']) t.ok(pkg.devDependencies[dev], dev);

  const gateway = readFileSync(join(dir, 'Applications/YourApp/start_gateway.ts'), 'utf8');
  t.match(gateway, "process.env.GATEWAY_PORT ?? 7272");
  t.match(gateway, "name: 'YourAppGateway'");
  t.match(gateway, "pingData: '{\"type\":\"ping\"}'");
  t.match(readFileSync(join(dir, 'Applications/YourApp/start_register.ts'), 'utf8'), "process.env.REGISTER_ADDRESS ?? '127.0.0.1:1236'");
  t.match(r.stdout, /cd my-gatewayworker-app/);
  t.match(r.stdout, /npm install/);
  t.match(r.stdout, /npm start/);
  t.match(r.stdout, /http:\/\/localhost:7272/);

  for (const [path, content] of Object.entries(snapshot(dir))) {
    t.notMatch(content, /\{\{|\}\}/, `no placeholder left in ${path}`);
  }
});

t.test('--app and a directory argument are used everywhere', async (t) => {
  const cwd = tempDir(t);
  const r = run(['Chat Server', '--app', 'MyChat', '--yes', '--skip-install', '--package-manager', 'pnpm'], cwd);
  t.equal(r.code, 0, r.stderr);
  const dir = join(cwd, 'Chat Server');
  t.same(readdirSync(join(dir, 'Applications')), ['MyChat']);
  t.equal(JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name, 'chat-server');
  t.match(readFileSync(join(dir, 'Applications/MyChat/start_businessworker.ts'), 'utf8'), "name: 'MyChatBusinessWorker'");
  t.match(readFileSync(join(dir, 'README.md'), 'utf8'), 'Applications/MyChat/Events.ts');
  t.match(readFileSync(join(dir, 'web/index.html'), 'utf8'), '<title>MyChat chat</title>');
  t.match(r.stdout, /cd "Chat Server"/);
  t.match(r.stdout, /pnpm install/);
  t.match(r.stdout, /pnpm start/);
});

t.test('the package manager that ran it is the default', async (t) => {
  const cwd = tempDir(t);
  const r = run(['app', '--yes', '--skip-install'], cwd, { npm_config_user_agent: 'yarn/1.22.22 npm/? node/v20.0.0 linux x64' });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /yarn start/);
});

t.test('CI=true without --yes asks nothing', async (t) => {
  const cwd = tempDir(t);
  const r = run(['app', '--skip-install'], cwd, { CI: 'true' });
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(join(cwd, 'app/Applications/YourApp/Events.ts')));
});

t.test('stdin not a terminal asks nothing', async (t) => {
  const cwd = tempDir(t);
  const r = run(['app', '--skip-install'], cwd);
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(join(cwd, 'app/start.ts')));
});

t.test('mqtt-hub and game-room generate', async (t) => {
  for (const [template, port] of [['mqtt-hub', 'MQTT_PORT ?? 1883'], ['game-room', 'GATEWAY_PORT ?? 7273']]) {
    const cwd = tempDir(t);
    const r = run(['app', '--template', template, '--yes', '--skip-install'], cwd);
    t.equal(r.code, 0, r.stderr);
    if (template === 'game-room') t.notMatch(r.stdout, 'is a preview', `${template} is a full template`);
    const dir = join(cwd, 'app');
    for (const f of APP_FILES) t.ok(existsSync(join(dir, 'Applications/YourApp', f)), `${template}: ${f}`);
    t.ok(existsSync(join(dir, 'README.md')));
    t.match(readFileSync(join(dir, 'Applications/YourApp/start_gateway.ts'), 'utf8'), port);
  }
});

t.test('a template marked preview says so, one without the mark does not', async (t) => {
  const templates = fixtureTemplates(t, {
    sketch: { json: { description: 'a sketch', preview: true, ports: { gatewayPort: 7400, registerPort: 1236, startPort: 2900 }, url: 'http://localhost:{{gatewayPort}}' } },
  });
  const cwd = tempDir(t);
  const env = { GATEWAYWORKER_TEMPLATES_DIR: templates };
  const sketch = run(['a', '--template', 'sketch', '--yes', '--skip-install'], cwd, env);
  t.equal(sketch.code, 0, sketch.stderr);
  t.match(sketch.stdout, 'Note: template sketch is a preview');
  t.match(sketch.stdout, 'http://localhost:7400');
  const chat = run(['b', '--template', 'chat', '--yes', '--skip-install'], cwd, env);
  t.equal(chat.code, 0, chat.stderr);
  t.notMatch(chat.stdout, 'is a preview');
  const added = run(['add', 'Sketch', '--template', 'sketch', '--yes'], join(cwd, 'b'), env);
  t.equal(added.code, 0, added.stderr);
  t.match(added.stdout, 'Note: template sketch is a preview');
});

t.test('--overwrite replaces a non-empty directory but keeps .git', async (t) => {
  const cwd = tempDir(t);
  const dir = join(cwd, 'app');
  mkdirSync(join(dir, '.git'), { recursive: true });
  writeFileSync(join(dir, '.git/HEAD'), 'ref: refs/heads/main\n');
  writeFileSync(join(dir, 'old.txt'), 'old');
  const r = run(['app', '--yes', '--skip-install', '--overwrite'], cwd);
  t.equal(r.code, 0, r.stderr);
  t.notOk(existsSync(join(dir, 'old.txt')));
  t.ok(existsSync(join(dir, '.git/HEAD')));
  t.ok(existsSync(join(dir, 'start.ts')));
  t.same(readdirSync(cwd), ['app'], 'no staging folder left');
});

t.test('the current directory, empty but for .git, needs no --overwrite', async (t) => {
  const cwd = tempDir(t);
  const dir = join(cwd, 'app');
  mkdirSync(join(dir, '.git'), { recursive: true });
  const r = run(['.', '--yes', '--skip-install'], dir);
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(join(dir, 'start.ts')));
  t.equal(JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name, 'app');
  t.notMatch(r.stdout, /\bcd\b/, 'no cd step');
  t.same(readdirSync(dir).filter((n) => n.startsWith('.create-')), [], 'no staging folder left');
});

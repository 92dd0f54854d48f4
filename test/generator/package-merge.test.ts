/**
 * What a template adds to package.json (template.json's "package"): merged over base's for a new
 * project, added without overwriting for `add`. Also: `add` keeps the ports of every existing
 * app's files (config.ts too) free. CLI runs use fixture templates via GATEWAYWORKER_TEMPLATES_DIR.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { CliError } from '../../generator/errors.js';
import { freePortsFor, renderData } from '../../generator/generators.js';
import { addToPackage, keptWarning, mergePackage, renderAdditions, stringifyLike } from '../../generator/package.js';
import { listTemplates } from '../../generator/templates.js';
import { ROOT, fixtureTemplates, run, snapshot, tempDir } from './helpers.ts';

const rootPkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
const readPkg = (dir: string) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));

/** Ports like the mqtt-hub template's. */
const HUB_PORTS = { gatewayPort: 7400, registerPort: 1236, startPort: 2900, storePort: 1885 };

/** A chat copy that adds to package.json and keeps a store port in config.ts, like mqtt-hub. */
const HUB = {
  json: {
    description: 'fixture: a hub',
    ports: HUB_PORTS,
    url: 'http://localhost:{{gatewayPort}}',
    package: {
      scripts: { test: 'tap --reporter=terse', 'device:add': 'tsx scripts/device-add.ts' },
      devDependencies: { mqtt: '{{{versions.mqtt}}}' },
    },
  },
  files: {
    'app/config.ts': "export const storeAddress = process.env.{{envPrefix}}STORE_ADDRESS || '127.0.0.1:{{storePort}}';\n",
    'scripts/device-add.ts': "import '../Applications/{{appName}}/config.ts';\n",
  },
};

t.test('renderAdditions renders every value and rejects malformed fields', async (t) => {
  const render = (s: string) => s.replace('{{v}}', '1.2.3');
  t.same(renderAdditions(undefined, render, 'x'), {});
  t.same(renderAdditions({ scripts: { a: 'run {{v}}' }, devDependencies: { m: '^{{v}}' } }, render, 'x'), {
    scripts: { a: 'run 1.2.3' },
    devDependencies: { m: '^1.2.3' },
  });
  for (const [field, message] of [
    [[], /template x: "package" must be an object/],
    [{ peerDependencies: {} }, /package\.peerDependencies is not supported \(use scripts, dependencies, devDependencies\)/],
    [{ scripts: 'tsx a.ts' }, /package\.scripts must be an object/],
    [{ scripts: { a: 1 } }, /package\.scripts\.a must be a string/],
  ] as const) {
    t.throws(() => renderAdditions(field, render, 'x'), message);
    t.throws(() => renderAdditions(field, render, 'x'), CliError);
  }
});

t.test('mergePackage: template keys win in place, new keys follow, dependencies change section', async (t) => {
  const base = {
    name: 'p',
    scripts: { start: 'a', test: 'tap' },
    dependencies: { gatewayworker: '1', tsx: '4' },
    devDependencies: { tap: '21' },
    tap: { include: ['x'] },
  };
  const before = structuredClone(base);
  const merged = mergePackage(base, {
    scripts: { 'device:add': 'b', test: 'tap --bail' },
    devDependencies: { mqtt: '^5', tsx: '^4.1' },
  });
  t.same(base, before, 'base is not changed');
  t.same(Object.keys(merged), ['name', 'scripts', 'dependencies', 'devDependencies', 'tap'], 'top-level order kept');
  t.same(Object.entries(merged.scripts), [['start', 'a'], ['test', 'tap --bail'], ['device:add', 'b']]);
  t.same(merged.dependencies, { gatewayworker: '1' }, 'tsx moved out of dependencies');
  t.same(Object.entries(merged.devDependencies), [['tap', '21'], ['mqtt', '^5'], ['tsx', '^4.1']]);
  t.same(merged.tap, base.tap);
  t.same(mergePackage({ name: 'p' }, { scripts: { a: 'b' } }), { name: 'p', scripts: { a: 'b' } }, 'a missing section is created');
  t.same(mergePackage(base, {}), base, 'nothing to add');
});

t.test("addToPackage adds what is missing and keeps the user's keys", async (t) => {
  const existing = {
    name: 'p',
    scripts: { start: 'a', 'device:add': 'node mine.js', same: 'x' },
    dependencies: { mqtt: '^4.0.0' },
  };
  const before = structuredClone(existing);
  const { pkg, added, kept } = addToPackage(existing, {
    scripts: { 'device:add': 'tsx scripts/device-add.ts', same: 'x', fresh: 'y' },
    devDependencies: { mqtt: '^5.16.0', aedes: '^0.51' },
  });
  t.same(existing, before, 'the input is not changed');
  t.same(Object.entries(pkg.scripts), [['start', 'a'], ['device:add', 'node mine.js'], ['same', 'x'], ['fresh', 'y']]);
  t.same(pkg.dependencies, { mqtt: '^4.0.0' }, 'a dependency in another section counts as there');
  t.same(pkg.devDependencies, { aedes: '^0.51' }, 'a missing section is created');
  t.same(added, ['scripts.fresh', 'devDependencies.aedes']);
  t.same(kept, [
    { key: 'scripts.device:add', theirs: 'node mine.js', ours: 'tsx scripts/device-add.ts' },
    { key: 'dependencies.mqtt', theirs: '^4.0.0', ours: '^5.16.0' },
  ]);
  const line = keptWarning(kept[0], 'mqtt-hub');
  t.equal(line, 'warning: package.json already has scripts.device:add = "node mine.js"; kept it (template mqtt-hub has "tsx scripts/device-add.ts")');
  t.same(addToPackage(pkg, { scripts: { fresh: 'y' } }), { pkg, added: [], kept: [] }, 'adding twice changes nothing');
});

t.test('stringifyLike keeps indentation, line ends and the final newline', async (t) => {
  const pkg = { name: 'p', scripts: { a: 'b' } };
  t.equal(stringifyLike(pkg, '{\n  "x": 1\n}\n'), '{\n  "name": "p",\n  "scripts": {\n    "a": "b"\n  }\n}\n');
  t.equal(stringifyLike(pkg, '{\n\t"x": 1\n}'), '{\n\t"name": "p",\n\t"scripts": {\n\t\t"a": "b"\n\t}\n}');
  t.equal(stringifyLike(pkg, '{\r\n    "x": 1\r\n}\r\n'), '{\r\n    "name": "p",\r\n    "scripts": {\r\n        "a": "b"\r\n    }\r\n}\r\n');
});

t.test('versions.mqtt is the version this repo is tested with', async (t) => {
  const data = renderData({ appName: 'A', projectName: 'p', template: 'chat', ports: {} });
  t.equal(data.versions.mqtt, rootPkg.devDependencies.mqtt);
});

t.test('freePortsFor reads every .ts file directly in each app folder', async (t) => {
  const project = tempDir(t);
  const hub = join(project, 'Applications/Hub');
  mkdirSync(join(hub, 'node_modules/dep'), { recursive: true });
  mkdirSync(join(hub, 'lib'), { recursive: true });
  writeFileSync(join(hub, 'start_gateway.ts'), "process.env.GATEWAY_PORT ?? 7400; process.env.START_PORT ?? 2900; '127.0.0.1:1236'");
  // The store port appears only in config.ts.
  writeFileSync(join(hub, 'config.ts'), "process.env.STORE_ADDRESS || '127.0.0.1:1885'");
  // Neither subfolders nor other files count.
  writeFileSync(join(hub, 'node_modules/dep/index.ts'), 'export const port = 7401;');
  writeFileSync(join(hub, 'lib/util.ts'), 'export const port = 1237;');
  writeFileSync(join(hub, 'notes.md'), 'port 2901');
  writeFileSync(join(project, 'Applications/readme.ts'), 'export const port = 1886;');
  t.same(freePortsFor(project, HUB_PORTS), { gatewayPort: 7401, registerPort: 1237, startPort: 3000, storePort: 1886 });
});

t.test("freePortsFor: a second mqtt-hub's ports miss the first's, its store port too", async (t) => {
  const project = tempDir(t);
  const hub = join(project, 'Applications/YourApp');
  mkdirSync(hub, { recursive: true });
  writeFileSync(join(hub, 'start_gateway.ts'), "MQTT_PORT ?? 1883; WS_PORT ?? 8083; START_PORT ?? 2900; REGISTER_ADDRESS ?? '127.0.0.1:1236'");
  writeFileSync(join(hub, 'config.ts'), "STORE_ADDRESS || '127.0.0.1:1885'");
  const mqttHub = { mqttPort: 1883, wsPort: 8083, registerPort: 1236, startPort: 2900, storePort: 1885 };
  const second = freePortsFor(project, mqttHub);
  t.same(second, { mqttPort: 1884, wsPort: 8084, registerPort: 1237, startPort: 3000, storePort: 1886 });
  // A third one steps past both.
  mkdirSync(join(project, 'Applications/Hub2'));
  writeFileSync(join(project, 'Applications/Hub2/config.ts'), Object.values(second).map((p) => `${p}`).join(' '));
  t.same(freePortsFor(project, mqttHub), { mqttPort: 1887, wsPort: 8085, registerPort: 1238, startPort: 3100, storePort: 1888 });
});

t.test('a new project gets the template additions over base/package.json', async (t) => {
  const env = { GATEWAYWORKER_TEMPLATES_DIR: fixtureTemplates(t, { hub: HUB }) };
  const cwd = tempDir(t);
  const r = run(['proj', '--template', 'hub', '--app', 'Devices', '--yes', '--skip-install'], cwd, env);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  const dir = join(cwd, 'proj');
  const pkg = readPkg(dir);
  const base = JSON.parse(readFileSync(join(ROOT, 'templates/base/package.json'), 'utf8'));
  t.equal(pkg.name, 'proj');
  t.same(Object.keys(pkg), Object.keys(base), 'top-level keys as in base');
  t.same(Object.keys(pkg.scripts), [...Object.keys(base.scripts), 'device:add'], 'base scripts in place, new ones after');
  t.equal(pkg.scripts.test, 'tap --reporter=terse', 'the template wins');
  t.equal(pkg.scripts.start, base.scripts.start);
  t.equal(pkg.scripts['device:add'], 'tsx scripts/device-add.ts');
  t.same(Object.keys(pkg.devDependencies), [...Object.keys(base.devDependencies), 'mqtt']);
  t.equal(pkg.devDependencies.mqtt, rootPkg.devDependencies.mqtt, 'values are rendered');
  t.same(pkg.tap, base.tap);
  t.notMatch(readFileSync(join(dir, 'package.json'), 'utf8'), /\{\{|\}\}/, 'no placeholder left');
  t.match(readFileSync(join(dir, 'Applications/Devices/config.ts'), 'utf8'), "'127.0.0.1:1885'");
});

t.test('a template without additions leaves base/package.json as rendered', async (t) => {
  const env = { GATEWAYWORKER_TEMPLATES_DIR: fixtureTemplates(t, {}) };
  const cwd = tempDir(t);
  t.equal(run(['proj', '--yes', '--skip-install'], cwd, env).code, 0);
  // base's short arrays stay on one line: the file was not rewritten.
  t.match(readFileSync(join(cwd, 'proj/package.json'), 'utf8'), '"node-arg": ["--import=tsx"]');
});

t.test("add: additions go into the project's package.json, the user's keys stay", async (t) => {
  const env = { GATEWAYWORKER_TEMPLATES_DIR: fixtureTemplates(t, { hub: HUB }) };
  const cwd = tempDir(t);
  t.equal(run(['proj', '--yes', '--skip-install'], cwd, env).code, 0);
  const dir = join(cwd, 'proj');
  // The user has their own device:add and indents with tabs.
  const mine = readPkg(dir);
  mine.scripts['device:add'] = 'node my-own.js';
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(mine, null, '\t')}\n`);

  const r = run(['add', 'Hub', '--template', 'hub', '--yes'], dir, env);
  t.equal(r.code, 0, r.stderr);
  // One line per script the project has with another value (base's test is "tap").
  t.same(r.stderr.trimEnd().split('\n'), [
    'create-gatewayworker-app: warning: package.json already has scripts.test = "tap"; kept it (template hub has "tap --reporter=terse")',
    'create-gatewayworker-app: warning: package.json already has scripts.device:add = "node my-own.js"; kept it (template hub has "tsx scripts/device-add.ts")',
  ]);
  t.match(r.stdout, 'Added to package.json: devDependencies.mqtt; run "npm install".');
  const text = readFileSync(join(dir, 'package.json'), 'utf8');
  t.same(JSON.parse(text), { ...mine, devDependencies: { ...mine.devDependencies, mqtt: rootPkg.devDependencies.mqtt } }, 'only mqtt added');
  t.equal(text, `${JSON.stringify(JSON.parse(text), null, '\t')}\n`, 'tabs kept');
  t.same(snapshot(dir)['Applications/Hub/config.ts'].match(/127\.0\.0\.1:\d+/g), ['127.0.0.1:1885']);
  // The project had no scripts/: the one the template's scripts run comes along.
  t.equal(readFileSync(join(dir, 'scripts/device-add.ts'), 'utf8'), "import '../Applications/Hub/config.ts';\n");

  // Nothing new to add: package.json stays byte for byte, the warnings come again.
  const again = run(['add', 'Hub2', '--template', 'hub', '--yes'], dir, env);
  t.equal(again.code, 0, again.stderr);
  t.same(again.stderr, r.stderr);
  t.notMatch(again.stdout, 'Added to package.json');
  t.equal(readFileSync(join(dir, 'package.json'), 'utf8'), text);
  t.equal(readFileSync(join(dir, 'scripts/device-add.ts'), 'utf8'), "import '../Applications/Hub/config.ts';\n", 'scripts/ is not replaced');

  // A template without additions: not a word about package.json.
  const chat = run(['add', 'Other', '--template', 'chat', '--yes'], dir, env);
  t.equal(chat.code, 0, chat.stderr);
  t.equal(chat.stderr, '');
  t.equal(readFileSync(join(dir, 'package.json'), 'utf8'), text);
});

t.test('add: a dependency the project has in another section stays there; only new scripts, no install hint', async (t) => {
  const env = { GATEWAYWORKER_TEMPLATES_DIR: fixtureTemplates(t, { hub: HUB }) };
  const cwd = tempDir(t);
  t.equal(run(['proj', '--yes', '--skip-install'], cwd, env).code, 0);
  const dir = join(cwd, 'proj');
  const mine = readPkg(dir);
  mine.dependencies.mqtt = rootPkg.devDependencies.mqtt;
  mine.scripts.test = 'tap --reporter=terse';
  writeFileSync(join(dir, 'package.json'), JSON.stringify(mine, null, 2));
  const r = run(['add', 'Hub', '--template', 'hub', '--yes', '--package-manager', 'pnpm'], dir, env);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '', 'same values: no warning');
  t.match(r.stdout, /Added to package\.json: scripts\.device:add\.\n/);
  const pkg = readPkg(dir);
  t.same(pkg, { ...mine, scripts: { ...mine.scripts, 'device:add': 'tsx scripts/device-add.ts' } });
  t.equal(readFileSync(join(dir, 'package.json'), 'utf8').endsWith('}'), true, 'no final newline added');
});

t.test('a second hub app: its ports, the store port too, miss the first one', async (t) => {
  const env = { GATEWAYWORKER_TEMPLATES_DIR: fixtureTemplates(t, { hub: HUB }) };
  const cwd = tempDir(t);
  t.equal(run(['proj', '--template', 'hub', '--app', 'Hub', '--yes', '--skip-install'], cwd, env).code, 0);
  const dir = join(cwd, 'proj');
  const before = readFileSync(join(dir, 'package.json'), 'utf8');
  const r = run(['add', 'Hub2', '--template', 'hub', '--yes'], dir, env);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '', 'the project already has every addition');
  t.equal(readFileSync(join(dir, 'package.json'), 'utf8'), before, 'package.json not rewritten');
  t.match(r.stdout, 'default ports: gatewayPort 7401, registerPort 1237, startPort 3000, storePort 1886.');
  t.match(readFileSync(join(dir, 'Applications/Hub2/config.ts'), 'utf8'), "HUB2_STORE_ADDRESS || '127.0.0.1:1886'");
  t.match(readFileSync(join(dir, 'Applications/Hub2/start_gateway.ts'), 'utf8'), 'HUB2_GATEWAY_PORT ?? 7401');
});

t.test('a malformed package field fails before anything is written', async (t) => {
  const broken = { json: { ...HUB.json, package: { peerDependencies: { mqtt: '^5' } } } };
  const env = { GATEWAYWORKER_TEMPLATES_DIR: fixtureTemplates(t, { broken }) };
  const cwd = tempDir(t);
  const r = run(['proj', '--template', 'broken', '--yes', '--skip-install'], cwd, env);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'create-gatewayworker-app: template broken: package.peerDependencies is not supported (use scripts, dependencies, devDependencies) in template.json\n');
  t.same(snapshot(cwd), {}, 'nothing written');
});

t.test('every real template: its additions land in package.json, rendered', async (t) => {
  for (const info of listTemplates()) {
    const cwd = tempDir(t);
    const r = run(['proj', '--template', info.name, '--yes', '--skip-install'], cwd);
    t.equal(r.code, 0, `${info.name}: ${r.stderr}`);
    const text = readFileSync(join(cwd, 'proj/package.json'), 'utf8');
    t.notMatch(text, /\{\{|\}\}/, `${info.name}: no placeholder left`);
    const pkg = JSON.parse(text);
    const additions = (info.package ?? {}) as Record<string, Record<string, string>>;
    for (const [section, entries] of Object.entries(additions)) {
      for (const key of Object.keys(entries)) t.type(pkg[section]?.[key], 'string', `${info.name}: ${section}.${key}`);
    }
    if (additions.devDependencies?.mqtt) t.equal(pkg.devDependencies.mqtt, rootPkg.devDependencies.mqtt, `${info.name}: mqtt version`);
  }
});

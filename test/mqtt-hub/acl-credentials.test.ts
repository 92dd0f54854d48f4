/**
 * The MQTT hub's ACL (templates/mqtt-hub/app/acl.ts), device credentials (credentials.ts) and
 * `npm run device:add` (scripts/device-add.ts), rendered from the template.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { HUB_CORE_FILES, renderHub } from './render.ts';

type AclModule = typeof import('../../templates/mqtt-hub/app/acl.ts');
type CredentialsModule = typeof import('../../templates/mqtt-hub/app/credentials.ts');

const hub = renderHub(t, HUB_CORE_FILES);
const { canPublish, canSubscribe, createAcl, filterIncludes } = await hub.load<AclModule>('Applications/Hub/acl.ts');
const { CredentialStore, DeviceError, credentials } = await hub.load<CredentialsModule>('Applications/Hub/credentials.ts');

t.test('a device may use its own subtree and the shared topics', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['devices/dev1', true],
    ['devices/dev1/telemetry', true],
    ['devices/dev1/a/b/c', true],
    ['devices/dev1/', true],
    ['devices/dev2/telemetry', false],
    ['devices/dev10', false],
    ['devices', false],
    ['broadcast', true], // `broadcast/#` matches its parent level too
    ['broadcast/news', true],
    ['other', false],
    ['$SYS/broker', false],
    ['devices/dev1/+', false], // not a topic name
    ['devices/dev1/online', false], // presence is published by the hub only
    ['devices/dev1/online/x', true],
    ['', false],
  ];
  for (const [topic, allowed] of cases) t.equal(canPublish('dev1', topic), allowed, `publish ${JSON.stringify(topic)}`);
});

t.test('a subscription is allowed only if everything it can match is', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['devices/dev1', true],
    ['devices/dev1/#', true],
    ['devices/dev1/+', true],
    ['devices/dev1/+/state', true],
    ['devices/dev1/telemetry', true],
    ['devices/+/telemetry', false],
    ['devices/+', false],
    ['devices/#', false],
    ['+/dev1/telemetry', false],
    ['#', false],
    ['+', false],
    ['broadcast/#', true],
    ['broadcast/+/x', true],
    ['broadcast', true],
    ['$SYS/#', false],
    ['$share/g/devices/dev1/#', false],
    ['devices/dev1/#/x', false], // not a valid filter
    ['devices/dev1/a+', false], // `+` must be a whole level (§4.7.1.2)
    ['', false],
  ];
  for (const [filter, allowed] of cases) t.equal(canSubscribe('dev1', filter), allowed, `subscribe ${JSON.stringify(filter)}`);
});

t.test('anonymous clients get the shared topics only; odd ids get no subtree', async (t) => {
  t.ok(canPublish(null, 'broadcast/x'));
  t.ok(canSubscribe(null, 'broadcast/#'));
  t.notOk(canPublish(null, 'devices/null/x'));
  t.notOk(canSubscribe(null, 'devices/+/x'));
  // An id with wildcard or separator characters never reaches here (credentials refuse it), but
  // the ACL must not build a wider filter from it either.
  t.notOk(canPublish('+', 'devices/x/y'));
  t.notOk(canSubscribe('#', 'devices/#'));
  t.notOk(canPublish('a/b', 'devices/a/b/c'));
});

t.test('configured shared topics', async (t) => {
  const acl = createAcl(['sensors/+/public', 'ops/alerts', 'bad/#/filter', '$SYS/#']);
  t.ok(acl.canPublish('d', 'sensors/x/public'));
  t.notOk(acl.canPublish('d', 'sensors/x/private'));
  t.ok(acl.canSubscribe('d', 'sensors/+/public'));
  t.ok(acl.canSubscribe('d', 'sensors/x/public'));
  t.notOk(acl.canSubscribe('d', 'sensors/#'));
  t.ok(acl.canSubscribe('d', 'ops/alerts'));
  t.notOk(acl.canSubscribe('d', 'ops/+'));
  t.notOk(acl.canPublish('d', 'broadcast/x'), 'the default is replaced');
  t.notOk(acl.canSubscribe('d', '$SYS/#'), 'a $ filter in the config is ignored');
  t.notOk(acl.canPublish('d', 'bad/x/filter'), 'an invalid filter in the config is ignored');
  const none = createAcl([]);
  t.notOk(none.canPublish(null, 'anything'), 'no shared topics: anonymous clients can do nothing');
});

t.test('filterIncludes', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['a/#', 'a', true],
    ['a/#', 'a/#', true],
    ['a/#', 'a/+/b', true],
    ['a/+', 'a', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false],
    ['a/+', 'a/b/c', false],
    ['a/b', 'a/+', false],
    ['a/b', 'a/b/#', false],
    ['#', '+/+/#', true],
    ['+/b', '+/b', true],
    ['a//c', 'a/+/c', false],
    ['a/+/c', 'a//c', true],
  ];
  for (const [allowed, filter, expected] of cases) t.equal(filterIncludes(allowed, filter), expected, `${allowed} ⊇ ${filter}`);
});

t.test('device credentials', async (t) => {
  const file = path.join(hub.root, 'creds', 'devices.json');
  const store = new CredentialStore(file);
  t.same(await store.listDevices(), [], 'no file: no devices');
  t.equal(await store.verifyDevice('dev1', 'x'), false);

  const password = await store.addDevice('dev1');
  t.match(password, /^[A-Za-z0-9_-]{24}$/, '24 characters of base64url');
  t.equal(await store.verifyDevice('dev1', password), true);
  t.equal(await store.verifyDevice('dev1', Buffer.from(password)), true, 'a Buffer password (as mqtt-packet gives it)');
  t.equal(await store.verifyDevice('dev1', password + 'x'), false);
  t.equal(await store.verifyDevice('dev2', password), false);

  const data = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, { salt: string; hash: string; created: string }>;
  t.same(Object.keys(data), ['dev1']);
  t.match(data.dev1, { salt: /^[0-9a-f]{32}$/, hash: /^[0-9a-f]{64}$/, created: /^\d{4}-\d\d-\d\dT/ });
  t.notMatch(fs.readFileSync(file, 'utf8'), password, 'the password itself is not stored');
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'readable by its owner only');
  t.same(fs.readdirSync(path.dirname(file)), ['devices.json'], 'no temp file left behind');

  await t.rejects(store.addDevice('dev1'), { name: 'DeviceError', message: /already exists \(use --replace/ });
  for (const bad of ['', 'a/b', 'a+b', '#', 'x'.repeat(65), 'dévice', '..']) {
    await t.rejects(store.addDevice(bad), DeviceError, `refuses id ${JSON.stringify(bad)}`);
  }
  t.ok(await store.addDevice('A-z_0.9'), 'letters, digits, _ . - are fine');

  const rotated = await store.addDevice('dev1', { replace: true });
  t.equal(await store.verifyDevice('dev1', password), false, 'the old password stops working');
  t.equal(await store.verifyDevice('dev1', rotated), true);

  t.same((await store.listDevices()).map((d) => d.id), ['A-z_0.9', 'dev1']);
  t.equal(await store.removeDevice('dev1'), true);
  t.equal(await store.removeDevice('dev1'), false);
  t.equal(await store.verifyDevice('dev1', rotated), false, 'a removed device cannot connect');
});

t.test('another process adding a device takes effect without a restart', async (t) => {
  const file = path.join(hub.root, 'shared', 'devices.json');
  const hubSide = new CredentialStore(file);
  const cliSide = new CredentialStore(file);
  t.equal(await hubSide.verifyDevice('late', 'x'), false);
  const password = await cliSide.addDevice('late');
  t.equal(await hubSide.verifyDevice('late', password), true, 're-read after the file changed');
  t.equal(await hubSide.verifyDevice('late', password), true, 'and again (cached)');
  await cliSide.removeDevice('late');
  t.equal(await hubSide.verifyDevice('late', password), false, 'a removal is seen too, even for a cached password');

  // A broken hand edit: the hub keeps the devices it knew, writers refuse to overwrite.
  const other = await cliSide.addDevice('other');
  t.equal(await hubSide.verifyDevice('other', other), true);
  fs.writeFileSync(file, '{ "other": ');
  t.equal(await hubSide.verifyDevice('other', other), true, 'still admitted from the last good read');
  await t.rejects(cliSide.addDevice('third'), /not valid JSON/, 'no write over a broken file');
  await t.rejects(new CredentialStore(file).verifyDevice('other', other), /not valid JSON/, 'a first read of a broken file fails loudly');
});

t.test('devices.json: entries with an invalid device id are refused, with a clear message, and kept as they are', async (t) => {
  const file = path.join(hub.root, 'hand-edited', 'devices.json');
  const writer = new CredentialStore(file);
  const good = await writer.addDevice('good');
  const record = JSON.parse(fs.readFileSync(file, 'utf8')).good as Record<string, string>;
  // A hand edit: the same record under ids a device can never have.
  fs.writeFileSync(file, JSON.stringify({ good: record, 'evil:one': record, 'a/b': record }));
  const store = new CredentialStore(file);
  const warnings: string[] = [];
  store.onWarning = (message) => warnings.push(message);
  t.equal(await store.verifyDevice('evil:one', good), false, 'an id with `:` cannot connect (it would break the <deviceId>:<clientId> keys)');
  t.equal(await store.verifyDevice('a/b', good), false, 'nor one with `/`');
  t.equal(await store.verifyDevice('good', good), true, 'the valid entries still work');
  t.same((await store.listDevices()).map((d) => d.id), ['good']);
  t.same((await store.invalidIds()).sort(), ['a/b', 'evil:one']);
  t.equal(warnings.length, 2, 'one warning per invalid id, once');
  t.match(warnings.join('\n'), /device id "evil:one" refused, that device cannot connect: a device id is 1-64 characters .*--remove 'evil:one'/);
  await store.verifyDevice('good', good);
  t.equal(warnings.length, 2, 'not repeated while the file is unchanged');

  await store.addDevice('another');
  t.same(Object.keys(JSON.parse(fs.readFileSync(file, 'utf8'))).sort(), ['a/b', 'another', 'evil:one', 'good'], 'a write keeps the refused entries as they were');
  t.equal(await store.removeDevice('evil:one'), true, 'and --remove takes one out');
  t.same(Object.keys(JSON.parse(fs.readFileSync(file, 'utf8'))).sort(), ['a/b', 'another', 'good']);
});

/** Runs scripts/device-add.ts in the rendered project. */
function deviceAdd(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // tap's own variables must not reach the script; DATA_DIR unset means <project>/data.
  for (const key of ['TAP', 'NODE_V8_COVERAGE', 'DATA_DIR']) delete env[key];
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/device-add.ts', ...args], { cwd: hub.root, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('npm run device:add', async (t) => {
  const added = await deviceAdd('sensor-1');
  t.equal(added.code, 0, added.stderr);
  const password = /password: (\S+)/.exec(added.stdout)?.[1] ?? '';
  t.match(password, /^[A-Za-z0-9_-]{24}$/, 'prints the password');
  t.match(added.stdout, /device: +sensor-1/);
  t.match(added.stdout, `mosquitto_pub -h localhost -p 1883 -i sensor-1 -u sensor-1 -P '${password}'`, 'with a hint how to connect');
  t.equal(await credentials.verifyDevice('sensor-1', password), true, 'written to <project>/data/devices.json');
  t.ok(fs.existsSync(path.join(hub.root, 'data', 'devices.json')));

  const duplicate = await deviceAdd('sensor-1');
  t.equal(duplicate.code, 1);
  t.equal(duplicate.stderr.trim().split('\n').length, 1, 'one line');
  t.match(duplicate.stderr, /already exists \(use --replace/);

  const invalid = await deviceAdd('bad/id');
  t.equal(invalid.code, 1);
  t.match(invalid.stderr, /^invalid device id "bad\/id"/);
  const colon = await deviceAdd('dev:1');
  t.equal(colon.code, 1);
  t.match(colon.stderr, /^invalid device id "dev:1": use 1-64 characters of A-Z a-z 0-9 _ \. -/, 'a `:` is refused: ids are the first part of <deviceId>:<clientId>');

  const replaced = await deviceAdd('--replace', 'sensor-1');
  t.equal(replaced.code, 0, replaced.stderr);
  const newPassword = /password: (\S+)/.exec(replaced.stdout)?.[1] ?? '';
  t.equal(await credentials.verifyDevice('sensor-1', newPassword), true);
  t.equal(await credentials.verifyDevice('sensor-1', password), false);

  const list = await deviceAdd('--list');
  t.equal(list.code, 0);
  t.match(list.stdout, /^sensor-1\t\d{4}-/m);

  // A hand edit slipped an invalid id in: every command says so, plainly.
  const data = path.join(hub.root, 'data', 'devices.json');
  const entries = JSON.parse(fs.readFileSync(data, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(data, JSON.stringify({ ...entries, 'x:y': entries['sensor-1'] }));
  const warned = await deviceAdd('--list');
  t.equal(warned.code, 0);
  t.match(warned.stderr, /^warning: .*devices\.json: device id "x:y" refused, that device cannot connect/m, 'the invalid id is named on stderr');
  t.notMatch(warned.stdout, 'x:y', 'and not listed');
  t.equal((await deviceAdd('--remove', 'x:y')).code, 0, 'it can be removed');
  t.notMatch((await deviceAdd('--list')).stderr, 'x:y');

  t.equal((await deviceAdd('--remove', 'sensor-1')).code, 0);
  const gone = await deviceAdd('--remove', 'sensor-1');
  t.equal(gone.code, 1);
  t.match(gone.stderr, /no device sensor-1/);
  t.match((await deviceAdd('--list')).stdout, /no devices yet/);

  const usage = await deviceAdd();
  t.equal(usage.code, 1);
  t.match(usage.stderr, /^usage: npm run device:add <id>/);
  t.match((await deviceAdd('--bogus', 'x')).stderr, /unknown option --bogus/);
});

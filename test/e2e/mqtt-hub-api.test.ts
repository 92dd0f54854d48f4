/**
 * End to end, the MQTT hub's HTTP side (see mqtt-hub-protocol.test.ts for the setup): the API on
 * the WebSocket port (`GET /api/devices`, `POST /api/devices/<id>/command`, ADMIN_TOKEN), presence
 * (`devices/<id>/online`), devices added while the hub runs, and the dashboard in Chromium (through
 * playwright-core): it lists a connected device and a command sent from the page reaches it.
 *
 * Anonymous clients are allowed here, and SHARED_TOPICS is `devices/+/online`, so that an
 * anonymous monitor can watch every device's presence.
 */
import { existsSync } from 'node:fs';
import t, { type Test } from 'tap';
import type { IClientOptions } from 'mqtt';
import {
  CHROMIUM,
  addDevice,
  dataDirIn,
  generateHub,
  hubEnv,
  mosqPub,
  mosqSub,
  mqttJs,
  noMosquitto,
  sleep,
  startHub,
  subscribe,
  subscribedOrThrow,
  tempDir,
  waitFor,
  type Device,
  type Hub,
  type MosqOptions,
  type MqttJs,
} from './mqtt-helpers.ts';

t.setTimeout(240_000);

const TOKEN = 'e2e-admin-token';
let hub: Hub;
let project = '';
let env: Record<string, string>;
const dev: Record<string, Device> = {};

t.before(async () => {
  const dir = tempDir(t, 'gw-e2e-mqtt-api-');
  project = await generateHub(dir);
  env = await hubEnv(dataDirIn(dir), { ADMIN_TOKEN: TOKEN, ALLOW_ANONYMOUS: 'true', SHARED_TOPICS: 'devices/+/online' });
  for (const id of ['sensor-1', 'sensor-2']) dev[id] = await addDevice(project, env, id);
  hub = await startHub(t, project, env);
});

const as = <T extends object>(d: Device, extra: T = {} as T): MosqOptions & T => ({ port: hub.mqttPort, user: d.id, password: d.password, ...extra });

function js(t: Test, d: Device | null, opts: IClientOptions & { ws?: boolean } = {}): Promise<MqttJs> {
  const { ws, ...rest } = opts;
  return mqttJs(t, ws ? hub.wsUrl : hub.tcpUrl, { ...(d ? { username: d.id, password: d.password } : {}), protocolVersion: 4, ...rest });
}

interface ApiResult {
  status: number;
  headers: Headers;
  body: any;
}

async function api(path: string, init: RequestInit & { token?: string | null } = {}): Promise<ApiResult> {
  const { token = TOKEN, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (token !== null) headers.set('Authorization', `Bearer ${token}`);
  const res = await fetch(`${hub.httpUrl}${path}`, { ...rest, headers });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  return { status: res.status, headers: res.headers, body };
}

const command = (id: string, body: string, type = 'application/json', headers: Record<string, string> = {}) =>
  api(`/api/devices/${encodeURIComponent(id)}/command`, { method: 'POST', body, headers: { 'Content-Type': type, ...headers } });

t.test('HTTP API: the token, the online list, commands', { skip: noMosquitto }, async (t) => {
  const s1 = dev['sensor-1']!;
  const s2 = dev['sensor-2']!;
  const none = await api('/api/devices', { token: null });
  t.equal(none.status, 401, 'without the token: 401');
  t.match(none.headers.get('www-authenticate'), /^Bearer/);
  t.match(none.body, { error: String });
  t.equal((await api('/api/devices', { token: 'wrong' })).status, 401, 'a wrong token: 401');

  const before = await api('/api/devices');
  t.equal(before.status, 200);
  t.same(before.body, [], 'nobody online yet');

  const device = mosqSub(t, as(s1, { id: 'sensor-1', qos: 1, topics: ['devices/sensor-1/command'] }));
  await subscribedOrThrow(device);
  const ws = await js(t, s2, { ws: true, protocolVersion: 5, clientId: 's2-ws' });
  await subscribe(ws, 'devices/sensor-2/command', { qos: 1 });

  const list = await api('/api/devices');
  t.equal(list.status, 200, 'GET /api/devices with the token: 200');
  t.match(list.headers.get('content-type'), /^application\/json/);
  t.equal(list.body.length, 2, `two connections listed: ${JSON.stringify(list.body)}`);
  const one = list.body.find((d: any) => d.id === 'sensor-1');
  const two = list.body.find((d: any) => d.id === 'sensor-2');
  t.match(one, { id: 'sensor-1', clientId: 'sensor-1', ip: /(^|:)127\.0\.0\.1$/, protocol: 'mqtt', version: '3.1.1' }, 'mosquitto_sub: TCP, 3.1.1, its IP');
  t.match(two, { id: 'sensor-2', clientId: 's2-ws', ip: /(^|:)127\.0\.0\.1$/, protocol: 'mqtt+ws', version: '5.0' }, 'mqtt.js: WebSocket, 5.0');
  for (const d of [one, two]) {
    const age = Date.now() - Date.parse(d?.lastSeen);
    t.ok(age >= -1000 && age < 60_000, `${d?.id}: last seen ${d?.lastSeen} is recent`);
    t.ok(Date.parse(d?.connectedAt) <= Date.parse(d?.lastSeen), 'connected at ≤ last seen');
  }

  const sent = await command('sensor-1', '"reboot"');
  t.equal(sent.status, 202, 'POST a command: 202');
  t.same(sent.body, { topic: 'devices/sensor-1/command', delivered: true }, 'delivered: the device is online');
  t.match(await device.messages.next(), { topic: 'devices/sensor-1/command', payload: '"reboot"', qos: 1 }, 'mosquitto_sub gets it at QoS 1');

  const json = await command('sensor-2', '{"action":"blink","times":3}', 'application/json');
  t.equal(json.status, 202);
  const got = await ws.received.next();
  t.match(got, { topic: 'devices/sensor-2/command', payload: '{"action":"blink","times":3}', qos: 1 }, 'the JSON body arrives as sent');
  t.equal(got.properties?.contentType, 'application/json', 'with its content type (MQTT 5)');

  t.equal((await command('sensor-2', '{not json', 'application/json')).status, 400, 'invalid JSON: 400');
  // What a page on another site could make a browser send: refused, the token notwithstanding.
  const plain = await command('sensor-1', 'reboot', 'text/plain');
  t.equal(plain.status, 415, 'a body that is not application/json: 415 (a browser sends JSON to another site only after a preflight)');
  t.match(plain.body, { error: /application\/json/ });
  t.equal((await command('sensor-1', '{}', 'application/x-www-form-urlencoded')).status, 415, 'a form post: 415');
  const foreign = await command('sensor-1', '{}', 'application/json', { Origin: 'http://evil.example' });
  t.equal(foreign.status, 403, 'a request from another origin: 403');
  t.match(foreign.body, { error: /another origin/ });
  t.equal((await command('sensor-1', '{}', 'application/json', { 'Sec-Fetch-Site': 'cross-site' })).status, 403, 'Sec-Fetch-Site cross-site: 403');
  const own = await command('sensor-1', '"from the dashboard origin"', 'application/json', { Origin: hub.httpUrl, 'Sec-Fetch-Site': 'same-origin' });
  t.equal(own.status, 202, 'from the hub\'s own origin: 202');
  t.match(await device.messages.next(), { payload: '"from the dashboard origin"' });
  t.equal((await command('bad id!', '{}')).status, 400, 'an invalid device id: 400');
  t.equal((await api('/api/devices/sensor-1/command')).status, 405, 'GET on the command route: 405');
  t.equal((await api('/api/nothing')).status, 404, 'an unknown API route: 404');
  t.equal((await command('sensor-1', JSON.stringify('x'.repeat(70 * 1024)))).status, 413, 'a body over 64 KB: 413');
  const offline = await command('nobody-here', '"hello?"');
  t.same([offline.status, offline.body.delivered], [202, false], 'a device not online: 202, delivered false');
  t.same(device.messages.items, [], 'sensor-1 got nothing of the refused or other commands');

  // Leaving: gone from the list.
  device.kill('SIGINT');
  await device.exited;
  await waitFor(async () => ((await api('/api/devices')).body.length === 1 ? true : null), 5000, 'sensor-1 to leave the list').catch(() => {});
  t.same((await api('/api/devices')).body.map((d: any) => d.clientId), ['s2-ws'], 'a device that left is not listed');

  // A command for an offline device with a persistent session waits for it.
  const persistent = await js(t, s1, { ws: true, protocolVersion: 5, clientId: 's1-persistent', clean: false, properties: { sessionExpiryInterval: 300 } });
  await subscribe(persistent, 'devices/sensor-1/command', { qos: 1 });
  await persistent.client.endAsync();
  await sleep(300);
  const queued = await command('sensor-1', '"while-away"');
  t.same([queued.status, queued.body.delivered], [202, false], 'sent while sensor-1 is offline: delivered false');
  const back = await js(t, s1, { ws: true, protocolVersion: 5, clientId: 's1-persistent', clean: false, properties: { sessionExpiryInterval: 300 } });
  t.match(await back.received.next(), { topic: 'devices/sensor-1/command', payload: '"while-away"' }, 'it arrives when the device returns');
});

t.test('presence: devices/<id>/online is 1 while a connection is open, 0 after the last', async (t) => {
  const s2 = dev['sensor-2']!;
  const monitor = await js(t, null, { clientId: 'presence-monitor' });
  t.same(await subscribe(monitor, 'devices/+/online', { qos: 1 }), [1], 'an anonymous monitor may watch devices/+/online (shared)');
  t.same(await subscribe(monitor, 'devices/sensor-1/command', { qos: 1 }), [0x80], 'but not a device\'s own topics');
  monitor.received.drain(); // retained presence of earlier subtests

  const a = await js(t, s2, { clientId: 'presence-a' });
  t.match(await monitor.received.next((m) => m.topic === 'devices/sensor-2/online'), { payload: '1' }, 'sensor-2 connects: 1');
  const b = await js(t, s2, { ws: true, clientId: 'presence-b' });
  a.client.end();
  await a.closed;
  await sleep(700);
  const meanwhile = monitor.received.items.filter((m) => m.topic === 'devices/sensor-2/online' && m.payload === '0');
  t.same(meanwhile, [], 'one of two connections closes: still online (no 0)');
  b.client.end();
  t.match(await monitor.received.next((m) => m.topic === 'devices/sensor-2/online' && m.payload === '0'), { payload: '0' }, 'the last one closes: 0');
  // Presence topics of every device, checked after the fact through their retained value.
  const late = await js(t, null, { clientId: 'presence-late' });
  await subscribe(late, 'devices/+/online', { qos: 1 });
  await waitFor(() => late.received.all.some((m) => m.topic === 'devices/sensor-2/online'), 3000, 'the retained presence of sensor-2').catch(() => {});
  t.match(late.received.all.find((m) => m.topic === 'devices/sensor-2/online'), { payload: '0', retain: true }, 'a new subscriber gets the retained 0');
});

t.test('a device added while the hub runs can connect at once', { skip: noMosquitto }, async (t) => {
  const late = await addDevice(project, env, 'late-device');
  t.match(late.run.stdout, /password:/, 'npm run device:add prints the password');
  const r = await mosqPub({ port: hub.mqttPort, user: 'late-device', password: late.password, qos: 1, topic: 'devices/late-device/hello', message: 'hi' });
  t.equal(r.code, 0, `mosquitto_pub with the new credentials works${r.code === 0 ? '' : `: ${r.stdout}${r.stderr}`}`);
  const again = await addDevice(project, env, 'late-device').catch((error: Error) => error.message);
  t.match(again, /already exists/, 'adding the same id twice is refused');
});

t.test('the dashboard in Chromium: lists a connected device; a command from the page reaches it', { skip: !existsSync(CHROMIUM) ? `${CHROMIUM} is missing` : noMosquitto }, async (t) => {
  const home = await fetch(`${hub.httpUrl}/`);
  t.equal(home.status, 200, 'GET / serves the dashboard');
  t.match(home.headers.get('content-type'), /^text\/html/);
  t.notMatch(await home.text(), '{{', 'no template placeholders left');

  const s1 = dev['sensor-1']!;
  const device = mosqSub(t, as(s1, { id: 'sensor-1-dash', qos: 1, topics: ['devices/sensor-1/command'] }));
  await subscribedOrThrow(device);
  // A client id made of markup: the page must show it as text.
  const evilId = '<img src=x onerror="window.pwned=1">';
  const evil = await js(t, s1, { clientId: evilId });

  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  page.setDefaultTimeout(10_000);
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${hub.httpUrl}/`);
  await page.locator('#auth').waitFor({ state: 'visible' });
  t.pass('without the token the page asks for it');
  await page.fill('#token', TOKEN);
  await page.click('#auth button');
  const row = page.locator('#devices tr', { hasText: 'sensor-1-dash' });
  await row.waitFor();
  t.match(await row.textContent(), /sensor-1.*sensor-1-dash.*mqtt 3\.1\.1.*127\.0\.0\.1/s, 'the connected device is listed: id, client id, protocol, IP');
  await page.locator('#devices tr', { hasText: evilId }).waitFor();
  t.pass('a client id of markup is listed as text');

  await row.locator('button', { hasText: 'Command' }).click();
  t.equal(await page.inputValue('#device'), 'sensor-1', 'the row\'s Command button fills in the device id');
  await page.fill('#payload', '{"from":"the page"}');
  await page.click('#command button[type=submit]');
  t.match(await device.messages.next(), { topic: 'devices/sensor-1/command', payload: '{"from":"the page"}' }, 'the command typed in the page reaches the device (a same-origin JSON POST)');
  await page.locator('#status', { hasText: 'sent to sensor-1' }).waitFor();
  t.pass('and the page says it was sent');

  t.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined, 'no injected script ran');
  t.equal(await page.locator('#devices img').count(), 0, 'no injected element');
  evil.client.end();
  t.same(errors, [], 'no page errors');
});

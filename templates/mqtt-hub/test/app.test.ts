/**
 * Boots the whole hub (Register, both Gateways, two BusinessWorkers, the Store) on free ports with
 * a data directory of its own, adds a device with `npm run device:add`, and talks to it with the
 * `mqtt` client over TCP and WebSocket, and over the HTTP API. Run with `npm test`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import t from 'tap';

const root = fileURLToPath(new URL('..', import.meta.url));

/** A port below 32768 (above it the OS hands out ephemeral ports) that is free right now. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

let app: ChildProcess;
let env: NodeJS.ProcessEnv;
let mqttPort: number;
let wsPort: number;
const device = 'test-sensor';
let password: string;

/** Connects (retrying while the hub starts) and resolves at CONNACK. */
async function connect(url: string, options: IClientOptions, deadline = Date.now() + 30_000): Promise<MqttClient> {
  for (;;) {
    try {
      return await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    } catch (error) {
      // A CONNACK refusal carries its return code (a number); a hub still starting, a socket error.
      if (Date.now() > deadline || typeof (error as { code?: unknown }).code === 'number') throw error;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  }
}

/** The next message on `topic` (subscribe first). */
function nextMessage(client: MqttClient, topic: string): Promise<{ payload: string; retain: boolean; qos: number }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${topic} within 10 s`)), 10_000);
    const listener = (received: string, payload: Buffer, packet: { retain: boolean; qos: number }) => {
      if (received !== topic) return;
      clearTimeout(timer);
      client.off('message', listener);
      resolve({ payload: payload.toString(), retain: packet.retain, qos: packet.qos });
    };
    client.on('message', listener);
  });
}

t.before(async () => {
  mqttPort = await freePort();
  wsPort = await freePort();
  env = {
    ...process.env,
    MQTT_PORT: String(mqttPort),
    WS_PORT: String(wsPort),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort()),
    STORE_ADDRESS: `127.0.0.1:${await freePort()}`,
    DATA_DIR: mkdtempSync(join(tmpdir(), 'hub-data-')),
    GATEWAY_COUNT: '1',
    WORKER_COUNT: '2',
    GATEWAYWORKER_RUNTIME_DIR: mkdtempSync(join(tmpdir(), 'hub-run-')),
  };
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'scripts/device-add.ts', device], { cwd: root, env });
  const match = /^password:\s*(\S+)/m.exec(stdout);
  if (!match) throw new Error(`device:add printed no password:\n${stdout}`);
  password = match[1];
  app = spawn(process.execPath, ['--import', 'tsx', 'start.ts', 'start'], { cwd: root, env, stdio: 'inherit' });
});

t.teardown(async () => {
  if (app.exitCode !== null || app.signalCode !== null) return;
  const exited = new Promise((resolve) => app.once('exit', resolve));
  app.kill('SIGTERM');
  const timer = setTimeout(() => app.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
});

t.test('a device publishes to its own topic and gets it back, with its presence retained', async (t) => {
  const client = await connect(`mqtt://127.0.0.1:${mqttPort}`, { username: device, password, clientId: 'test-1' });
  t.teardown(() => client.endAsync());

  const presence = nextMessage(client, `devices/${device}/online`);
  const granted = await client.subscribeAsync(`devices/${device}/#`, { qos: 1 });
  t.equal(granted[0].qos, 1, 'subscription granted at QoS 1');
  t.match(await presence, { payload: '1', retain: true }, 'presence is retained 1');

  const telemetry = nextMessage(client, `devices/${device}/telemetry`);
  await client.publishAsync(`devices/${device}/telemetry`, '{"temperature":21.5}', { qos: 1 });
  t.match(await telemetry, { payload: '{"temperature":21.5}', qos: 1 });

  // A SUBACK failure code (0x80) makes the client reject the subscribe, with the SUBACK attached.
  const refused = await client.subscribeAsync('devices/someone-else/#', { qos: 0 }).then(
    () => 'granted',
    (error: { packet?: { granted?: unknown } }) => error.packet?.granted,
  );
  t.same(refused, [0x80], 'another device’s topics are refused');
});

t.test('a wrong password is refused', async (t) => {
  await t.rejects(connect(`mqtt://127.0.0.1:${mqttPort}`, { username: device, password: 'wrong' }), /bad username or password/i);
});

t.test('over WebSocket, the HTTP API lists the device and forwards a command to it', async (t) => {
  const client = await connect(`ws://127.0.0.1:${wsPort}/mqtt`, { username: device, password, clientId: 'test-ws' });
  t.teardown(() => client.endAsync());
  await client.subscribeAsync(`devices/${device}/command`, { qos: 1 });

  const list = await fetch(`http://127.0.0.1:${wsPort}/api/devices`);
  t.equal(list.status, 200);
  const devices = (await list.json()) as Array<{ id: string; clientId: string; protocol: string }>;
  t.match(devices.find((d) => d.clientId === 'test-ws'), { id: device, protocol: 'mqtt+ws' }, 'listed as online');

  const command = nextMessage(client, `devices/${device}/command`);
  const sent = await fetch(`http://127.0.0.1:${wsPort}/api/devices/${device}/command`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: '{"action":"blink"}',
  });
  t.equal(sent.status, 202);
  t.match(await sent.json(), { delivered: true });
  t.match(await command, { payload: '{"action":"blink"}', qos: 1 });
});

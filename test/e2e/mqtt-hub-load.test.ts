/**
 * End to end, the MQTT hub under load (see mqtt-hub-protocol.test.ts for the setup): 1,000
 * devices connected at once (half `mqtt` npm clients over TCP with 3.1.1, half over WebSocket with
 * 5.0) each publish to their own telemetry topic at QoS 1, and one monitor subscribed to
 * `devices/+/telemetry` must get every message: lost = 0.
 *
 * The devices are anonymous (ALLOW_ANONYMOUS) and SHARED_TOPICS is `devices/#` here only: anonymous
 * clients may use the shared filters, and the monitor's `devices/+/telemetry` is covered by them
 * (a device's own ACL, `devices/<id>/#`, would refuse that wildcard).
 */
import t, { type Test } from 'tap';
import type { IClientOptions } from 'mqtt';
import { dataDirIn, generateHub, hubEnv, mqttJs, startHub, subscribe, tempDir, waitFor, within, type Hub, type MqttJs } from './mqtt-helpers.ts';

t.setTimeout(240_000);

const DEVICES = 1000;
const PER_DEVICE = 10;
/** Connections opened at the same moment while connecting (the listen backlog is 511). */
const CONNECT_BATCH = 100;

let hub: Hub;

t.before(async () => {
  const dir = tempDir(t, 'gw-e2e-mqtt-load-');
  const project = await generateHub(dir);
  const env = await hubEnv(dataDirIn(dir), { ALLOW_ANONYMOUS: 'true', SHARED_TOPICS: 'devices/#' });
  hub = await startHub(t, project, env);
});

/** Client connections of the hub's gateways (both kinds), from `status --json`. */
async function gatewayConnections(): Promise<number> {
  const { processes } = await hub.status();
  return processes.filter((p) => /Gateway$/.test(p.name)).reduce((sum, p) => sum + p.connections, 0);
}

t.test(`${DEVICES} devices at once publish ${PER_DEVICE} messages each at QoS 1: nothing lost`, async (t) => {
  const baseline = await gatewayConnections();
  const monitor = await mqttJs(t, hub.tcpUrl, { clientId: 'monitor', protocolVersion: 4 });
  t.same(await subscribe(monitor, 'devices/+/telemetry', { qos: 1 }), [1], 'the monitor subscribes to devices/+/telemetry at QoS 1');
  const received = new Map<string, number>();
  let total = 0;
  let wrongQos = 0;
  monitor.client.on('message', (_topic, payload, packet) => {
    total++;
    if (packet.qos !== 1) wrongQos++;
    const key = payload.toString();
    received.set(key, (received.get(key) ?? 0) + 1);
  });

  // Connect everyone first (batches of CONNECT_BATCH), so that all are connected at the same time.
  const started = Date.now();
  const devices: MqttJs[] = [];
  for (let i = 0; i < DEVICES; i += CONNECT_BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(DEVICES, i + CONNECT_BATCH); j++) {
      const ws = j % 2 === 1;
      const opts: IClientOptions = { clientId: `load-${j}`, protocolVersion: ws ? 5 : 4, keepalive: 60, connectTimeout: 20_000 };
      batch.push(mqttJs(t as Test, ws ? hub.wsUrl : hub.tcpUrl, opts));
    }
    devices.push(...(await Promise.all(batch)));
  }
  const connectMs = Date.now() - started;
  t.equal(devices.filter((d) => d.client.connected).length, DEVICES, `${DEVICES} devices connected (${connectMs} ms)`);
  const open = await gatewayConnections();
  t.ok(open - baseline >= DEVICES, `the gateways hold them all at once: ${open - baseline} more connections than before`);

  // Everyone publishes at once; each publish resolves on its PUBACK.
  const publishStart = Date.now();
  const acks = await Promise.allSettled(
    devices.flatMap((d, i) =>
      Array.from({ length: PER_DEVICE }, (_, k) => within(d.client.publishAsync(`devices/load-${i}/telemetry`, `${i}:${k}`, { qos: 1 }), 60_000, 'PUBACK')),
    ),
  );
  const acked = acks.filter((a) => a.status === 'fulfilled').length;
  const publishMs = Date.now() - publishStart;
  const sent = DEVICES * PER_DEVICE;
  t.equal(acked, sent, `every publish acknowledged (PUBACK): ${acked}/${sent} in ${publishMs} ms`);
  const failures = acks.filter((a): a is PromiseRejectedResult => a.status === 'rejected').slice(0, 3).map((a) => String(a.reason));
  if (failures.length) t.comment(`first failures: ${failures.join('; ')}`);

  await waitFor(() => received.size >= sent, 60_000, `${sent} distinct messages at the monitor`).catch(() => {});
  const deliverMs = Date.now() - publishStart;
  await new Promise((resolve) => setTimeout(resolve, 500)); // late duplicates, if any
  const lost = [...Array(DEVICES).keys()].flatMap((i) => Array.from({ length: PER_DEVICE }, (_, k) => `${i}:${k}`)).filter((key) => !received.has(key));
  const duplicates = total - received.size;
  t.comment(`sent ${sent}, expected ${sent}, received ${total} (${received.size} distinct), lost ${lost.length}, duplicates ${duplicates}`);
  t.comment(`connect ${connectMs} ms, publish+PUBACK ${publishMs} ms, all delivered after ${deliverMs} ms (${Math.round((sent / deliverMs) * 1000)} msg/s)`);
  t.equal(lost.length, 0, `lost = 0 ${lost.length ? `(first lost: ${lost.slice(0, 10).join(', ')})` : ''}`);
  t.equal(received.size, sent, 'expected = sent');
  t.equal(duplicates, 0, 'no duplicates (no reconnects happened)');
  t.equal(wrongQos, 0, 'every message arrived at QoS 1');

  // Per-device order: one client's messages to one topic arrive in the order sent.
  const order = new Map<string, number>();
  let outOfOrder = 0;
  for (const p of monitor.packets) {
    if (p.cmd !== 'publish') continue;
    const [i, k] = String(p.payload).split(':').map(Number);
    const last = order.get(String(i)) ?? -1;
    if (k! < last) outOfOrder++;
    order.set(String(i), k!);
  }
  t.equal(outOfOrder, 0, 'each device\'s messages arrived in the order it published them');

  await Promise.all(devices.map((d) => d.client.endAsync(true)));
  await waitFor(async () => ((await gatewayConnections()) - baseline <= 1 ? true : null), 15_000, 'the connections to close').catch(() => {});
  t.ok((await gatewayConnections()) - baseline <= 1, 'after they leave, only the monitor is left');
});

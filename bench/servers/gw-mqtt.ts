/**
 * Peer: gatewayworker as an MQTT broker — Register + GATEWAYS `mqtt://` gateway processes +
 * WORKERS business workers running servers/MqttEvents.ts (`tsx bench/servers/gw-mqtt.ts start`).
 * Ports come from the environment; the gateway sets TCP_NODELAY on client sockets.
 */
// BENCH_RUNTIME: the runtime compiled by tsc (what an installed app runs); else the TS sources.
const { BusinessWorker, Gateway, Register, Worker } = (await import(
  process.env.BENCH_RUNTIME ?? '../../runtime/src/index.js'
)) as typeof import('../../runtime/src/index.js');

const env = process.env;
const registerAddress = `127.0.0.1:${env.REGISTER_PORT ?? 21236}`;
const secretKey = 'bench-secret';

new Register(`text://${registerAddress}`, { secretKey });
new Gateway(`mqtt://127.0.0.1:${env.PORT ?? 21883}`, {
  name: 'BenchMqttGateway',
  count: Number(env.GATEWAYS ?? 1),
  lanIp: '127.0.0.1',
  startPort: Number(env.START_PORT ?? 21300),
  registerAddress,
  secretKey,
  backlog: 4096,
});
new BusinessWorker({
  name: 'BenchMqttWorker',
  count: Number(env.WORKERS ?? 1),
  registerAddress,
  secretKey,
  eventHandler: new URL('./MqttEvents.ts', import.meta.url),
});

Worker.runAll();

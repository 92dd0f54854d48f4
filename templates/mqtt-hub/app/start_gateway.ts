/**
 * Two Gateways share one set of BusinessWorkers: MQTT over TCP for devices, and MQTT over
 * WebSocket for browsers (any path, e.g. ws://host:{{wsPort}}/mqtt), which also serves the
 * dashboard (web/) and the HTTP API (http.ts) on the same port. They hold the connections, answer
 * keep-alive pings, run the QoS handshakes of what they deliver and match topics; every decision
 * (who may connect, publish, subscribe) is the workers' (Events.ts).
 */
import { pathToFileURL } from 'node:url';
import { Gateway, Worker } from 'gatewayworker';
import { httpHandler } from './http.ts';

const registerAddress = process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}';
// Workers connect to lanIp:startPort+n (one port per gateway process): keep it a private address.
const lanIp = process.env.LAN_IP ?? '127.0.0.1';
const startPort = Number(process.env.{{envPrefix}}START_PORT ?? {{startPort}});
const count = Number(process.env.{{envPrefix}}GATEWAY_COUNT ?? 1);
const mqttPort = Number(process.env.{{envPrefix}}MQTT_PORT ?? {{mqttPort}});
const wsPort = Number(process.env.{{envPrefix}}WS_PORT ?? {{wsPort}});
// Largest MQTT packet accepted; a bigger one closes that connection (MQTT 5: reason 0x95 first).
const maxPackageSize = Number(process.env.{{envPrefix}}MAX_PACKET_SIZE ?? 10 * 1024 * 1024);

new Gateway(`mqtt://0.0.0.0:${mqttPort}`, {
  name: '{{appName}}MqttGateway',
  count,
  lanIp,
  startPort,
  registerAddress,
  secretKey: process.env.SECRET_KEY,
  maxPackageSize,
});

new Gateway(`mqtt+ws://0.0.0.0:${wsPort}`, {
  name: '{{appName}}WsGateway',
  count,
  lanIp,
  // Internal ports must not overlap the TCP gateway's.
  startPort: startPort + 50,
  registerAddress,
  secretKey: process.env.SECRET_KEY,
  maxPackageSize,
  // Plain HTTP on the same port: /api/… (http.ts), then the dashboard's files.
  httpHandler,
  staticDir: new URL('./web', import.meta.url),
});

// Run alone (`tsx Applications/{{appName}}/start_gateway.ts start`) to put Gateways on their own hosts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

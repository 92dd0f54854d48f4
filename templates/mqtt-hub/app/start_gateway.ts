/**
 * Two Gateways share one set of BusinessWorkers: MQTT over TCP for devices, MQTT over WebSocket for
 * browsers. They hold the connections and never run business code.
 * (Preview: the `mqtt` protocol lands with the MQTT hub template.)
 */
import { pathToFileURL } from 'node:url';
import { Gateway, Worker } from 'gatewayworker';

const registerAddress = process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}';
const lanIp = process.env.LAN_IP ?? '127.0.0.1';
const startPort = Number(process.env.{{envPrefix}}START_PORT ?? {{startPort}});
const count = Number(process.env.{{envPrefix}}GATEWAY_COUNT ?? 2);
const mqttPort = Number(process.env.{{envPrefix}}MQTT_PORT ?? {{mqttPort}});
const wsPort = Number(process.env.{{envPrefix}}WS_PORT ?? {{wsPort}});

new Gateway(`mqtt://0.0.0.0:${mqttPort}`, {
  name: '{{appName}}MqttGateway',
  count,
  lanIp,
  startPort,
  registerAddress,
  secretKey: process.env.SECRET_KEY,
});

new Gateway(`mqtt+ws://0.0.0.0:${wsPort}`, {
  name: '{{appName}}MqttWsGateway',
  count,
  lanIp,
  // Internal ports must not overlap the TCP gateway's.
  startPort: startPort + 50,
  registerAddress,
  secretKey: process.env.SECRET_KEY,
});

// Run alone (`tsx Applications/{{appName}}/start_gateway.ts start`) to put Gateways on their own hosts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

/**
 * The Gateway: holds the clients' WebSocket connections (and serves web/ over plain HTTP on the same
 * port), pings idle clients, and forwards every message to a BusinessWorker. It never runs business
 * code, so reloading the workers never disconnects anyone.
 */
import { pathToFileURL } from 'node:url';
import { Gateway, Worker } from 'gatewayworker';
import { config } from './config.ts';

const port = Number(process.env.{{envPrefix}}GATEWAY_PORT ?? {{gatewayPort}});

new Gateway(`websocket://0.0.0.0:${port}`, {
  name: '{{appName}}Gateway',
  count: Number(process.env.{{envPrefix}}GATEWAY_COUNT ?? 2),
  // Workers connect to lanIp:startPort+n (one port per gateway process): keep it a private address.
  lanIp: process.env.LAN_IP ?? '127.0.0.1',
  startPort: Number(process.env.{{envPrefix}}START_PORT ?? {{startPort}}),
  registerAddress: process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}',
  secretKey: process.env.SECRET_KEY,
  // Every pingInterval seconds, a client that sent nothing since the last check gets pingData; the
  // page answers {"type":"ping"} with {"type":"pong"}. Set pingNotResponseLimit to close silent clients.
  pingInterval: Number(process.env.{{envPrefix}}PING_INTERVAL ?? 25),
  pingData: '{"type":"ping"}',
  // A client message bigger than this closes that client's connection (WebSocket code 1009)
  // before it is read; see config.ts.
  maxPackageSize: config.maxMessageBytes,
  // A flood of connections from one address is refused before its handshake; see config.ts.
  maxConnectionsPerIp: config.maxConnectionsPerIp,
  staticDir: new URL('../../web', import.meta.url),
});

// Run alone (`tsx Applications/{{appName}}/start_gateway.ts start`) to put Gateways on their own hosts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

/**
 * The Gateway: holds the players' WebSocket connections (and serves web/, the browser client, over
 * plain HTTP on the same port), pings idle clients, and forwards every message to a BusinessWorker:
 * the one that owns the player's room (routing.ts). It never runs game code, so reloading the
 * workers never disconnects anyone.
 */
import { pathToFileURL } from 'node:url';
import { Gateway, Worker } from 'gatewayworker';
import { roomRouter } from './routing.ts';

const port = Number(process.env.{{envPrefix}}GATEWAY_PORT ?? {{gatewayPort}});

new Gateway(`websocket://0.0.0.0:${port}`, {
  name: '{{appName}}Gateway',
  count: Number(process.env.{{envPrefix}}GATEWAY_COUNT ?? 2),
  // Workers connect to lanIp:startPort+n (one port per gateway process): keep it a private address.
  lanIp: process.env.LAN_IP ?? '127.0.0.1',
  startPort: Number(process.env.{{envPrefix}}START_PORT ?? {{startPort}}),
  registerAddress: process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}',
  secretKey: process.env.SECRET_KEY,
  // Every event of a player in a room goes to the worker that owns the room.
  router: roomRouter,
  // A client silent for pingInterval seconds gets pingData (clients answer {"type":"pong"});
  // set pingNotResponseLimit to close clients that stay silent.
  pingInterval: Number(process.env.{{envPrefix}}PING_INTERVAL ?? 25),
  pingData: '{"type":"ping"}',
  // The browser client (canvas), served at / on the same port as the WebSocket.
  staticDir: new URL('./web', import.meta.url),
});

// Run alone (`tsx Applications/{{appName}}/start_gateway.ts start`) to put Gateways on their own hosts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

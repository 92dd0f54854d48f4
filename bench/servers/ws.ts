/**
 * Peer: a raw `ws` server in one process — the physical reference for this stack.
 * Wire contract shared by every WebSocket peer (see bench/README.md):
 *  - on connect (after joining the room named by `?room=`), the server sends `R`;
 *  - a text message starting with `B` goes to every member of the client's room (loop of sends);
 *  - any other message is echoed back to its sender.
 */
import http from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.PORT ?? 0);
const server = http.createServer((_req, res) => res.writeHead(404).end());
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false });
const rooms = new Map<string, Set<WebSocket>>();

wss.on('connection', (socket, request) => {
  const room = new URL(request.url ?? '/', 'http://x').searchParams.get('room');
  let members: Set<WebSocket> | undefined;
  if (room) {
    members = rooms.get(room);
    if (!members) rooms.set(room, (members = new Set()));
    members.add(socket);
  }
  socket.on('message', (data, isBinary) => {
    if (!isBinary && members && (data as Buffer)[0] === 0x42 /* B */) {
      // The loop of `send` that ws documents for broadcasting (each send frames the message).
      const text = data.toString();
      for (const member of members) member.send(text);
      return;
    }
    socket.send(isBinary ? data : data.toString());
  });
  socket.on('close', () => members?.delete(socket));
  socket.on('error', () => {});
  socket.send('R');
});

server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  const address = server.address() as { port: number };
  process.stdout.write(`READY ${JSON.stringify({ port: address.port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));

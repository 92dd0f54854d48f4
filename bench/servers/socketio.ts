/**
 * Peer: Socket.IO 4 in one process, websocket transport only (no polling, no upgrade).
 * Same contract as servers/ws.ts over the event `m`: `R` after joining `?room=`, `B…` is emitted
 * to the room (`io.to(room).emit`), anything else is emitted back to the sender.
 */
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 0);
const server = http.createServer((_req, res) => res.writeHead(404).end());
const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false, serveClient: false });

io.on('connection', (socket) => {
  const room = socket.handshake.query.room;
  if (typeof room === 'string' && room) void socket.join(room);
  socket.on('m', (message: string) => {
    if (typeof room === 'string' && room && message.charCodeAt(0) === 0x42 /* B */) io.to(room).emit('m', message);
    else socket.emit('m', message);
  });
  socket.emit('m', 'R');
});

server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  const address = server.address() as { port: number };
  process.stdout.write(`READY ${JSON.stringify({ port: address.port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));

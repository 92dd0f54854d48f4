/**
 * Peer: Aedes (npm `aedes`, its default in-memory persistence and mqemitter) on a plain
 * `net` server in one process. TCP_NODELAY on every client socket, as on every peer.
 */
import net from 'node:net';
import aedes from 'aedes';

const port = Number(process.env.PORT ?? 0);
// CommonJS: the default import is `module.exports`, the factory (also exported as createBroker).
const broker = (aedes as unknown as { createBroker(): { handle(socket: net.Socket): void } }).createBroker();
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  broker.handle(socket);
});

server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  const address = server.address() as { port: number };
  process.stdout.write(`READY ${JSON.stringify({ port: address.port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));

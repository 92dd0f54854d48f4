/**
 * Boots the whole app (Register, Gateway, two BusinessWorkers) on free ports and plays through it
 * with two WebSocket clients. Run with `npm test`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import WebSocket from 'ws';

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

type Message = Record<string, any>;

/** A player: connects (retrying while the gateway starts) and queues every message but pings. */
async function player(port: number, deadline = Date.now() + 20_000): Promise<{ ws: WebSocket; next(match: (m: Message) => boolean): Promise<Message> }> {
  for (;;) {
    try {
      const ws = await new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        ws.once('open', () => resolve(ws));
        ws.once('error', reject);
      });
      const queue: Message[] = [];
      const waiters = new Set<() => void>();
      ws.on('message', (data) => {
        const m = JSON.parse(String(data));
        if (m.type === 'ping') return ws.send('{"type":"pong"}');
        queue.push(m);
        for (const check of [...waiters]) check();
      });
      const next = (match: (m: Message) => boolean) =>
        new Promise<Message>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no such message within 10 s')), 10_000);
          const check = () => {
            const i = queue.findIndex(match);
            if (i === -1) return;
            clearTimeout(timer);
            waiters.delete(check);
            resolve(queue.splice(i, 1)[0]);
          };
          waiters.add(check);
          check();
        });
      return { ws, next };
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

let app: ChildProcess;
let port: number;

t.before(async () => {
  port = await freePort();
  const env = {
    ...process.env,
    GATEWAY_PORT: String(port),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort()),
    GATEWAY_COUNT: '1',
    WORKER_COUNT: '2',
    GATEWAYWORKER_RUNTIME_DIR: mkdtempSync(join(tmpdir(), 'game-run-')),
  };
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

t.test('two players share a room, and one sees the other move', async (t) => {
  const alice = await player(port);
  const bob = await player(port);
  t.teardown(() => {
    alice.ws.close();
    bob.ws.close();
  });

  alice.ws.send(JSON.stringify({ type: 'join', name: 'alice' }));
  const a = await alice.next((m) => m.type === 'joined');
  bob.ws.send(JSON.stringify({ type: 'join', name: 'bob' }));
  const b = await bob.next((m) => m.type === 'joined');
  t.equal(b.room, a.room, 'matchmaking put both in one room');
  t.same(b.players.map((p: Message) => p.name).sort(), ['alice', 'bob']);

  const start = (await bob.next((m) => m.type === 'state')).players.find((p: Message) => p.id === a.playerId);
  alice.ws.send(JSON.stringify({ type: 'input', seq: 1, keys: { [start.x < 400 ? 'right' : 'left']: true } }));
  await alice.next((m) => m.type === 'state' && m.ack === 1);
  const moved = await bob.next((m) => m.type === 'state' && Math.abs(m.players.find((p: Message) => p.id === a.playerId).x - start.x) > 20);
  t.ok(moved, 'bob sees alice move');
});

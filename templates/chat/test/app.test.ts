/**
 * Boots the whole app (Register, Gateways, BusinessWorkers) on free ports and chats through it
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

/** Connects, retrying while the gateway is still starting. */
async function connect(port: number, deadline = Date.now() + 20_000): Promise<WebSocket> {
  for (;;) {
    try {
      return await new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        ws.once('open', () => resolve(ws));
        ws.once('error', reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

/** Resolves with the next message of the given type (pings and other types are skipped). */
function next(ws: WebSocket, type: string, timeout = 10_000): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} message within ${timeout} ms`)), timeout);
    const onMessage = (data: WebSocket.RawData) => {
      const message = JSON.parse(String(data));
      if (message.type !== type) return;
      clearTimeout(timer);
      ws.off('message', onMessage);
      resolve(message);
    };
    ws.on('message', onMessage);
  });
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
    WORKER_COUNT: '1',
    DATA_DIR: mkdtempSync(join(tmpdir(), 'chat-history-')),
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

t.test('two clients in one room', async (t) => {
  const alice = await connect(port);
  const bob = await connect(port);
  t.teardown(() => {
    alice.close();
    bob.close();
  });

  const aliceIn = next(alice, 'login');
  alice.send(JSON.stringify({ type: 'login', client_name: 'alice', room_id: 'lobby' }));
  const aliceLogin = await aliceIn;
  t.equal(aliceLogin.client_name, 'alice');
  t.same(Object.values(aliceLogin.client_list), ['alice']);

  const bobIn = next(bob, 'login');
  const aliceSeesBob = next(alice, 'login');
  bob.send(JSON.stringify({ type: 'login', client_name: 'bob', room_id: 'lobby' }));
  const bobLogin = await bobIn;
  t.same(Object.values(bobLogin.client_list).sort(), ['alice', 'bob']);
  t.equal((await aliceSeesBob).client_name, 'bob');

  const heard = next(bob, 'say');
  alice.send(JSON.stringify({ type: 'say', to_client_id: 'all', content: 'hello <bob>' }));
  const said = await heard;
  t.equal(said.from_client_name, 'alice');
  t.equal(said.content, 'hello &lt;bob&gt;', 'user text is HTML-escaped');

  const left = next(alice, 'logout');
  bob.close();
  t.equal((await left).from_client_name, 'bob');
});

// Every refused move rejects with a TransferError code and leaves the connection working in the
// process that had it: the next echo comes from the same pid, and a later move still succeeds.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { registerTeardown, sleep, startApp, textClient, waitFor, wsClient, type TextClient } from '../helpers/app.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'move-app.ts');
const certDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-handover-tls-'));
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', `${certDir}/key.pem`, '-out', `${certDir}/cert.pem`], { stdio: 'ignore' });
const app = await startApp(fixture, {
  env: {
    KINDS: 'Text,Ws,Tls,WsDeflate',
    COUNT: '2',
    GATEWAYWORKER_LOG_LEVEL: 'debug',
    TLS_CERT: fs.readFileSync(`${certDir}/cert.pem`, 'utf8'),
    TLS_KEY: fs.readFileSync(`${certDir}/key.pem`, 'utf8'),
  },
});
registerTeardown(t, app);
t.teardown(() => fs.rmSync(certDir, { recursive: true, force: true }));

/** A line client that answers "who serves me" and "echo n". */
interface Lines {
  send(line: string): void;
  next(ms?: number): Promise<string>;
}

async function servingPid(c: Lines): Promise<number> {
  c.send('pid');
  for (;;) {
    const line = await c.next(5000);
    if (line.startsWith('pid ')) return Number(line.split(' ')[1]);
  }
}

/** The connection still works here: an echo from `pid`, then a move that succeeds. */
async function stillUsable(t: Test, c: Lines, pid: number, canMove = true): Promise<void> {
  c.send('d 1 still-here');
  t.equal(await c.next(5000), `e ${pid} 1 still-here`, 'echo from the same process');
  if (!canMove) return;
  c.send('m');
  const moved = await servedByOther(c, pid);
  t.not(moved, pid, `a later move succeeds (${pid} → ${moved})`);
}

/** Asks who serves the connection until it is not `pid` any more (a move is under way). */
async function servedByOther(c: Lines, pid: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const now = await servingPid(c);
    if (now !== pid) return now;
    await sleep(20);
  }
  return pid;
}

function lines(c: TextClient): Lines {
  return { send: c.send, next: (ms) => c.next(ms) };
}

async function refusal(c: Lines): Promise<string> {
  for (;;) {
    const line = await c.next(8000);
    if (line.startsWith('r ')) return line;
  }
}

t.test('unknown target: out of range and this very process', async (t) => {
  const c = lines(await textClient(app.ports.Text!));
  const pid = await servingPid(c);
  c.send('m 7');
  t.match(await refusal(c), /^r UNKNOWN_TARGET /);
  c.send('pid');
  const self = Number((await c.next()).split(' ')[2]);
  c.send(`m ${self}`);
  t.match(await refusal(c), /^r UNKNOWN_TARGET /);
  await stillUsable(t, c, pid);
});

t.test('context over 64 KB of JSON (argument or conn.context)', async (t) => {
  const c = lines(await textClient(app.ports.Text!));
  const pid = await servingPid(c);
  c.send('ctx 70000');
  t.match(await refusal(c), /^r CONTEXT_TOO_LARGE /);
  await stillUsable(t, c, pid, false);
  c.send('big 70000');
  t.equal(await c.next(), 'ok big');
  c.send('m');
  t.match(await refusal(c), /^r CONTEXT_TOO_LARGE .*conn\.context/);
  c.send('big 10');
  t.equal(await c.next(), 'ok big');
  await stillUsable(t, c, pid);
});

t.test('a second move while one is under way', async (t) => {
  const c = lines(await textClient(app.ports.Text!));
  const pid = await servingPid(c);
  c.send('mm');
  t.match(await refusal(c), /^r NOT_ESTABLISHED .*already moving/);
  const now = await servedByOther(c, pid);
  t.not(now, pid, 'the first move went through');
  await stillUsable(t, c, now);
});

t.test('send buffer that does not flush (the peer stops reading)', async (t) => {
  const c = await textClient(app.ports.Text!);
  const pid = await servingPid(lines(c));
  c.socket.pause();
  c.send('fill 12000000');
  c.send('m');
  await sleep(3000);
  c.socket.resume();
  const l = lines(c);
  const fill = await l.next(15_000).catch((error: Error) => {
    console.log(app.output().split('\n').slice(-40).join('\n'));
    throw error;
  });
  t.equal(fill.length, 12_000_001, 'the big message arrives whole');
  t.match(await refusal(l), /^r SEND_BUFFER_NOT_FLUSHED /);
  await stillUsable(t, l, pid);
});

t.test('closing connection', async (t) => {
  const c = await textClient(app.ports.Text!);
  const pid = await servingPid(lines(c));
  c.send('closemove');
  t.equal(await c.next(), `bye ${pid}`, 'the close goes on in the same process');
  await c.closed;
  await waitFor(() => app.output().includes('closemove refused NOT_ESTABLISHED'), 5000, 'refusal logged');
  t.pass('refused with NOT_ESTABLISHED');
});

t.test('target not running (restarting after a crash)', async (t) => {
  const c = lines(await textClient(app.ports.Text!));
  const pid = await servingPid(c);
  const status = await app.status();
  const sibling = status.processes.find((p) => p.name === 'Text' && p.pid !== pid)!;
  // Ask for the move right as the sibling dies: whether the master already saw the exit or
  // forwards the offer to a dying process, the move is refused and the connection stays.
  process.kill(sibling.pid, 'SIGKILL');
  c.send('m');
  const answer = await refusal(c).catch((error: Error) => {
    console.log(app.output().split('\n').slice(-40).join('\n'));
    throw error;
  });
  t.match(answer, /^r TARGET_NOT_RUNNING /);
  await stillUsable(t, c, pid, false);
  // Once the sibling is back, moves work again.
  await waitFor(async () => (await app.status()).processes.filter((p) => p.name === 'Text' && p.status === 'idle').length === 2, 15_000, 'sibling restarted');
  await sleep(300);
  await stillUsable(t, c, pid);
});

t.test('TLS connection', async (t) => {
  const socket = tls.connect({ port: app.ports.Tls!, host: '127.0.0.1', rejectUnauthorized: false });
  await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  const c = lines(await textClient(socket as never));
  const pid = await servingPid(c);
  c.send('m');
  t.match(await refusal(c), /^r TLS /);
  await stillUsable(t, c, pid, false);
  socket.destroy();
});

/** A WebSocket as a line client. */
async function wsLines(port: number, perMessageDeflate: boolean): Promise<Lines & { ws: WebSocket }> {
  const client = await wsClient(`ws://127.0.0.1:${port}/`, { perMessageDeflate });
  return { ws: client.ws, send: (line) => client.ws.send(line), next: async (ms) => String(await client.next(ms)) };
}

t.test('WebSocket with permessage-deflate', async (t) => {
  const c = await wsLines(app.ports.WsDeflate!, true);
  t.match(c.ws.extensions, /permessage-deflate/, 'deflate negotiated');
  const pid = await servingPid(c);
  c.send('m');
  t.match(await refusal(c), /^r EXTENSION /);
  await stillUsable(t, c, pid, false);
  c.ws.terminate();
});

t.test('plain WebSocket: refused move, then a good one', async (t) => {
  const c = await wsLines(app.ports.Ws!, false);
  const pid = await servingPid(c);
  c.send('m 9');
  t.match(await refusal(c), /^r UNKNOWN_TARGET /);
  await stillUsable(t, c, pid);
  c.ws.terminate();
});

t.test('connections shows the connection in its new process', async (t) => {
  const client = await textClient(app.ports.Text!);
  const c = lines(client);
  const pid = await servingPid(c);
  const mine = `127.0.0.1:${client.socket.localPort}`;
  const before = (await app.connections()).filter((row) => row.remoteAddress === mine);
  t.same(before.map((row) => row.pid), [pid]);
  c.send('m');
  const now = await servedByOther(c, pid);
  const after = (await app.connections()).filter((row) => row.remoteAddress === mine);
  t.same(after.map((row) => row.pid), [now], 'listed once, by the new process');
  t.ok(after[0]!.bytesRead >= before[0]!.bytesRead, 'byte counters carried over');
});

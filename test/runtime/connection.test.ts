// Connection API, AsyncConnection and Timer, in-process on ephemeral ports.
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { AsyncConnection, ErrorCode, Timer, Worker, type Connection } from '../../runtime/src/index.js';
import { processStats } from '../../runtime/src/worker/stats.js';
import { closedPort, fixturesDir, listenWorker, sleep, textClient, waitFor } from '../helpers/app.js';

process.env.GATEWAYWORKER_LOG_LEVEL ??= 'error';

/** A server connection captured from onConnect. */
function capture(): { onConnect: (conn: Connection) => void; get(): Promise<Connection> } {
  let conn: Connection | null = null;
  return {
    onConnect: (c) => void (conn = c),
    get: () => waitFor(() => conn, 2000, 'onConnect'),
  };
}

function pausedClient(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.pause();
      resolve(socket);
    });
    socket.on('error', reject);
  });
}

t.test('send: true when written, null when buffered, false when dropped (counted in send_fail)', async (t) => {
  const cap = capture();
  const errors: number[] = [];
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    maxSendBufferSize: 128 * 1024,
    onConnect: cap.onConnect,
    onError: (_c, code) => void errors.push(code),
  }));
  const socket = await pausedClient(port);
  t.teardown(() => void socket.destroy());
  const conn = await cap.get();
  t.equal(conn.send('first'), true, 'a small send on an idle connection reaches the kernel');

  const chunk = 'y'.repeat(16 * 1024);
  const results: Array<true | null | false> = [];
  const failBefore = processStats.sendFail;
  while (results.filter((r) => r === false).length < 3 && results.length < 10_000) results.push(conn.send(chunk));
  const firstNull = results.indexOf(null);
  const firstFalse = results.indexOf(false);
  t.ok(firstNull >= 0, 'once the kernel buffer is full, sends are buffered (null)');
  t.ok(firstFalse > firstNull, 'drops come after buffering');
  t.ok(results.slice(firstFalse).every((r) => r === false), 'once full, every send is dropped');
  t.ok(results.slice(0, firstNull).every((r) => r === true), 'before that, every send was written');
  t.equal(processStats.sendFail - failBefore, 3, 'each drop counted in send_fail');
  t.same(errors, [ErrorCode.SEND_FAIL, ErrorCode.SEND_FAIL, ErrorCode.SEND_FAIL], 'each drop reported to onError');
  t.ok(conn.sendBufferSize <= 128 * 1024 + chunk.length, 'buffer bounded by max + one message');
});

t.test('close(data) delivers the data, then closes', async (t) => {
  const big = 'z'.repeat(3 * 1024 * 1024);
  let closed = false;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onMessage: (conn, line) => conn.close(line === 'big' ? big : 'bye'),
    onClose: () => void (closed = true),
  }));
  const c = await textClient(port);
  c.send('big');
  t.equal((await c.next(5000)).length, big.length, 'a 3 MB farewell arrives whole');
  await Promise.race([c.closed, sleep(2000)]);
  t.ok(c.isClosed(), 'then the socket closes');
  await waitFor(() => closed, 2000, 'onClose');

  const d = await textClient(port);
  d.send('x');
  t.equal(await d.next(), 'bye');
  await Promise.race([d.closed, sleep(2000)]);
  t.ok(d.isClosed());
  t.same(d.pending(), [], 'nothing after the farewell');
});

t.test('destroy() closes at once and drops the buffer', async (t) => {
  const cap = capture();
  let closes = 0;
  const { port, worker } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    maxSendBufferSize: 64 * 1024 * 1024,
    onConnect: cap.onConnect,
    onClose: () => void closes++,
  }));
  const socket = await pausedClient(port);
  const conn = await cap.get();
  const chunk = 'q'.repeat(1024 * 1024);
  let sent = 0;
  for (let i = 0; i < 32; i++) {
    conn.send(chunk);
    sent += chunk.length + 1;
  }
  t.ok(conn.sendBufferSize > 0, 'data waits in the buffer');
  let received = 0;
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (d: Buffer) => (received += d.length));
  socket.on('error', () => {});
  conn.destroy();
  t.equal(conn.send('after'), false, 'send after destroy is dropped');
  socket.resume();
  await Promise.race([closed, sleep(3000)]);
  t.ok(socket.destroyed || socket.readableEnded, 'the client sees the close');
  t.ok(received < sent, `unsent data was dropped (${received} < ${sent})`);
  await waitFor(() => closes === 1, 2000, 'onClose');
  t.equal(worker.connections.size, 0);
});

t.test('pauseRecv / resumeRecv: nothing while paused, everything after, in order', async (t) => {
  const cap = capture();
  const got: string[] = [];
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onConnect: (conn) => {
      cap.onConnect(conn);
      conn.pauseRecv();
    },
    onMessage: (_conn, line) => void got.push(line),
  }));
  const c = await textClient(port);
  t.teardown(() => c.close());
  const conn = await cap.get();
  for (let i = 0; i < 5; i++) {
    c.send(`m${i}`);
    await sleep(10);
  }
  await sleep(300);
  t.same(got, [], 'no messages while paused');
  conn.resumeRecv();
  await waitFor(() => got.length === 5, 2000, '5 messages');
  t.same(got, ['m0', 'm1', 'm2', 'm3', 'm4'], 'all of them after resume, in order');
});

t.test('pauseRecv inside onMessage holds back the rest of the same chunk', async (t) => {
  const got: string[] = [];
  let paused: Connection | null = null;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onMessage: (conn, line) => {
      got.push(line);
      if (line === 'pause') {
        conn.pauseRecv();
        paused = conn;
      }
    },
  }));
  const c = await textClient(port);
  t.teardown(() => c.close());
  c.socket.write('pause\na\nb\n');
  await waitFor(() => paused, 2000, 'pause');
  await sleep(200);
  t.same(got, ['pause'], 'nothing after the pausing message');
  paused!.resumeRecv();
  await waitFor(() => got.length === 3, 2000, 'the rest');
  t.same(got, ['pause', 'a', 'b']);
});

t.test('remote/local address and byte counters', async (t) => {
  const cap = capture();
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onConnect: cap.onConnect,
    onMessage: (conn, line) => conn.send(line.toUpperCase()),
  }));
  const c = await textClient(port);
  t.teardown(() => c.close());
  const conn = await cap.get();
  t.equal(conn.remoteAddress, '127.0.0.1');
  t.equal(conn.remotePort, c.socket.localPort);
  t.equal(conn.localPort, port);
  t.equal(conn.protocol, 'text');
  c.send('hello');
  t.equal(await c.next(), 'HELLO');
  c.socket.write('héllo\r\n');
  t.equal(await c.next(), 'HÉLLO');
  t.equal(conn.bytesRead, 6 + 8, 'bytesRead counts wire bytes');
  t.equal(conn.bytesWritten, 6 + 7, 'bytesWritten counts wire bytes');
  const info = conn.info(process.pid);
  t.match(info, {
    pid: process.pid,
    protocol: 'text',
    transport: 'tcp',
    remoteAddress: `127.0.0.1:${c.socket.localPort}`,
    localAddress: `127.0.0.1:${port}`,
    bytesRead: 14,
    bytesWritten: 13,
    sendBuffer: 0,
  });
  const clientPort = c.socket.localPort;
  c.close();
  await waitFor(() => conn.status === 'closed', 2000, 'close');
  t.equal(conn.remotePort, clientPort, 'addresses survive the close');
});

t.test('worker.close() settles even when nothing else keeps the event loop alive', async (t) => {
  const run = (arg: string): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(process.execPath, ['--import', 'tsx', path.join(fixturesDir, 'close-settles.ts'), arg], { timeout: 15_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
      });
    });
  for (const variant of ['server-first', 'client-first']) {
    const result = await run(variant);
    t.match(result.stdout, /closed/, `${variant}: the code after \`await worker.close()\` runs (exit ${result.code}, stderr: ${result.stderr.trim()})`);
  }
});

t.test('AsyncConnection to tcp, text and websocket servers', async (t) => {
  const { port: tcpPort } = await listenWorker(t, new Worker('tcp://127.0.0.1:0', { onMessage: (conn, data) => conn.send(data) }));
  const { port: textPort } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onMessage: (conn, line) => (line === 'quit' ? conn.close('bye') : conn.send(`echo ${line}`)),
  }));
  const { port: wsPort } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onWebSocketConnect: (conn, request) => void (conn.context.path = request.url),
    onMessage: (conn, data) => conn.send(typeof data === 'string' ? `${conn.context.path} ${data}` : data),
  }));

  const events: string[] = [];
  const tcp = new AsyncConnection(`tcp://127.0.0.1:${tcpPort}`, {
    onConnect: () => void events.push('tcp connect'),
    onMessage: (_c, data) => void events.push(`tcp ${Buffer.isBuffer(data) ? 'buffer' : typeof data} ${String(data)}`),
  });
  t.teardown(() => tcp.close());
  tcp.connect();
  t.equal(tcp.send(Buffer.from('raw')), null, 'send while connecting is queued');
  await waitFor(() => events.includes('tcp buffer raw'), 2000, 'tcp echo');
  t.equal(events[0], 'tcp connect');

  const lines: string[] = [];
  let textClosed = 0;
  const text = new AsyncConnection(`text://127.0.0.1:${textPort}`);
  text.onConnect = (c) => void c.send('one');
  text.onMessage = (c, line) => {
    lines.push(line as string);
    if (line === 'echo one') c.send('quit');
  };
  text.onClose = () => void textClosed++;
  text.connect();
  await waitFor(() => textClosed === 1, 2000, 'text close');
  t.same(lines, ['echo one', 'bye'], 'text lines, then the server closes');
  t.equal(text.status, 'closed');

  const ws = new AsyncConnection(`ws://127.0.0.1:${wsPort}/chat?room=1`);
  const wsGot: unknown[] = [];
  ws.onMessage = (_c, data) => void wsGot.push(data);
  ws.connect();
  ws.send('text frame');
  ws.send(Buffer.from([9, 8, 7]));
  await waitFor(() => wsGot.length === 2, 2000, 'ws echo');
  t.equal(wsGot[0], '/chat?room=1 text frame', 'ws client path and text frames');
  t.ok(Buffer.isBuffer(wsGot[1]) && (wsGot[1] as Buffer).equals(Buffer.from([9, 8, 7])), 'binary frames');
  t.equal(ws.protocol, 'websocket');
  ws.close();
});

t.test('AsyncConnection: CONNECT_FAIL to a closed port, then onClose', async (t) => {
  const port = await closedPort();
  const events: string[] = [];
  const conn = new AsyncConnection(`text://127.0.0.1:${port}`, {
    onError: (_c, code, message) => void events.push(`error ${code} ${/ECONNREFUSED/.test(message)}`),
    onClose: () => void events.push('close'),
    onConnect: () => void events.push('connect'),
  });
  conn.connect();
  await waitFor(() => events.includes('close'), 3000, 'onClose');
  t.same(events, [`error ${ErrorCode.CONNECT_FAIL} true`, 'close']);
  t.equal(conn.status, 'closed');
});

t.test('AsyncConnection: reconnect(delay) re-establishes; sends while reconnecting are delivered', async (t) => {
  const got: string[] = [];
  const connects: number[] = [];
  let serverConns = 0;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onConnect: () => void serverConns++,
    onMessage: (conn, line) => {
      got.push(line);
      if (line === 'drop me') conn.destroy();
    },
  }));
  const conn = new AsyncConnection(`text://127.0.0.1:${port}`);
  t.teardown(() => conn.close());
  let closes = 0;
  let reconnectedAt = 0;
  let closedAt = 0;
  conn.onConnect = () => {
    connects.push(Date.now());
    reconnectedAt = Date.now();
  };
  conn.onClose = (c) => {
    closes++;
    closedAt = Date.now();
    if (closes === 1) {
      c.reconnect(0.3);
      t.equal(c.send('queued 1'), null, 'queued while reconnecting');
      c.send('queued 2');
    }
  };
  conn.connect();
  await waitFor(() => connects.length === 1, 2000, 'connect');
  conn.send('before');
  conn.send('drop me');
  await waitFor(() => connects.length === 2, 3000, 'reconnect');
  t.ok(reconnectedAt - closedAt >= 280, `the reconnect waited for its delay (${reconnectedAt - closedAt} ms)`);
  await waitFor(() => got.length === 4, 2000, 'queued messages');
  t.same(got, ['before', 'drop me', 'queued 1', 'queued 2'], 'queued sends delivered after the reconnect, in order');
  t.equal(serverConns, 2);
  t.equal(closes, 1);
  t.ok(conn.bytesWritten >= 'before\ndrop me\nqueued 1\nqueued 2\n'.length, 'bytes counted across reconnects');
});

t.test('Timer: add/del/delAll, one-shot, args, a throwing callback keeps its timer', async (t) => {
  process.env.GATEWAYWORKER_LOG_LEVEL = 'silent';
  t.teardown(() => void (process.env.GATEWAYWORKER_LOG_LEVEL = 'error'));
  const base = Timer.count();
  const ticks: string[] = [];
  const repeating = Timer.add(0.03, (a: string, b: number) => void ticks.push(`${a}${b}`), ['x', 1]);
  const once = Timer.add(0.03, () => void ticks.push('once'), [], false);
  t.equal(Timer.count(), base + 2);
  await sleep(200);
  t.ok(ticks.filter((x) => x === 'x1').length >= 3, 'a persistent timer repeats, with its args');
  t.equal(ticks.filter((x) => x === 'once').length, 1, 'a one-shot timer runs once');
  t.equal(Timer.del(once), false, 'a fired one-shot timer is gone');
  t.equal(Timer.del(repeating), true);
  const count = ticks.length;
  await sleep(100);
  t.equal(ticks.length, count, 'del stops it');
  t.equal(Timer.count(), base);

  let throws = 0;
  const thrower = Timer.add(0.02, () => {
    throws++;
    throw new Error('tick failed');
  });
  let rejects = 0;
  Timer.add(0.02, async () => {
    rejects++;
    throw new Error('async tick failed');
  });
  await sleep(150);
  t.ok(throws >= 3, `a throwing callback keeps running (${throws})`);
  t.ok(rejects >= 3, `a rejecting callback keeps running (${rejects})`);
  t.ok(Timer.del(thrower));
  Timer.add(0.02, () => void ticks.push('late'));
  Timer.delAll();
  t.equal(Timer.count(), 0, 'delAll removes every timer');
  const before = ticks.length;
  await sleep(80);
  t.equal(ticks.length, before, 'nothing runs after delAll');
  t.throws(() => Timer.add(-1, () => {}), RangeError);
});

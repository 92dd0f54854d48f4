// Bad input and limits: each one closes (or throttles) only the offending connection, with a
// reason, while another client of the same server keeps being served.
import net from 'node:net';
import t, { type Test } from 'tap';
import { ErrorCode, Worker, type Connection } from '../../runtime/src/index.js';
import { processStats } from '../../runtime/src/worker/stats.js';
import { captureLogs, listenWorker, rawExchange, sleep, textClient, waitFor, wsClient, type TextClient, type WsClient } from '../helpers/app.js';

process.env.GATEWAYWORKER_LOG_LEVEL ??= 'error';

type Errors = Array<{ id: number; code: number; message: string }>;

function recorder(): { errors: Errors; closed: number[]; onError: (c: Connection, code: number, m: string) => void; onClose: (c: Connection) => void } {
  const errors: Errors = [];
  const closed: number[] = [];
  return {
    errors,
    closed,
    onError: (conn, code, message) => void errors.push({ id: conn.id, code, message }),
    onClose: (conn) => void closed.push(conn.id),
  };
}

async function stillServes(t: Test, client: TextClient | WsClient, what: string): Promise<void> {
  const token = `ping-${Math.random().toString(36).slice(2)}`;
  if ('ws' in client) client.ws.send(token);
  else client.send(token);
  t.equal(await client.next(), token, `${what}: the other client is still served`);
}

function maskedFrame(opcode: number, payload: Buffer): Buffer {
  if (payload.length > 125) throw new Error('short frames only');
  const mask = Buffer.from([0x11, 0x22, 0x33, 0x44]);
  const out = Buffer.alloc(6 + payload.length);
  out[0] = 0x80 | opcode;
  out[1] = 0x80 | payload.length;
  mask.copy(out, 2);
  for (let i = 0; i < payload.length; i++) out[6 + i] = payload[i]! ^ mask[i % 4]!;
  return out;
}

t.test('text: a line over maxPackageSize closes that connection', async (t) => {
  const rec = recorder();
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    maxPackageSize: 1024,
    onMessage: (conn, line) => conn.send(line),
    onError: rec.onError,
    onClose: rec.onClose,
  }));
  const good = await textClient(port);
  t.teardown(() => good.close());
  await stillServes(t, good, 'before');

  const unterminated = await rawExchange(port, 'a'.repeat(4000), 3000);
  t.ok(unterminated.closed, 'an unterminated line over the limit: closed');
  t.equal(unterminated.text, '', 'nothing echoed');
  const longLine = await rawExchange(port, `${'b'.repeat(2000)}\n`, 3000);
  t.ok(longLine.closed, 'a complete line over the limit: closed');
  t.equal(longLine.text, '');
  await waitFor(() => rec.errors.length === 2, 2000, 'onError x2');
  t.same(rec.errors.map((e) => e.code), [ErrorCode.PACKAGE_TOO_LARGE, ErrorCode.PACKAGE_TOO_LARGE]);

  // Arriving in small pieces does not get around the limit.
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise((resolve) => s.once('connect', resolve));
  const sClosed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  for (let i = 0; i < 20 && !s.destroyed; i++) {
    s.write('c'.repeat(100));
    await sleep(5);
  }
  await Promise.race([sClosed, sleep(2000)]);
  t.ok(s.destroyed || s.readableEnded, 'a line growing past the limit in small writes: closed');
  s.destroy();
  const line = 'd'.repeat(1000);
  good.send(line);
  t.equal(await good.next(), line, 'a line just under the limit is fine');
  await stillServes(t, good, 'after');
});

t.test('frame: a header announcing more than maxPackageSize, and a length below 4', async (t) => {
  const rec = recorder();
  let messages = 0;
  const { port } = await listenWorker(t, new Worker('frame://127.0.0.1:0', {
    maxPackageSize: 4096,
    onMessage: (conn, body) => {
      messages++;
      conn.send(body);
    },
    onError: rec.onError,
    onClose: rec.onClose,
  }));
  const good = net.connect(port, '127.0.0.1');
  t.teardown(() => void good.destroy());
  await new Promise((resolve) => good.once('connect', resolve));
  let echoed = Buffer.alloc(0);
  good.on('data', (d: Buffer) => (echoed = Buffer.concat([echoed, d])));
  const ping = async (label: string): Promise<void> => {
    const body = Buffer.from(label);
    const f = Buffer.alloc(4 + body.length);
    f.writeUInt32BE(f.length, 0);
    body.copy(f, 4);
    const before = echoed.length;
    good.write(f);
    await waitFor(() => echoed.length >= before + f.length, 2000, 'echo');
    t.equal(echoed.subarray(before + 4).toString(), label, `${label}: the other client is still served`);
  };
  await ping('before');

  const huge = Buffer.alloc(4);
  huge.writeUInt32BE(0xffffffff, 0);
  const t0 = Date.now();
  const r1 = await rawExchange(port, huge, 3000);
  t.ok(r1.closed && Date.now() - t0 < 1500, 'announcing 4 GB closes at once, without waiting for the body');
  for (const bad of [0, 3]) {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(bad, 0);
    const r = await rawExchange(port, Buffer.concat([header, Buffer.from('junk')]), 3000);
    t.ok(r.closed, `length ${bad} (< 4): closed`);
  }
  await waitFor(() => rec.errors.length === 3, 2000, 'three onError');
  t.same(rec.errors.map((e) => e.code), [ErrorCode.PACKAGE_TOO_LARGE, ErrorCode.BAD_PACKAGE, ErrorCode.BAD_PACKAGE]);
  t.equal(rec.closed.length, 3, 'each bad connection closed');
  t.equal(messages, 1, 'no bad package reached onMessage');
  await ping('after');
});

t.test('websocket: message over maxPackageSize → 1009; invalid UTF-8 → 1007', async (t) => {
  const rec = recorder();
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    maxPackageSize: 1024,
    onMessage: (conn, data) => conn.send(data),
    onError: rec.onError,
    onClose: rec.onClose,
  }));
  const good = await wsClient(`ws://127.0.0.1:${port}/`);
  t.teardown(() => good.close());
  await stillServes(t, good, 'before');

  const big = await wsClient(`ws://127.0.0.1:${port}/`);
  big.ws.send('x'.repeat(2000));
  t.equal((await big.closed).code, 1009, 'too big: close code 1009');
  await waitFor(() => rec.errors.length === 1, 2000, 'onError');
  t.equal(rec.errors[0]!.code, ErrorCode.PACKAGE_TOO_LARGE);

  const bad = await wsClient(`ws://127.0.0.1:${port}/`);
  const socket = (bad.ws as unknown as { _socket: net.Socket })._socket;
  socket.write(maskedFrame(0x1, Buffer.from([0x68, 0x69, 0xff, 0xfe, 0xc3])));
  t.equal((await bad.closed).code, 1007, 'invalid UTF-8 in a text frame: close code 1007');
  await waitFor(() => rec.errors.length === 2, 2000, 'onError');
  t.equal(rec.errors[1]!.code, ErrorCode.BAD_PACKAGE);

  const unmasked = await wsClient(`ws://127.0.0.1:${port}/`);
  (unmasked.ws as unknown as { _socket: net.Socket })._socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
  t.equal((await unmasked.closed).code, 1002, 'an unmasked client frame: protocol error 1002');
  await waitFor(() => rec.closed.length === 3, 2000, 'three onClose');
  await stillServes(t, good, 'after');
});

t.test('websocket port: a handshake that is not HTTP gets 400; one that never finishes is cut after handshakeTimeout', async (t) => {
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    handshakeTimeout: 1,
    onMessage: (conn, data) => conn.send(data),
  }));
  const good = await wsClient(`ws://127.0.0.1:${port}/`);
  t.teardown(() => good.close());

  const garbage = await rawExchange(port, 'HELLO THERE\r\n\r\n', 4000);
  t.ok(garbage.closed, 'closed');
  t.match(garbage.text, /^HTTP\/1\.1 400 /, `not HTTP: 400 (${JSON.stringify(garbage.text.slice(0, 40))})`);
  const binary = await rawExchange(port, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00]), 4000);
  t.match(binary.text, /^HTTP\/1\.1 400 /, 'binary junk (a TLS hello): 400');

  const [silent, partial] = await Promise.all([
    rawExchange(port, null, 5000),
    rawExchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n', 5000),
  ]);
  t.ok(silent.closed, 'a silent peer is closed');
  t.ok(silent.ms >= 900 && silent.ms < 3500, `after about handshakeTimeout (${silent.ms} ms)`);
  t.ok(partial.closed, 'a peer stuck in the middle of its headers is closed');
  t.ok(partial.ms >= 900 && partial.ms < 3500, `after about handshakeTimeout (${partial.ms} ms)`);
  t.match(partial.text, /^(HTTP\/1\.1 408 |$)/, 'with 408 or nothing');
  await stillServes(t, good, 'after');
});

t.test('a half-open peer (client end()) is seen as closed', async (t) => {
  const rec = recorder();
  const { port, worker } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onMessage: (conn, line) => conn.send(line),
    onClose: rec.onClose,
  }));
  const good = await textClient(port);
  t.teardown(() => good.close());
  const half = await textClient(port);
  half.send('last');
  t.equal(await half.next(), 'last');
  half.socket.end();
  await waitFor(() => rec.closed.length === 1, 2000, 'onClose');
  t.pass('onClose after the peer sent FIN');
  await Promise.race([half.closed, sleep(2000)]);
  t.ok(half.isClosed(), 'the server finished its side too');
  t.equal(worker.connections.size, 1);
  await stillServes(t, good, 'after');
});

t.test('a client that never reads: onBufferFull, drops counted, memory bounded', async (t) => {
  const max = 1024 * 1024;
  const chunk = 'F'.repeat(64 * 1024);
  const rec = recorder();
  const report: { full: number; accepted: number; dropped: number; maxBuffer: number } = { full: 0, accepted: 0, dropped: 0, maxBuffer: 0 };
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    maxSendBufferSize: max,
    onBufferFull: () => void report.full++,
    onError: rec.onError,
    onMessage: async (conn, line) => {
      if (line !== 'flood') return conn.send(line);
      // ~400 MB offered in 64 KB messages, yielding to the event loop now and then.
      for (let i = 0; i < 6400 && conn.status === 'established'; i++) {
        const result = conn.send(chunk);
        if (result === false) report.dropped++;
        else report.accepted++;
        report.maxBuffer = Math.max(report.maxBuffer, conn.sendBufferSize);
        if (i % 100 === 0) await sleep(1);
      }
      return undefined;
    },
  }));
  const good = await textClient(port);
  t.teardown(() => good.close());
  const hog = net.connect(port, '127.0.0.1');
  t.teardown(() => void hog.destroy());
  hog.on('error', () => {});
  await new Promise((resolve) => hog.once('connect', resolve));
  const failBefore = processStats.sendFail;
  const rssBefore = process.memoryUsage.rss();
  hog.write('flood\n');
  hog.pause();
  await waitFor(() => report.accepted + report.dropped >= 6400, 20_000, 'the flood to finish');
  const rssGrowth = process.memoryUsage.rss() - rssBefore;
  t.equal(report.full, 1, 'onBufferFull once');
  t.ok(report.dropped > 6000, `most sends dropped (${report.dropped})`);
  t.equal(processStats.sendFail - failBefore, report.dropped, 'every drop counted in send_fail');
  t.equal(rec.errors.filter((e) => e.code === ErrorCode.SEND_FAIL).length, report.dropped, 'and reported to onError');
  t.ok(report.maxBuffer <= max + chunk.length + 1, `send buffer ≤ max + one message (${report.maxBuffer})`);
  t.ok(rssGrowth < 100 * 1024 * 1024, `RSS stays bounded (+${(rssGrowth / 1048576).toFixed(1)} MB for 400 MB offered)`);
  await stillServes(t, good, 'during the flood');
});

t.test('a throwing onMessage is logged with the connection id; the process keeps serving', async (t) => {
  const logs = captureLogs();
  t.teardown(() => logs.stop());
  let serverId = 0;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onConnect: (conn) => void (serverId = conn.id),
    onMessage: async (conn, line) => {
      if (line === 'throw') throw new Error('boom in handler');
      if (line === 'reject') {
        await sleep(1);
        throw new Error('async boom');
      }
      conn.send(`ok ${line}`);
    },
  }));
  const c = await textClient(port);
  t.teardown(() => c.close());
  c.send('throw');
  c.send('next');
  t.equal(await c.next(), 'ok next', 'the next message still gets an answer');
  c.send('reject');
  c.send('again');
  t.equal(await c.next(), 'ok again');
  await waitFor(() => /async boom/.test(logs.text()), 2000, 'the rejection to be logged');
  const lines = logs.text().split('\n');
  const sync = lines.find((l) => l.includes('boom in handler'));
  t.ok(sync, 'the throw is logged');
  t.match(sync, new RegExp(`\\berror\\b.*onMessage threw.*conn=${serverId}\\b`), 'at error level, with the connection id');
  t.match(lines.find((l) => l.includes('async boom')), new RegExp(`conn=${serverId}\\b`), 'a rejection too');
  t.equal(c.isClosed(), false, 'the connection stays open');
});

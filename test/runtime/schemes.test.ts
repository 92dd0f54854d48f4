// Round trips through every scheme, with in-process Workers on ephemeral ports.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import t from 'tap';
import { Worker, registerProtocol, type Protocol } from '../../runtime/src/index.js';
import { listenWorker, selfSignedCert, sleep, textClient, waitFor, wsClient } from '../helpers/app.js';

process.env.GATEWAYWORKER_LOG_LEVEL ??= 'error';

/** Collects raw bytes from a socket. */
function collector(socket: net.Socket): { bytes(): Buffer; until(n: number, ms?: number): Promise<Buffer> } {
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  const bytes = (): Buffer => Buffer.concat(chunks);
  return {
    bytes,
    until: (n, ms = 3000) => waitFor(() => (bytes().length >= n ? bytes() : null), ms, `${n} bytes`),
  };
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

function frameOf(body: Buffer | string): Buffer {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const out = Buffer.alloc(4 + b.length);
  out.writeUInt32BE(4 + b.length, 0);
  b.copy(out, 4);
  return out;
}

function parseFrames(buffer: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (buffer.length - at >= 4) {
    const length = buffer.readUInt32BE(at);
    if (buffer.length - at < length) break;
    out.push(buffer.subarray(at + 4, at + length));
    at += length;
  }
  return out;
}

t.test('tcp: raw chunks arrive as Buffers and are echoed as they are', async (t) => {
  const seen: unknown[] = [];
  const { port } = await listenWorker(t, new Worker('tcp://127.0.0.1:0', {
    onMessage: (conn, data) => {
      seen.push(data);
      conn.send(data);
    },
  }));
  const socket = await connect(port);
  t.teardown(() => void socket.destroy());
  const got = collector(socket);
  socket.write(Buffer.from([0, 1, 2, 255]));
  t.same([...(await got.until(4))], [0, 1, 2, 255]);
  socket.write('hello');
  t.equal((await got.until(9)).subarray(4).toString(), 'hello');
  t.ok(seen.every((m) => Buffer.isBuffer(m)), 'onMessage gets Buffers');
  t.equal(Buffer.concat(seen as Buffer[]).length, 9);
});

t.test('text: lines in, lines out', async (t) => {
  const seen: unknown[] = [];
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onMessage: (conn, line) => {
      seen.push(line);
      conn.send(`>${line}`);
    },
  }));
  const c = await textClient(port);
  t.teardown(() => c.close());

  c.socket.write('plain\n');
  t.equal(await c.next(), '>plain');
  c.socket.write('crlf\r\n');
  t.equal(await c.next(), '>crlf', '\\r\\n is stripped');
  t.equal(seen[1], 'crlf');

  c.socket.write('spl');
  await sleep(50);
  c.socket.write('it across');
  await sleep(50);
  c.socket.write(' writes\n');
  t.equal(await c.next(), '>split across writes');

  const many = Array.from({ length: 200 }, (_, i) => `line ${i}`);
  c.socket.write(many.join('\n') + '\n');
  const got: string[] = [];
  for (let i = 0; i < many.length; i++) got.push(await c.next());
  t.same(got, many.map((l) => `>${l}`), 'many lines in one write, in order');

  c.socket.write('\n');
  t.equal(await c.next(), '>', 'an empty line is an empty message');
  c.socket.write(Buffer.from('h\xc3\xa9llo w\xc3\xb6rld\n', 'latin1'));
  t.equal(await c.next(), '>héllo wörld', 'UTF-8');
  t.ok(seen.every((m) => typeof m === 'string'), 'onMessage gets strings');
});

t.test('frame: u32 BE length including the header', async (t) => {
  const seen: Buffer[] = [];
  const { port } = await listenWorker(t, new Worker('frame://127.0.0.1:0', {
    onMessage: (conn, body) => {
      seen.push(body as Buffer);
      conn.send(Buffer.concat([Buffer.from('re:'), body as Buffer]));
    },
  }));
  const socket = await connect(port);
  t.teardown(() => void socket.destroy());
  const got = collector(socket);

  socket.write(frameOf('one'));
  let bytes = await got.until(4 + 6);
  t.equal(bytes.readUInt32BE(0), 10, 'the reply carries its total length');
  t.same(parseFrames(bytes).map(String), ['re:one']);

  const f = frameOf('split header');
  socket.write(f.subarray(0, 2));
  await sleep(50);
  socket.write(f.subarray(2, 3));
  await sleep(50);
  socket.write(f.subarray(3));
  bytes = await got.until(10 + 4 + 15);
  t.same(parseFrames(bytes).map(String), ['re:one', 're:split header']);

  const body = Buffer.alloc(100_000, 7);
  const big = frameOf(body);
  socket.write(big.subarray(0, 10));
  await sleep(30);
  socket.write(big.subarray(10, 50_000));
  await sleep(30);
  socket.write(big.subarray(50_000));
  bytes = await got.until(29 + 4 + 3 + body.length);
  const frames = parseFrames(bytes);
  t.equal(frames.length, 3);
  t.ok(frames[2]!.subarray(3).equals(body), 'a body split across writes arrives whole');

  socket.write(Buffer.concat([frameOf('a'), frameOf(''), frameOf('c')]));
  bytes = await got.until(bytes.length + 8 + 7 + 8);
  t.same(parseFrames(bytes).slice(3).map(String), ['re:a', 're:', 're:c'], 'several frames in one write, empty body allowed');
  t.equal(seen.length, 6);
});

t.test('websocket: text → string, binary → Buffer, ping → pong', async (t) => {
  const seen: unknown[] = [];
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onMessage: (conn, data) => {
      seen.push(data);
      conn.send(data);
    },
  }));
  const c = await wsClient(`ws://127.0.0.1:${port}/`);
  t.teardown(() => c.close());
  c.ws.send('héllo');
  t.equal(await c.next(), 'héllo', 'a text frame comes back as text');
  c.ws.send(Buffer.from([1, 2, 3]));
  const bin = await c.next();
  t.ok(Buffer.isBuffer(bin), 'a binary frame comes back as binary');
  t.same([...(bin as Buffer)], [1, 2, 3]);
  t.equal(typeof seen[0], 'string');
  t.ok(Buffer.isBuffer(seen[1]));

  const pong = new Promise<Buffer>((resolve) => c.ws.once('pong', resolve));
  c.ws.ping('are you there');
  t.equal(String(await Promise.race([pong, sleep(2000).then(() => 'timeout')])), 'are you there', 'ping answered with pong');
  const big = 'x'.repeat(200_000);
  c.ws.send(big);
  t.equal(await c.next(), big, 'a large message');
});

const pems = selfSignedCert();

t.test('wss and ssl-wrapped text', { skip: pems ? false : 'openssl CLI not found: cannot make a test certificate' }, async (t) => {
  const tlsOptions = { cert: pems!.cert, key: pems!.key };
  const { port: wssPort } = await listenWorker(t, new Worker('wss://127.0.0.1:0', {
    tls: tlsOptions,
    onMessage: (conn, data) => conn.send(data),
  }));
  const ws = await wsClient(`wss://127.0.0.1:${wssPort}/`, { ca: pems!.cert });
  t.teardown(() => ws.close());
  ws.ws.send('secure hello');
  t.equal(await ws.next(), 'secure hello', 'wss round trip');

  const conns: string[] = [];
  const { port: sslPort } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    transport: 'ssl',
    tls: tlsOptions,
    onConnect: (conn) => void conns.push(`${conn.protocol}/${conn.transportKind}`),
    onMessage: (conn, line) => conn.send(`ssl:${line}`),
  }));
  const socket = tls.connect({ host: '127.0.0.1', port: sslPort, ca: pems!.cert, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  const c = await textClient(socket);
  t.teardown(() => c.close());
  c.send('a');
  c.socket.write('b\r\nc\n');
  t.equal(await c.next(), 'ssl:a');
  t.equal(await c.next(), 'ssl:b');
  t.equal(await c.next(), 'ssl:c');
  t.same(conns, ['text/ssl']);

  const { port: sslFramePort } = await listenWorker(t, new Worker('ssl://127.0.0.1:0', {
    tls: tlsOptions,
    protocol: 'frame',
    onMessage: (conn, body) => conn.send(body),
  }));
  const fs2 = tls.connect({ host: '127.0.0.1', port: sslFramePort, ca: pems!.cert, servername: 'localhost' });
  t.teardown(() => fs2.destroy());
  const got = collector(fs2);
  fs2.write(frameOf('over tls'));
  t.same(parseFrames(await got.until(12)).map(String), ['over tls'], 'ssl:// with protocol frame');

  // A plain-text client on a TLS port gets nothing decoded and the server keeps serving.
  const plain = await textClient(sslPort);
  plain.send('not tls');
  await Promise.race([plain.closed, sleep(1500)]);
  t.same(plain.pending(), [], 'no line answered to a plain-text peer');
  plain.close();
  c.send('still');
  t.equal(await c.next(), 'ssl:still');
});

t.test('unix socket with protocol text', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-unix-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'app.sock');
  const kinds: string[] = [];
  const { address } = await listenWorker(t, new Worker(`unix://${sock}`, {
    protocol: 'text',
    onConnect: (conn) => void kinds.push(`${conn.protocol}/${conn.transportKind}`),
    onMessage: (conn, line) => conn.send(`unix:${line}`),
  }));
  t.equal(address, `unix://${sock}`);
  const c = await textClient(sock);
  t.teardown(() => c.close());
  c.socket.write('one\ntwo\r\n');
  t.equal(await c.next(), 'unix:one');
  t.equal(await c.next(), 'unix:two');
  t.same(kinds, ['text/unix']);
});

t.test('a custom protocol registered with registerProtocol', async (t) => {
  // u16 BE body length, then the body; decodes to an upper-cased string.
  const len16: Protocol<string, { packages: number }> = {
    name: 'len16',
    createState: () => ({ packages: 0 }),
    input(buffer) {
      if (buffer.length < 2) return 0;
      return 2 + buffer.readUInt16BE(0);
    },
    decode(packet, conn) {
      conn.protocolState.packages++;
      return `${conn.protocolState.packages}:${packet.subarray(2).toString().toUpperCase()}`;
    },
    encode(message) {
      const body = Buffer.from(String(message));
      const out = Buffer.alloc(2 + body.length);
      out.writeUInt16BE(body.length, 0);
      body.copy(out, 2);
      return out;
    },
  };
  registerProtocol('len16', len16 as Protocol);
  t.throws(() => registerProtocol('websocket', len16 as Protocol), /built-in/, 'built-in schemes cannot be replaced');
  const protocols: string[] = [];
  const { port } = await listenWorker(t, new Worker('len16://127.0.0.1:0', {
    onConnect: (conn) => void protocols.push(conn.protocol),
    onMessage: (conn, msg) => conn.send(msg),
  }));
  const socket = await connect(port);
  t.teardown(() => void socket.destroy());
  const got = collector(socket);
  const pkt = (s: string): Buffer => len16.encode(s, { maxPackageSize: 1e6, protocolState: { packages: 0 } }) as Buffer;
  const two = Buffer.concat([pkt('ab'), pkt('cde')]);
  socket.write(two.subarray(0, 1));
  await sleep(30);
  socket.write(two.subarray(1));
  const bytes = await got.until(2 + 4 + 2 + 5);
  t.equal(bytes.readUInt16BE(0), 4);
  t.equal(bytes.subarray(2, 6).toString(), '1:AB');
  t.equal(bytes.subarray(8).toString(), '2:CDE', 'per-connection state is kept');
  t.same(protocols, ['len16']);
});

// Live fuzz of the WebSocket protocol: an echo Worker on websocket://127.0.0.1:0 in its own
// process (test/fixtures/fuzz/servers.ts, maxPayload = maxPackageSize, handshake timeout 2 s).
//
// 1. Handshake: valid upgrade requests, structural variants (methods, versions, missing or
//    broken headers, line ends), byte mutants of them and random bytes, sent then half-closed.
//    The server answers with nothing or one HTTP response (101 only to a request that is an
//    upgrade), and the connection ends within a bounded time. Requests that never finish are cut
//    by the handshake timeout (408).
// 2. Frames after a valid handshake: valid client streams (fragmented messages, pings, every
//    length form, close), mutants of them, random bytes, in random chunks. The server's frames
//    are compared with the reference (./reference.ts refWebSocket: ws's documented server
//    behaviour): the echo of every message, a pong per ping, and — on a protocol error or a
//    client close — one close frame with the expected code, then the end of the connection.
//    A connection that is still valid echoes a probe message sent after it.
// Throughout, a well-behaved `ws` client is answered; at the end the process is up, no fuzzed
// connection is left in the Worker and its heap has not grown.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { WebSocket } from 'ws';
import { wsClientStream, wsFields } from './arbitraries.js';
import { RawClient, bounded, sleep, startServers, until, type Servers } from './live.js';
import { ErrorTally, applyMutations, chunking, chunks, fc, fuzz, hex, mutationArb, runs, validMutatedRandom } from './lib.js';
import { clientFrame, completeWsFrame, parseServerFrames, refWebSocket } from './reference.js';

const DEFAULT_RUNS = 300;
const REPLY_MS = 3000;
const CASE_MS = 10_000;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

const acceptOf = (key: string): string => createHash('sha1').update(key + GUID).digest('base64');

function upgradeRequest(port: number, key: string, path = '/', extra: string[] = []): Buffer {
  return Buffer.from(
    [`GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Key: ${key}`, 'Sec-WebSocket-Version: 13', ...extra, '', ''].join('\r\n'),
  );
}

/** A `ws` client on its own connection, asked every few cases. */
async function goodClient(t: Test, port: number): Promise<{ ask(): Promise<void> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/good`, { perMessageDeflate: false });
  t.teardown(() => ws.terminate());
  const inbox: string[] = [];
  let closed = false;
  ws.on('message', (data, binary) => inbox.push(binary ? `<binary>` : data.toString()));
  ws.on('close', () => (closed = true));
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let n = 0;
  return {
    async ask() {
      const text = `good-${++n}-ü`;
      ws.send(text);
      const ok = await until(() => inbox.includes(text) || closed, REPLY_MS);
      assert.ok(ok && !closed, `the well-behaved ws client got no echo of message ${n} (closed: ${closed})`);
    },
  };
}

async function quiescent(t: Test, servers: Servers, baseline: number, before: number): Promise<void> {
  let after = await servers.stats();
  for (let i = 0; i < 100 && after.connections.websocket > baseline; i++) {
    await sleep(50);
    after = await servers.stats();
  }
  t.ok(servers.alive(), 'the server process is up');
  t.equal(after.connections.websocket, baseline, 'no fuzzed connection left in the Worker');
  const grown = after.heapUsed - before;
  t.comment(`server heap ${(before / 1048576).toFixed(1)} → ${(after.heapUsed / 1048576).toFixed(1)} MB, rss ${(after.rss / 1048576).toFixed(0)} MB`);
  t.ok(grown < 16 * 1024 * 1024, `server heap after GC within 16 MB of before (+${(grown / 1048576).toFixed(1)} MB)`);
}

// ---- 1. handshakes ---------------------------------------------------------------------------------

const token = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&*+.^`|~'), minLength: 1, maxLength: 12 });
const headerValue = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 20 }), fc.constant(''));

/** Upgrade requests built from parts: every part valid, or replaced by something else. */
function requestArb(port: number): fc.Arbitrary<{ bytes: Buffer; upgrade: boolean }> {
  const key = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString('base64'));
  return fc
    .record({
      method: fc.oneof({ weight: 6, arbitrary: fc.constant('GET') }, { weight: 1, arbitrary: fc.constantFrom('POST', 'HEAD', 'OPTIONS', 'CONNECT', 'get') }, { weight: 1, arbitrary: token }),
      path: fc.oneof({ weight: 4, arbitrary: fc.webPath().map((p) => p || '/') }, { weight: 1, arbitrary: fc.string({ maxLength: 30 }) }, { weight: 1, arbitrary: fc.constant('*') }),
      version: fc.oneof({ weight: 6, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x', '') }),
      key: fc.oneof({ weight: 6, arbitrary: key }, { weight: 1, arbitrary: headerValue }),
      wsVersion: fc.oneof({ weight: 6, arbitrary: fc.constant('13') }, { weight: 1, arbitrary: fc.constantFrom('8', '0', '', '13, 8', '1300') }),
      upgrade: fc.oneof({ weight: 6, arbitrary: fc.constant('websocket') }, { weight: 1, arbitrary: fc.constantFrom('WebSocket', 'h2c', '', 'websocket, x') }),
      connection: fc.oneof({ weight: 6, arbitrary: fc.constant('Upgrade') }, { weight: 1, arbitrary: fc.constantFrom('keep-alive, Upgrade', 'close', '') }),
      drop: fc.array(fc.constantFrom('host', 'upgrade', 'connection', 'key', 'version'), { maxLength: 2 }),
      extra: fc.array(fc.tuple(fc.oneof(token, fc.constantFrom('Sec-WebSocket-Protocol', 'Sec-WebSocket-Extensions', 'Origin', 'Content-Length', 'Transfer-Encoding', 'Host')), headerValue), { maxLength: 4 }),
      eol: fc.oneof({ weight: 8, arbitrary: fc.constant('\r\n') }, { weight: 1, arbitrary: fc.constantFrom('\n', '\r') }),
      body: fc.option(fc.uint8Array({ maxLength: 40 })),
    })
    .map((r) => {
      const lines = [`${r.method} ${r.path} ${r.version}`];
      const headers: Array<[string, string, string]> = [
        ['host', 'Host', `127.0.0.1:${port}`],
        ['upgrade', 'Upgrade', r.upgrade],
        ['connection', 'Connection', r.connection],
        ['key', 'Sec-WebSocket-Key', r.key],
        ['version', 'Sec-WebSocket-Version', r.wsVersion],
      ];
      for (const [id, name, value] of headers) if (!(r.drop as string[]).includes(id)) lines.push(`${name}: ${value}`);
      for (const [name, value] of r.extra) lines.push(`${name}: ${value}`);
      const head = Buffer.from(lines.join(r.eol) + r.eol + r.eol);
      return { bytes: r.body ? Buffer.concat([head, r.body]) : head, upgrade: r.method === 'GET' && r.upgrade.toLowerCase() === 'websocket' };
    });
}

const servers = await startServers(t);
const port = servers.ports.websocket;
const max = servers.max;
const good = await goodClient(t, port);
await good.ask();

// Started now, checked last: the handshake timeout runs while the fuzzing does.
const slowStarted = Date.now();
const partial = [
  Buffer.alloc(0),
  Buffer.from('G'),
  Buffer.from('GET / HTTP/1.1\r\n'),
  upgradeRequest(port, randomBytes(16).toString('base64')).subarray(0, 60),
  Buffer.from(`GET / HTTP/1.1\r\nX: ${'a'.repeat(8000)}`),
];
const slowClients = await Promise.all(
  partial.map(async (bytes) => {
    const client = await RawClient.connect(port);
    t.teardown(() => client.destroy());
    client.write(bytes);
    return client;
  }),
);


t.test('websocket handshakes', async (t) => {
  const base = await servers.stats();
  const statuses = new ErrorTally();
  const requests = requestArb(port);
  const input = fc.oneof(
    { weight: 3, arbitrary: requests.map((r) => ({ kind: 'built', ...r })) },
    {
      weight: 3,
      arbitrary: fc.tuple(requests, requests, fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(([a, b, m]) => ({ kind: 'mutated', bytes: applyMutations(a.bytes, b.bytes, m), upgrade: null })),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => ({ kind: 'random', bytes: Buffer.from(b), upgrade: null })) },
  );
  await fuzz(
    t,
    'handshake',
    fc.asyncProperty(input, chunking, async (c, points) => {
      assert.ok(servers.alive(), `the server process died:\n${servers.output().slice(-4000)}`);
      await bounded(
        (async () => {
          const client = await RawClient.connect(port);
          try {
            await client.writeChunks(chunks(c.bytes, points));
            client.end();
            const closed = await client.waitUntil(() => client.closed, REPLY_MS);
            const response = client.bytes().toString('latin1');
            assert.ok(closed, `connection still open ${REPLY_MS} ms after a half-closed request ${hex(c.bytes)}; got ${JSON.stringify(response.slice(0, 200))}`);
            if (response.length === 0) {
              statuses.add('no response');
              return;
            }
            const status = /^HTTP\/1\.1 (\d{3}) /.exec(response);
            assert.ok(status, `not an HTTP response: ${JSON.stringify(response.slice(0, 200))} to ${hex(c.bytes)}`);
            statuses.add(`${c.kind} ${status[1]}`);
            if (status[1] === '101') {
              assert.notEqual(c.upgrade, false, `101 to a request that is no upgrade: ${JSON.stringify(c.bytes.toString('latin1'))}`);
              const key = /\r\nSec-WebSocket-Key: ?([^\r\n]*)\r\n/i.exec(c.bytes.toString('latin1'))?.[1]?.trim();
              const accept = /\r\nSec-WebSocket-Accept: ([^\r\n]*)\r\n/i.exec(response)?.[1];
              if (key && c.kind === 'built') assert.equal(accept, acceptOf(key), 'Sec-WebSocket-Accept matches the key');
            }
          } finally {
            client.destroy();
          }
        })(),
        CASE_MS,
        `handshake ${hex(c.bytes)}`,
      );
    }),
    {
      numRuns: runs(DEFAULT_RUNS),
      endOnFailure: true,
      examples: [
        [{ kind: 'built', bytes: upgradeRequest(port, randomBytes(16).toString('base64')), upgrade: true }, []],
        [{ kind: 'built', bytes: Buffer.from(`GET / HTTP/1.1\r\nHost: x\r\n\r\n`), upgrade: false }, []],
        [{ kind: 'built', bytes: Buffer.from(`GET / HTTP/1.1\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`), upgrade: false }, [1000, 9000]],
      ],
    },
  );
  t.comment(`responses: ${statuses.toString()}`);
  await good.ask();
  await quiescent(t, servers, base.connections.websocket, base.heapUsed);
});

// ---- 2. frames after a valid handshake ----------------------------------------------------------------

/** Opens a raw connection and completes a valid handshake. */
async function handshake(port: number): Promise<RawClient> {
  const client = await RawClient.connect(port);
  const key = randomBytes(16).toString('base64');
  client.write(upgradeRequest(port, key, '/fuzz'));
  const ok = await client.waitUntil(() => client.bytes().includes('\r\n\r\n') || client.closed, REPLY_MS);
  const head = client.bytes().toString('latin1');
  if (!ok || !head.startsWith('HTTP/1.1 101 ') || !head.includes(acceptOf(key))) {
    client.destroy();
    throw new Error(`handshake failed: ${JSON.stringify(head.slice(0, 300))}`);
  }
  return client;
}

t.test('websocket frames after a valid handshake', async (t) => {
  const base = await servers.stats();
  const counts = { valid: 0, mutated: 0, random: 0, open: 0, error: 0, close: 0, probed: 0 };
  const codes = new ErrorTally();
  let n = 0;
  await fuzz(
    t,
    'frames',
    fc.asyncProperty(validMutatedRandom(wsClientStream(max), wsFields, 400), chunking, async (c, points) => {
      assert.ok(servers.alive(), `the server process died:\n${servers.output().slice(-4000)}`);
      counts[c.kind]++;
      const probe = Buffer.from(`probe-${++n}`);
      // What to send after the fuzzed bytes: finish the frame in progress, the fragmented message, then a probe.
      const first = refWebSocket(c.bytes, max);
      let all = c.bytes;
      if (first.end === 'open') {
        all = Buffer.concat([all, completeWsFrame(first.pending, max)]);
        const second = refWebSocket(all, max);
        if (second.end === 'open' && second.fragmented) all = Buffer.concat([all, clientFrame(0, Buffer.alloc(0))]);
        all = Buffer.concat([all, clientFrame(1, probe)]);
      }
      const expected = refWebSocket(all, max);
      counts[expected.end]++;
      if (expected.replies.some((f) => f.opcode === 1 && f.payload.equals(probe))) counts.probed++;
      await bounded(
        (async () => {
          const client = await handshake(port);
          const headLength = client.bytes().indexOf('\r\n\r\n') + 4;
          try {
            await client.writeChunks([...chunks(c.bytes, points), all.subarray(c.bytes.length)].filter((b) => b.length > 0));
            const frames = () => parseServerFrames(client.bytes().subarray(headLength)).frames;
            const context = `input ${hex(c.bytes)} chunked at ${JSON.stringify(points)}`;
            if (expected.end === 'open') {
              const ok = await client.waitUntil(() => frames().length >= expected.replies.length, REPLY_MS);
              assert.ok(ok && !client.closed, `a valid connection was ${client.closed ? 'closed' : 'not answered'} (${context}); got ${hex(client.bytes().subarray(headLength))}`);
            } else {
              const ok = await client.waitUntil(() => client.closed, REPLY_MS);
              assert.ok(ok, `the server did not end the connection after ${expected.end === 'error' ? 'a protocol error' : 'a close frame'} (${context}); got ${hex(client.bytes().subarray(headLength))}`);
            }
            const got = frames();
            for (const f of got) assert.ok(f.fin && !f.masked && f.rsv === 0, `server frame flags: fin ${f.fin} masked ${f.masked} rsv ${f.rsv}`);
            const show = (list: Array<{ opcode: number; payload: Buffer }>): string => JSON.stringify(list.map((f) => `${f.opcode}:${hex(f.payload, 40)}`));
            assert.equal(show(got), show(expected.replies), `server frames (${context})`);
            const close = got.find((f) => f.opcode === 8);
            if (close) codes.add(close.payload.length >= 2 ? `close ${close.payload.readUInt16BE(0)}` : 'close (no code)');
          } finally {
            client.destroy();
          }
        })(),
        CASE_MS,
        `frames ${hex(c.bytes)}`,
      );
      if (n % 25 === 0) await good.ask();
    }),
    { numRuns: runs(DEFAULT_RUNS), endOnFailure: true },
  );
  t.comment(`frames: ${JSON.stringify(counts)}; server closes: ${codes.toString()}`);
  await good.ask();
  await quiescent(t, servers, base.connections.websocket, base.heapUsed);
});

t.test('handshakes that never finish are cut by the handshake timeout', async (t) => {
  // handshakeTimeout 2 s, then the 408 answer gets 2 s more before the socket is destroyed.
  await until(() => slowClients.every((c) => c.closed), Math.max(0, 8000 - (Date.now() - slowStarted)), 20);
  slowClients.forEach((c, i) => {
    t.ok(c.closed, `partial request ${i} (${partial[i].length} bytes) closed within ${Date.now() - slowStarted} ms`);
    const response = c.bytes().toString('latin1');
    t.match(response, /^(HTTP\/1\.1 408 |$)/, `answered 408 or nothing: ${JSON.stringify(response.slice(0, 40))}`);
  });
  t.ok(servers.alive(), 'the server process is up');
});

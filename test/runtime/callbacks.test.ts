// Every connection-level callback of a Worker, in-process on ephemeral ports.
// (onWorkerStart / onWorkerReload / onWorkerStop need real processes: see process.test.ts.)
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { ErrorCode, Worker, type Connection } from '../../runtime/src/index.js';
import { captureLogs, listenWorker, rawExchange, sleep, textClient, waitFor, wsClient } from '../helpers/app.js';

process.env.GATEWAYWORKER_LOG_LEVEL ??= 'error';

function httpGet(port: number, path = '/', headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
  });
}

/** Attempts a WebSocket handshake; resolves with the HTTP status of a refusal, or 101. */
function wsHandshakeStatus(port: number, path = '/'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({
      host: '127.0.0.1', port, path, agent: false,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.setTimeout(3000, () => req.destroy(new Error('timeout')));
  });
}

t.test('onConnect, onMessage, onClose when the client closes', async (t) => {
  const events: string[] = [];
  let connected: Connection | null = null;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onConnect: (conn) => {
      connected = conn;
      events.push(`connect ${conn.status}`);
    },
    onMessage: (conn, line) => {
      events.push(`message ${line}`);
      conn.send(line.toUpperCase());
    },
    onClose: (conn) => void events.push(`close ${conn.status}`),
  }));
  const c = await textClient(port);
  await waitFor(() => events.length >= 1, 2000, 'onConnect');
  t.same(events, ['connect established'], 'onConnect first, connection established');
  t.equal(connected!.remotePort, c.socket.localPort, 'onConnect sees the peer');
  c.send('hi');
  t.equal(await c.next(), 'HI');
  c.socket.end();
  await waitFor(() => events.length >= 3, 2000, 'onClose');
  await sleep(50);
  t.same(events, ['connect established', 'message hi', 'close closed'], 'onClose once, after the messages');
});

t.test('onClose when the server closes', async (t) => {
  let closes = 0;
  const { port, worker } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onMessage: (conn, line) => {
      if (line === 'bye') conn.close('goodbye');
    },
    onClose: () => void closes++,
  }));
  const c = await textClient(port);
  c.send('bye');
  t.equal(await c.next(), 'goodbye');
  await Promise.race([c.closed, sleep(2000)]);
  t.ok(c.isClosed(), 'the client sees the close');
  await waitFor(() => closes === 1, 2000, 'onClose');
  t.equal(worker.connections.size, 0, 'the connection is forgotten');
});

t.test('onClose for a websocket when the server closes (code 1000) and when the client closes', async (t) => {
  let closes = 0;
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onMessage: (conn, data) => {
      if (data === 'bye') conn.close('last words');
    },
    onClose: () => void closes++,
  }));
  const a = await wsClient(`ws://127.0.0.1:${port}/`);
  a.ws.send('bye');
  t.equal(await a.next(), 'last words', 'close(data) sends the data first');
  t.equal((await a.closed).code, 1000);
  const b = await wsClient(`ws://127.0.0.1:${port}/`);
  b.ws.close(1000);
  await b.closed;
  await waitFor(() => closes === 2, 2000, 'two onClose');
  t.pass('onClose for both');
});

t.test('onError reports codes from ErrorCode', async (t) => {
  const errors: Array<[number, number, string]> = [];
  const onError = (conn: Connection, code: number, message: string): void => void errors.push([conn.id, code, message]);
  const { port: framePort } = await listenWorker(t, new Worker('frame://127.0.0.1:0', { maxPackageSize: 1024, onError }));

  const tooBig = Buffer.alloc(4);
  tooBig.writeUInt32BE(1_000_000, 0);
  let r = await rawExchange(framePort, tooBig, 2000);
  t.ok(r.closed, 'oversized frame: closed');
  await waitFor(() => errors.length === 1, 1000, 'onError');
  t.equal(errors[0]![1], ErrorCode.PACKAGE_TOO_LARGE, 'PACKAGE_TOO_LARGE');
  t.match(errors[0]![2], /maxPackageSize/);

  const malformed = Buffer.alloc(4);
  malformed.writeUInt32BE(2, 0);
  r = await rawExchange(framePort, malformed, 2000);
  t.ok(r.closed, 'malformed frame: closed');
  await waitFor(() => errors.length === 2, 1000, 'onError');
  t.equal(errors[1]![1], ErrorCode.BAD_PACKAGE, 'BAD_PACKAGE');

  let sendResult: unknown = 'unset';
  const { port: textPort } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    onError,
    onClose: (conn) => void (sendResult = conn.send('too late')),
  }));
  const c = await textClient(textPort);
  await sleep(50);
  c.socket.end();
  await waitFor(() => sendResult !== 'unset', 2000, 'onClose');
  t.equal(sendResult, false, 'send on a closed connection returns false');
  t.equal(errors[2]?.[1], ErrorCode.SEND_FAIL, 'SEND_FAIL');

  const s = net.connect(textPort, '127.0.0.1');
  await new Promise((resolve) => s.once('connect', resolve));
  s.write('partial line without newline');
  await sleep(50);
  s.resetAndDestroy();
  const reset = await waitFor(() => errors.slice(3).find((e) => e[1] === ErrorCode.SOCKET_ERROR), 2000, 'onError for a reset');
  t.match(reset[2], /ECONNRESET/, 'SOCKET_ERROR on a reset');
});

t.test('onBufferFull and onBufferDrain', async (t) => {
  const events: string[] = [];
  const results: Array<true | null | false> = [];
  const chunk = 'x'.repeat(64 * 1024);
  let server: Connection | null = null;
  const { port } = await listenWorker(t, new Worker('text://127.0.0.1:0', {
    maxSendBufferSize: 256 * 1024,
    onConnect: (conn) => void (server = conn),
    onBufferFull: (conn) => void events.push(`full ${conn.sendBufferSize}`),
    onBufferDrain: (conn) => void events.push(`drain ${conn.sendBufferSize}`),
  }));
  const socket = net.connect(port, '127.0.0.1');
  t.teardown(() => void socket.destroy());
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.pause();
  await waitFor(() => server, 2000, 'onConnect');
  let accepted = 0;
  for (let i = 0; i < 2000 && !results.includes(false); i++) {
    const result = server!.send(chunk);
    results.push(result);
    if (result !== false) accepted += chunk.length + 1;
  }
  t.ok(results.includes(false), 'sends are eventually dropped');
  t.equal(events.length, 1, 'onBufferFull once');
  t.match(events[0], /^full /);
  t.ok(server!.sendBufferSize >= 256 * 1024, 'the buffer is full');
  t.ok(server!.sendBufferSize <= 256 * 1024 + chunk.length + 1, `the buffer is bounded (${server!.sendBufferSize})`);
  let received = 0;
  socket.on('data', (d: Buffer) => (received += d.length));
  socket.resume();
  await waitFor(() => events.length === 2, 5000, 'onBufferDrain');
  t.same(events[1], 'drain 0', 'onBufferDrain once the buffer is empty');
  await waitFor(() => received >= accepted, 5000, 'all accepted bytes');
  t.equal(received, accepted, 'everything accepted was delivered, nothing dropped was');
  t.equal(server!.send('after drain'), true, 'sends work again');
});

t.test('onWebSocketConnect sees the request and can refuse it', async (t) => {
  const seen: Array<{ url: string; header: string | undefined; connId: number }> = [];
  const closes: number[] = [];
  const errors: number[] = [];
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onWebSocketConnect: (conn, request) => {
      seen.push({ url: request.url ?? '', header: request.headers['x-token'] as string | undefined, connId: conn.id });
      if (request.url?.startsWith('/deny')) return false;
      if (request.url?.startsWith('/custom')) return { status: 401, message: 'Unauthorized' };
      return undefined;
    },
    onMessage: (conn, data) => conn.send(data),
    onClose: (conn) => void closes.push(conn.id),
    onError: (_conn, code) => void errors.push(code),
  }));
  const ok = await wsClient(`ws://127.0.0.1:${port}/room?x=1`, { headers: { 'X-Token': 'abc' } });
  t.same(seen[0], { url: '/room?x=1', header: 'abc', connId: seen[0]!.connId }, 'url and headers');
  ok.ws.send('hi');
  t.equal(await ok.next(), 'hi');

  t.equal(await wsHandshakeStatus(port, '/deny'), 403, 'returning false → 403');
  await waitFor(() => closes.includes(seen[1]!.connId), 2000, 'onClose of the refused connection');
  t.pass('the app sees onClose of the refused connection');
  t.equal(await wsHandshakeStatus(port, '/custom'), 401, 'a rejection object sets the status');
  await waitFor(() => closes.includes(seen[2]!.connId), 2000, 'onClose');
  t.equal(errors.filter((c) => c === ErrorCode.HANDSHAKE_FAILED).length, 2, 'onError(HANDSHAKE_FAILED) for each refusal (ErrorCode: "failed, timed out or was rejected")');
  ok.ws.send('still here');
  t.equal(await ok.next(), 'still here', 'other clients unaffected');
  ok.close();
});

t.test('onWebSocketConnect with an async verdict', async (t) => {
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onConnect: (conn) => {
      // Sent before the handshake finished: queued until it does.
      t.equal(conn.send('welcome'), null, 'send before the handshake is buffered');
    },
    onWebSocketConnect: async (conn, request) => {
      await sleep(150);
      conn.context.user = request.url?.slice(1);
      return request.url !== '/nobody';
    },
    onMessage: (conn, data) => conn.send(`${conn.context.user}:${data}`),
  }));
  const started = Date.now();
  const c = await wsClient(`ws://127.0.0.1:${port}/alice`);
  t.ok(Date.now() - started >= 140, 'the handshake waited for the verdict');
  t.equal(await c.next(), 'welcome');
  c.ws.send('hello');
  t.equal(await c.next(), 'alice:hello', 'state set during the verdict is there');
  c.close();
  t.equal(await wsHandshakeStatus(port, '/nobody'), 403, 'an async false refuses');
});

t.test('a verdict slower than handshakeTimeout: 408, onError(HANDSHAKE_FAILED), onClose', async (t) => {
  const events: string[] = [];
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    handshakeTimeout: 1,
    onConnect: () => void events.push('connect'),
    onWebSocketConnect: async () => {
      await sleep(1500);
      events.push('verdict');
      return true;
    },
    onError: (_conn, code) => void events.push(`error ${code}`),
    onClose: () => void events.push('close'),
    onMessage: () => void events.push('message'),
  }));
  const started = Date.now();
  const status = await wsHandshakeStatus(port, '/slow');
  t.equal(status, 408, 'the client gets 408');
  t.ok(Date.now() - started < 1400, 'after handshakeTimeout, not after the verdict');
  await waitFor(() => events.includes('verdict'), 3000, 'the late verdict');
  await sleep(50);
  t.same(events, ['connect', `error ${ErrorCode.HANDSHAKE_FAILED}`, 'close', 'verdict'], 'the late verdict changes nothing');
});

t.test('onHttpRequest serves plain GETs on a websocket port; without it 426', async (t) => {
  const { port } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onHttpRequest: (request, response) => {
      response.writeHead(200, { 'Content-Type': 'text/html' });
      response.end(`<h1>page ${request.url}</h1>`);
    },
    onMessage: (conn, data) => conn.send(data),
  }));
  const page = await httpGet(port, '/index.html');
  t.equal(page.status, 200);
  t.equal(page.body, '<h1>page /index.html</h1>');
  const c = await wsClient(`ws://127.0.0.1:${port}/`);
  c.ws.send('ws too');
  t.equal(await c.next(), 'ws too', 'the same port still speaks WebSocket');
  c.close();

  const { port: bare } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {}));
  const refused = await httpGet(bare, '/');
  t.equal(refused.status, 426, 'no onHttpRequest → 426 Upgrade Required');

  const logs = captureLogs();
  t.teardown(() => logs.stop());
  const { port: failing } = await listenWorker(t, new Worker('websocket://127.0.0.1:0', {
    onHttpRequest: () => {
      throw new Error('page broke');
    },
  }));
  t.equal((await httpGet(failing, '/')).status, 500, 'a throwing onHttpRequest answers 500');
  t.match(logs.text(), /onHttpRequest threw.*page broke/, 'and is logged');
});

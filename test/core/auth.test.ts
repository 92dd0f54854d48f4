// Internal links prove the shared secret: a GatewayClient or worker with a wrong secretKey is
// refused (and logged with "wrong secret key"), garbage on an internal port closes the
// connection, and a peer that cannot prove the secret back is not trusted either.
import net from 'node:net';
import t from 'tap';
import { GatewayClient } from '../../runtime/src/index.js';
import { Cmd, encodeJson } from '../../runtime/src/internal/codec.js';
import { dialLink } from '../../runtime/src/internal/link.js';
import { SECRET, sleep, startCore, waitFor, wsPeer } from './helpers.js';

/** Connects, writes `data` (if any), resolves when the server closes it or after `timeoutMs`. */
function probe(port: number, data: Buffer | null, timeoutMs: number): Promise<{ closed: boolean; ms: number; received: Buffer }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => {});
    socket.on('connect', () => {
      if (data) socket.write(data);
    });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, ms: Date.now() - started, received: Buffer.concat(chunks) });
    }, timeoutMs);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, ms: Date.now() - started, received: Buffer.concat(chunks) });
    });
  });
}

const registerPort = (address: string): number => Number(address.split(':')[1]);

t.test('wrong secret and garbage on internal ports', async (t) => {
  const core = await startCore(t, { WORKER_COUNT: '1' });
  const good = await core.client();
  const client = await wsPeer(t, core.wsPort);

  await t.test('a GatewayClient with a wrong secretKey is never linked', async (t) => {
    const wrong = new GatewayClient({ registerAddress: core.register, secretKey: 'not-the-secret', queryTimeout: 1000 });
    t.teardown(() => wrong.close());
    await wrong.ready(1500);
    t.equal(wrong.gatewayCount, 0, 'gatewayCount stays 0');
    const [, list] = await Promise.all([
      wrong.sendToAll('leaked').catch(() => {}),
      wrong.getAllClientIdList().then(
        (value) => value,
        (error: Error) => error.name,
      ),
    ]);
    t.equal(list, 'GatewayUnavailableError', 'its queries reject: the register never answered it (no data leaks)');
    await waitFor(() => /Register#0 pid=\d+ internal link refused: wrong secret key/.test(core.app.output()), 3000, 'register log line');
    t.pass('the register logged "wrong secret key"');
    // The right client still works, and the connected client never got "leaked".
    await good.sendToAll('marker');
    const before = await client.until((m) => m.raw === 'marker');
    t.same(before.filter((m) => m.raw === 'leaked'), [], 'nothing the refused client sent reached a client');
  });

  await t.test('a worker or client dialling a gateway directly with a wrong secret is refused', async (t) => {
    const refusals = (): number => (core.app.output().match(/WsGateway#0 pid=\d+ internal link refused: wrong secret key/g) ?? []).length;
    for (const role of ['worker', 'client']) {
      const seen = refusals();
      let opened = false;
      const dialed = dialLink(`127.0.0.1:${core.wsInternal}`, {
        secret: 'not-the-secret',
        self: { role, name: `impostor-${role}` },
        onOpen: () => (opened = true),
        onDown: () => {},
      });
      t.teardown(() => dialed.close());
      await waitFor(() => refusals() > seen, 3000, 'gateway log line "wrong secret key"');
      await sleep(300);
      dialed.close();
      t.notOk(opened, `${role} with a wrong secret never authenticated`);
    }
    t.equal(await good.getAllClientIdCount(), 1, 'the gateway still serves linked peers');
  });

  await t.test('garbage on the register and gateway internal ports is closed', async (t) => {
    const ports = { register: registerPort(core.register), gateway: core.wsInternal };
    const silent = probe(ports.register, null, 8000);
    for (const [name, port] of Object.entries(ports)) {
      const http = await probe(port, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 3000);
      t.ok(http.closed, `${name}: an HTTP request is closed (${http.ms} ms)`);
      const short = await probe(port, Buffer.from([0, 0, 0, 1, 0xff]), 3000);
      t.ok(short.closed, `${name}: a frame with a bad length is closed (${short.ms} ms)`);
      const early = await probe(port, Buffer.from([0, 0, 0, 5, 99]), 3000);
      t.ok(early.closed, `${name}: a command before authentication is closed (${early.ms} ms)`);
      const fakeAuth = await probe(port, encodeJson(Cmd.AUTH, { nonce: 'abc', proof: 'f'.repeat(64), peer: { role: 'worker', name: 'x' } }), 3000);
      t.ok(fakeAuth.closed, `${name}: an AUTH with a made-up proof is closed (${fakeAuth.ms} ms)`);
      const hello = fakeAuth.received.subarray(5).toString();
      t.notOk(hello.includes(SECRET), `${name}: the HELLO does not carry the secret`);
    }
    t.match(core.app.output(), /internal link refused: command 99 before authentication/, 'the refusal is logged');
    const idle = await silent;
    t.ok(idle.closed && idle.ms >= 4000, `a peer that never authenticates is closed after the auth timeout (${idle.ms} ms)`);
    // Everything still works.
    await good.sendToClient(client.id, 'still-here');
    t.ok(await client.expect((m) => m.raw === 'still-here'), 'clients are still served');
    t.notOk(core.app.output().includes(SECRET), 'no log line of any process carries the secret');
  });
});

t.test('a GatewayClient does not trust a register that cannot prove the secret', async (t) => {
  const frames: number[] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.write(encodeJson(Cmd.HELLO, { nonce: 'a'.repeat(32), role: 'register', name: 'impostor' }));
    let buffer = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      buffer = Buffer.concat([buffer, d]);
      while (buffer.length >= 4 && buffer.length >= buffer.readUInt32BE(0)) {
        const length = buffer.readUInt32BE(0);
        const cmd = buffer[4];
        frames.push(cmd);
        buffer = buffer.subarray(length);
        // Accept whatever proof came, with a proof of our own that is wrong.
        if (cmd === Cmd.AUTH) socket.write(encodeJson(Cmd.AUTH_OK, { proof: '0'.repeat(64) }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as net.AddressInfo).port;
  const client = new GatewayClient({ registerAddress: `127.0.0.1:${port}`, secretKey: SECRET });
  t.teardown(() => client.close());
  await client.ready(1200);
  client.close();
  t.ok(frames.includes(Cmd.AUTH), 'the client answered the challenge');
  t.notOk(frames.includes(Cmd.SUBSCRIBE), 'but never subscribed to the impostor');
  t.equal(client.gatewayCount, 0, 'and linked no gateway');
});

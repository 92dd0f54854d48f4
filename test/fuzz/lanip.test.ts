// Repro (live) of the bug the client-id fuzz found (clientId.test.ts, "any IPv6 spelling of
// lanIp"): a Gateway whose lanIp is an IPv6 address in a non-canonical spelling announces its key
// as spelled, while its client ids parse to the canonical host, so every id-routed call from a
// worker (sendToClient, isOnline, getSession, the session write-back) misses the gateway.
// The assertions that fail because of it are tap `todo` until the runtime is fixed.
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import t from 'tap';
import { RawClient, freePorts, fuzzFixtures, spawnFixture, until } from './live.js';
import { knownBug } from './lib.js';

const TODO =
  'runtime bug: gatewayKey(lanIp) vs gatewayKey(parseClientId(id).host) differ for a non-canonical IPv6 lanIp ' +
  '(see clientId.test.ts): fix in runtime/src/internal/clientId.ts (gatewayKey canonicalises, hostHex lower-cases) ' +
  'or Gateway stores canonicalHost(lanIp)';

const ipv6 = await new Promise<boolean>((resolve) => {
  import('node:net').then(({ default: net }) => {
    const server = net.createServer().once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
});

t.test('a gateway with lanIp "0:0:0:0:0:0:0:1" routes its own client ids', { skip: ipv6 ? false : 'no IPv6 loopback here' }, async (t) => {
  const [registerPort, gatewayPort] = await freePorts(2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-fuzz-lanip-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const app = spawnFixture(t, path.join(fuzzFixtures, 'lanip-app.ts'), {
    REGISTER_ADDRESS: `127.0.0.1:${registerPort}`,
    GATEWAY_START_PORT: String(gatewayPort),
    GATEWAYWORKER_RUNTIME_DIR: dir,
    GATEWAYWORKER_LOG_LEVEL: 'info',
  }, [], ['start']);
  const started = await until(() => /LanIpGateway#0 pid=\d+ business worker linked/.test(app.output()) && /Start (success|finished)/.test(app.output()), 40_000, 50);
  const port = Number(/LanIpGateway\s+text:\/\/127\.0\.0\.1:(\d+)/.exec(app.output())?.[1]);
  t.ok(started && port, 'the app started with the worker linked to the gateway');
  if (!started || !port) return void t.comment(app.output());
  const client = await RawClient.connect(port);
  t.teardown(() => client.destroy());
  const lines = (): string[] => client.bytes().toString().split('\n').filter(Boolean);
  await client.waitUntil(() => lines().some((l) => l.startsWith('direct ')), 5000);
  const id = lines().find((l) => l.startsWith('direct '))?.slice(7) ?? '';
  t.match(id, /^[0-9a-f]{56}$/, `an IPv6 client id: ${id}`);
  const routed = await client.waitUntil(() => lines().some((l) => l.startsWith('routed ')), 2000);
  t.ok(routed, 'Gateway.sendToClient(own id) reaches the client', routed ? {} : { todo: knownBug(t, 'lanip-spelling', TODO) });
  client.write(Buffer.from('online\n'));
  await client.waitUntil(() => lines().some((l) => l.startsWith('online ')), 3000);
  const online = lines().find((l) => l.startsWith('online '));
  t.equal(online, 'online true', 'Gateway.isOnline(own id) is true', online === 'online true' ? {} : { todo: knownBug(t, 'lanip-spelling', TODO) });
  client.write(Buffer.from('session\n'));
  await client.waitUntil(() => lines().some((l) => l.startsWith('session ')), 3000);
  const session = lines().find((l) => l.startsWith('session '));
  t.equal(session, 'session {"mark":"written"}', 'the session written in onConnect is kept', session === 'session {"mark":"written"}' ? {} : { todo: knownBug(t, 'lanip-spelling', TODO) });
});

// Every Gateway API method called from another process through GatewayClient, against clients
// on a websocket gateway and a text gateway.
import t from 'tap';
import { GatewayArgumentError, GatewayClient, InvalidClientIdError } from '../../runtime/src/index.js';
import { apiSuite, connectClients } from './api-suite.js';
import { startCore } from './helpers.js';

t.test('Gateway API from a GatewayClient', async (t) => {
  const core = await startCore(t);
  const gateway = await core.client();
  t.equal(gateway.gatewayCount, 2, 'linked to both gateway processes');
  const clients = await connectClients(t, core);
  const api = gateway as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const call = async (method: string, ...args: unknown[]): Promise<unknown> => {
    const result = await api[method].apply(gateway, args);
    return result === undefined ? null : result;
  };
  await apiSuite(t, { call, extra: [] }, clients);

  await t.test('errors are instances of the exported classes', async (t) => {
    await t.rejects(gateway.sendToGroup('', 'x'), GatewayArgumentError);
    await t.rejects(gateway.isOnline('nope'), InvalidClientIdError);
    await t.rejects(gateway.sendToClient('nope', 'x'), InvalidClientIdError);
  });
});

t.test('GatewayClient sends binary and raw payloads', async (t) => {
  const core = await startCore(t, { WORKER_COUNT: '1' });
  const gateway: GatewayClient = await core.client();
  const { w1, t1 } = await connectClients(t, core);
  await gateway.sendToClient(w1.id, Buffer.from([1, 2, 3, 255]));
  const bin = await w1.expect((m) => m.binary, 3000, 'binary frame');
  t.same([...(bin.raw as Buffer)], [1, 2, 3, 255], 'a Buffer reaches a ws client as a binary frame');
  await gateway.sendToAll('raw-line\n', [t1.id], null, true);
  t.ok(await t1.expect((m) => m.raw === 'raw-line'), 'raw payload is written to the text client as is');
});

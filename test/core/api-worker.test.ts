// Every Gateway API method called inside a BusinessWorker (Events.ts `api` command), against
// clients on a websocket gateway and a text gateway.
import t from 'tap';
import { apiSuite, connectClients } from './api-suite.js';
import { startCore, textPeer } from './helpers.js';

t.test('Gateway API inside a BusinessWorker', async (t) => {
  const core = await startCore(t);
  const clients = await connectClients(t, core);
  // The driver is a text client whose worker makes the calls.
  const driver = await textPeer(t, core.textPort);
  await apiSuite(t, { call: (method, ...args) => driver.api(method, ...args), extra: [driver] }, clients);
});

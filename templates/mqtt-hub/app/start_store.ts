/**
 * The Store: one process holding retained messages and persistent sessions (subscriptions and
 * messages queued for offline devices), saved to <dataDir>/store.json so they survive a restart.
 * BusinessWorkers reach it at STORE_ADDRESS through store/client.ts. `reload` leaves it running.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'gatewayworker';
import { config } from './config.ts';
import { createStoreWorker } from './store/server.ts';

createStoreWorker({
  name: '{{appName}}Store',
  address: config.storeAddress,
  file: path.join(config.dataDir, 'store.json'),
  maxQueuedPerSession: config.maxQueuedPerSession,
  maxQueuedBytesPerSession: config.maxQueuedBytesPerSession,
  maxSessionsPerDevice: config.maxSessionsPerDevice,
  maxRetained: config.maxRetained,
  secretKey: process.env.SECRET_KEY,
});

// Run alone (`tsx Applications/{{appName}}/start_store.ts start`) to put the Store on its own host
// (then set STORE_ADDRESS to a private address everywhere, and SECRET_KEY).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

/**
 * The BusinessWorkers: run Events.ts for every client event and own the rooms (each room lives in
 * exactly one of them). Add processes (or hosts) to scale; `reload` restarts them one at a time
 * with the new code while clients stay connected (see README.md, "Reload").
 */
import { pathToFileURL } from 'node:url';
import { BusinessWorker, Worker } from 'gatewayworker';

new BusinessWorker({
  // Room ids name their owner by this name (plus the process number): on a second worker host,
  // set WORKER_NAME to something of its own.
  name: process.env.{{envPrefix}}WORKER_NAME ?? '{{appName}}BusinessWorker',
  count: Number(process.env.{{envPrefix}}WORKER_COUNT ?? 2),
  registerAddress: process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}',
  secretKey: process.env.SECRET_KEY,
  eventHandler: new URL('./Events.ts', import.meta.url),
});

// Run alone (`tsx Applications/{{appName}}/start_businessworker.ts start`) to add worker hosts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

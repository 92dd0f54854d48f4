/**
 * The BusinessWorkers: run Events.ts (the broker logic: auth, ACL, sessions, retained messages)
 * for every packet that needs a decision. They keep no state of their own — sessions live on the
 * gateways, retained messages and persistent sessions in the store — so add processes (or hosts)
 * freely; `reload` restarts them one at a time with the new code while devices stay connected.
 */
import { pathToFileURL } from 'node:url';
import { BusinessWorker, Worker } from 'gatewayworker';

new BusinessWorker({
  name: process.env.{{envPrefix}}WORKER_NAME ?? '{{appName}}BusinessWorker',
  count: Number(process.env.{{envPrefix}}WORKER_COUNT ?? 2),
  registerAddress: process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}',
  secretKey: process.env.SECRET_KEY,
  eventHandler: new URL('./Events.ts', import.meta.url),
});

// Run alone (`tsx Applications/{{appName}}/start_businessworker.ts start`) to add worker hosts.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

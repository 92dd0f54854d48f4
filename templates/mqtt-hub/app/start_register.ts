/**
 * The Register: tells BusinessWorkers where the Gateways are. One per app; it carries no client
 * traffic. REGISTER_ADDRESS is the host:port it listens on and every other role connects to.
 */
import { pathToFileURL } from 'node:url';
import { Register, Worker } from 'gatewayworker';

new Register(`text://${process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}'}`, {
  secretKey: process.env.SECRET_KEY,
});

// Run alone (`tsx Applications/{{appName}}/start_register.ts start`) to put the Register on its own host.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) Worker.runAll();

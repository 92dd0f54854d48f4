/**
 * Starts every role of every app in Applications/: `tsx start.ts start|stop|restart|reload|status|connections [-d]`.
 *
 * Each Applications/<App>/start_*.ts defines its Workers when imported; this file imports them all
 * (Register first, then Gateways, then any other role, then BusinessWorkers, so a role's
 * dependencies are defined before it) and hands control to the runtime's CLI.
 */
import { readdirSync } from 'node:fs';
import { Worker } from 'gatewayworker';

/** Files a role is defined in, in start order; any other start_*.ts (a store, say) comes between them and the BusinessWorkers, which use everything else. */
const ROLE_ORDER = ['start_register.ts', 'start_gateway.ts'];
const LAST = 'start_businessworker.ts';

const appsDir = new URL('./Applications/', import.meta.url);

const rank = (file: string) => {
  if (file === LAST) return ROLE_ORDER.length + 1;
  const i = ROLE_ORDER.indexOf(file);
  return i === -1 ? ROLE_ORDER.length : i;
};

const startFiles = readdirSync(appsDir, { withFileTypes: true })
  .filter((entry) => entry.isDirectory() && !entry.name.startsWith('.'))
  .flatMap((app) =>
    readdirSync(new URL(`${app.name}/`, appsDir))
      .filter((file) => /^start_.+\.ts$/.test(file))
      .map((file) => ({ app: app.name, file })),
  )
  .sort((a, b) => rank(a.file) - rank(b.file) || a.file.localeCompare(b.file) || a.app.localeCompare(b.app));

for (const { app, file } of startFiles) {
  await import(new URL(`${app}/${file}`, appsDir).href);
}

Worker.runAll();

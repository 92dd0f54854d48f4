/**
 * The master side of gatewayworker: supervisor, shared listening sockets, control channel, CLI.
 * `Worker.runAll()` calls `runMaster` in every process that is not a child.
 */
import { runCli } from './cli.js';
import type { MasterSettings, SupervisedWorker } from './types.js';

export type { MasterSettings, MasterStatus, ProcessRow, StatusReport, SupervisedWorker } from './types.js';
export type { ListenSpec } from './listen.js';
export { createSharedHandle, type SharedHandle } from './listen.js';
export { resolvePaths, type MasterPaths } from './paths.js';
export { Supervisor, type ReloadStep, type StopStep } from './Supervisor.js';
export { parseArgs, usage } from './cli.js';

/**
 * Run the CLI of the non-child process (`argv[2]`: start|stop|restart|reload|status|connections).
 * A foreground `start` resolves only after the master stopped, and then exits the process so
 * that nothing left in the master's event loop keeps it alive.
 */
export async function runMaster(workers: SupervisedWorker[], settings: MasterSettings, argv: string[] = process.argv): Promise<void> {
  const code = await runCli(workers, settings, argv);
  if (argv[2] === 'start' || argv[2] === 'restart') {
    // A daemonizing parent has printed everything; a stopped master must not linger.
    process.exit(code);
  }
  process.exitCode = code;
}

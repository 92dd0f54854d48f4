/** Where a master keeps its pid file, control socket and daemon log. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Env var that overrides the runtime directory (tests point it at a temp dir). */
export const RUNTIME_DIR_ENV = 'GATEWAYWORKER_RUNTIME_DIR';

/** Resolved file locations for one entry script. */
export interface MasterPaths {
  runtimeDir: string;
  pidFile: string;
  controlSocket: string;
  logFile: string;
}

/** Unix socket paths must fit sun_path (108 bytes on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = 100;

function realpathOr(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return path.resolve(file);
  }
}

/**
 * Compute the paths for `entry` (the script the master runs).
 * The default runtime dir is per entry (hash of its real path) so two apps never collide.
 */
export function resolvePaths(entry: string, settings: { pidFile?: string; logFile?: string } = {}): MasterPaths {
  const real = realpathOr(entry);
  const hash = crypto.createHash('sha1').update(real).digest('hex').slice(0, 12);
  const runtimeDir = process.env[RUNTIME_DIR_ENV] ?? path.join(os.tmpdir(), `gatewayworker-${hash}`);
  const base = path.basename(entry);
  const pidFile = path.resolve(settings.pidFile ?? path.join(runtimeDir, `${base}.pid`));
  let controlSocket = pidFile.replace(/\.pid$/, '') + '.sock';
  if (Buffer.byteLength(controlSocket) > MAX_SOCKET_PATH) {
    const key = crypto.createHash('sha1').update(pidFile).digest('hex').slice(0, 16);
    controlSocket = path.join(os.tmpdir(), `gw-${key}.sock`);
  }
  const logFile = path.resolve(settings.logFile ?? path.join(runtimeDir, `${base}.log`));
  return { runtimeDir, pidFile, controlSocket, logFile };
}

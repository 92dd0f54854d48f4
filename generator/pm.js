// @ts-check
/** Which package manager to install with, and how to run it. */
import { spawn } from 'node:child_process';
import { CliError } from './errors.js';

/** @typedef {'npm' | 'pnpm' | 'yarn'} PackageManager */

/** @type {readonly PackageManager[]} */
export const PACKAGE_MANAGERS = ['npm', 'pnpm', 'yarn'];

/**
 * The package manager that ran us: `npx`/`npm init` set `npm_config_user_agent` to e.g.
 * `pnpm/9.1.0 npm/? node/v20.11.0 linux x64`. Anything else (or nothing) means npm.
 * @param {string | undefined} userAgent
 * @returns {PackageManager}
 */
export function detectPackageManager(userAgent = process.env.npm_config_user_agent) {
  const name = userAgent?.split(' ')[0]?.split('/')[0];
  return PACKAGE_MANAGERS.find((pm) => pm === name) ?? 'npm';
}

/**
 * @param {string} name
 * @returns {PackageManager}
 */
export function parsePackageManager(name) {
  const pm = PACKAGE_MANAGERS.find((p) => p === name);
  if (!pm) throw new CliError('ERR_PACKAGE_MANAGER', `unknown package manager "${name}" (use ${PACKAGE_MANAGERS.join(', ')})`);
  return pm;
}

/**
 * How to run a package.json script with this package manager.
 * @param {PackageManager} pm
 * @param {string} script
 */
export function runScript(pm, script) {
  if (pm === 'npm') return script === 'start' || script === 'test' ? `npm ${script}` : `npm run ${script}`;
  return `${pm} ${script}`;
}

/**
 * Installs the project's dependencies, showing the package manager's own output.
 * @param {PackageManager} pm
 * @param {string} cwd
 * @returns {Promise<void>}
 */
export function install(pm, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(pm, ['install'], { cwd, stdio: 'inherit', shell: process.platform === 'win32' });
    child.on('error', (err) => {
      const reason = /** @type {NodeJS.ErrnoException} */ (err).code === 'ENOENT' ? `${pm} is not installed` : err.message;
      reject(new CliError('ERR_INSTALL', `could not install dependencies: ${reason}; run "${pm} install" in ${cwd}`));
    });
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new CliError('ERR_INSTALL', `"${pm} install" failed (${signal ?? `exit code ${code}`}); the project is in ${cwd}, fix the problem and run it again`));
    });
  });
}

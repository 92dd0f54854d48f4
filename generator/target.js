// @ts-check
/**
 * Where the files go. Everything is generated into a staging folder on the same file system and
 * moved into place only when it is complete, so a failure leaves the target as it was.
 */
import { existsSync, statSync, accessSync, readdirSync, constants } from 'node:fs';
import { mkdtemp, rename, rm, mkdir, readdir } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { CliError } from './errors.js';

/**
 * The closest folder that exists on the way up from `path`.
 * @param {string} path absolute
 */
function existingAncestor(path) {
  let dir = path;
  while (!existsSync(dir)) dir = dirname(dir);
  return dir;
}

/**
 * Throws unless `dir` (or, if it does not exist yet, its closest existing ancestor) is a folder we
 * may write into.
 * @param {string} dir absolute
 */
export function checkWritable(dir) {
  const base = existingAncestor(dir);
  /** @type {string | undefined} */
  let problem;
  if (!statSync(base).isDirectory()) problem = `${base} is not a directory`;
  else {
    try {
      accessSync(base, constants.W_OK);
    } catch {
      problem = `no permission to write in ${base}`;
    }
  }
  if (problem) throw new CliError('ERR_UNWRITABLE', `cannot write to ${dir}: ${problem}`);
}

/**
 * A folder that does not exist or holds nothing but a .git counts as empty.
 * @param {string} dir
 */
export function isEmptyDir(dir) {
  if (!existsSync(dir)) return true;
  if (!statSync(dir).isDirectory()) return false;
  return readdirSync(dir).every((name) => name === '.git');
}

/**
 * Makes a staging folder next to where the files will end up (same file system, so moving the
 * result in is a rename).
 * @param {string} dir the final target, absolute
 * @returns {Promise<string>}
 */
export async function makeStaging(dir) {
  try {
    return await mkdtemp(join(existingAncestor(dir), '.create-gatewayworker-app-'));
  } catch (err) {
    throw new CliError('ERR_UNWRITABLE', `cannot write to ${dir}: ${/** @type {Error} */ (err).message}`);
  }
}

/** @param {string} staging */
export function discard(staging) {
  return rm(staging, { recursive: true, force: true });
}

/**
 * Moves a generated project into `target`: one rename when the target does not exist, else one
 * rename per top-level entry (after emptying the target when overwriting; .git is kept).
 * @param {string} staging
 * @param {string} target
 * @param {boolean} overwrite
 */
export async function commitProject(staging, target, overwrite) {
  if (!existsSync(target)) {
    await mkdir(dirname(target), { recursive: true });
    await rename(staging, target);
    return;
  }
  if (overwrite) {
    // The staging folder may sit inside the target (its closest existing folder): keep it too.
    const keep = new Set(['.git', relative(target, staging)]);
    for (const name of await readdir(target)) {
      if (!keep.has(name)) await rm(join(target, name), { recursive: true, force: true });
    }
  }
  for (const name of await readdir(staging)) await rename(join(staging, name), join(target, name));
  await discard(staging);
}

/**
 * Moves the given paths (relative to both folders) from the staging folder into the project.
 * @param {string} staging
 * @param {string} project
 * @param {string[]} paths
 */
export async function commitPaths(staging, project, paths) {
  for (const path of paths) {
    await mkdir(dirname(resolve(project, path)), { recursive: true });
    await rename(join(staging, path), join(project, path));
  }
  await discard(staging);
}

// @ts-check
/**
 * What the CLI asks when it runs interactively, and the checks shared by prompts and flags.
 * Prompts use the inquirer instance node-plop hands to a generator.
 */
import { listTemplates } from './templates.js';

export const DEFAULT_DIR = 'my-gatewayworker-app';
export const DEFAULT_APP = 'YourApp';
export const DEFAULT_TEMPLATE = 'chat';

/** An app name is a folder under Applications/ and a prefix of worker names: an identifier. */
export const APP_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;

/**
 * @param {string} name
 * @returns {string | undefined} why the name is not usable, if it is not
 */
export function appNameProblem(name) {
  if (!APP_NAME.test(name)) return `invalid app name "${name}": use letters, digits and _, starting with a letter (e.g. ${DEFAULT_APP})`;
  return undefined;
}

/**
 * @param {string} dir
 * @returns {string | undefined}
 */
export function dirProblem(dir) {
  return dir.trim() === '' ? 'the project directory name is empty' : undefined;
}

/**
 * @typedef {object} Missing which answers the flags did not give
 * @property {boolean} [dir]
 * @property {boolean} [template]
 * @property {boolean} [app]
 */

/**
 * Asks for what is missing.
 * @param {any} inquirer node-plop's inquirer
 * @param {Missing} missing
 * @returns {Promise<{ dir?: string, template?: string, app?: string }>}
 */
export function ask(inquirer, missing) {
  const validate = (/** @type {(v: string) => string | undefined} */ check) => (/** @type {string} */ value) => check(value.trim()) ?? true;
  return inquirer.prompt([
    missing.dir && { type: 'input', name: 'dir', message: 'Project directory:', default: DEFAULT_DIR, validate: validate(dirProblem), filter: (/** @type {string} */ v) => v.trim() },
    missing.template && {
      type: 'list',
      name: 'template',
      message: 'Template:',
      default: DEFAULT_TEMPLATE,
      choices: listTemplates().map((t) => ({ name: `${t.name} — ${t.description}${t.preview ? ' (preview)' : ''}`, value: t.name })),
    },
    missing.app && { type: 'input', name: 'app', message: 'App name (a folder in Applications/):', default: DEFAULT_APP, validate: validate(appNameProblem), filter: (/** @type {string} */ v) => v.trim() },
  ].filter(Boolean));
}

/**
 * @param {any} inquirer
 * @param {string} dir
 * @returns {Promise<boolean>}
 */
export async function confirmOverwrite(inquirer, dir) {
  const { overwrite } = await inquirer.prompt([
    { type: 'confirm', name: 'overwrite', message: `${dir} is not empty. Remove its files (except .git) and continue?`, default: false },
  ]);
  return overwrite;
}

// @ts-check
/** The templates in templates/: each folder with a template.json is one. */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliError } from './errors.js';
import { renderAdditions } from './package.js';

/**
 * The folder of templates: templates/ of this package. GATEWAYWORKER_TEMPLATES_DIR replaces it
 * (tests point it at fixture templates); that folder needs a base/ as well.
 */
export const TEMPLATES_DIR = process.env.GATEWAYWORKER_TEMPLATES_DIR
  ? resolve(process.env.GATEWAYWORKER_TEMPLATES_DIR)
  : fileURLToPath(new URL('../templates/', import.meta.url));

/**
 * @typedef {object} TemplateInfo
 * @property {string} name folder name, the value of --template
 * @property {string} description one line, shown in the prompt
 * @property {boolean} preview true while the template is only a skeleton
 * @property {Record<string, number>} ports default ports, the handlebars names used in its files
 * @property {string} url what to open once it runs (handlebars, e.g. http://localhost:{{gatewayPort}})
 * @property {unknown} [package] what it adds to package.json (see package.js)
 */

/** @returns {TemplateInfo[]} the default (chat) first */
export function listTemplates() {
  return readdirSync(TEMPLATES_DIR)
    .filter((name) => existsSync(join(TEMPLATES_DIR, name, 'template.json')))
    .map((name) => ({ name, ...JSON.parse(readFileSync(join(TEMPLATES_DIR, name, 'template.json'), 'utf8')) }))
    .map((t) => ({ preview: false, ...t }))
    .sort((a, b) => Number(b.name === 'chat') - Number(a.name === 'chat') || a.name.localeCompare(b.name));
}

/**
 * @param {string} name
 * @returns {TemplateInfo}
 */
export function getTemplate(name) {
  const all = listTemplates();
  const found = all.find((t) => t.name === name);
  if (!found) throw new CliError('ERR_TEMPLATE', `unknown template "${name}" (use ${all.map((t) => t.name).join(', ')})`);
  // A malformed "package" field fails here, before anything is written.
  renderAdditions(found.package, (text) => text, name);
  return found;
}

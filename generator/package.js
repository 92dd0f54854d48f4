// @ts-check
/**
 * What a template adds to the generated package.json. Its template.json may carry
 * `"package": { "scripts": {…}, "dependencies": {…}, "devDependencies": {…} }`; the values are
 * handlebars strings rendered with the same data as its files (e.g. "{{{versions.mqtt}}}").
 * A new project takes them over base/package.json (the template wins); `add` only adds what the
 * project's package.json does not have yet and keeps what the user has.
 */
import { CliError } from './errors.js';

/** @typedef {'scripts' | 'dependencies' | 'devDependencies'} PackageSection */
/** @typedef {Partial<Record<PackageSection, Record<string, string>>>} PackageAdditions */
/** @typedef {Record<string, any>} PackageJson */

/**
 * A key `add` left as the user had it.
 * @typedef {object} KeptKey
 * @property {string} key where it is, e.g. `scripts.device:add`, `dependencies.mqtt`
 * @property {string} theirs the project's value
 * @property {string} ours the template's value
 */

/** @type {readonly PackageSection[]} */
export const PACKAGE_SECTIONS = ['scripts', 'dependencies', 'devDependencies'];

/** Where a dependency may already be listed; a package belongs in only one of them. */
const DEPENDENCY_SECTIONS = ['dependencies', 'devDependencies', 'optionalDependencies'];

/** @param {string} section */
const isDependencySection = (section) => DEPENDENCY_SECTIONS.includes(section);

/** @param {unknown} value @returns {value is Record<string, unknown>} */
const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Checks a template's `package` field and renders its values.
 * @param {unknown} field the field as read from template.json (undefined: nothing to add)
 * @param {(text: string) => string} render handlebars with the render data
 * @param {string} template name, for the error message
 * @returns {PackageAdditions}
 */
export function renderAdditions(field, render, template) {
  if (field === undefined) return {};
  /** @param {string} what */
  const bad = (what) => new CliError('ERR_TEMPLATE', `template ${template}: ${what} in template.json`);
  if (!isObject(field)) throw bad('"package" must be an object');
  /** @type {PackageAdditions} */
  const out = {};
  for (const [section, entries] of Object.entries(field)) {
    if (!PACKAGE_SECTIONS.includes(/** @type {PackageSection} */ (section))) throw bad(`package.${section} is not supported (use ${PACKAGE_SECTIONS.join(', ')})`);
    if (!isObject(entries)) throw bad(`package.${section} must be an object`);
    /** @type {Record<string, string>} */
    const rendered = {};
    for (const [key, value] of Object.entries(entries)) {
      if (typeof value !== 'string') throw bad(`package.${section}.${key} must be a string`);
      rendered[key] = render(value);
    }
    out[/** @type {PackageSection} */ (section)] = rendered;
  }
  return out;
}

/** @param {PackageAdditions} additions */
export const isEmpty = (additions) => PACKAGE_SECTIONS.every((s) => Object.keys(additions[s] ?? {}).length === 0);

/**
 * `obj` without `keys`, order kept.
 * @param {Record<string, unknown>} obj
 * @param {string[]} keys
 */
const without = (obj, keys) => Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));

/**
 * A new project's package.json: base's, with the template's additions over it. A key both have
 * keeps its place and takes the template's value; new keys follow base's. A dependency the
 * template lists moves out of base's other dependency section.
 * @param {PackageJson} base
 * @param {PackageAdditions} additions
 * @returns {PackageJson}
 */
export function mergePackage(base, additions) {
  const pkg = { ...base };
  for (const section of PACKAGE_SECTIONS) {
    const add = additions[section];
    if (!add) continue;
    if (isDependencySection(section)) {
      for (const other of DEPENDENCY_SECTIONS) {
        if (other !== section && isObject(pkg[other])) pkg[other] = without(pkg[other], Object.keys(add));
      }
    }
    pkg[section] = { ...pkg[section], ...add };
  }
  return pkg;
}

/**
 * Where the project already has `key` of `section`: the script, or the dependency in any
 * dependency section.
 * @param {PackageJson} pkg
 * @param {PackageSection} section
 * @param {string} key
 * @returns {string | undefined} the section it is in
 */
function sectionHolding(pkg, section, key) {
  const candidates = isDependencySection(section) ? DEPENDENCY_SECTIONS : [section];
  return candidates.find((s) => isObject(pkg[s]) && Object.hasOwn(pkg[s], key));
}

/**
 * `add`: the template's additions put into an existing package.json without changing anything
 * the user has. A key that is there with another value stays as it is and is reported.
 * @param {PackageJson} existing
 * @param {PackageAdditions} additions
 * @returns {{ pkg: PackageJson, added: string[], kept: KeptKey[] }}
 */
export function addToPackage(existing, additions) {
  const pkg = { ...existing };
  /** @type {string[]} */
  const added = [];
  /** @type {KeptKey[]} */
  const kept = [];
  for (const section of PACKAGE_SECTIONS) {
    for (const [key, ours] of Object.entries(additions[section] ?? {})) {
      const holder = sectionHolding(pkg, section, key);
      if (holder === undefined) {
        pkg[section] = { ...pkg[section], [key]: ours };
        added.push(`${section}.${key}`);
      } else if (pkg[holder][key] !== ours) {
        kept.push({ key: `${holder}.${key}`, theirs: String(pkg[holder][key]), ours });
      }
    }
  }
  return { pkg, added, kept };
}

/**
 * The one warning line for a kept key.
 * @param {KeptKey} kept
 * @param {string} template
 */
export function keptWarning({ key, theirs, ours }, template) {
  return `warning: package.json already has ${key} = ${JSON.stringify(theirs)}; kept it (template ${template} has ${JSON.stringify(ours)})`;
}

/**
 * JSON text for `pkg` in the style of `text` (its indentation, line ends and final newline).
 * @param {PackageJson} pkg
 * @param {string} text
 */
export function stringifyLike(pkg, text) {
  const indent = /^[ \t]+(?=")/m.exec(text)?.[0] ?? '  ';
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const json = JSON.stringify(pkg, null, indent).replace(/\n/g, eol);
  return /\r?\n$/.test(text) ? `${json}${eol}` : json;
}

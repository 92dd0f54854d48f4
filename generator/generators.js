// @ts-check
/**
 * The node-plop generators: `project` writes a whole app, `app` adds one more
 * Applications/<App>/ to an existing project. Both render the files of templates/ with handlebars;
 * this module also works out the data they are rendered with (names, ports, dependency versions).
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import nodePlop from 'node-plop';
import { CliError } from './errors.js';
import { addToPackage, isEmpty, mergePackage, renderAdditions, stringifyLike } from './package.js';
import { TEMPLATES_DIR, getTemplate } from './templates.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** @param {string} file */
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));

/**
 * How the generated app depends on the runtime: a `file:` link when we run from a clone of this
 * repo (so everything works offline against the checkout), a version range when installed.
 * @returns {string}
 */
export function gatewayworkerSpec() {
  const runtime = join(ROOT, 'runtime');
  const fromCheckout = existsSync(join(runtime, 'package.json')) && !ROOT.split(sep).includes('node_modules');
  if (fromCheckout) return `file:${runtime}`;
  return `^${readJson(join(ROOT, 'package.json')).version}`;
}

/**
 * Versions of the tools a generated app uses: the ones this repo itself is tested with (so an
 * offline install from this checkout finds them in the cache), with fallbacks.
 * @returns {Record<string, string>}
 */
function toolVersions() {
  const root = readJson(join(ROOT, 'package.json'));
  const runtimePkg = join(ROOT, 'runtime', 'package.json');
  const runtime = existsSync(runtimePkg) ? readJson(runtimePkg) : {};
  /** @param {string} name @param {string} fallback */
  const pick = (name, fallback) =>
    root.devDependencies?.[name] ?? root.dependencies?.[name] ?? runtime.dependencies?.[name] ?? runtime.devDependencies?.[name] ?? fallback;
  return {
    tsx: pick('tsx', '^4.20.0'),
    tap: pick('tap', '^21.1.0'),
    typescript: pick('typescript', '~5.9.0'),
    typesNode: pick('@types/node', '^20.19.0'),
    ws: pick('ws', '^8.18.0'),
    typesWs: pick('@types/ws', '^8.18.0'),
    mqtt: pick('mqtt', '^5.10.0'),
  };
}

/**
 * A valid npm package name from a folder name.
 * @param {string} dir
 */
export function projectNameOf(dir) {
  const name = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9._~-]+/g, '-')
    .replace(/^[._-]+|-+$/g, '');
  return name || 'gatewayworker-app';
}

/**
 * Environment variable prefix of an added app (`OtherApp` → `OTHER_APP_`), so two apps in one
 * project can be given different ports; the first app uses the plain names.
 * @param {string} appName
 */
export function envPrefixOf(appName) {
  return `${appName.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}_`;
}

/**
 * Every number of 3 to 5 digits in the .ts files directly in each Applications/<App>/ (start
 * files, config.ts, …; not subfolders): the ports the existing apps may use.
 * @param {string} project
 * @returns {Set<number>}
 */
function numbersInApps(project) {
  const used = new Set();
  const appsDir = join(project, 'Applications');
  for (const app of readdirSync(appsDir, { withFileTypes: true })) {
    if (!app.isDirectory()) continue;
    for (const file of readdirSync(join(appsDir, app.name), { withFileTypes: true })) {
      if (!file.isFile() || !file.name.endsWith('.ts')) continue;
      for (const m of readFileSync(join(appsDir, app.name, file.name), 'utf8').matchAll(/\b\d{3,5}\b/g)) used.add(Number(m[0]));
    }
  }
  return used;
}

/**
 * Default ports for an app added to a project: the template's, moved past every port number the
 * existing apps' files mention (see numbersInApps), so the apps can run side by side.
 * @param {string} project
 * @param {Record<string, number>} defaults
 * @returns {Record<string, number>}
 */
export function freePortsFor(project, defaults) {
  const used = numbersInApps(project);
  /** @type {Record<string, number>} */
  const ports = {};
  for (const [key, port] of Object.entries(defaults)) {
    // Internal gateway ports come in a block (one per process): keep blocks 100 apart.
    const step = key === 'startPort' ? 100 : 1;
    const span = key === 'startPort' ? 100 : 1;
    let p = port;
    const taken = (/** @type {number} */ q) => {
      for (let i = 0; i < span; i++) if (used.has(q + i)) return true;
      return Object.values(ports).includes(q);
    };
    while (taken(p)) p += step;
    ports[key] = p;
  }
  return ports;
}

/**
 * @typedef {object} RenderData
 * @property {string} appName
 * @property {string} projectName
 * @property {string} envPrefix '' for the first app
 * @property {string} gatewayworker dependency spec
 * @property {Record<string, string>} versions
 * @property {string} template
 */

/**
 * @param {{ appName: string, projectName: string, template: string, ports: Record<string, number>, envPrefix?: string }} options
 * @returns {RenderData & Record<string, unknown>}
 */
export function renderData({ appName, projectName, template, ports, envPrefix = '' }) {
  return { appName, projectName, template, envPrefix, gatewayworker: gatewayworkerSpec(), versions: toolVersions(), ...ports };
}

/**
 * The template's package.json additions (template.json's `package`), rendered with `data`.
 * @param {any} plop
 * @param {RenderData} data
 */
function templateAdditions(plop, data) {
  return renderAdditions(getTemplate(data.template).package, (text) => plop.renderString(text, data), data.template);
}

/**
 * For `add`: puts the template's package.json additions into a copy of the project's package.json
 * in `staging`, without changing what the project has. Writes nothing when there is nothing new.
 * @param {any} plop
 * @param {string} staging
 * @param {string} project
 * @param {RenderData} data
 * @returns {{ added: string[], kept: import('./package.js').KeptKey[] }}
 */
export function stagePackageAdditions(plop, staging, project, data) {
  const additions = templateAdditions(plop, data);
  if (isEmpty(additions)) return { added: [], kept: [] };
  const text = readFileSync(join(project, 'package.json'), 'utf8');
  const { pkg, added, kept } = addToPackage(JSON.parse(text), additions);
  if (added.length > 0) writeFileSync(join(staging, 'package.json'), stringifyLike(pkg, text));
  return { added, kept };
}

/**
 * A node-plop instance writing under `destBasePath`, with both generators.
 * @param {string} destBasePath
 * @param {(inquirer: any) => Promise<object>} [prompts] asks for missing answers (interactive runs)
 */
export async function createPlop(destBasePath, prompts = async () => ({})) {
  const plop = await nodePlop('', { destBasePath, force: false });
  // Action paths (templateFiles) are relative to this folder.
  plop.setPlopfilePath(TEMPLATES_DIR);

  // Absolute bases: node-plop strips `base` from each relative path by string replacement, which
  // would mangle a file whose name contains the template's name.
  const abs = (/** @type {string} */ dir) => join(TEMPLATES_DIR, dir);
  const addMany = (/** @type {string} */ from, /** @type {string} */ to, /** @type {string[]} */ ignore = []) => ({
    type: 'addMany',
    destination: to,
    base: abs(from),
    templateFiles: `${from}/**`,
    globOptions: { dot: true, ignore },
    verbose: false,
  });

  /** Action: the template's package.json additions over the package.json written from base/. */
  const mergeTemplatePackage = (/** @type {any} */ data) => {
    const additions = templateAdditions(plop, data);
    if (isEmpty(additions)) return 'package.json: nothing to add';
    const file = join(destBasePath, 'package.json');
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, stringifyLike(mergePackage(JSON.parse(text), additions), text));
    return file;
  };

  plop.setGenerator('project', {
    description: 'a new gatewayworker project',
    prompts,
    actions: (data) => {
      const t = /** @type {RenderData} */ (data).template;
      return [
        addMany('base', '.', ['base/_gitignore']),
        // npm drops .gitignore from published packages, so the template ships it as _gitignore.
        { type: 'add', path: '.gitignore', templateFile: 'base/_gitignore' },
        addMany(t, '.', [`${t}/app/**`, `${t}/template.json`]),
        addMany(`${t}/app`, 'Applications/{{appName}}'),
        mergeTemplatePackage,
      ];
    },
  });

  plop.setGenerator('app', {
    description: 'another app in Applications/ of an existing project',
    prompts,
    actions: (data) => {
      const { template: t, shared } = /** @type {RenderData & { shared: string[] }} */ (data);
      return [addMany(`${t}/app`, 'Applications/{{appName}}'), ...shared.map((folder) => addMany(`${t}/${folder}`, folder))];
    },
  });

  return plop;
}

/**
 * Runs a generator's actions and turns node-plop's failure list into one error.
 * @param {any} generator
 * @param {object} data
 */
export async function runActions(generator, data) {
  const { failures } = await generator.runActions(data);
  if (failures.length > 0) {
    const first = failures[0];
    throw new CliError('ERR_GENERATE', `could not write ${first.path || first.type}: ${String(first.error).split('\n')[0]}`);
  }
}

/**
 * Folders of a template's root an added app brings along when the project has none yet: its page
 * (web/) and the files its package.json scripts run (scripts/).
 * @param {string} template
 * @param {string} project
 * @returns {string[]}
 */
export function sharedFoldersFor(template, project) {
  return ['web', 'scripts'].filter((folder) => existsSync(join(TEMPLATES_DIR, template, folder)) && !existsSync(join(project, folder)));
}

/** Whether `dir` holds a gatewayworker project. @param {string} dir */
export function isProject(dir) {
  const pkg = join(dir, 'package.json');
  if (!existsSync(pkg) || !existsSync(join(dir, 'Applications')) || !existsSync(join(dir, 'start.ts'))) return false;
  try {
    const { dependencies = {}, devDependencies = {} } = readJson(pkg);
    return 'gatewayworker' in dependencies || 'gatewayworker' in devDependencies;
  } catch {
    return false;
  }
}


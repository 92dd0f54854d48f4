// @ts-check
/**
 * create-gatewayworker-app: arguments, then the flow: ask (if interactive) → check everything →
 * generate into a staging folder → move into place → install → print next steps.
 */
import { readFileSync, existsSync } from 'node:fs';
import { relative, resolve, join } from 'node:path';
import { parseArgs } from 'node:util';
import { CliError, formatError } from './errors.js';
import { DEFAULT_APP, DEFAULT_DIR, DEFAULT_TEMPLATE, appNameProblem, ask, confirmOverwrite, dirProblem } from './prompts.js';
import { getTemplate } from './templates.js';
import { createPlop, envPrefixOf, freePortsFor, isProject, projectNameOf, renderData, runActions, sharedFoldersFor, stagePackageAdditions } from './generators.js';
import { keptWarning } from './package.js';
import { checkWritable, commitPaths, commitProject, discard, isEmptyDir, makeStaging } from './target.js';
import { detectPackageManager, install, parsePackageManager, runScript } from './pm.js';

const USAGE = `Usage:
  create-gatewayworker-app [dir] [options]             create a project (default dir: ${DEFAULT_DIR})
  create-gatewayworker-app add <App> [options]         add Applications/<App>/ to a project

Options:
  -t, --template <name>          chat (default), mqtt-hub, game-room
  -a, --app <Name>               app folder in Applications/ (default: ${DEFAULT_APP})
  -y, --yes, --no-interactive    ask nothing, use defaults for what is not given
      --overwrite                empty a non-empty target directory (keeps .git)
      --skip-install             do not install dependencies
      --package-manager <pm>     npm, pnpm or yarn (default: the one that ran this)
      --dir <dir>                the project to add to (add only; default: .)
  -h, --help                     show this help
  -v, --version                  show the version`;

/** @type {import('node:util').ParseArgsConfig['options']} */
const OPTIONS = {
  template: { type: 'string', short: 't' },
  app: { type: 'string', short: 'a' },
  yes: { type: 'boolean', short: 'y' },
  'no-interactive': { type: 'boolean' },
  overwrite: { type: 'boolean' },
  'skip-install': { type: 'boolean' },
  'package-manager': { type: 'string' },
  dir: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
};

/**
 * @typedef {object} Flags
 * @property {string} [template]
 * @property {string} [app]
 * @property {boolean} [yes]
 * @property {boolean} [no-interactive]
 * @property {boolean} [overwrite]
 * @property {boolean} [skip-install]
 * @property {string} [package-manager]
 * @property {string} [dir]
 * @property {boolean} [help]
 * @property {boolean} [version]
 */

/**
 * @param {string[]} argv
 * @returns {{ flags: Flags, positionals: string[] }}
 */
function parse(argv) {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    return { flags: /** @type {Flags} */ (values), positionals };
  } catch (err) {
    const e = /** @type {NodeJS.ErrnoException} */ (err);
    // node's messages are long and suggest "--"; keep the line short and point at --help.
    const option = /'([^']+)'/.exec(e.message)?.[1];
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new CliError('ERR_ARGS', `unknown option ${option} (see --help)`);
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new CliError('ERR_ARGS', `option ${option} needs a value (see --help)`);
    throw new CliError('ERR_ARGS', `${e.message.split('\n')[0]} (see --help)`);
  }
}

/** CI=true, no terminal or --yes: ask nothing. @param {Flags} flags */
function isInteractive(flags) {
  const ci = process.env.CI;
  const inCi = ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
  return !flags.yes && !flags['no-interactive'] && !inCi && Boolean(process.stdin.isTTY);
}

/** @param {string | undefined} name */
function checkAppName(name) {
  const problem = name === undefined ? undefined : appNameProblem(name);
  if (problem) throw new CliError('ERR_APP_NAME', problem);
}

/**
 * Checks the flags that can be checked before asking anything.
 * @param {Flags} flags
 */
function checkFlags(flags) {
  checkAppName(flags.app);
  if (flags.template !== undefined) getTemplate(flags.template);
  if (flags['package-manager'] !== undefined) parsePackageManager(flags['package-manager']);
}

/** @param {string} line */
const say = (line = '') => process.stdout.write(`${line}\n`);

/** One line on stderr that does not stop the run. @param {string} line */
const warn = (line) => process.stderr.write(`create-gatewayworker-app: ${line}\n`);

/**
 * Renders a template's "open this" URL with its ports.
 * @param {string} url
 * @param {Record<string, number>} ports
 */
const renderUrl = (url, ports) => url.replace(/\{\{(\w+)\}\}/g, (_, key) => String(ports[key] ?? ''));

/** @param {string} name */
function previewNotice(name) {
  const t = getTemplate(name);
  if (t.preview) say(`Note: template ${name} is a preview: its layout and start files are in place, its real content is still to come.`);
}

/**
 * `create-gatewayworker-app [dir]`
 * @param {Flags} flags
 * @param {string[]} positionals
 */
async function createProject(flags, positionals) {
  if (positionals.length > 1) throw new CliError('ERR_ARGS', `unexpected argument "${positionals[1]}" (see --help)`);
  if (positionals[0] !== undefined && flags.dir !== undefined) throw new CliError('ERR_ARGS', 'give the directory once, either as an argument or with --dir');
  checkFlags(flags);
  const interactive = isInteractive(flags);

  const given = { dir: positionals[0] ?? flags.dir, template: flags.template, app: flags.app };
  /** @type {any} */
  let inquirer;
  const plopForPrompts = await createPlop(process.cwd(), async (inq) => {
    inquirer = inq;
    return ask(inq, { dir: given.dir === undefined, template: given.template === undefined, app: given.app === undefined });
  });
  const answers = interactive ? /** @type {typeof given} */ (await plopForPrompts.getGenerator('project').runPrompts()) : {};
  const dir = given.dir ?? answers.dir ?? DEFAULT_DIR;
  const template = given.template ?? answers.template ?? DEFAULT_TEMPLATE;
  const appName = given.app ?? answers.app ?? DEFAULT_APP;
  const dirIssue = dirProblem(dir);
  if (dirIssue) throw new CliError('ERR_ARGS', dirIssue);
  checkAppName(appName);
  const info = getTemplate(template);

  const target = resolve(dir);
  checkWritable(target);
  let overwrite = Boolean(flags.overwrite);
  if (!isEmptyDir(target)) {
    if (!overwrite && interactive && inquirer) overwrite = await confirmOverwrite(inquirer, dir);
    if (!overwrite) throw new CliError('ERR_TARGET_NOT_EMPTY', `${dir} is not empty (use --overwrite to replace its files, or choose another directory)`);
  }

  previewNotice(template);
  const data = renderData({ appName, projectName: projectNameOf(target), template, ports: info.ports });
  const staging = await makeStaging(target);
  try {
    const plop = await createPlop(staging);
    await runActions(plop.getGenerator('project'), data);
    await commitProject(staging, target, overwrite);
  } catch (err) {
    await discard(staging);
    throw err;
  }

  say(`Created ${template} project in ${target} (app ${appName}).`);
  await finish(flags, target, [`open ${renderUrl(info.url, info.ports)}`]);
}

/**
 * `create-gatewayworker-app add <App>`
 * @param {Flags} flags
 * @param {string[]} positionals
 */
async function addApp(flags, positionals) {
  if (positionals.length > 2) throw new CliError('ERR_ARGS', `unexpected argument "${positionals[2]}" (see --help)`);
  if (positionals[1] !== undefined && flags.app !== undefined) throw new CliError('ERR_ARGS', 'give the app name once, either as an argument or with --app');
  checkFlags({ ...flags, app: positionals[1] ?? flags.app });
  const interactive = isInteractive(flags);
  const project = resolve(flags.dir ?? '.');
  if (!isProject(project)) throw new CliError('ERR_NOT_A_PROJECT', `${project} is not a gatewayworker project (no start.ts, Applications/ and a gatewayworker dependency)`);

  const given = { template: flags.template, app: positionals[1] ?? flags.app };
  const plopForPrompts = await createPlop(project, (inq) => ask(inq, { template: given.template === undefined, app: given.app === undefined }));
  const answers = interactive ? /** @type {typeof given} */ (await plopForPrompts.getGenerator('app').runPrompts()) : {};
  const appName = given.app ?? answers.app;
  if (appName === undefined) throw new CliError('ERR_APP_NAME', 'add needs an app name: create-gatewayworker-app add <App> --template <name>');
  checkAppName(appName);
  const template = given.template ?? answers.template ?? DEFAULT_TEMPLATE;
  const info = getTemplate(template);
  const appDir = join(project, 'Applications', appName);
  if (existsSync(appDir)) throw new CliError('ERR_APP_EXISTS', `Applications/${appName} already exists in ${project}`);
  checkWritable(join(project, 'Applications'));

  previewNotice(template);
  const ports = freePortsFor(project, info.ports);
  const envPrefix = envPrefixOf(appName);
  // A project without a web/ (scripts/) gets the template's page (scripts) too.
  const shared = sharedFoldersFor(template, project);
  const data = { ...renderData({ appName, projectName: projectNameOf(project), template, ports, envPrefix }), shared };
  const staging = await makeStaging(project);
  /** @type {ReturnType<typeof stagePackageAdditions>} */
  let pkgChange;
  try {
    const plop = await createPlop(staging);
    await runActions(plop.getGenerator('app'), data);
    pkgChange = stagePackageAdditions(plop, staging, project, data);
    const pkgPaths = pkgChange.added.length > 0 ? ['package.json'] : [];
    await commitPaths(staging, project, [join('Applications', appName), ...shared, ...pkgPaths]);
  } catch (err) {
    await discard(staging);
    throw err;
  }

  say(`Added Applications/${appName} (${template}) to ${project}.`);
  say(`Its settings use the ${envPrefix} prefix: ${envPrefix}REGISTER_ADDRESS, ${envPrefix}START_PORT, … ; default ports: ${Object.entries(ports).map(([k, v]) => `${k} ${v}`).join(', ')}.`);
  say('start.ts starts it together with the other apps.');
  for (const kept of pkgChange.kept) warn(keptWarning(kept, template));
  if (pkgChange.added.length > 0) {
    const pm = flags['package-manager'] ? parsePackageManager(flags['package-manager']) : detectPackageManager();
    const newDependencies = pkgChange.added.some((key) => !key.startsWith('scripts.'));
    say(`Added to package.json: ${pkgChange.added.join(', ')}${newDependencies ? `; run "${pm} install"` : ''}.`);
  }
}

/**
 * Installs (unless --skip-install) and prints what to do next.
 * @param {Flags} flags
 * @param {string} target
 * @param {string[]} extra
 */
async function finish(flags, target, extra) {
  const pm = flags['package-manager'] ? parsePackageManager(flags['package-manager']) : detectPackageManager();
  const installed = !flags['skip-install'];
  if (installed) {
    say(`Installing dependencies with ${pm}…`);
    await install(pm, target);
  }
  const rel = relative(process.cwd(), target);
  const steps = [
    ...(rel === '' ? [] : [`cd ${/\s/.test(rel) ? JSON.stringify(rel) : rel}`]),
    ...(installed ? [] : [`${pm} install`]),
    runScript(pm, 'start'),
    ...extra,
  ];
  say();
  say('Next steps:');
  for (const step of steps) say(`  ${step}`);
}

/**
 * Runs the CLI; resolves with the exit code.
 * @param {string[]} argv
 * @returns {Promise<number>}
 */
export async function main(argv) {
  try {
    const { flags, positionals } = parse(argv);
    if (flags.help) {
      say(USAGE);
      return 0;
    }
    if (flags.version) {
      say(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
      return 0;
    }
    if (positionals[0] === 'add') await addApp(flags, positionals);
    else await createProject(flags, positionals);
    return 0;
  } catch (err) {
    // inquirer's Ctrl-C
    if (err instanceof Error && err.name === 'ExitPromptError') err = new CliError('ERR_CANCELLED', 'cancelled');
    process.stderr.write(`${formatError(err)}\n`);
    if (process.env.DEBUG && err instanceof Error && !(err instanceof CliError)) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}

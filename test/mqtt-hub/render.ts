/**
 * Renders files of templates/mqtt-hub into a throw-away project inside this folder (so that
 * 'gatewayworker' and tsx resolve to the repo's node_modules), the way the generator would:
 * `app/**` to Applications/<App>/, the rest to the project root.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Handlebars from 'handlebars';
import type { Test } from 'tap';

const here = path.dirname(fileURLToPath(import.meta.url));
const templateDir = path.join(here, '..', '..', 'templates', 'mqtt-hub');

/** A rendered project. */
export interface RenderedHub {
  /** Project root (holds Applications/, scripts/, data/). */
  root: string;
  /** Applications/<App>/. */
  app: string;
  /** Imports a rendered module by its path under the project root. */
  load<T>(file: string): Promise<T>;
}

/** What the placeholders become. */
export const HUB_DATA = {
  appName: 'Hub',
  projectName: 'hub-test',
  envPrefix: '',
  mqttPort: 1883,
  wsPort: 8083,
  registerPort: 1236,
  startPort: 2900,
  storePort: 1240,
};

/**
 * Renders `files` (paths inside templates/mqtt-hub, e.g. `app/config.ts`) into a fresh directory,
 * removed when `t` ends. Only the named files: others in the template may be mid-edit.
 */
export function renderHub(t: Test, files: string[]): RenderedHub {
  const root = fs.mkdtempSync(path.join(here, '.tmp-'));
  t.teardown(() => fs.rmSync(root, { recursive: true, force: true }));
  const app = path.join(root, 'Applications', HUB_DATA.appName);
  for (const file of files) {
    const source = fs.readFileSync(path.join(templateDir, file), 'utf8');
    const target = file.startsWith('app/') ? path.join(app, file.slice('app/'.length)) : path.join(root, file);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, Handlebars.compile(source)(HUB_DATA));
  }
  return {
    root,
    app,
    load: <T>(file: string) => import(new URL(`file://${path.join(root, file)}`).href) as Promise<T>,
  };
}

/** The template files the store, ACL and credential tests need. */
export const HUB_CORE_FILES = [
  'app/config.ts',
  'app/credentials.ts',
  'app/acl.ts',
  'app/store/state.ts',
  'app/store/server.ts',
  'app/store/client.ts',
  'app/start_store.ts',
  'scripts/device-add.ts',
];

/** The template files the handler tests need: the broker logic, what it imports, the HTTP guard. */
export const HUB_HANDLER_FILES = [
  ...HUB_CORE_FILES,
  'app/Events.ts',
  'app/http-guard.ts',
  'app/handlers/connect.ts',
  'app/handlers/context.ts',
  'app/handlers/disconnect.ts',
  'app/handlers/publish.ts',
  'app/handlers/store.ts',
  'app/handlers/subscribe.ts',
  'app/handlers/unsubscribe.ts',
  'app/handlers/will.ts',
];

/** Runs the generator CLI as a child process, the way a person (or CI) would. */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../generator/bin.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node generator/bin.js …args` in `cwd`, stdin not a TTY, CI unset unless given. */
export function run(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Run {
  const { CI: _ci, npm_config_user_agent: _ua, ...base } = process.env;
  const r = spawnSync(process.execPath, [BIN, ...args], {
    cwd,
    env: { ...base, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A fresh temporary folder, removed when the test ends. */
export function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cgwa-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Every file under `dir` (relative path → content), to compare a folder before and after. */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const path = rel ? `${rel}/${name}` : name;
      if (statSync(join(dir, path)).isDirectory()) {
        out[`${path}/`] = '';
        walk(path);
      } else out[path] = readFileSync(join(dir, path), 'utf8');
    }
  };
  walk('');
  return out;
}

/** Files of a generated project, relative paths, sorted. */
export function files(dir: string): string[] {
  return Object.keys(snapshot(dir)).filter((p) => !p.endsWith('/')).sort();
}

/** A fixture template: its template.json, and files written over a copy of templates/chat. */
export interface FixtureTemplate {
  json: Record<string, unknown>;
  files?: Record<string, string>;
}

/**
 * A templates folder for GATEWAYWORKER_TEMPLATES_DIR: copies of templates/base and templates/chat,
 * plus the given templates (each a copy of chat with its own template.json and extra files).
 */
export function fixtureTemplates(t: { teardown(fn: () => void): void }, templates: Record<string, FixtureTemplate>): string {
  const dir = tempDir(t);
  for (const name of ['base', 'chat']) cpSync(join(ROOT, 'templates', name), join(dir, name), { recursive: true });
  for (const [name, { json, files = {} }] of Object.entries(templates)) {
    cpSync(join(ROOT, 'templates/chat'), join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, 'template.json'), JSON.stringify(json, null, 2));
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(join(dir, name, path, '..'), { recursive: true });
      writeFileSync(join(dir, name, path), content);
    }
  }
  return dir;
}

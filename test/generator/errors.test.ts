/**
 * Every bad input: exit code 1, exactly one line on stderr, and the file system as it was.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { run, snapshot, tempDir } from './helpers.ts';

/** Runs the CLI in a prepared folder and checks the failure contract. */
function fails(t: Tap.Test, args: string[], message: RegExp, prepare: (cwd: string) => void = () => {}, cwdOf = (cwd: string) => cwd) {
  const root = tempDir(t);
  prepare(root);
  const before = snapshot(root);
  const r = run(args, cwdOf(root));
  t.equal(r.code, 1, `${args.join(' ')} exits 1`);
  const lines = r.stderr.trimEnd().split('\n');
  t.equal(lines.length, 1, `one line on stderr: ${r.stderr}`);
  t.match(lines[0], /^create-gatewayworker-app: /);
  t.match(lines[0], message);
  t.same(snapshot(root), before, 'nothing written');
}

/** A small project made by the CLI itself, for the `add` cases. */
function project(cwd: string) {
  const r = run(['proj', '--yes', '--skip-install'], cwd);
  if (r.code !== 0) throw new Error(r.stderr);
}

t.test('invalid app name', async (t) => {
  for (const name of ['1App', 'my-app', 'My App', '_x', 'Ünicode']) {
    fails(t, ['app', '--app', name, '--yes', '--skip-install'], /invalid app name/);
  }
});

t.test('unknown template', async (t) => {
  fails(t, ['app', '--template', 'nope', '--yes', '--skip-install'], /unknown template "nope" \(use chat, /);
  fails(t, ['app', '--template', 'base', '--yes', '--skip-install'], /unknown template "base"/);
});

t.test('non-empty target without --overwrite', async (t) => {
  fails(t, ['app', '--yes', '--skip-install'], /app is not empty \(use --overwrite/, (cwd) => {
    mkdirSync(join(cwd, 'app'));
    writeFileSync(join(cwd, 'app/keep.txt'), 'mine');
  });
});

t.test('unwritable path', async (t) => {
  // Under a regular file: fails for root too.
  fails(t, ['file.txt/app', '--yes', '--skip-install'], /cannot write to .*file\.txt\/app: .*file\.txt is not a directory/, (cwd) => {
    writeFileSync(join(cwd, 'file.txt'), 'x');
  });
  fails(t, ['file.txt', '--yes', '--skip-install', '--overwrite'], /cannot write to .*file\.txt: .*is not a directory/, (cwd) => {
    writeFileSync(join(cwd, 'file.txt'), 'x');
  });
  // A read-only folder only stops someone who is not root.
  if (process.getuid?.() !== 0) {
    fails(t, ['ro/app', '--yes', '--skip-install'], /cannot write to .*no permission/, (cwd) => {
      mkdirSync(join(cwd, 'ro'));
      chmodSync(join(cwd, 'ro'), 0o555);
      t.teardown(() => chmodSync(join(cwd, 'ro'), 0o755));
    });
  }
});

t.test('add: not a gatewayworker project', async (t) => {
  fails(t, ['add', 'Other', '--yes'], /is not a gatewayworker project/, (cwd) => {
    writeFileSync(join(cwd, 'package.json'), '{"name":"x","dependencies":{}}');
  });
  fails(t, ['add', 'Other', '--dir', 'missing', '--yes'], /missing is not a gatewayworker project/);
});

t.test('add: the app exists', async (t) => {
  fails(t, ['add', 'YourApp', '--yes'], /Applications\/YourApp already exists/, project, (cwd) => join(cwd, 'proj'));
});

t.test('add: invalid app name, unknown template, no name', async (t) => {
  fails(t, ['add', 'bad-name', '--yes'], /invalid app name "bad-name"/, project, (cwd) => join(cwd, 'proj'));
  fails(t, ['add', 'Other', '--template', 'nope', '--yes'], /unknown template "nope"/, project, (cwd) => join(cwd, 'proj'));
  fails(t, ['add', '--yes'], /add needs an app name/, project, (cwd) => join(cwd, 'proj'));
});

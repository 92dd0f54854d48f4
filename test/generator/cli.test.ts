/** Flags that do not generate anything: --help, --version, and argument errors. */
import { readdirSync, readFileSync } from 'node:fs';
import t from 'tap';
import { ROOT, run, tempDir } from './helpers.ts';

const version = JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')).version;

t.test('--help prints usage and exits 0', async (t) => {
  const cwd = tempDir(t);
  for (const flag of ['--help', '-h']) {
    const r = run([flag], cwd);
    t.equal(r.code, 0);
    t.match(r.stdout, /Usage:/);
    t.match(r.stdout, /--template/);
    t.match(r.stdout, /add <App>/);
    t.equal(r.stderr, '');
  }
});

t.test('--version prints the package version', async (t) => {
  const r = run(['--version'], tempDir(t));
  t.equal(r.code, 0);
  t.equal(r.stdout.trim(), version);
});

t.test('argument errors: exit 1, one line on stderr, nothing written', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--frobnicate'], /unknown option --frobnicate/],
    [['app', '--template'], /option .*--template.* needs a value/],
    [['a', 'b'], /unexpected argument "b"/],
    [['app', '--package-manager', 'bun'], /unknown package manager "bun"/],
    [['add', 'A', 'B'], /unexpected argument "B"/],
  ];
  for (const [args, message] of cases) {
    const cwd = tempDir(t);
    const r = run(args, cwd);
    t.equal(r.code, 1, args.join(' '));
    t.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
    t.match(r.stderr, message);
    t.same(readdirSync(cwd), [], 'nothing written');
  }
});

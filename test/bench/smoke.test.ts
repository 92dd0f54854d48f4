// The benchmark harness runs end to end (a smoke test: it never asserts timings): the peers start,
// the drivers connect, every scenario measures something, results are written, nothing is left.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const root = fileURLToPath(new URL('../../', import.meta.url));

t.test('npm run bench -- --quick (reduced) completes and writes its results', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-bench-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  const args = ['--import', 'tsx', 'bench/run.ts', '--quick', '--only=echo,broadcast', '--peers=ws,gw1x1', '--variants=64x16', '--duration=1', `--out=${out}`];
  // Started in its own group so that a failure can never leave peers or drivers behind.
  const child = spawn(process.execPath, args, { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {}
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d));
  child.stderr.on('data', (d: Buffer) => (output += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  t.equal(code, 0, `bench exited 0\n${output.slice(-2000)}`);
  const json = fs.readdirSync(out).find((f) => f.endsWith('-quick.json'));
  t.ok(json, 'a results JSON was written');
  const result = JSON.parse(fs.readFileSync(path.join(out, json!), 'utf8')) as { rows: Array<{ scenario?: string; peer?: string }> };
  t.ok(result.rows.length >= 4, `${result.rows.length} result rows (echo and broadcast × ws and gatewayworker)`);
  t.ok(fs.existsSync(path.join(out, 'latest-quick.svg')), 'a chart was written');
  t.match(output, /\| 64 B w=16 \| gatewayworker 1\+1 \|/, 'the table has the gatewayworker echo row');
});

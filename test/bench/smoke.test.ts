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
  // MQTT: Aedes (npm) and gatewayworker; mosquitto too where the Debian package is installed
  // (without it the report says it was skipped — never a failure).
  const args = ['--import', 'tsx', 'bench/run.ts', '--quick', '--only=echo,broadcast,mqtt', '--peers=ws,gw1x1,aedes,mosquitto,gwm1x1', '--variants=64x16', '--duration=1', `--out=${out}`];
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
  t.ok(result.rows.length >= 8, `${result.rows.length} result rows (echo, broadcast, MQTT fan-out and QoS 1 × two peers at least)`);
  for (const scenario of ['mqtt-fanout', 'mqtt-qos1']) {
    t.ok(result.rows.some((r) => r.scenario === scenario && r.peer === 'gwm1x1'), `a gatewayworker ${scenario} row`);
  }
  // A run of some scenarios writes latest-<only>-quick.svg (never the full run's latest.svg).
  t.ok(fs.readdirSync(out).some((f) => /^latest-.*quick\.svg$/.test(f)), 'a chart was written');
  t.match(output, /\| 64 B w=16 \| gatewayworker 1\+1 \|/, 'the table has the gatewayworker echo row');
  t.match(output, /\| QoS 0, 1 → \d+, \d in flight \| gatewayworker MQTT 1\+1 \|/, 'the table has the gatewayworker MQTT fan-out row');
});

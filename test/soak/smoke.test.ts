// The soak end to end, shortened: `soak/run.ts --minutes 0.5` generates and starts the three
// template apps, drives their traffic for 30 s (half the clients: --scale 0.5) with one
// BusinessWorker SIGKILL and one reload per app in that window, and must finish with nothing lost,
// its report complete and nothing left running. About 70 s on a quiet 2-core machine (node_modules
// linked instead of installed: --no-install); much longer when the machine is saturated.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Result } from '../../soak/report.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** Live processes working in `dir` (the generated apps run in their project dirs) or naming it. */
function processesIn(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
      if (fs.readlinkSync(`/proc/${entry}/cwd`).startsWith(dir) || fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dir)) pids.push(Number(entry));
    } catch {}
  }
  return pids;
}

t.setTimeout(300_000);

t.test('npm run soak -- --minutes 0.5: reload and kill in the window, nothing lost, report written', async (t) => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-soak-test-'));
  t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));
  // tap's loader stays out of the soak (and so out of the apps it starts).
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(TAP|_TAPJS_|NODE_V8_COVERAGE$|NODE_OPTIONS$)/.test(key)) delete env[key];
  const started = Date.now();
  // Its own process group: whatever happens, nothing it started outlives the test.
  const child = spawn('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, '--import', 'tsx', 'soak/run.ts', '--minutes', '0.5', '--scale', '0.5', '--no-install', '--out', out], {
    cwd: root,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killTree = (): void => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {}
  };
  t.teardown(killTree);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const timer = setTimeout(killTree, 280_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  clearTimeout(timer);
  const seconds = (Date.now() - started) / 1000;
  t.comment(`soak --minutes 0.5 took ${seconds.toFixed(0)} s`);

  t.equal(code, 0, `the soak exits 0\n${stderr.slice(-3000)}\n${stdout.slice(0, 3000)}`);
  for (const section of ['## Result', '## Throughput per minute', '## RSS over time', '## Reloads and kills', '## App logs']) {
    t.ok(stdout.includes(section), `the report has "${section}"`);
  }
  t.match(stdout, /\*\*PASS\*\*/, 'the report says PASS');
  t.match(stdout, /\| chat \| [\d,]+ \| [\d,]+ \| [\d,]+ \| 0 \|/, 'the result table has the chat row with lost 0');

  const json = fs.readdirSync(out).find((f) => /^\d{4}-\d\d-\d\dT[\d-]+\.json$/.test(f));
  t.ok(json, 'a results JSON was written');
  if (!json) return;
  const result = JSON.parse(fs.readFileSync(path.join(out, json), 'utf8')) as Result;
  t.equal(result.passed, true, `passed; problems: ${JSON.stringify(result.problems)}`);
  t.ok(result.durationS >= 29 && result.durationS < 40, `about 30 s of load (${result.durationS.toFixed(1)} s)`);
  t.same(Object.keys(result.apps).sort(), ['chat', 'game', 'mqtt'], 'all three templates ran');
  for (const key of ['chat', 'game', 'mqtt'] as const) {
    const app = result.apps[key]!;
    t.ok(app.counters.sent > 0 && app.counters.received > 0, `${key}: traffic flowed (${app.counters.sent} sent, ${app.counters.received} received)`);
    t.ok(app.reloads >= 1, `${key}: reloaded in the window`);
    t.ok(app.kills >= 1, `${key}: a BusinessWorker was killed in the window`);
    t.equal(app.counters.disconnects, 0, `${key}: no client disconnected`);
    t.match(app.stop, /^clean/, `${key}: start.ts stop ended it`);
  }
  t.equal(result.apps.chat!.lost, 0, 'chat: lost == 0');
  t.equal(result.apps.mqtt!.lost, 0, 'mqtt: lost == 0');
  t.ok(result.actions.every((a) => a.ok), `every reload and kill succeeded: ${JSON.stringify(result.actions.filter((a) => !a.ok))}`);
  t.ok(result.samples.length >= 6, `sampled over the run (${result.samples.length} samples)`);
  t.same(result.leftovers, [], 'no app process left running');

  t.match(fs.readFileSync(path.join(out, 'latest.md'), 'utf8'), /## Reloads and kills/, 'latest.md written');
  t.match(fs.readFileSync(path.join(out, 'latest.svg'), 'utf8'), /^<svg [^>]*>[\s\S]*<path d="M/, 'latest.svg has lines');

  const workDir = /into (\/\S+gw-soak-\w+)/.exec(stderr)?.[1];
  t.ok(workDir, 'the run named its temp dir');
  if (workDir) {
    t.same(processesIn(workDir), [], 'no process of the generated apps is left');
    t.notOk(fs.existsSync(workDir), 'the temp dir is removed');
  }
});

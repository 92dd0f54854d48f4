/**
 * Summarise V8 .cpuprofile files (from `BENCH_CPU_PROF=<dir> npm run bench -- …`): self time per
 * function, top N, per profile. `tsx bench/tools/profile-top.ts <dir-or-files…> [--top=N]`
 */
import fs from 'node:fs';
import path from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const args = process.argv.slice(2);
const top = Number(args.find((a) => a.startsWith('--top='))?.slice(6) ?? 25);
const files = args
  .filter((a) => !a.startsWith('--'))
  .flatMap((a) => (fs.statSync(a).isDirectory() ? fs.readdirSync(a).map((f) => path.join(a, f)) : [a]))
  .filter((f) => f.endsWith('.cpuprofile'));

for (const file of files) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFn = new Map<string, number>();
  let idle = 0;
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') idle += us;
    const where = f.url ? `${f.url.replace(/^.*\/(node_modules|runtime\/src|bench)\//, '$1/')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
  }
  const busy = total - idle;
  if (busy < 200_000) continue; // skip profiles with < 0.2 s of work (loader threads, register)
  console.log(`\n## ${path.basename(file)}: ${(busy / 1e6).toFixed(2)} s busy of ${(total / 1e6).toFixed(2)} s`);
  for (const [key, us] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    if (key.startsWith('(idle)')) continue;
    console.log(`${((100 * us) / busy).toFixed(1).padStart(5)}%  ${key}`);
  }
}

/**
 * Reload under load: 100 clients echo 64-byte messages (one in flight each) while the master
 * replaces every BusinessWorker (`reload`, SIGUSR1). Counts what a reload must never cause — echoes
 * lost, connections dropped, echoes doubled — and the echo rate during the reload against the same
 * server's steady rate and against raw `ws` (which has nothing to reload: its steady window).
 */
import { cmdline, cpuWindow, sleep } from '../lib/proc.js';
import type { RunningPeer } from '../lib/peers.js';
import { closeGroup, connectGroup } from './common.js';
import { rotate, type Measurement, type Scenario, type ScenarioContext } from './types.js';

const CLIENTS = 100;
const SIZE = 64;

const workerPids = (peer: RunningPeer): number[] => peer.pids().filter((pid) => /BenchWorker#/.test(cmdline(pid)));

/** Echoes counted by every driver since the last mark. */
async function echoes(ctx: ScenarioContext, group: string): Promise<number> {
  const marks = await Promise.all(ctx.pool.drivers.map((d) => d.call<Record<string, { count: number }>>({ op: 'mark', groups: [group] })));
  return marks.reduce((n, m) => n + (m[group]?.count ?? 0), 0);
}

/** Signals a reload and waits until every worker process was replaced. @returns its duration in ms. */
async function reloadWorkers(peer: RunningPeer): Promise<number> {
  const before = workerPids(peer);
  const started = performance.now();
  process.kill(peer.pgid, 'SIGUSR1');
  const deadline = Date.now() + 60_000;
  for (;;) {
    const now = workerPids(peer);
    if (now.length >= before.length && now.every((pid) => !before.includes(pid))) return performance.now() - started;
    if (Date.now() > deadline) throw new Error(`${peer.spec.label}: workers not replaced within 60 s (before ${before}, now ${now})`);
    await sleep(20);
  }
}

export const reload: Scenario = {
  key: 'reload',
  title: 'Reload under load: 100 echo clients (64 B, 1 in flight) while every BusinessWorker is replaced',
  wires: ['ws'],
  cost: { metric: 'cpuUsPerMsg', label: 'server CPU µs / echo' },
  throughput: { metric: 'perSec', label: 'echoes/s' },
  async run(ctx) {
    const specs = ctx.opts.peers.filter((p) => p.key === 'ws' || /^gw\d+x\d+$/.test(p.key));
    const out: Measurement[] = [];
    // One reload per server: what it must show is counts (0 lost, 0 dropped), not a fine ratio;
    // each needs a fresh instance, which the run's time budget pays for.
    for (let repeat = 0; repeat < 1; repeat++) {
      for (const spec of rotate(specs, repeat)) {
        const peer = await ctx.fresh(spec);
        const group = `reload:${spec.key}`;
        try {
          const r = await connectGroup(ctx, peer, group, CLIENTS);
          if (r.failed > 0) throw new Error(`${spec.label}: ${r.failed} clients failed to connect: ${r.error}`);
          await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'echo', group, size: SIZE, window: 1 })));
          await sleep(ctx.opts.warmup * 1000);
          // The steady rate of this very instance, then the window that holds the reload.
          await echoes(ctx, group);
          let window = performance.now();
          await sleep(ctx.opts.duration * 1000);
          const steadyPerSec = ((await echoes(ctx, group)) * 1000) / (performance.now() - window);
          const cpu = cpuWindow(() => peer.pids());
          window = performance.now();
          const reloadMs = spec.key === 'ws' ? (await sleep(ctx.opts.duration * 1000), 0) : await reloadWorkers(peer);
          // Until the new workers are linked and the held events delivered.
          if (spec.key !== 'ws') await sleep(1000);
          const count = await echoes(ctx, group);
          const ms = performance.now() - window;
          const server = cpu();
          const halted = await Promise.all(ctx.pool.drivers.map((d) => d.call<{ inFlight: number; dropped: number; dups: number }>({ op: 'halt', group })));
          const sum = (key: 'inFlight' | 'dropped' | 'dups'): number => halted.reduce((n, h) => n + h[key], 0);
          const metrics = {
            perSec: (count * 1000) / ms,
            steadyPerSec,
            cpuUsPerMsg: server.cpuUs / Math.max(1, count),
            reloadMs,
            lost: sum('inFlight'),
            dropped: sum('dropped'),
            dups: sum('dups'),
          };
          ctx.log(
            `reload ${spec.label} #${repeat + 1}: ${Math.round(metrics.perSec)}/s during (${Math.round(steadyPerSec)}/s steady), reload ${(reloadMs / 1000).toFixed(1)} s, lost ${metrics.lost}, dropped ${metrics.dropped}, doubled ${metrics.dups}`,
          );
          out.push({ scenario: 'reload', variant: `${SIZE} B w=1`, peer: spec.key, repeat, metrics });
        } finally {
          await closeGroup(ctx, group);
          await peer.stop();
        }
      }
    }
    return out;
  },
};

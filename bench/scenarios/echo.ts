/**
 * Echo round trip: 100 clients, each keeps `window` messages in flight; for gatewayworker the
 * round trip is client → gateway → worker → gateway → client.
 */
import { closeGroup, connectGroup, measure } from './common.js';
import { rotate, type Measurement, type Scenario } from './types.js';

const CLIENTS = 100;

export const echo: Scenario = {
  key: 'echo',
  title: 'Echo round trip, 100 clients',
  wires: ['ws', 'socketio'],
  cost: { metric: 'cpuUsPerMsg', label: 'server CPU µs / echo' },
  throughput: { metric: 'perSec', label: 'echoes/s' },
  async run(ctx) {
    const peers = ctx.opts.peers.filter((p) => this.wires.includes(p.wire));
    const out: Measurement[] = [];
    const running = [];
    for (const spec of peers) {
      const peer = await ctx.shared(spec);
      const r = await connectGroup(ctx, peer, `echo:${spec.key}`, CLIENTS);
      if (r.failed > 0) throw new Error(`${spec.label}: ${r.failed} echo clients failed to connect: ${r.error}`);
      running.push(peer);
    }
    const variants = [
      { size: 64, window: 1 },
      { size: 64, window: 16 },
      { size: 4096, window: 1 },
      { size: 4096, window: 16 },
    ].filter((v) => !ctx.opts.echoVariants || ctx.opts.echoVariants.includes(`${v.size}x${v.window}`));
    for (const v of variants) {
      const variant = `${v.size === 4096 ? '4 KB' : `${v.size} B`} w=${v.window}`;
      for (let repeat = 0; repeat < ctx.opts.repeats; repeat++) {
        for (const peer of rotate(running, repeat)) {
          const group = `echo:${peer.spec.key}`;
          await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'echo', group, size: v.size, window: v.window })));
          const w = await measure(ctx, peer, [group]);
          await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'halt', group })));
          const c = w.counts[group];
          const metrics = {
            perSec: (c.count * 1000) / w.ms,
            p50Us: c.hist.quantile(0.5),
            p99Us: c.hist.quantile(0.99),
            cpuUsPerMsg: w.serverCpuUs / Math.max(1, c.count),
            frontCpuUsPerMsg: w.frontCpuUs / Math.max(1, c.count),
            serverCpuPct: (w.serverCpuUs / 10) / w.ms,
            driverCpuPct: (w.driverCpuUs / 10) / w.ms,
          };
          ctx.log(`echo ${variant} ${peer.spec.label} #${repeat + 1}: ${Math.round(metrics.perSec)}/s p99 ${Math.round(metrics.p99Us)} µs, ${metrics.cpuUsPerMsg.toFixed(1)} µs CPU/echo`);
          out.push({ scenario: 'echo', variant, peer: peer.spec.key, repeat, metrics });
        }
      }
    }
    for (const peer of running) await closeGroup(ctx, `echo:${peer.spec.key}`);
    return out;
  },
};

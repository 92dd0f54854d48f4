/**
 * Room broadcast: N receivers and one sender in one room; the sender (connected last, so it is
 * written to last) sends the next 64-byte broadcast whenever one comes back to it, with 2 in
 * flight. Server work = broadcasts × (N + 1) deliveries; latency is send → receive per delivery.
 */
import { sleep } from '../lib/proc.js';
import { closeGroup, connectGroup, measure } from './common.js';
import { rotate, type Measurement, type Scenario } from './types.js';

export const broadcast: Scenario = {
  key: 'broadcast',
  title: 'Room broadcast, 1 sender → N receivers',
  wires: ['ws', 'socketio'],
  cost: { metric: 'cpuUsPerDelivery', label: 'server CPU µs / delivery' },
  throughput: { metric: 'perSec', label: 'deliveries/s' },
  async run(ctx) {
    const receivers = ctx.opts.quick ? 1000 : 5000;
    const variant = `${receivers} receivers`;
    const peers = ctx.opts.peers.filter((p) => this.wires.includes(p.wire));
    const out: Measurement[] = [];
    const running = [];
    for (const spec of peers) {
      const peer = await ctx.shared(spec);
      const r = await connectGroup(ctx, peer, `bc:${spec.key}`, receivers, { room: 'bench' });
      const s = await connectGroup(ctx, peer, `bcs:${spec.key}`, 1, { room: 'bench', only: 0 });
      if (r.failed + s.failed > 0) throw new Error(`${spec.label}: ${r.failed + s.failed} broadcast clients failed to connect: ${r.error || s.error}`);
      ctx.log(`broadcast: ${receivers} receivers on ${spec.label} in ${(r.ms / 1000).toFixed(1)} s`);
      running.push(peer);
    }
    for (let repeat = 0; repeat < ctx.opts.repeats; repeat++) {
      for (const peer of rotate(running, repeat)) {
        const rx = `bc:${peer.spec.key}`;
        const tx = `bcs:${peer.spec.key}`;
        await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'receive', group: rx })));
        await ctx.pool.drivers[0].call({ op: 'broadcast', group: tx, size: 64, window: 2 });
        const w = await measure(ctx, peer, [rx, tx]);
        await ctx.pool.drivers[0].call({ op: 'halt', group: tx });
        await sleep(500); // let the receivers catch up before the next peer
        const c = w.counts[rx];
        const serverDeliveries = w.counts[tx].rounds * (receivers + 1);
        const metrics = {
          perSec: (c.count * 1000) / w.ms,
          broadcastsPerSec: (w.counts[tx].rounds * 1000) / w.ms,
          p50Us: c.hist.quantile(0.5),
          p99Us: c.hist.quantile(0.99),
          cpuUsPerDelivery: w.serverCpuUs / Math.max(1, serverDeliveries),
          frontCpuUsPerDelivery: w.frontCpuUs / Math.max(1, serverDeliveries),
          serverCpuPct: (w.serverCpuUs / 10) / w.ms,
          driverCpuPct: (w.driverCpuUs / 10) / w.ms,
        };
        ctx.log(`broadcast ${peer.spec.label} #${repeat + 1}: ${Math.round(metrics.perSec)} deliveries/s p99 ${Math.round(metrics.p99Us)} µs, ${metrics.cpuUsPerDelivery.toFixed(2)} µs CPU/delivery`);
        out.push({ scenario: 'broadcast', variant, peer: peer.spec.key, repeat, metrics });
      }
    }
    for (const peer of running) {
      await closeGroup(ctx, `bc:${peer.spec.key}`);
      await closeGroup(ctx, `bcs:${peer.spec.key}`);
    }
    return out;
  },
};

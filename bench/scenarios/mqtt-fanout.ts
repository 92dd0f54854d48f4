/**
 * MQTT QoS 0 fan-out: N subscribers and one publisher on one topic (the publisher subscribes last,
 * so each broker writes it its copy last); the publisher sends the next 64-byte QoS 0 PUBLISH
 * whenever one of its own comes back, with 1 or 2 in flight (`--quick`: 2 only). With 1 in flight
 * every broker must make one write per delivery; with 2, a broker may write both messages to a
 * subscriber at once (the JSON has `serverWritesPerMsg`). Deliveries are counted where they arrive
 * (the subscribers, plus the publisher's own copies), so a broker that falls behind or drops is
 * not credited with work it did not finish; latency is publish → receive per delivery.
 */
import type { RunningPeer } from '../lib/peers.js';
import { sleep } from '../lib/proc.js';
import { closeGroup, connectGroup, measure, startPeers } from './common.js';
import { rotate, type Measurement, type Scenario } from './types.js';

const TOPIC = 'bench/fanout';

export const mqttFanout: Scenario = {
  key: 'mqtt-fanout',
  title: 'MQTT QoS 0 fan-out, 1 publisher → N subscribers on one topic',
  wires: ['mqtt'],
  reference: 'aedes',
  secondReference: 'mosquitto',
  unit: 'deliveries/s',
  cost: { metric: 'cpuUsPerDelivery', label: 'server CPU µs / delivery' },
  throughput: { metric: 'perSec', label: 'deliveries/s' },
  async run(ctx) {
    const subscribers = ctx.opts.quick ? 300 : 1000;
    const windows = process.env.BENCH_FANOUT_WINDOWS ? process.env.BENCH_FANOUT_WINDOWS.split(',').map(Number) : ctx.opts.quick ? [2] : [1, 2];
    const out: Measurement[] = [];
    const running: RunningPeer[] = [];
    for (const peer of await startPeers(ctx, this)) {
      const key = peer.spec.key;
      const r = await connectGroup(ctx, peer, `mf:${key}`, subscribers, { mqtt: { subscribe: TOPIC, subQos: 0 } });
      const s = await connectGroup(ctx, peer, `mfs:${key}`, 1, { only: 0, mqtt: { subscribe: TOPIC, subQos: 0, topic: TOPIC, qos: 0 } });
      if (r.failed + s.failed > 0) {
        ctx.note(`${peer.spec.label} skipped in ${this.key}: ${r.failed + s.failed} MQTT clients failed to connect (${r.error || s.error})`);
        await closeGroup(ctx, `mf:${key}`);
        await closeGroup(ctx, `mfs:${key}`);
        continue;
      }
      ctx.log(`mqtt-fanout: ${subscribers} subscribers on ${peer.spec.label} in ${(r.ms / 1000).toFixed(1)} s`);
      running.push(peer);
    }
    for (const window of windows) {
      const variant = `QoS 0, 1 → ${subscribers}, ${window} in flight`;
      for (let repeat = 0; repeat < ctx.opts.repeats; repeat++) {
        for (const peer of rotate(running, repeat)) {
          const rx = `mf:${peer.spec.key}`;
          const tx = `mfs:${peer.spec.key}`;
          await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'receive', group: rx })));
          await ctx.pool.drivers[0].call({ op: 'broadcast', group: tx, size: 64, window });
          const w = await measure(ctx, peer, [rx, tx]);
          await ctx.pool.drivers[0].call({ op: 'halt', group: tx });
          await sleep(500); // let the subscribers catch up before the next peer
          await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'halt', group: rx })));
          const c = w.counts[rx];
          const rounds = w.counts[tx].rounds;
          const received = c.count + rounds;
          const metrics = {
            perSec: (c.count * 1000) / w.ms,
            publishesPerSec: (rounds * 1000) / w.ms,
            p50Us: c.hist.quantile(0.5),
            p99Us: c.hist.quantile(0.99),
            cpuUsPerDelivery: w.serverCpuUs / Math.max(1, received),
            frontCpuUsPerDelivery: w.frontCpuUs / Math.max(1, received),
            // Deliveries received in the window ÷ publishes × (N + 1): ~100% unless the subscribers lag.
            receivedPct: (100 * received) / Math.max(1, rounds * (subscribers + 1)),
            serverWritesPerMsg: w.serverWrites / Math.max(1, received),
            serverReadsPerMsg: w.serverReads / Math.max(1, received),
            serverCpuPct: w.serverCpuUs / 10 / w.ms,
            driverCpuPct: w.driverCpuUs / 10 / w.ms,
          };
          ctx.log(
            `mqtt-fanout w=${window} ${peer.spec.label} #${repeat + 1}: ${Math.round(metrics.perSec)} deliveries/s p99 ${Math.round(metrics.p99Us)} µs, ${metrics.cpuUsPerDelivery.toFixed(2)} µs CPU/delivery, ${metrics.serverWritesPerMsg.toFixed(2)} writes/delivery (server ${metrics.serverCpuPct.toFixed(0)}%, driver ${metrics.driverCpuPct.toFixed(0)}%), received ${metrics.receivedPct.toFixed(0)}%`,
          );
          out.push({ scenario: this.key, variant, peer: peer.spec.key, repeat, metrics });
        }
      }
    }
    for (const peer of running) {
      await closeGroup(ctx, `mf:${peer.spec.key}`);
      await closeGroup(ctx, `mfs:${peer.spec.key}`);
    }
    return out;
  },
};

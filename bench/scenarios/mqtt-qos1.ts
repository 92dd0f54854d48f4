/**
 * MQTT QoS 1 many-to-one: P publishers, each on its own topic `bench/q1/<id>`, each with one
 * QoS 1 PUBLISH waiting for its PUBACK at a time; one subscriber on `bench/q1/+` at QoS 1 that
 * acknowledges every delivery. The subscriber has driver 0 to itself; the publishers share the
 * others. A PUBACK only says the broker took the message, so the driver also bounds the messages
 * between publish and delivery (credit per publishing driver, returned by the subscriber's driver
 * through the harness): no broker is measured while piling up a backlog. Messages are counted where
 * they arrive; latency is publish → subscriber.
 */
import type { RunningPeer } from '../lib/peers.js';
import { sleep } from '../lib/proc.js';
import { closeGroup, connectGroup, measure, startPeers } from './common.js';
import { rotate, type Measurement, type Scenario } from './types.js';

/** PUBLISHes each publisher keeps waiting for their PUBACK. */
const WINDOW = 1;

export const mqttQos1: Scenario = {
  key: 'mqtt-qos1',
  title: 'MQTT QoS 1 many-to-one, P publishers (own topics) → 1 wildcard subscriber',
  wires: ['mqtt'],
  reference: 'aedes',
  secondReference: 'mosquitto',
  unit: 'messages/s',
  cost: { metric: 'cpuUsPerMsg', label: 'server CPU µs / message' },
  throughput: { metric: 'perSec', label: 'messages/s' },
  async run(ctx) {
    const publishers = ctx.opts.quick ? 50 : 200;
    const variant = `QoS 1, ${publishers} → 1`;
    const senders = ctx.pool.drivers.map((_d, i) => i).filter((i) => i > 0);
    // Messages each publishing driver may have between publish and delivery: 4× what its
    // publishers' windows allow (at least 200; credit comes back through the harness, a few ms), so
    // it only binds when the subscriber side falls behind, and then caps the broker's backlog.
    const credit = Math.max(200, 4 * WINDOW * Math.ceil(publishers / senders.length));
    const out: Measurement[] = [];
    const running: RunningPeer[] = [];
    for (const peer of await startPeers(ctx, this)) {
      const key = peer.spec.key;
      const s = await connectGroup(ctx, peer, `q1s:${key}`, 1, { only: 0, mqtt: { subscribe: 'bench/q1/+', subQos: 1 } });
      const p = await connectGroup(ctx, peer, `q1p:${key}`, publishers, { drivers: senders, mqtt: { topic: 'bench/q1/{n}', qos: 1 } });
      if (s.failed + p.failed > 0) {
        ctx.note(`${peer.spec.label} skipped in ${this.key}: ${s.failed + p.failed} MQTT clients failed to connect (${s.error || p.error})`);
        await closeGroup(ctx, `q1s:${key}`);
        await closeGroup(ctx, `q1p:${key}`);
        continue;
      }
      running.push(peer);
    }
    for (let repeat = 0; repeat < ctx.opts.repeats; repeat++) {
      for (const peer of rotate(running, repeat)) {
        const sub = `q1s:${peer.spec.key}`;
        const pub = `q1p:${peer.spec.key}`;
        await ctx.pool.drivers[0].call({ op: 'q1receive', group: sub, creditGroup: pub });
        await Promise.all(senders.map((i) => ctx.pool.drivers[i].call({ op: 'q1publish', group: pub, size: 64, window: WINDOW, credit, index: i })));
        const w = await measure(ctx, peer, [sub, pub]);
        // Halting the publishers waits until the subscriber got everything they sent.
        const left = await Promise.all(senders.map((i) => ctx.pool.drivers[i].call<{ inFlight: number; stalls: number }>({ op: 'halt', group: pub })));
        await ctx.pool.drivers[0].call({ op: 'halt', group: sub });
        const lost = left.reduce((n, r) => n + r.inFlight, 0);
        if (lost > 0) ctx.log(`mqtt-qos1 ${peer.spec.label}: ${lost} messages not delivered 3 s after the publishers stopped`);
        await sleep(300);
        const c = w.counts[sub];
        const metrics = {
          perSec: (c.count * 1000) / w.ms,
          pubacksPerSec: (w.counts[pub].rounds * 1000) / w.ms,
          p50Us: c.hist.quantile(0.5),
          p99Us: c.hist.quantile(0.99),
          cpuUsPerMsg: w.serverCpuUs / Math.max(1, c.count),
          frontCpuUsPerMsg: w.frontCpuUs / Math.max(1, c.count),
          undelivered: lost,
          creditStalls: left.reduce((n, r) => n + r.stalls, 0),
          serverWritesPerMsg: w.serverWrites / Math.max(1, c.count),
          serverReadsPerMsg: w.serverReads / Math.max(1, c.count),
          serverCpuPct: w.serverCpuUs / 10 / w.ms,
          driverCpuPct: w.driverCpuUs / 10 / w.ms,
        };
        ctx.log(`mqtt-qos1 ${peer.spec.label} #${repeat + 1}: ${Math.round(metrics.perSec)} messages/s p99 ${Math.round(metrics.p99Us)} µs, ${metrics.cpuUsPerMsg.toFixed(2)} µs CPU/message, ${metrics.serverWritesPerMsg.toFixed(2)} writes + ${metrics.serverReadsPerMsg.toFixed(2)} reads/message (server ${metrics.serverCpuPct.toFixed(0)}%, driver ${metrics.driverCpuPct.toFixed(0)}%, ${metrics.creditStalls} credit stalls)`);
        out.push({ scenario: this.key, variant, peer: peer.spec.key, repeat, metrics });
      }
    }
    for (const peer of running) {
      await closeGroup(ctx, `q1s:${peer.spec.key}`);
      await closeGroup(ctx, `q1p:${peer.spec.key}`);
    }
    return out;
  },
};

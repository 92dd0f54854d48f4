/**
 * Idle connections: a fresh server instance, N WebSocket clients connected (ramped: a bounded
 * number of handshakes in flight per driver), then RSS growth per connection of the server's
 * processes, and the connect rate. One `ws` process cannot hold more than ~19,000 sockets (20,000
 * fds per process), so the 30,000-connection run is for 2 gateways only and its ratio is taken
 * against ws at the smaller size.
 */
import { cpuWindow, rssKb, sleep } from '../lib/proc.js';
import { closeGroup, connectGroup } from './common.js';
import { rotate, type Measurement, type Scenario } from './types.js';

export const idle: Scenario = {
  key: 'idle',
  title: 'Idle WebSocket connections',
  wires: ['ws', 'socketio'],
  cost: { metric: 'rssKbPerConn', label: 'server RSS KB / connection' },
  throughput: { metric: 'connectsPerSec', label: 'connects/s' },
  async run(ctx) {
    const base = ctx.opts.quick ? 5000 : 15000;
    const peers = ctx.opts.peers.filter((p) => this.wires.includes(p.wire));
    const out: Measurement[] = [];
    // RSS per connection varies little; two repeats keep the full run inside its time budget.
    for (let repeat = 0; repeat < Math.min(2, ctx.opts.repeats); repeat++) {
      for (const spec of rotate(peers, repeat)) {
        // 15,000 per connection-holding process, up to the 30,000 the full run asks for.
        const total = ctx.opts.quick ? base : Math.min(30000, base * spec.fronts);
        const peer = await ctx.fresh(spec);
        try {
          await sleep(500);
          const pids = peer.pids();
          const fronts = peer.frontPids();
          const rss = (list: number[]): number => list.reduce((n, pid) => n + rssKb(pid), 0);
          const before = rss(pids);
          const frontBefore = rss(fronts);
          const cpu = cpuWindow(() => pids);
          const group = `idle:${spec.key}`;
          const r = await connectGroup(ctx, peer, group, total, { perAddress: 4000, concurrency: 50 });
          const connectCpu = cpu();
          await sleep(3000);
          const after = rss(pids);
          const frontAfter = rss(fronts);
          const metrics = {
            connections: r.opened,
            failed: r.failed,
            rssKbPerConn: (after - before) / Math.max(1, r.opened),
            frontRssKbPerConn: (frontAfter - frontBefore) / Math.max(1, r.opened),
            connectsPerSec: (r.opened * 1000) / r.ms,
            cpuUsPerConnect: connectCpu.cpuUs / Math.max(1, r.opened),
          };
          ctx.log(
            `idle ${total} ${spec.label} #${repeat + 1}: ${metrics.rssKbPerConn.toFixed(1)} KB/conn (front ${metrics.frontRssKbPerConn.toFixed(1)}), ${Math.round(metrics.connectsPerSec)} connects/s, ${r.failed} failed${r.error ? ` (${r.error})` : ''}`,
          );
          out.push({ scenario: 'idle', variant: `${total} conns`, peer: spec.key, repeat, metrics });
          await closeGroup(ctx, group);
        } finally {
          await peer.stop();
        }
      }
    }
    return out;
  },
};

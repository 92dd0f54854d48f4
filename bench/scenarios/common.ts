import { Histogram } from '../lib/hist.js';
import type { RunningPeer } from '../lib/peers.js';
import { cpuWindow, sleep } from '../lib/proc.js';
import { spread, type ScenarioContext } from './types.js';

/** Opens `total` connections to `peer` as group `group`, spread over every driver, fresh source addresses. */
export async function connectGroup(
  ctx: ScenarioContext,
  peer: RunningPeer,
  group: string,
  total: number,
  opts: { room?: string; perAddress?: number; concurrency?: number; only?: number } = {},
): Promise<{ opened: number; failed: number; ms: number; error: string }> {
  const perAddress = opts.perAddress ?? 5000;
  const started = performance.now();
  const parts = opts.only !== undefined ? [[opts.only, total] as [number, number]] : spread(total, ctx.pool.drivers.length);
  const results = await Promise.all(
    parts.map(async ([index, count]) => {
      const driver = ctx.pool.drivers[index];
      let opened = 0;
      let failed = 0;
      let error = '';
      for (let left = count; left > 0; left -= perAddress) {
        const r = await driver.call<{ opened: number; failed: number; error: string }>({
          op: 'connect',
          group,
          kind: peer.spec.wire,
          host: peer.host,
          port: peer.port,
          room: opts.room,
          count: Math.min(perAddress, left),
          localAddress: ctx.pool.nextAddress(),
          concurrency: opts.concurrency ?? 64,
        });
        opened += r.opened;
        failed += r.failed;
        error ||= r.error;
      }
      return { opened, failed, error };
    }),
  );
  const sum = results.reduce((a, r) => ({ opened: a.opened + r.opened, failed: a.failed + r.failed, error: a.error || r.error }), { opened: 0, failed: 0, error: '' });
  return { ...sum, ms: performance.now() - started };
}

export async function closeGroup(ctx: ScenarioContext, group: string): Promise<void> {
  await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'close', group })));
}

export interface Window {
  counts: Record<string, { count: number; rounds: number; hist: Histogram }>;
  serverCpuUs: number;
  /** CPU of the connection-holding processes only (gateways; the whole server for one-process peers). */
  frontCpuUs: number;
  driverCpuUs: number;
  ms: number;
}

/** Warm up, then measure one window: traffic counters from every driver, CPU of server and driver. */
export async function measure(ctx: ScenarioContext, peer: RunningPeer, groups: string[]): Promise<Window> {
  await sleep(ctx.opts.warmup * 1000);
  await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'mark', groups })));
  const server = cpuWindow(() => peer.pids());
  const front = cpuWindow(() => peer.frontPids());
  const driver = cpuWindow(() => ctx.pool.pids());
  await sleep(ctx.opts.duration * 1000);
  const marks = await Promise.all(
    ctx.pool.drivers.map((d) => d.call<Record<string, { count: number; rounds: number; hist: Array<[number, number]> }>>({ op: 'mark', groups })),
  );
  const s = server();
  const f = front();
  const d = driver();
  const counts: Window['counts'] = {};
  for (const group of groups) counts[group] = { count: 0, rounds: 0, hist: new Histogram() };
  for (const mark of marks) {
    for (const [group, m] of Object.entries(mark)) {
      counts[group].count += m.count;
      counts[group].rounds += m.rounds;
      counts[group].hist.merge(m.hist);
    }
  }
  return { counts, serverCpuUs: s.cpuUs, frontCpuUs: f.cpuUs, driverCpuUs: d.cpuUs, ms: s.ms };
}

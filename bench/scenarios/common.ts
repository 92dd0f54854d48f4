import type { MqttWireOptions } from '../driver/mqtt.js';
import { Histogram } from '../lib/hist.js';
import type { RunningPeer } from '../lib/peers.js';
import { cpuWindow, sleep, syscalls } from '../lib/proc.js';
import { spread, type Scenario, type ScenarioContext } from './types.js';

/**
 * The shared instances of the peers that speak the scenario's wires. A peer whose package or
 * binary is missing, or that fails to start, is skipped with a note in the report (never a crash).
 */
export async function startPeers(ctx: ScenarioContext, scenario: Scenario): Promise<RunningPeer[]> {
  const out: RunningPeer[] = [];
  for (const spec of ctx.opts.peers.filter((p) => scenario.wires.includes(p.wire))) {
    const missing = spec.missing?.() ?? null;
    if (missing) {
      ctx.note(`${spec.label} skipped: ${missing}`);
      continue;
    }
    try {
      out.push(await ctx.shared(spec));
    } catch (error) {
      const lines = (error as Error).message.split('\n').filter((l) => l.trim());
      ctx.log(`${spec.label} did not start:\n${lines.slice(-20).join('\n')}`);
      ctx.note(`${spec.label} skipped: it did not start (${lines.at(-1) ?? 'no output'})`);
    }
  }
  return out;
}

/** Opens `total` connections to `peer` as group `group`, spread over every driver, fresh source addresses. */
export async function connectGroup(
  ctx: ScenarioContext,
  peer: RunningPeer,
  group: string,
  total: number,
  opts: { room?: string; perAddress?: number; concurrency?: number; only?: number; drivers?: number[]; mqtt?: MqttWireOptions } = {},
): Promise<{ opened: number; failed: number; ms: number; error: string }> {
  const perAddress = opts.perAddress ?? 5000;
  const started = performance.now();
  const indices = opts.drivers ?? (opts.only !== undefined ? [opts.only] : ctx.pool.drivers.map((_d, i) => i));
  const parts = spread(total, indices.length).map(([i, n]) => [indices[i], n] as [number, number]);
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
          mqtt: opts.mqtt,
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
  /** Read / write system calls of the server's processes in the window. */
  serverReads: number;
  serverWrites: number;
  ms: number;
}

/** Warm up, then measure one window: traffic counters from every driver, CPU of server and driver. */
export async function measure(ctx: ScenarioContext, peer: RunningPeer, groups: string[]): Promise<Window> {
  await sleep(ctx.opts.warmup * 1000);
  await Promise.all(ctx.pool.drivers.map((d) => d.call({ op: 'mark', groups })));
  const serverPids = peer.pids();
  const io0 = syscalls(serverPids);
  const server = cpuWindow(() => serverPids);
  const front = cpuWindow(() => peer.frontPids());
  const driver = cpuWindow(() => ctx.pool.pids());
  await sleep(ctx.opts.duration * 1000);
  const marks = await Promise.all(
    ctx.pool.drivers.map((d) => d.call<Record<string, { count: number; rounds: number; hist: Array<[number, number]> }>>({ op: 'mark', groups })),
  );
  const s = server();
  const io1 = syscalls(serverPids);
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
  return { counts, serverCpuUs: s.cpuUs, frontCpuUs: f.cpuUs, driverCpuUs: d.cpuUs, serverReads: io1.reads - io0.reads, serverWrites: io1.writes - io0.writes, ms: s.ms };
}

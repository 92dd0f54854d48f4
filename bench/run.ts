/**
 * `npm run bench [-- --quick] [--only=idle,echo,broadcast,mqtt] [--peers=ws,sio,gw1x1,gw2x2,aedes,mosquitto,gwm1x1,gwm2x2,rawmqtt]
 *  [--repeats=N] [--duration=S] [--variants=64x1,64x16,4096x1,4096x16] [--runtime=dist|src] [--out=DIR]`
 *
 * Starts the peers and a multi-process driver on loopback, runs every scenario, prints a markdown
 * table, writes bench/results/<date>.json and bench/results/latest.svg, and stops everything it
 * started — also on Ctrl+C and on errors.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DriverPool } from './lib/drivers.js';
import { PEERS, killAllPeers, type PeerSpec, type RunningPeer } from './lib/peers.js';
import { aggregate, markdown, svg } from './lib/report.js';
import { broadcast } from './scenarios/broadcast.js';
import { echo } from './scenarios/echo.js';
import { idle } from './scenarios/idle.js';
import { mqttFanout } from './scenarios/mqtt-fanout.js';
import { mqttQos1 } from './scenarios/mqtt-qos1.js';
import { reload } from './scenarios/reload.js';
import type { Measurement, Options, Scenario, ScenarioContext } from './scenarios/types.js';

const SCENARIOS: Scenario[] = [idle, echo, broadcast, reload, mqttFanout, mqttQos1];
const DRIVERS = 4;

function parseArgs(argv: string[]): { opts: Options; only: string[]; runtime: string; out: string | null } {
  const flags = new Map<string, string>();
  for (const arg of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg}`);
    flags.set(m[1], m[2] ?? 'true');
  }
  const quick = flags.has('quick');
  const runtime = flags.get('runtime') ?? 'dist';
  if (runtime !== 'dist' && runtime !== 'src') throw new Error('--runtime is dist or src');
  const peerKeys = flags.get('peers')?.split(',') ?? Object.keys(PEERS).filter((k) => !PEERS[k].optIn);
  for (const key of peerKeys) if (!PEERS[key]) throw new Error(`unknown peer ${key} (${Object.keys(PEERS).join(', ')})`);
  // ws first: it is the reference every ratio is taken against.
  const peers = peerKeys.map((k) => PEERS[k]).sort((a, b) => (a.key === 'ws' ? -1 : b.key === 'ws' ? 1 : 0));
  return {
    opts: {
      quick,
      repeats: Number(flags.get('repeats') ?? (quick ? 1 : 3)),
      duration: Number(flags.get('duration') ?? (quick ? 1.5 : 3)),
      warmup: quick ? 0.5 : 1,
      echoVariants: flags.get('variants')?.split(','),
      peers: quick ? peers.filter((p) => !/^gwm?2x2$/.test(p.key) || flags.has('peers')) : peers,
    },
    runtime,
    out: flags.get('out') ?? null,
    only: (flags.get('only') ?? SCENARIOS.map((s) => s.key).join(',')).split(','),
  };
}

function machine(): Record<string, unknown> {
  const cpus = os.cpus();
  let kernel = os.release();
  try {
    kernel = fs.readFileSync('/proc/version', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {}
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    kernel,
    node: process.version,
    loadavgAtStart: os.loadavg().map((x) => Number(x.toFixed(2))),
  };
}

/**
 * Compiles runtime/src with tsc into bench/.runtime (private: runtime/dist belongs to the build)
 * so gatewayworker runs as an installed app runs it; tsx would add its per-function `__name`
 * helpers to the hot path. Falls back to the TS sources if the compile fails.
 */
function compileRuntime(log: (line: string) => void): void {
  const out = fileURLToPath(new URL('./.runtime/', import.meta.url));
  const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url));
  const project = fileURLToPath(new URL('../runtime/tsconfig.json', import.meta.url));
  fs.rmSync(out, { recursive: true, force: true });
  const r = spawnSync(process.execPath, [tsc, '-p', project, '--outDir', out, '--declaration', 'false', '--sourceMap', 'false'], { encoding: 'utf8' });
  if (r.status === 0) {
    process.env.BENCH_RUNTIME = new URL('./.runtime/index.js', import.meta.url).href;
    log('gatewayworker: runtime compiled with tsc into bench/.runtime');
  } else {
    log(`gatewayworker: tsc failed, running the TS sources through tsx instead:\n${r.stdout}${r.stderr}`);
  }
}

async function main(): Promise<void> {
  const { opts, only, runtime, out } = parseArgs(process.argv.slice(2));
  // `--only=mqtt` selects mqtt-fanout and mqtt-qos1.
  const scenarios = SCENARIOS.filter((s) => only.some((o) => s.key === o || s.key.startsWith(`${o}-`)));
  if (scenarios.length === 0) throw new Error(`--only matches no scenario (${SCENARIOS.map((s) => s.key).join(', ')})`);
  const started = Date.now();
  const log = (line: string): void => void process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
  if (runtime === 'dist') compileRuntime(log);
  const pool = new DriverPool(DRIVERS);
  let nextPort = 20000 + Math.floor(Math.random() * 200) * 50; // below 32768: above it are ephemeral ports
  const shared = new Map<string, RunningPeer>();
  // The machine may be shared: a port taken by someone else means the next block of 50, not a failure.
  const startOnFreePort = async (spec: PeerSpec): Promise<RunningPeer> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await spec.start((nextPort += 50));
      } catch (error) {
        if (attempt >= 4 || !/EADDRINUSE|Address already in use/i.test((error as Error).message)) throw error;
        log(`${spec.label}: port ${nextPort} in use, trying the next one`);
      }
    }
  };
  const notes: string[] = [];
  const failedToStart = new Map<string, Error>();
  const ctx: ScenarioContext = {
    pool,
    opts,
    log,
    note(line) {
      if (notes.includes(line)) return;
      notes.push(line);
      log(line);
    },
    async shared(spec: PeerSpec) {
      let peer = shared.get(spec.key);
      if (!peer) {
        const failed = failedToStart.get(spec.key);
        if (failed) throw failed;
        try {
          peer = await startOnFreePort(spec);
        } catch (error) {
          failedToStart.set(spec.key, error as Error);
          throw error;
        }
        shared.set(spec.key, peer);
        log(`started ${spec.label} on :${peer.port} (${peer.pids().length} processes)`);
      }
      return peer;
    },
    async fresh(spec: PeerSpec) {
      const peer = await startOnFreePort(spec);
      log(`started a fresh ${spec.label} on :${peer.port}`);
      return peer;
    },
  };
  const cleanup = (): void => {
    killAllPeers();
    pool.kill();
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping everything`);
      cleanup();
      process.exit(130);
    });
  }
  process.on('exit', cleanup);

  const measurements: Measurement[] = [];
  try {
    await pool.ready();
    log(`${DRIVERS} driver processes up; peers: ${opts.peers.filter((p) => scenarios.some((s) => s.wires.includes(p.wire))).map((p) => p.label).join(', ')}; ${opts.repeats} repeat(s) × ${opts.duration} s windows`);
    for (const scenario of scenarios) {
      log(`— ${scenario.title}`);
      measurements.push(...(await scenario.run(ctx)));
    }
  } finally {
    for (const peer of shared.values()) await peer.stop();
    cleanup();
  }

  const rows = aggregate(measurements, scenarios);
  const date = new Date().toISOString().replace(/:/g, '-').replace(/\..*/, '');
  const info = machine();
  const table = markdown(rows, scenarios, notes);
  const header = `Machine: ${info.cpu}, ${info.cores} cores, ${info.memoryGb} GB, ${info.kernel}, Node ${info.node}; load average at start ${(info.loadavgAtStart as number[]).join(' ')}. Medians of ${opts.repeats} alternating repeat(s) of ${opts.duration} s; ±x% = half the min–max spread.`;
  process.stdout.write(`${header}\n\n${table}\n`);
  // --out=<dir> writes elsewhere (the test suite's smoke run must not touch the committed results).
  const dir = out ? `${path.resolve(out)}/` : fileURLToPath(new URL('./results/', import.meta.url));
  fs.mkdirSync(dir, { recursive: true });
  const result = { date: new Date().toISOString(), mode: opts.quick ? 'quick' : 'full', runtime: process.env.BENCH_RUNTIME ? 'dist (tsc)' : 'src (tsx)', machine: info, options: { ...opts, peers: opts.peers.map((p) => p.key) }, notes, rows, measurements };
  fs.writeFileSync(`${dir}${date}${opts.quick ? '-quick' : ''}.json`, `${JSON.stringify(result, null, 2)}\n`);
  // A --quick smoke run (CI) never replaces the chart and table of the last full run, and neither
  // does a run of some scenarios only: `--only=mqtt` writes latest-mqtt.{md,svg}.
  const partial = scenarios.length < SCENARIOS.length ? `-${only.join('+')}` : '';
  const latest = `latest${partial}${opts.quick ? '-quick' : ''}`;
  const against = scenarios.some((s) => s.reference === 'aedes') ? (scenarios.some((s) => !s.reference) ? 'raw ws / Aedes' : 'Aedes') : 'raw ws';
  fs.writeFileSync(`${dir}${latest}.svg`, svg(rows, `gatewayworker vs ${against} (${opts.quick ? 'quick' : 'full'} run, ${date})`, scenarios));
  fs.writeFileSync(`${dir}${latest}.md`, `${header}\n\n${table}\n`);
  log(`wrote ${path.relative(process.cwd(), dir) || '.'}/${date}${opts.quick ? '-quick' : ''}.json, ${latest}.svg and ${latest}.md in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
    killAllPeers();
    process.exit(1);
  },
);

/**
 * The servers compared. Each peer is a process tree the harness starts detached (its own process
 * group, so /proc tells its CPU and memory apart from the driver's) and always stops again.
 * To add the MQTT peers later (Aedes, mosquitto, the gatewayworker MQTT hub): a PeerSpec with
 * `wire: 'mqtt'` and a `start` that spawns it; scenarios pick the peers whose wire they speak.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WireKind } from '../driver/wire.js';
import { cmdline, groupPids, sleep } from './proc.js';

const serversDir = fileURLToPath(new URL('../servers/', import.meta.url));

export interface RunningPeer {
  spec: PeerSpec;
  host: string;
  port: number;
  pgid: number;
  /** Live processes of the server (master included for gatewayworker). */
  pids(): number[];
  /** Pids of the processes that hold client connections (the gateways for gatewayworker). */
  frontPids(): number[];
  stop(): Promise<void>;
}

export interface PeerSpec {
  key: string;
  label: string;
  wire: WireKind;
  /** How many processes hold client connections. */
  fronts: number;
  /** Starts one instance; `port` is a free base port below 32768 (it may use a few above it). */
  start(port: number): Promise<RunningPeer>;
}

const running = new Set<RunningPeer>();

/** Kills every server tree still up (exit, Ctrl+C, errors). */
export function killAllPeers(): void {
  for (const peer of running) {
    try {
      process.kill(-peer.pgid, 'SIGKILL');
    } catch {}
  }
  running.clear();
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function launch(
  spec: PeerSpec,
  args: string[],
  env: NodeJS.ProcessEnv,
  readyLine: RegExp,
  port: number | ((out: string) => number),
  fronts: (pids: number[]) => number[],
): Promise<RunningPeer> {
  const proc: ChildProcess = spawn(process.execPath, args, { env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d));
  proc.stderr!.on('data', (d: Buffer) => (out += d));
  const pgid = proc.pid!;
  const peer: RunningPeer = {
    spec,
    host: '127.0.0.1',
    port: 0,
    pgid,
    pids: () => groupPids(pgid),
    frontPids: () => fronts(groupPids(pgid)),
    async stop() {
      running.delete(peer);
      try {
        process.kill(pgid, 'SIGTERM');
      } catch {}
      const deadline = Date.now() + 4000;
      while (isAlive(pgid) && Date.now() < deadline) await sleep(50);
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {}
      if (env.GATEWAYWORKER_RUNTIME_DIR) fs.rmSync(env.GATEWAYWORKER_RUNTIME_DIR, { recursive: true, force: true });
    },
  };
  running.add(peer);
  const deadline = Date.now() + 30_000;
  while (!readyLine.test(out)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      await peer.stop();
      throw new Error(`${spec.label} did not start:\n${out}`);
    }
    await sleep(50);
  }
  peer.port = typeof port === 'number' ? port : port(out);
  return peer;
}

const tsx = ['--import', 'tsx'];

const single = (key: string, label: string, file: string, wire: WireKind): PeerSpec => {
  const spec: PeerSpec = {
    key,
    label,
    wire,
    fronts: 1,
    start: (port) =>
      launch(spec, [...tsx, path.join(serversDir, file)], { PORT: String(port) }, /READY /, (out) => JSON.parse(/READY (.*)/.exec(out)![1]).port, (pids) => pids),
  };
  return spec;
};

const gatewayworker = (gateways: number, workers: number): PeerSpec => {
  const spec: PeerSpec = {
    key: `gw${gateways}x${workers}`,
    label: `gatewayworker ${gateways}+${workers}`,
    wire: 'ws',
    fronts: gateways,
    async start(port) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gw-bench-'));
      const env = {
        PORT: String(port),
        REGISTER_PORT: String(port + 1),
        START_PORT: String(port + 2),
        GATEWAYS: String(gateways),
        WORKERS: String(workers),
        GATEWAYWORKER_RUNTIME_DIR: dir,
        GATEWAYWORKER_LOG_LEVEL: 'warn',
      };
      // BENCH_CPU_PROF=<dir>: every gatewayworker process writes a V8 CPU profile there on exit.
      const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
      const peer = await launch(spec, [...prof, ...tsx, path.join(serversDir, 'gw.ts'), 'start'], env, /Start success/, port, (pids) =>
        pids.filter((pid) => /BenchGateway#/.test(cmdline(pid))),
      );
      // Every worker must be linked to every gateway before clients arrive, or the sticky router
      // would put them all on the first worker that linked: give the links a moment.
      await sleep(1500);
      return peer;
    },
  };
  return spec;
};

export const PEERS: Record<string, PeerSpec> = {
  ws: single('ws', 'raw ws', 'ws.ts', 'ws'),
  sio: single('sio', 'Socket.IO', 'socketio.ts', 'socketio'),
  gw1x1: gatewayworker(1, 1),
  gw2x2: gatewayworker(2, 2),
};

/** The peer every ratio is taken against. */
export const REFERENCE = 'ws';

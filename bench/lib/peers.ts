/**
 * The servers compared. Each peer is a process tree the harness starts detached (its own process
 * group, so /proc tells its CPU and memory apart from the driver's) and always stops again.
 * Scenarios pick the peers whose wire they speak: `ws` / `socketio` for the WebSocket scenarios,
 * `mqtt` for Aedes, mosquitto and the gatewayworker MQTT broker. A peer whose package or binary is
 * missing says so in `missing()` and is skipped with a line in the report.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
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
  /** Why this peer cannot run here (package or binary missing), or null. */
  missing?(): string | null;
  /** Not in the default peer list (name it in --peers): keeps the full run inside its budget. */
  optIn?: boolean;
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
  extra: { command?: string; tmpDir?: string } = {},
): Promise<RunningPeer> {
  const proc: ChildProcess = spawn(extra.command ?? process.execPath, args, { env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
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
      if (extra.tmpDir) fs.rmSync(extra.tmpDir, { recursive: true, force: true });
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

const gatewayworker = (gateways: number, workers: number, mqtt = false): PeerSpec => {
  const spec: PeerSpec = {
    key: `gw${mqtt ? 'm' : ''}${gateways}x${workers}`,
    label: `gatewayworker${mqtt ? ' MQTT' : ''} ${gateways}+${workers}`,
    wire: mqtt ? 'mqtt' : 'ws',
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
      const peer = await launch(spec, [...prof, ...tsx, path.join(serversDir, mqtt ? 'gw-mqtt.ts' : 'gw.ts'), 'start'], env, /Start success/, port, (pids) =>
        pids.filter((pid) => /Bench(Mqtt)?Gateway#/.test(cmdline(pid))),
      );
      // Every worker must be linked to every gateway before clients arrive, or the sticky router
      // would put them all on the first worker that linked: give the links a moment.
      await sleep(1500);
      return peer;
    },
  };
  return spec;
};

const requireHere = createRequire(import.meta.url);

const aedes: PeerSpec = {
  ...single('aedes', 'Aedes', 'aedes.ts', 'mqtt'),
  missing() {
    try {
      requireHere.resolve('aedes');
      return null;
    } catch {
      return 'npm package `aedes` is not installed (npm install)';
    }
  },
};

const MOSQUITTO = process.env.BENCH_MOSQUITTO ?? '/usr/sbin/mosquitto';

/**
 * mosquitto from the Debian package, with a generated config: one listener on loopback, anonymous,
 * no persistence, TCP_NODELAY like every peer, log to stderr (errors, warnings and the start-up
 * lines the harness waits for; no per-connection lines). No limits on QoS 1 messages in flight
 * to a client (`max_inflight_messages 0`; the default 20 would cap the one QoS 1 subscriber where
 * Aedes and gatewayworker have no cap for MQTT 3.1.1 clients) and a queue large enough never to
 * drop (the driver keeps the messages in transit bounded anyway).
 */
const mosquitto: PeerSpec = {
  key: 'mosquitto',
  label: 'mosquitto',
  wire: 'mqtt',
  fronts: 1,
  missing() {
    try {
      fs.accessSync(MOSQUITTO, fs.constants.X_OK);
      return null;
    } catch {
      return `${MOSQUITTO} not found (apt-get install mosquitto)`;
    }
  },
  start(port) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mosquitto-bench-'));
    const conf = path.join(dir, 'mosquitto.conf');
    fs.writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        'allow_anonymous true',
        'persistence false',
        'set_tcp_nodelay true',
        'max_inflight_messages 0',
        'max_queued_messages 1000000',
        'log_dest stderr',
        'log_type error',
        'log_type warning',
        'log_type information', // the "running" line the harness waits for is at this level
        'connection_messages false',
        '',
      ].join('\n'),
    );
    return launch(mosquitto, ['-c', conf], {}, /mosquitto version \S+ running/, port, (pids) => pids, { command: MOSQUITTO, tmpDir: dir });
  },
};

export const PEERS: Record<string, PeerSpec> = {
  ws: single('ws', 'raw ws', 'ws.ts', 'ws'),
  sio: single('sio', 'Socket.IO', 'socketio.ts', 'socketio'),
  gw1x1: gatewayworker(1, 1),
  gw2x2: gatewayworker(2, 2),
  aedes,
  mosquitto,
  gwm1x1: gatewayworker(1, 1, true),
  gwm2x2: { ...gatewayworker(2, 2, true), optIn: true },
  rawmqtt: { ...single('rawmqtt', 'raw Node MQTT (reference)', 'raw-mqtt.ts', 'mqtt'), optIn: true },
};

/** The peer every ratio is taken against (a scenario may name another: Aedes for MQTT). */
export const REFERENCE = 'ws';

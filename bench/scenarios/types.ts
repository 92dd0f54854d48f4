import type { WireKind } from '../driver/wire.js';
import type { DriverPool } from '../lib/drivers.js';
import type { PeerSpec, RunningPeer } from '../lib/peers.js';

export interface Options {
  quick: boolean;
  repeats: number;
  /** Seconds measured per window. */
  duration: number;
  /** Seconds of traffic before each window. */
  warmup: number;
  peers: PeerSpec[];
  /** Echo variants to run, as `<bytes>x<window>` (default: all four). */
  echoVariants?: string[];
}

/** One measured window of one peer. */
export interface Measurement {
  scenario: string;
  variant: string;
  peer: string;
  repeat: number;
  metrics: Record<string, number>;
}

export interface ScenarioContext {
  pool: DriverPool;
  opts: Options;
  /** Long-lived instances (started once per run), by peer key. */
  shared(spec: PeerSpec): Promise<RunningPeer>;
  /** A fresh instance for this scenario only; stop it when done. */
  fresh(spec: PeerSpec): Promise<RunningPeer>;
  log(line: string): void;
  /** A line for the report under the tables (a peer skipped, and why); said once. */
  note(line: string): void;
}

/**
 * A scenario drives the peers that speak one of its `wires` and returns one measurement per
 * window. Ratios are taken against `reference` (default raw ws; Aedes for MQTT) and, when set,
 * also against `secondReference` (mosquitto for MQTT).
 */
export interface Scenario {
  key: string;
  title: string;
  wires: WireKind[];
  reference?: string;
  secondReference?: string;
  /** Column header of the throughput figure in the table. */
  unit?: string;
  /** The metric the cost ratio (lower is better) is taken on, and the throughput metric. */
  cost: { metric: string; label: string };
  throughput?: { metric: string; label: string };
  run(ctx: ScenarioContext): Promise<Measurement[]>;
}

/** Peers in a different order each repeat, so a slow phase of the shared machine hits them all. */
export function rotate<T>(items: T[], repeat: number): T[] {
  const k = repeat % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** Splits `total` connections over the drivers: [driverIndex, count] pairs. */
export function spread(total: number, drivers: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < drivers; i++) {
    const n = Math.floor(total / drivers) + (i < total % drivers ? 1 : 0);
    if (n > 0) out.push([i, n]);
  }
  return out;
}

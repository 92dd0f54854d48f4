/**
 * One room: its players and a fixed-step simulation on a runtime `Timer`. The server is the
 * authority: clients only say which keys are down; speed and the arena's walls are enforced here.
 */
import { Gateway, Timer } from 'gatewayworker';
import { config } from './config.ts';

/** The keys a client may hold down. */
export interface Keys {
  up: boolean;
  down: boolean;
  left: boolean;
  right: boolean;
}

export const NO_KEYS: Readonly<Keys> = Object.freeze({ up: false, down: false, left: false, right: false });

export interface Player {
  readonly id: string;
  readonly name: string;
  /** What `resume` needs; `<room>.<player>.<secret>`. */
  readonly token: string;
  /** The connection playing, or null while the player is away (grace period). */
  clientId: string | null;
  x: number;
  y: number;
  /** Keys held since the last applied input. */
  keys: Keys;
  /** Inputs received, applied at the next step. */
  inputs: Array<{ seq: number; keys: Keys }>;
  /** Highest seq received on this connection (older ones are dropped). */
  lastSeq: number;
  /** Highest seq applied: the `ack` of the state messages. */
  ack: number;
  /** When the current connection was attached (ms). */
  since: number;
  /** Timer that ends the grace period, while away. */
  graceTimer: number | null;
}

/** Inputs kept per player between two steps; a client sending faster loses the oldest. */
const MAX_QUEUED_INPUTS = 32;
/** Steps run at most per timer callback, when the process was busy: the rest is skipped. */
const MAX_CATCH_UP = 5;

export class Room {
  readonly players = new Map<string, Player>();
  /** Steps simulated so far. */
  tick = 0;
  private loop: number | null = null;
  private last = 0;
  private lag = 0;
  /** Timer that disposes the room once it has stayed empty. */
  disposeTimer: number | null = null;

  constructor(readonly id: string) {}

  /** The gateway group of the room. */
  get group(): string {
    return `room:${this.id}`;
  }

  /** Seats taken: players connected and players away in their grace period. */
  get occupancy(): number {
    return this.players.size;
  }

  get connected(): number {
    let n = 0;
    for (const player of this.players.values()) if (player.clientId !== null) n++;
    return n;
  }

  get running(): boolean {
    return this.loop !== null;
  }

  /** Starts the loop: `tickRate` callbacks a second, each runs the steps due and sends the state. */
  start(): void {
    if (this.loop !== null) return;
    this.last = performance.now();
    this.lag = 0;
    this.loop = Timer.add(1 / config.tickRate, () => this.update());
  }

  stop(): void {
    if (this.loop !== null) Timer.del(this.loop);
    this.loop = null;
  }

  /** Queues an input; it takes effect at the next step. */
  input(player: Player, seq: number, keys: Keys): void {
    if (seq <= player.lastSeq) return; // late or repeated
    player.lastSeq = seq;
    player.inputs.push({ seq, keys });
    if (player.inputs.length > MAX_QUEUED_INPUTS) player.inputs.shift();
  }

  /** Players as the protocol shows them. */
  list(): Array<{ id: string; name: string; x: number; y: number; away?: true }> {
    return [...this.players.values()].map((p) => ({
      id: p.id,
      name: p.name,
      x: round(p.x),
      y: round(p.y),
      ...(p.clientId === null ? { away: true as const } : {}),
    }));
  }

  private update(): void {
    const dt = 1000 / config.tickRate;
    const now = performance.now();
    this.lag += now - this.last;
    this.last = now;
    let steps = 0;
    while (this.lag >= dt && steps < MAX_CATCH_UP) {
      this.step(dt / 1000);
      this.lag -= dt;
      steps++;
    }
    if (steps === MAX_CATCH_UP) this.lag = 0; // far behind: drop the backlog rather than spiral
    // A timer may fire a little early: then no step is due yet, but the state still goes out, so
    // clients get `tickRate` messages a second.
    this.broadcast();
  }

  /** One fixed step: apply the queued inputs, then move everyone who is here. */
  step(dt: number): void {
    this.tick++;
    const { width, height } = config.arena;
    const r = config.playerRadius;
    for (const player of this.players.values()) {
      for (const input of player.inputs) {
        player.keys = input.keys;
        player.ack = input.seq;
      }
      player.inputs.length = 0;
      if (player.clientId === null) continue;
      let dx = Number(player.keys.right) - Number(player.keys.left);
      let dy = Number(player.keys.down) - Number(player.keys.up);
      if (dx !== 0 && dy !== 0) {
        dx *= Math.SQRT1_2;
        dy *= Math.SQRT1_2;
      }
      player.x = clamp(player.x + dx * config.speed * dt, r, width - r);
      player.y = clamp(player.y + dy * config.speed * dt, r, height - r);
    }
  }

  /** The state to every connected player, each with the `ack` of its own inputs. */
  private broadcast(): void {
    const players = JSON.stringify(this.list());
    for (const player of this.players.values()) {
      if (player.clientId === null) continue;
      const state = `{"type":"state","tick":${this.tick},"ack":${player.ack},"players":${players}}`;
      Gateway.sendToClient(player.clientId, state).catch(() => {
        // the client is gone; its onClose is on the way
      });
    }
  }
}

/** A free spot, away from the walls and, if possible, from the other players. */
export function spawnPoint(room: Room): { x: number; y: number } {
  const { width, height } = config.arena;
  const margin = config.playerRadius * 4;
  let best = { x: width / 2, y: height / 2 };
  let bestDistance = -1;
  for (let attempt = 0; attempt < 8; attempt++) {
    const candidate = { x: margin + Math.random() * (width - 2 * margin), y: margin + Math.random() * (height - 2 * margin) };
    let nearest = Infinity;
    for (const p of room.players.values()) nearest = Math.min(nearest, Math.hypot(p.x - candidate.x, p.y - candidate.y));
    if (nearest > bestDistance) {
      best = candidate;
      bestDistance = nearest;
    }
  }
  return { x: round(best.x), y: round(best.y) };
}

function clamp(value: number, min: number, max: number): number {
  return value < min ? min : value > max ? max : value;
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

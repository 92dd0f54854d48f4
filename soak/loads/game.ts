/**
 * Game-room traffic: `players` players join by matchmaking (rooms of MAX_PLAYERS, default 4) and
 * send inputs (`{"type":"input","seq","keys"}`) every `inputIntervalMs`. The room sends `state`
 * TICK_RATE times a second. What the template promises (its README, "Reload, restarts and
 * crashes"): nobody is disconnected; while a room's owner restarts the room freezes (no `state`,
 * inputs dropped), then continues. Checked: no disconnects, no error replies, and at the end every
 * player's state stream is alive and acknowledges its last input. Freezes (gaps between two
 * `state`s longer than `freezeMs`) are measured and reported, not failed.
 */
import { WebSocket, type RawData } from 'ws';
import { eachLimited, sleep, type Counters, type Load } from './types.ts';

export interface GameOptions {
  port: number;
  players: number;
  inputIntervalMs: number;
  /** A gap between two states longer than this is a freeze. */
  freezeMs: number;
}

export interface Freeze {
  player: number;
  room: string;
  /** When the last state before the gap arrived (ms since epoch). */
  from: number;
  ms: number;
}

interface Player {
  idx: number;
  ws: WebSocket;
  closing: boolean;
  room: string;
  pid: number;
  seq: number;
  keys: { up: boolean; down: boolean; left: boolean; right: boolean };
  ack: number;
  states: number;
  lastStateAt: number;
  maxGapMs: number;
  timer?: NodeJS.Timeout;
}

export class GameLoad implements Load {
  readonly key = 'game';
  readonly clients: number;
  private readonly players: Player[] = [];
  private sending = false;
  private inputs = 0;
  private states = 0;
  private readonly freezes: Freeze[] = [];
  private disconnects: Array<{ idx: number; at: string; code: number }> = [];
  private errors: string[] = [];
  private errorCount = 0;
  private readonly errorAt: number[] = [];
  private stalled: number[] = [];
  private stoppedAt = 0;

  constructor(private readonly opts: GameOptions) {
    this.clients = opts.players;
  }

  async connect(): Promise<void> {
    const indexes = Array.from({ length: this.clients }, (_, i) => i);
    // Few at a time: matchmaking fills the fullest open room, so rooms end up full.
    await eachLimited(indexes, 2, async (idx) => {
      this.players[idx] = await this.join(idx);
    });
  }

  private join(idx: number): Promise<Player> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.opts.port}/`, { perMessageDeflate: false });
      const p: Player = { idx, ws, closing: false, room: '', pid: 0, seq: 0, keys: { up: false, down: false, left: false, right: false }, ack: 0, states: 0, lastStateAt: 0, maxGapMs: 0 };
      let joined = false;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`player ${idx}: no joined within 30 s`));
      }, 30_000);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'join', name: `soak${idx}` })));
      ws.on('message', (data: RawData) => {
        let m: Record<string, unknown>;
        try {
          m = JSON.parse(String(data));
        } catch {
          this.error(idx, `not JSON: ${String(data).slice(0, 80)}`);
          return;
        }
        switch (m.type) {
          case 'state':
            return this.state(p, m);
          case 'ping':
            ws.send('{"type":"pong"}');
            return;
          case 'joined':
            if (!joined) {
              joined = true;
              p.room = String(m.room);
              p.pid = Number(m.pid);
              clearTimeout(timer);
              resolve(p);
            }
            return;
          case 'error':
          case 'warning':
            if (!joined) {
              clearTimeout(timer);
              ws.terminate();
              reject(new Error(`player ${idx}: ${JSON.stringify(m)}`));
            }
            return this.error(idx, `${String(m.type)} ${String(m.code ?? '')} ${String(m.message ?? '')}`.trim());
          default:
            return; // left, rooms, pong
        }
      });
      ws.on('error', (err) => {
        if (!joined) {
          clearTimeout(timer);
          reject(new Error(`player ${idx}: ${err.message}`));
        }
      });
      ws.on('close', (code) => {
        if (p.closing) return;
        this.disconnects.push({ idx, at: new Date().toISOString(), code });
        if (p.timer) clearTimeout(p.timer);
      });
    });
  }

  private state(p: Player, m: Record<string, unknown>): void {
    const now = Date.now();
    this.states++;
    p.states++;
    if (p.lastStateAt > 0) {
      const gap = now - p.lastStateAt;
      if (gap > p.maxGapMs) p.maxGapMs = gap;
      if (gap > this.opts.freezeMs) this.freezes.push({ player: p.idx, room: p.room, from: p.lastStateAt, ms: gap });
    }
    p.lastStateAt = now;
    if (typeof m.ack === 'number') p.ack = m.ack;
  }

  private error(idx: number, text: string): void {
    this.errorCount++;
    if (this.errorAt.length < 10_000) this.errorAt.push(Date.now());
    if (this.errors.length < 20) this.errors.push(`${new Date().toISOString().slice(11, 23)} player ${idx}: ${text}`);
  }

  errorTimes(): number[] {
    return this.errorAt;
  }

  private sendInput(p: Player): void {
    if (p.ws.readyState !== WebSocket.OPEN) return;
    if (Math.random() < 0.25) {
      const k = p.keys;
      k.up = Math.random() < 0.3;
      k.down = !k.up && Math.random() < 0.4;
      k.left = Math.random() < 0.3;
      k.right = !k.left && Math.random() < 0.4;
    }
    p.seq++;
    this.inputs++;
    p.ws.send(JSON.stringify({ type: 'input', seq: p.seq, keys: p.keys }));
  }

  start(): void {
    this.sending = true;
    for (const p of this.players) {
      // Freezes count from the first state after the start (joins settle before).
      p.lastStateAt = 0;
      p.maxGapMs = 0;
      const tick = (): void => {
        if (!this.sending) return;
        this.sendInput(p);
        p.timer = setTimeout(tick, this.opts.inputIntervalMs);
      };
      p.timer = setTimeout(tick, Math.random() * this.opts.inputIntervalMs);
    }
  }

  stopSending(): void {
    this.sending = false;
    this.stoppedAt = Date.now();
    for (const p of this.players) if (p.timer) clearTimeout(p.timer);
  }

  /**
   * Every player sends one more input (again every 2 s while unacknowledged: one sent while the
   * room is frozen is dropped by design) until a state acknowledges it.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    const done = (p: Player): boolean => p.ack >= p.seq && p.lastStateAt > this.stoppedAt;
    let lastSend = 0;
    for (;;) {
      const waiting = this.players.filter((p) => !done(p));
      if (waiting.length === 0) {
        this.stalled = [];
        return true;
      }
      if (Date.now() > deadline) {
        this.stalled = waiting.map((p) => p.idx);
        return false;
      }
      if (Date.now() - lastSend > 2000) {
        for (const p of waiting) this.sendInput(p);
        lastSend = Date.now();
      }
      await sleep(100);
    }
  }

  counters(): Counters {
    return { sent: this.inputs, received: this.states, dup: 0, disconnects: this.disconnects.length, errors: this.errorCount };
  }

  /** Every gap longer than freezeMs, of every player (all players of a room freeze together). */
  freezeList(): Freeze[] {
    return this.freezes;
  }

  problems(): string[] {
    const out: string[] = [];
    if (this.disconnects.length > 0) out.push(`game: ${this.disconnects.length} players were disconnected (first: ${JSON.stringify(this.disconnects[0])})`);
    if (this.stalled.length > 0) out.push(`game: ${this.stalled.length} players got no state acknowledging their last input at the end (players ${this.stalled.slice(0, 10).join(', ')})`);
    if (this.errorCount > 0) out.push(`game: ${this.errorCount} error/warning replies (first: ${this.errors[0]})`);
    return out;
  }

  details(): Record<string, unknown> {
    const rooms = new Map<string, number>();
    for (const p of this.players) rooms.set(p.room, (rooms.get(p.room) ?? 0) + 1);
    return {
      players: this.clients,
      rooms: Object.fromEntries(rooms),
      inputIntervalMs: this.opts.inputIntervalMs,
      freezeMs: this.opts.freezeMs,
      freezes: this.freezes.length,
      maxGapMs: Math.max(0, ...this.players.map((p) => p.maxGapMs)),
      stalled: this.stalled,
      disconnects: this.disconnects,
      errors: this.errors,
    };
  }

  async close(): Promise<void> {
    this.stopSending();
    for (const p of this.players) {
      if (!p) continue;
      p.closing = true;
      p.ws.terminate();
    }
  }
}

/**
 * Chat traffic: `rooms` rooms of `perRoom` clients each (workerman-chat protocol, the template's
 * README). Every client logs in, then says `c<sender>:<seq>` to its room every `intervalMs`
 * (jittered); every say must reach every member of the room, the sender included, exactly once
 * (a BusinessWorker kill may double one: at least once) and never another room.
 */
import { WebSocket, type RawData } from 'ws';
import { DeliveryTracker } from '../track.ts';
import { eachLimited, jitter, until, type Counters, type Load } from './types.ts';

export interface ChatOptions {
  port: number;
  rooms: number;
  perRoom: number;
  /** Mean time between two says of one client. */
  intervalMs: number;
  /** Room names are `soak-<tag>-<n>`. */
  tag: string;
}

interface Client {
  idx: number;
  room: number;
  ws: WebSocket;
  closing: boolean;
  timer?: NodeJS.Timeout;
}

export class ChatLoad implements Load {
  readonly key = 'chat';
  readonly clients: number;
  private readonly conns: Client[] = [];
  private readonly tracker: DeliveryTracker;
  private readonly sentBy: number[];
  private sending = false;
  private disconnects: Array<{ idx: number; at: string; code: number }> = [];
  private errors: string[] = [];
  private errorCount = 0;
  private readonly errorAt: number[] = [];
  private warnings = 0;

  constructor(private readonly opts: ChatOptions) {
    this.clients = opts.rooms * opts.perRoom;
    this.tracker = new DeliveryTracker(this.clients, this.clients);
    this.sentBy = new Array<number>(this.clients).fill(0);
  }

  async connect(): Promise<void> {
    const indexes = Array.from({ length: this.clients }, (_, i) => i);
    await eachLimited(indexes, 8, async (idx) => {
      this.conns[idx] = await this.login(idx, idx % this.opts.rooms);
    });
  }

  private login(idx: number, room: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${this.opts.port}/`, { perMessageDeflate: false });
      const client: Client = { idx, room, ws, closing: false };
      let loggedIn = false;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`chat client ${idx}: no login reply within 30 s`));
      }, 30_000);
      ws.on('open', () => ws.send(JSON.stringify({ type: 'login', client_name: `soak${idx}`, room_id: `soak-${this.opts.tag}-${room}` })));
      ws.on('message', (data: RawData) => {
        let m: Record<string, unknown>;
        try {
          m = JSON.parse(String(data));
        } catch {
          this.error(idx, `not JSON: ${String(data).slice(0, 80)}`);
          return;
        }
        switch (m.type) {
          case 'ping':
            ws.send('{"type":"pong"}');
            return;
          case 'say':
            return this.said(client, m);
          case 'login':
            if (!loggedIn && m.client_list !== undefined) {
              loggedIn = true;
              clearTimeout(timer);
              resolve(client);
            }
            return;
          case 'error':
            return this.error(idx, String(m.message ?? m.code));
          case 'warning':
            this.warnings++;
            return this.error(idx, `warning ${String(m.code)}`);
          default:
            return; // history, logins and logouts of others
        }
      });
      ws.on('error', (err) => {
        if (!loggedIn) {
          clearTimeout(timer);
          reject(new Error(`chat client ${idx}: ${err.message}`));
        }
      });
      ws.on('close', (code) => {
        if (client.closing) return;
        this.disconnects.push({ idx, at: new Date().toISOString(), code });
        if (client.timer) clearTimeout(client.timer);
      });
    });
  }

  private said(client: Client, m: Record<string, unknown>): void {
    const match = /^c(\d+):(\d+)$/.exec(String(m.content));
    const sender = match ? Number(match[1]) : -1;
    // Another room's message, or not one of ours: never expected.
    if (!match || sender >= this.clients || sender % this.opts.rooms !== client.room) {
      this.tracker.foreign++;
      return;
    }
    this.tracker.got(client.idx, sender, Number(match[2]));
  }

  private error(idx: number, text: string): void {
    this.errorCount++;
    if (this.errorAt.length < 10_000) this.errorAt.push(Date.now());
    if (this.errors.length < 20) this.errors.push(`${new Date().toISOString().slice(11, 23)} client ${idx}: ${text}`);
  }

  errorTimes(): number[] {
    return this.errorAt;
  }

  start(): void {
    this.sending = true;
    for (const client of this.conns) {
      const tick = (): void => {
        if (!this.sending) return;
        if (client.ws.readyState === WebSocket.OPEN) {
          const seq = ++this.sentBy[client.idx];
          this.tracker.expect(this.opts.perRoom);
          client.ws.send(JSON.stringify({ type: 'say', to_client_id: 'all', content: `c${client.idx}:${seq}` }));
        }
        client.timer = setTimeout(tick, jitter(this.opts.intervalMs));
      };
      client.timer = setTimeout(tick, Math.random() * this.opts.intervalMs);
    }
  }

  stopSending(): void {
    this.sending = false;
    for (const client of this.conns) if (client.timer) clearTimeout(client.timer);
  }

  drain(timeoutMs: number): Promise<boolean> {
    return until(() => this.tracker.pending <= 0, timeoutMs);
  }

  counters(): Counters {
    const t = this.tracker;
    return { sent: this.sentBy.reduce((a, b) => a + b, 0), received: t.received, expected: t.expected, delivered: t.delivered, dup: t.dup, disconnects: this.disconnects.length, errors: this.errorCount };
  }

  /** Every (receiver, sender) pair of the same room. */
  private *pairs(): Generator<[number, number]> {
    for (let r = 0; r < this.clients; r++) for (let s = r % this.opts.rooms; s < this.clients; s += this.opts.rooms) yield [r, s];
  }

  problems(): string[] {
    const out: string[] = [];
    const lost = this.tracker.pending;
    if (lost > 0) out.push(`chat: ${lost} deliveries lost (e.g. ${this.tracker.missing(this.pairs(), (s) => this.sentBy[s], 5).examples.join(', ')})`);
    if (this.tracker.foreign > 0) out.push(`chat: ${this.tracker.foreign} messages reached a client outside the sender's room`);
    if (this.disconnects.length > 0) out.push(`chat: ${this.disconnects.length} clients were disconnected (first: ${JSON.stringify(this.disconnects[0])})`);
    if (this.errorCount > 0) out.push(`chat: ${this.errorCount} error/warning replies (first: ${this.errors[0]})`);
    return out;
  }

  details(): Record<string, unknown> {
    const missing = this.tracker.missing(this.pairs(), (s) => this.sentBy[s], 20);
    return {
      rooms: this.opts.rooms,
      perRoom: this.opts.perRoom,
      intervalMs: this.opts.intervalMs,
      foreign: this.tracker.foreign,
      missing: missing.count,
      missingExamples: missing.examples,
      duplicateExamples: this.tracker.duplicates(20),
      disconnects: this.disconnects,
      errors: this.errors,
      warnings: this.warnings,
    };
  }

  async close(): Promise<void> {
    this.stopSending();
    for (const client of this.conns) {
      if (!client) continue;
      client.closing = true;
      client.ws.terminate();
    }
  }
}

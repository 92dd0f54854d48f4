/**
 * One load-driver process (forked by lib/drivers.ts). It holds groups of client connections and
 * runs echo / broadcast traffic on them; the parent marks measurement windows with `mark`, which
 * returns what happened since the previous mark. Commands arrive over the IPC channel.
 */
import { Histogram, nowUs } from '../lib/hist.js';
import type { MqttWireOptions } from './mqtt.js';
import { openWire, type WireConn, type WireKind } from './wire.js';

interface Group {
  conns: Array<WireConn & { sent: number[]; sentHead: number }>;
  running: boolean;
  /** Messages completed (echoes received / broadcast deliveries) since the last mark. */
  count: number;
  /** Broadcasts the sender saw come back since the last mark. */
  rounds: number;
  hist: Histogram;
  /** Messages still on their way (halt waits for them); default: echoes not answered yet. */
  inFlight?: () => number;
  /** MQTT QoS 1 publishers: end-to-end credit left and the connections waiting for some. */
  credit?: number;
  stalled?: Array<() => void>;
  /** Times a publisher had to wait for credit (the subscriber side lagging). */
  stalls?: number;
  /** Connections the server closed while the group was open (never counted for `close`). */
  dropped: number;
  /** Echoes that arrived with nothing of theirs in flight (a message answered twice). */
  dups: number;
}

export type Command =
  | { op: 'connect'; group: string; kind: WireKind; host: string; port: number; room?: string; count: number; localAddress: string; concurrency: number; mqtt?: MqttWireOptions }
  | { op: 'echo'; group: string; size: number; window: number }
  | { op: 'receive'; group: string }
  | { op: 'broadcast'; group: string; size: number; window: number }
  | { op: 'halt'; group: string }
  | { op: 'q1receive'; group: string; creditGroup: string }
  | { op: 'q1publish'; group: string; size: number; window: number; credit: number; index: number }
  | { op: 'credit'; group: string; n: number }
  | { op: 'mark'; groups: string[] }
  | { op: 'close'; group: string };

const groups = new Map<string, Group>();
let topicCounter = 0;

function group(name: string): Group {
  const g = groups.get(name);
  if (!g) throw new Error(`unknown group ${name}`);
  return g;
}

async function connect(cmd: Extract<Command, { op: 'connect' }>): Promise<unknown> {
  const g: Group = groups.get(cmd.group) ?? { conns: [], running: false, count: 0, rounds: 0, hist: new Histogram(), dropped: 0, dups: 0 };
  groups.set(cmd.group, g);
  const started = performance.now();
  let next = 0;
  let failed = 0;
  let firstError = '';
  const worker = async (): Promise<void> => {
    while (next < cmd.count) {
      next++;
      // MQTT publishers each get their own topic: `{n}` becomes a tag unique in the run.
      const mqtt = cmd.mqtt?.topic ? { ...cmd.mqtt, topic: cmd.mqtt.topic.replace('{n}', `${process.pid}-${++topicCounter}`) } : cmd.mqtt;
      const conn = openWire(cmd.kind, { host: cmd.host, port: cmd.port, room: cmd.room, localAddress: cmd.localAddress, timeoutMs: 20_000, mqtt });
      try {
        await conn.ready;
        g.conns.push(Object.assign(conn, { sent: [] as number[], sentHead: 0 }));
        void conn.closed.then(() => {
          if (groups.get(cmd.group) === g) g.dropped++;
        });
      } catch (error) {
        failed++;
        firstError ||= (error as Error).message;
        conn.close();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(cmd.concurrency, cmd.count) }, worker));
  return { opened: cmd.count - failed, failed, ms: performance.now() - started, error: firstError };
}

function echo(cmd: Extract<Command, { op: 'echo' }>): unknown {
  const g = group(cmd.group);
  const payload = 'E'.padEnd(cmd.size, 'x');
  g.running = true;
  for (const conn of g.conns) {
    conn.sent = [];
    conn.sentHead = 0;
    conn.onText = () => {
      const now = nowUs();
      if (conn.sentHead >= conn.sent.length) {
        g.dups++;
        return;
      }
      g.hist.record(now - conn.sent[conn.sentHead++]);
      g.count++;
      if (conn.sentHead > 4096) {
        conn.sent = conn.sent.slice(conn.sentHead);
        conn.sentHead = 0;
      }
      if (g.running) {
        conn.sent.push(now);
        conn.send(payload);
      }
    };
    for (let i = 0; i < cmd.window; i++) {
      conn.sent.push(nowUs());
      conn.send(payload);
    }
  }
  return { ok: true };
}

function receive(cmd: Extract<Command, { op: 'receive' }>): unknown {
  const g = group(cmd.group);
  for (const conn of g.conns) {
    conn.onText = (text) => {
      if (text.charCodeAt(0) !== 0x42) return;
      g.hist.record(nowUs() - Number.parseInt(text.slice(1, 17), 10));
      g.count++;
    };
  }
  return { ok: true };
}

/** Closed loop: the sender (a room member itself) sends the next broadcast when one comes back. */
function broadcast(cmd: Extract<Command, { op: 'broadcast' }>): unknown {
  const g = group(cmd.group);
  const sender = g.conns[0];
  const message = (): string => `B${String(nowUs()).padStart(16, '0')} `.padEnd(cmd.size, 'x');
  g.running = true;
  sender.onText = (text) => {
    if (text.charCodeAt(0) !== 0x42) return;
    g.rounds++;
    if (g.running) sender.send(message());
  };
  for (let i = 0; i < cmd.window; i++) sender.send(message());
  return { ok: true };
}

async function halt(cmd: Extract<Command, { op: 'halt' }>): Promise<unknown> {
  const g = group(cmd.group);
  g.running = false;
  // Let what is in flight come back, so the next run starts from a quiet server.
  const deadline = Date.now() + 3000;
  const inFlight = g.inFlight ?? ((): number => g.conns.reduce((n, c) => n + (c.sent.length - c.sentHead), 0));
  while (inFlight() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 100));
  for (const conn of g.conns) {
    conn.onText = () => {};
    conn.onAck = () => {};
  }
  const left = inFlight();
  const stalls = g.stalls ?? 0;
  g.inFlight = undefined;
  g.stalled = undefined;
  g.stalls = 0;
  return { inFlight: left, stalls, dropped: g.dropped, dups: g.dups };
}

/**
 * MQTT QoS 1 many-to-one, the subscriber side: counts and times every message (`Q<driver><µs>…`)
 * and hands credit back to the publishing driver it came from (through the parent, batched), so
 * the messages between publish and delivery stay bounded for every broker: PUBACK to the publisher
 * only says the broker took the message, not that the subscriber got it.
 */
function q1receive(cmd: Extract<Command, { op: 'q1receive' }>): unknown {
  const g = group(cmd.group);
  const credits: number[] = [];
  let owed = 0;
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (owed === 0) return;
    process.send!({ id: -1, event: 'credit', group: cmd.creditGroup, credits: credits.slice() });
    credits.fill(0);
    owed = 0;
  };
  for (const conn of g.conns) {
    conn.onText = (text) => {
      if (text.charCodeAt(0) !== 0x51 /* Q */) return;
      const from = text.charCodeAt(1) - 0x30;
      g.hist.record(nowUs() - Number.parseInt(text.slice(2, 18), 10));
      g.count++;
      credits[from] = (credits[from] ?? 0) + 1;
      if (++owed >= 256) flush();
      else if (!scheduled) {
        scheduled = true;
        setTimeout(flush, 1);
      }
    };
  }
  return { ok: true };
}

/**
 * MQTT QoS 1 many-to-one, the publisher side: every connection keeps up to `window` publishes
 * waiting for their PUBACK, and the driver as a whole up to `credit` messages the subscriber has
 * not received yet.
 */
function q1publish(cmd: Extract<Command, { op: 'q1publish' }>): unknown {
  const g = group(cmd.group);
  const initial = cmd.credit;
  g.credit = initial;
  g.stalled = [];
  g.running = true;
  g.inFlight = () => initial - (g.credit ?? initial);
  const message = (): string => `Q${cmd.index}${String(nowUs()).padStart(16, '0')} `.padEnd(cmd.size, 'x');
  for (const conn of g.conns) {
    let unacked = 0;
    let waiting = false;
    const pump = (): void => {
      waiting = false;
      while (g.running && unacked < cmd.window) {
        if (g.credit! <= 0) {
          if (!waiting) {
            waiting = true;
            g.stalls = (g.stalls ?? 0) + 1;
            g.stalled!.push(pump);
          }
          return;
        }
        g.credit!--;
        unacked++;
        conn.send(message());
      }
    };
    conn.onAck = () => {
      unacked--;
      g.rounds++;
      if (!waiting) pump();
    };
    pump();
  }
  return { ok: true };
}

/** Credit back from the subscriber's driver: wake the publishers that ran out. */
function credit(cmd: Extract<Command, { op: 'credit' }>): void {
  const g = groups.get(cmd.group);
  if (g?.credit === undefined) return;
  g.credit += cmd.n;
  const stalled = g.stalled ?? [];
  while (stalled.length > 0 && g.credit > 0) stalled.shift()!();
}

function mark(cmd: Extract<Command, { op: 'mark' }>): unknown {
  const out: Record<string, unknown> = {};
  for (const name of cmd.groups) {
    const g = groups.get(name);
    if (!g) continue;
    out[name] = { count: g.count, rounds: g.rounds, hist: g.hist.toJSON() };
    g.count = 0;
    g.rounds = 0;
    g.hist = new Histogram();
  }
  return out;
}

async function close(cmd: Extract<Command, { op: 'close' }>): Promise<unknown> {
  const g = groups.get(cmd.group);
  if (!g) return { closed: 0 };
  groups.delete(cmd.group);
  for (const conn of g.conns) conn.close();
  await Promise.race([Promise.all(g.conns.map((c) => c.closed)), new Promise((r) => setTimeout(r, 5000))]);
  return { closed: g.conns.length };
}

process.on('message', async (message: { id: number; cmd: Command }) => {
  // id -1: a notice relayed by the parent (credit), no reply.
  if (message.id === -1) {
    if (message.cmd.op === 'credit') credit(message.cmd);
    return;
  }
  let reply: unknown;
  try {
    const { cmd } = message;
    if (cmd.op === 'connect') reply = await connect(cmd);
    else if (cmd.op === 'echo') reply = echo(cmd);
    else if (cmd.op === 'receive') reply = receive(cmd);
    else if (cmd.op === 'broadcast') reply = broadcast(cmd);
    else if (cmd.op === 'halt') reply = await halt(cmd);
    else if (cmd.op === 'q1receive') reply = q1receive(cmd);
    else if (cmd.op === 'q1publish') reply = q1publish(cmd);
    else if (cmd.op === 'mark') reply = mark(cmd);
    else if (cmd.op === 'close') reply = await close(cmd);
    process.send!({ id: message.id, ok: true, reply });
  } catch (error) {
    process.send!({ id: message.id, ok: false, error: (error as Error).stack ?? String(error) });
  }
});
process.on('disconnect', () => process.exit(0));
process.send!({ id: 0, ok: true, reply: 'up' });

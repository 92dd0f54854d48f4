/**
 * Clients for the handover tests: they stream numbered messages at full rate, check every echo
 * and push (order, content, the serving process) and ask for moves; plus process facts
 * (open fds, memory) of an app's process tree.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { WebSocket, type RawData } from 'ws';
import type { App } from '../helpers/app.js';

/** Deterministic payload of message `seq`: mostly small, some large (so moves land mid-package). */
export function payload(seq: number): string {
  const size = seq % 97 === 0 ? 40_000 + (seq % 13) * 1000 : seq % 11 === 0 ? 3000 : (seq * 7919) % 180;
  const head = `${seq.toString(36)}:`;
  const unit = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let body = unit.repeat(Math.ceil(size / unit.length) + 1).slice(seq % unit.length, (seq % unit.length) + size);
  body = head + body;
  return body;
}

/** What one stream client saw. */
export interface StreamReport {
  sent: number;
  echoed: number;
  pushes: number;
  moves: number;
  refusals: string[];
  errors: string[];
  pids: Set<number>;
  /** sha256 of every echoed payload, in order, vs of every sent payload. */
  sentHash: string;
  echoHash: string;
  pings: number;
  pongs: number;
  /** ms from sending `m` to the first message from the new process. */
  moveLatencies: number[];
  closed: boolean;
}

export interface StreamOptions {
  /** Moves to perform. */
  moves: number;
  /** Echoes to wait for after a move before asking for the next one. */
  gap: number;
  /** Unanswered messages allowed in flight. */
  window: number;
  /** WebSocket only: every n-th message is sent in 3 fragments with a ping in between. */
  fragmentEvery?: number;
  /** Server pushes: every `ms`, `n` messages. */
  push?: { ms: number; n: number };
  /** Hard stop, ms. */
  timeoutMs: number;
}

/** Something that carries text messages both ways (a line socket or a WebSocket). */
interface Pipe {
  send(text: string): boolean;
  /** Sends `text` as fragments with a ping between the first two (WebSocket only). */
  sendFragmented?(text: string): Promise<void>;
  writable(): boolean;
  onMessage(handler: (text: string) => void): void;
  onPong?(handler: () => void): void;
  onClose(handler: () => void): void;
  waitWritable(): Promise<void>;
  close(): void;
}

export function linePipe(port: number): Promise<Pipe> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      let rest = '';
      let handler: (text: string) => void = () => {};
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => {
        rest += chunk;
        let at: number;
        let from = 0;
        while ((at = rest.indexOf('\n', from)) !== -1) {
          handler(rest.slice(from, at));
          from = at + 1;
        }
        rest = rest.slice(from);
      });
      resolve({
        send: (text) => socket.write(`${text}\n`),
        writable: () => socket.writableLength < 256 * 1024,
        onMessage: (h) => (handler = h),
        onClose: (h) => socket.once('close', h),
        waitWritable: () => new Promise((r) => (socket.writableLength < 256 * 1024 ? setImmediate(r) : socket.once('drain', r))),
        close: () => socket.destroy(),
      });
    });
  });
}

export function wsPipe(port: number): Promise<Pipe> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    ws.once('error', reject);
    ws.once('open', () => {
      ws.off('error', reject);
      ws.on('error', () => {});
      const waitWritable = (): Promise<void> =>
        new Promise((r) => {
          const check = (): void => (ws.bufferedAmount < 256 * 1024 || ws.readyState !== WebSocket.OPEN ? r() : void setTimeout(check, 1));
          check();
        });
      // A message sent while a fragmented one is under way would become one of its fragments.
      let held: string[] | null = null;
      resolve({
        send: (text) => {
          if (held) held.push(text);
          else ws.send(text);
          return ws.bufferedAmount < 256 * 1024;
        },
        async sendFragmented(text) {
          const a = Math.floor(text.length / 3);
          const b = Math.floor((2 * text.length) / 3);
          held = [];
          ws.send(text.slice(0, a), { fin: false });
          await new Promise((r) => setImmediate(r));
          ws.ping('between');
          ws.send(text.slice(a, b), { fin: false });
          await new Promise((r) => setImmediate(r));
          ws.send(text.slice(b), { fin: true });
          const queued = held;
          held = null;
          for (const item of queued) ws.send(item);
        },
        writable: () => ws.bufferedAmount < 256 * 1024,
        onMessage: (h) => ws.on('message', (data: RawData) => h((data as Buffer).toString('utf8'))),
        onPong: (h) => ws.on('pong', h),
        onClose: (h) => ws.once('close', h),
        waitWritable,
        close: () => ws.terminate(),
      });
    });
  });
}

/**
 * Streams `d <seq> <payload>` as fast as the window allows, asks for a move (`m`) after every
 * `gap` echoes following the previous move, and checks everything that comes back.
 */
export async function runStream(pipe: Pipe, options: StreamOptions): Promise<StreamReport> {
  const report: StreamReport = {
    sent: 0, echoed: 0, pushes: 0, moves: 0, refusals: [], errors: [], pids: new Set(), sentHash: '', echoHash: '',
    pings: 0, pongs: 0, moveLatencies: [], closed: false,
  };
  const sentHash = crypto.createHash('sha256');
  const echoHash = crypto.createHash('sha256');
  let servingPid = 0;
  let lastPush = 0;
  let moveAskedAt = 0;
  let echoesSinceMove = 0;
  let moving = false;
  let stopping = false;
  let finished: () => void = () => {};
  const done = new Promise<void>((r) => (finished = r));
  const error = (text: string): void => {
    if (report.errors.length < 20) report.errors.push(text);
  };
  const maybeAskMove = (): void => {
    if (moving || stopping || report.moves >= options.moves || echoesSinceMove < options.gap) return;
    moving = true;
    moveAskedAt = performance.now();
    pipe.send('m');
  };
  const servedBy = (pid: number): void => {
    report.pids.add(pid);
    if (pid === servingPid) return;
    if (servingPid !== 0) {
      if (!moving) error(`served by ${pid} after ${servingPid} without a move`);
      report.moves++;
      report.moveLatencies.push(performance.now() - moveAskedAt);
      moving = false;
      echoesSinceMove = 0;
    }
    servingPid = pid;
  };
  pipe.onPong?.(() => report.pongs++);
  pipe.onClose(() => {
    report.closed = true;
    finished();
  });
  let over = false;
  pipe.onMessage((text) => {
    if (over) return;
    const kind = text.charCodeAt(0);
    if (kind === 0x65 /* e */) {
      const s1 = text.indexOf(' ', 2);
      const s2 = text.indexOf(' ', s1 + 1);
      const pid = Number(text.slice(2, s1));
      const seq = Number(text.slice(s1 + 1, s2));
      servedBy(pid);
      const expected = report.echoed + 1;
      if (seq !== expected) error(`echo ${seq}, expected ${expected}`);
      const body = text.slice(s2 + 1);
      if (body !== payload(seq)) error(`echo ${seq}: payload differs (${body.length} vs ${payload(seq).length} chars)`);
      echoHash.update(body);
      report.echoed = seq;
      echoesSinceMove++;
      maybeAskMove();
      if (stopping && report.echoed === report.sent) finished();
    } else if (kind === 0x70 /* p */) {
      const [, pid, counter] = text.split(' ');
      servedBy(Number(pid));
      if (Number(counter) !== lastPush + 1) error(`push ${counter}, expected ${lastPush + 1}`);
      lastPush = Number(counter);
      report.pushes++;
    } else if (kind === 0x72 /* r */) {
      report.refusals.push(text);
      moving = false;
      echoesSinceMove = 0;
    } else if (kind !== 0x73 /* s */ && kind !== 0x74 /* t */) {
      error(`unexpected ${text.slice(0, 60)}`);
    }
  });
  if (options.push) pipe.send(`push ${options.push.ms} ${options.push.n}`);
  const timer = setTimeout(() => {
    error(`timed out: sent ${report.sent}, echoed ${report.echoed}, moves ${report.moves}`);
    finished();
  }, options.timeoutMs);
  // Start with one move request as soon as we know who serves us.
  echoesSinceMove = options.gap;
  const pump = async (): Promise<void> => {
    while (!stopping && !report.closed) {
      if (report.moves >= options.moves && !moving) {
        stopping = true;
        break;
      }
      if (report.sent - report.echoed >= options.window || !pipe.writable()) {
        await pipe.waitWritable();
        if (report.sent - report.echoed >= options.window) await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      const seq = ++report.sent;
      const text = `d ${seq} ${payload(seq)}`;
      sentHash.update(payload(seq));
      if (options.fragmentEvery && seq % options.fragmentEvery === 0 && pipe.sendFragmented) {
        report.pings++;
        await pipe.sendFragmented(text);
      } else {
        pipe.send(text);
      }
      if (seq % 64 === 0) await new Promise((r) => setImmediate(r));
    }
    if (options.push) pipe.send('push 0 0');
    if (report.echoed === report.sent) finished();
  };
  void pump();
  await done;
  clearTimeout(timer);
  stopping = true;
  // Pushes already in flight may still arrive; give them a moment so the count settles.
  await new Promise((r) => setTimeout(r, 100));
  over = true;
  report.sentHash = sentHash.digest('hex');
  report.echoHash = echoHash.digest('hex');
  return report;
}

/** Pids of the master and of every child. */
export async function treePids(app: App): Promise<number[]> {
  const status = await app.status();
  return [app.pid, ...status.processes.map((p) => p.pid)];
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident memory of a process, bytes. */
export function rss(pid: number): number {
  const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) * 1024;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Asks processes for their move timings (`stats`, which drains them) over fresh connections until every pid answered. */
export async function collectMoveTimes(open: () => Promise<Pipe>, pids: number[]): Promise<number[]> {
  const times: number[] = [];
  const answered = new Set<number>();
  for (let attempt = 0; attempt < 60 && answered.size < pids.length; attempt++) {
    const pipe = await open();
    const [pid, reply] = await new Promise<[number, string]>((resolve) => {
      let pid = 0;
      pipe.onMessage((text) => {
        if (text.startsWith('pid ')) {
          pid = Number(text.split(' ')[1]);
          pipe.send('stats');
        } else if (text.startsWith('s ')) resolve([pid, text]);
      });
      pipe.send('pid');
    });
    pipe.close();
    if (answered.has(pid)) continue;
    answered.add(pid);
    times.push(...(JSON.parse(reply.slice(2)) as number[]));
  }
  return times;
}

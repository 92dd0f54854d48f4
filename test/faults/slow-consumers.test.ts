/**
 * Slow consumers: 100 WebSocket clients join the chat room and then never read (socket paused),
 * while 50 others chat in that room (each posts an 8 KB message every 0.75–1.25 s; every member
 * gets every message, so the gateway writes ~400 KB/s to each slow client).
 *
 * - The gateway's memory stays bounded: its RSS never exceeds the RSS before the slow clients came
 *   plus what their send buffers may hold (sendToClientBufferSize × slow clients) plus slack.
 * - The fast clients do not suffer: none of their messages is lost, and their p99 latency (own
 *   message back through the room) stays within a generous factor of a baseline measured in the
 *   same test before the slow clients came.
 * - The slow clients are eventually dropped: with `slowClientPolicy: 'close'` the gateway closes a
 *   client whose send buffer reached its bound (the workers get onClose, logged to $CLOSE_LOG).
 *   With the default 'drop' (Workerman's behaviour) further sends to it are dropped and it stays.
 *
 * A paused client's kernel buffers take a few MB first (loopback: the sender's socket buffer grows
 * to net.ipv4.tcp_wmem's max, 4 MB here) before the gateway's own send buffer fills.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { GC_ENV, childPids, freePort, freshEnv, manyWsClients, percentile, rssOf, settledRss, sleep, startApp, stopwatch, waitFor, type Client } from './lib.js';

const FAST = 50;
const SLOW = 100;
const PAD = 8 * 1024;
const SEND_BUFFER = 256 * 1024;
/** Room for what is not a send buffer: 100 more connections, parsers, heap growth under load. */
const RSS_SLACK = 40 * 1024 * 1024;
/** Fast clients' p99 with slow clients present may be this many times the baseline p99. */
const P99_FACTOR = 10;
const BASELINE_MS = 8000;
const SLOW_PHASE_MS = 20_000;
const MB = (bytes: number): string => (bytes / 1024 / 1024).toFixed(1);

/** Fast clients chatting in `room`: sends, deliveries and the latency of each sender's own message. */
class Chat {
  readonly sentAt = new Map<string, number>();
  readonly latency = new Map<string, number>();
  readonly got: Array<Set<string>>;
  private readonly timers = new Set<NodeJS.Timeout>();
  private running = false;
  private readonly pad = 'x'.repeat(PAD);

  constructor(readonly clients: Client[]) {
    this.got = clients.map(() => new Set());
    clients.forEach((client, i) => {
      client.onMessage = (m) => {
        if (m.type !== 'group' || typeof m.text !== 'string') return;
        const key = m.text.slice(0, m.text.indexOf(' '));
        this.got[i].add(key);
        if (key.startsWith(`c${i}:`)) this.latency.set(key, Date.now() - (this.sentAt.get(key) ?? Date.now()));
      };
      // Only the chat matters here: do not keep every 8 KB message.
      client.messages.length = 0;
    });
  }

  start(): this {
    this.running = true;
    this.clients.forEach((client, i) => this.schedule(client, i, Math.random() * 1000, 0));
    return this;
  }

  private schedule(client: Client, i: number, delay: number, seq: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.running || client.closed) return;
      const key = `c${i}:${seq + 1}`;
      this.sentAt.set(key, Date.now());
      client.send(`group room ${key} ${this.pad}`);
      // The lib client keeps every message; the chat does not need them.
      client.messages.length = 0;
      this.schedule(client, i, 750 + Math.random() * 500, seq + 1);
    }, delay);
    this.timers.add(timer);
  }

  stop(): void {
    this.running = false;
    for (const timer of this.timers) clearTimeout(timer);
  }

  /** Latencies of own messages sent in [from, to). */
  latencies(from: number, to: number): number[] {
    return [...this.latency].filter(([key]) => {
      const at = this.sentAt.get(key) ?? 0;
      return at >= from && at < to;
    }).map(([, ms]) => ms);
  }

  /** Deliveries to fast clients that did not happen (every fast client is in the room from the start). */
  missing(): number {
    let n = 0;
    for (const got of this.got) for (const key of this.sentAt.keys()) if (!got.has(key)) n++;
    return n;
  }
}

t.test('slow consumers: gateway memory bounded, fast clients unharmed, slow ones dropped', async (t) => {
  const clock = stopwatch();
  const closeLog = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gw-faults-close-')), 'closed.log');
  t.teardown(() => fs.rmSync(path.dirname(closeLog), { recursive: true, force: true }));
  const port = await freePort();
  const app = await startApp(t, await freshEnv({
    ...GC_ENV,
    WORKER_COUNT: '2',
    WS_PORT: String(port),
    SEND_BUFFER: String(SEND_BUFFER),
    SLOW_CLIENT_POLICY: 'close',
    CLOSE_LOG: closeLog,
  }));
  const [gateway] = childPids(app.pid, 'WsGateway');
  const join = async (clients: Client[]): Promise<void> => {
    for (const c of clients) c.send('join room');
    await Promise.all(clients.map((c) => c.next((m) => m.cmd === 'join', 10_000)));
  };

  clock.lap('start');
  const fast = await manyWsClients(t, '127.0.0.1', port, FAST);
  await join(fast);
  const chat = new Chat(fast).start();
  await sleep(1000);
  const baseFrom = Date.now();
  await sleep(BASELINE_MS);
  const baseTo = Date.now();
  const rssBase = await settledRss(gateway);

  clock.lap('fast clients, baseline');
  const slow = await manyWsClients(t, '127.0.0.1', port, SLOW);
  await join(slow);
  for (const c of slow) c.pause?.();
  const slowIds = new Set(slow.map((c) => c.id));
  const slowFrom = Date.now();
  let rssPeak = 0;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssOf(gateway))), 200);
  t.teardown(() => clearInterval(sampler));
  const closedSlow = (): number =>
    fs.existsSync(closeLog) ? fs.readFileSync(closeLog, 'utf8').split('\n').filter((line) => slowIds.has(line.split(' ')[0])).length : 0;
  const allDropped = await waitFor(() => closedSlow() === SLOW, SLOW_PHASE_MS, 200);
  const droppedAfter = Date.now() - slowFrom;
  // The chat goes on for a while after the slow clients are gone (or the phase ended).
  await sleep(allDropped ? 3000 : 0);
  const slowTo = Date.now();
  clock.lap('slow clients');
  // What the gateway holds now: its connections, their send buffers, and the sends it dropped.
  const status = JSON.parse((await app.cli('status', '--json')).stdout) as { processes: Array<{ pid: number; connections: number; sendFail: number }> };
  const row = status.processes.find((p) => p.pid === gateway);
  const connections = JSON.parse((await app.cli('connections', '--json')).stdout) as Array<{ pid: number; sendBuffer: number }>;
  const full = connections.filter((c) => c.pid === gateway && c.sendBuffer >= SEND_BUFFER).length;
  chat.stop();
  clearInterval(sampler);
  await sleep(3000);
  clock.lap('status, settle');
  t.comment(clock.line());

  const base = chat.latencies(baseFrom, baseTo);
  const loaded = chat.latencies(slowFrom, slowTo);
  const bound = rssBase + SLOW * SEND_BUFFER + RSS_SLACK;
  const fastClosed = fast.filter((c) => c.closed).length;
  const missing = chat.missing();
  const logged = closedSlow();
  t.comment(
    `slow consumers: chat messages sent=${chat.sentAt.size} fast deliveries lost=${missing} fast dropped=${fastClosed}; ` +
      `slow dropped=${logged} of ${SLOW}${allDropped ? ` within ${droppedAfter} ms` : ` (not all within ${SLOW_PHASE_MS} ms)`}`,
  );
  t.comment(
    `slow consumers: fast p50/p99 baseline ${percentile(base, 50)}/${percentile(base, 99)} ms (${base.length} messages), ` +
      `with slow clients ${percentile(loaded, 50)}/${percentile(loaded, 99)} ms (${loaded.length} messages)`,
  );
  t.comment(
    `slow consumers: gateway now holds ${row?.connections} client connections, ${full} with a full send buffer ` +
      `(>= ${SEND_BUFFER / 1024} KB); sends it dropped ${row?.sendFail}`,
  );
  t.comment(`slow consumers: gateway RSS before ${MB(rssBase)} MB, peak ${MB(rssPeak)} MB, bound ${MB(bound)} MB (${SLOW} x ${SEND_BUFFER / 1024} KB + ${MB(RSS_SLACK)} MB)`);

  t.ok(rssPeak > 0 && rssPeak < bound, `gateway RSS stayed under the bound (peak ${MB(rssPeak)} MB < ${MB(bound)} MB)`);
  t.equal(fastClosed, 0, 'no fast client was dropped');
  t.equal(missing, 0, 'every chat message reached every fast client');
  t.ok(base.length > 100 && loaded.length > 100, 'latency samples in both phases');
  t.ok(
    percentile(loaded, 99) <= P99_FACTOR * percentile(base, 99),
    `fast clients' p99 with slow clients is within ${P99_FACTOR}x the baseline (${percentile(loaded, 99)} vs ${percentile(base, 99)} ms)`,
  );
  t.equal(logged, SLOW, `the slow clients were dropped (slowClientPolicy 'close'): ${logged} of ${SLOW}`);
});

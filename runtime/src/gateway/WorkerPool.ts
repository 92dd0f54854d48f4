import { Cmd, encodeClientEvent } from '../internal/codec.js';
import type { Link } from '../internal/link.js';
import { log } from '../worker/log.js';
import { envelopeOf, type Client, type GatewayFacts } from './clients.js';

/** A BusinessWorker as the router sees it. */
export interface WorkerInfo {
  /** `Name#id` of the worker process. */
  readonly name: string;
  /** Unique per link (name plus a link number). */
  readonly key: string;
  /** Clients currently routed to it by the default (sticky) router. */
  readonly clients: number;
}

/** What a router knows about the client whose event it places. */
export interface RouteContext {
  readonly event: 'connect' | 'message' | 'close';
  readonly session: Readonly<Record<string, unknown>> | null;
  readonly uid: string | null;
  readonly clientIp: string;
}

/**
 * Picks the worker for one client event. Return one of `workers`; anything else falls back to
 * the default router. E.g. route by room so one room's state lives in one worker:
 * `(id, ctx, workers) => workers[hash(ctx.session?.roomId ?? id) % workers.length]`.
 */
export type Router = (clientId: string, ctx: RouteContext, workers: readonly WorkerInfo[]) => WorkerInfo | null | undefined;

/** One sent event not yet acknowledged, kept to hand it to another worker if this one dies. */
interface Pending {
  seq: number;
  client: Client;
  cmd: number;
  flags: number;
  payload: Buffer;
  /** Worker links that died holding this event before. */
  losses: number;
}

/**
 * An event whose worker died this many times while holding it is dropped (and its client closed)
 * instead of being handed on again: one event that kills every worker it reaches must not loop
 * forever. Only a crash counts: a link dropped for silence (a partition) or of a worker that
 * was draining (a reload) says nothing about the event. A reload that outlasts the master's
 * stopTimeout ends in SIGKILL, which looks like a crash here: hence more than two.
 */
const MAX_LOSSES = 5;

class WorkerLink implements WorkerInfo {
  clients = 0;
  draining = false;
  nextSeq = 1;
  readonly unacked: Pending[] = [];
  /** Session version this worker last received, per client counter. */
  readonly sessionSent = new Map<number, number>();
  constructor(
    readonly link: Link,
    readonly name: string,
    readonly key: string,
  ) {}
}

export interface HoldLimits {
  /** Events kept while no worker is up. */
  limit: number;
  /** Milliseconds an event may wait for a worker. */
  timeoutMs: number;
}

/**
 * The BusinessWorkers linked to this gateway process: routes client events to them, keeps each
 * event until the worker acknowledges it, hands unacknowledged events to another worker when a
 * link dies, and holds events (bounded) while no worker is available.
 */
export class WorkerPool {
  private readonly workers = new Map<Link, WorkerLink>();
  private readonly sticky = new Map<number, WorkerLink>();
  /** Last worker that got an event of each client, to tell it when the client moves on. */
  private readonly owner = new Map<number, WorkerLink>();
  /** Events waiting for a worker, with when they started waiting (for the hold timeout). */
  private held: Array<Omit<Pending, 'seq'> & { at: number }> = [];
  private linkNumber = 0;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly router: Router | undefined,
    private readonly hold: HoldLimits,
    private readonly facts: GatewayFacts,
  ) {
    this.sweeper = setInterval(() => this.expireHeld(), 1000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.workers.size;
  }

  add(link: Link): void {
    const worker = new WorkerLink(link, link.peer.name, `${link.peer.name}/${++this.linkNumber}`);
    this.workers.set(link, worker);
    log.info('business worker linked', { worker: worker.name, remote: link.conn.remoteAddress, workers: this.workers.size });
    this.releaseHeld();
  }

  /** A worker link closed: its unacknowledged events go to the others (at-least-once). */
  remove(link: Link): void {
    const worker = this.workers.get(link);
    if (!worker) return;
    this.workers.delete(link);
    for (const [counter, bound] of this.sticky) if (bound === worker) this.sticky.delete(counter);
    for (const [counter, bound] of this.owner) if (bound === worker) this.owner.delete(counter);
    const pending = worker.unacked.splice(0);
    if (pending.length > 0) log.warn('business worker left with unacknowledged events; handing them on', { worker: worker.name, events: pending.length });
    else log.info('business worker unlinked', { worker: worker.name, workers: this.workers.size });
    const crashed = !worker.draining && !link.droppedForSilence;
    for (const event of pending) {
      const losses = event.losses + (crashed ? 1 : 0);
      if (losses >= MAX_LOSSES && event.cmd !== Cmd.CLIENT_CLOSE) {
        log.error(`an event was lost with ${losses} worker links: dropped, and its client closed`, { client: event.client.id, bytes: event.payload.length });
        event.client.conn.destroy();
        continue;
      }
      this.dispatch(event.client, event.cmd, event.flags, event.payload, losses);
    }
  }

  /** The worker asked to drain (reload): no new events for it; events already sent stay its own. */
  drain(link: Link): void {
    const worker = this.workers.get(link);
    if (!worker) return;
    worker.draining = true;
    for (const [counter, bound] of this.sticky) if (bound === worker) this.sticky.delete(counter);
    worker.clients = 0;
    link.write(encodeClientEvent(Cmd.DRAIN_DONE, 0, 0, 0, Buffer.alloc(0)));
  }

  /** Cumulative acknowledgement up to `seq` (u32, wrapping). */
  ack(link: Link, seq: number): void {
    const unacked = this.workers.get(link)?.unacked;
    if (!unacked) return;
    let n = 0;
    while (n < unacked.length && ((seq - (unacked[n].seq >>> 0)) >>> 0) < 0x80000000) n++;
    if (n > 0) unacked.splice(0, n);
  }

  /**
   * Sends one client event to the worker the router picks, or holds it. `losses` carries over
   * when an event is handed on from a dead worker or out of the hold queue.
   */
  dispatch(client: Client, cmd: number, flags: number, payload: Buffer, losses = 0): void {
    const worker = this.route(client, cmd);
    if (!worker) {
      if (this.held.length >= this.hold.limit) {
        log.error('no business worker and the hold queue is full: event dropped', { client: client.id, held: this.held.length });
        return;
      }
      // The hold timeout counts time without a worker, from now: an event handed on after a
      // worker died has not been waiting for one.
      this.held.push({ client, cmd, flags, payload, losses, at: Date.now() });
      return;
    }
    const previous = this.owner.get(client.counter);
    if (previous && previous !== worker) {
      // The client moved on: its old worker forgets it (so a gateway crash is reported once),
      // session included — should the client come back, the session goes with it again.
      previous.link.write(encodeClientEvent(Cmd.CLIENT_CLOSE, 0, client.counter, 0, Buffer.alloc(0)));
      previous.sessionSent.delete(client.counter);
    }
    const seq = worker.nextSeq++;
    const needsSession = cmd === Cmd.CLIENT_CLOSE || worker.sessionSent.get(client.counter) !== client.version;
    const session = needsSession ? { version: client.version, json: envelopeOf(client, this.facts) } : undefined;
    worker.link.write(encodeClientEvent(cmd, seq, client.counter, flags, payload, session));
    worker.unacked.push({ seq, client, cmd, flags, payload, losses });
    if (cmd === Cmd.CLIENT_CLOSE) this.forget(client.counter);
    else {
      worker.sessionSent.set(client.counter, client.version);
      this.owner.set(client.counter, worker);
    }
  }

  /** After a worker wrote a session back from `base`, it holds the new version: no need to resend. */
  sessionWritten(link: Link, client: Client, base: number): void {
    const worker = this.workers.get(link);
    if (worker && ((base + 1) >>> 0) === client.version) worker.sessionSent.set(client.counter, client.version);
  }

  /** Infos of the workers taking new events. */
  available(): WorkerInfo[] {
    const out: WorkerInfo[] = [];
    for (const worker of this.workers.values()) if (!worker.draining && worker.link.open) out.push(worker);
    return out;
  }

  close(): void {
    clearInterval(this.sweeper);
  }

  private forget(counter: number): void {
    const bound = this.sticky.get(counter);
    if (bound) bound.clients--;
    this.sticky.delete(counter);
    this.owner.delete(counter);
    for (const worker of this.workers.values()) worker.sessionSent.delete(counter);
  }

  private route(client: Client, cmd: number): WorkerLink | undefined {
    const candidates = this.available() as WorkerLink[];
    if (candidates.length === 0) return undefined;
    if (this.router) {
      try {
        const ctx: RouteContext = {
          event: cmd === Cmd.CLIENT_CONNECT ? 'connect' : cmd === Cmd.CLIENT_CLOSE ? 'close' : 'message',
          session: client.session,
          uid: client.uid,
          clientIp: client.conn.remoteAddress,
        };
        const picked = this.router(client.id, ctx, candidates);
        if (picked && candidates.includes(picked as WorkerLink)) return picked as WorkerLink;
      } catch (error) {
        log.error('router threw; using the default router', { client: client.id, error: (error as Error).message });
      }
    }
    const bound = this.sticky.get(client.counter);
    if (bound && !bound.draining && this.workers.has(bound.link)) return bound;
    let best = candidates[0];
    for (const candidate of candidates) if (candidate.clients < best.clients) best = candidate;
    best.clients++;
    this.sticky.set(client.counter, best);
    return best;
  }

  private releaseHeld(): void {
    if (this.held.length === 0 || this.available().length === 0) return;
    const held = this.held;
    this.held = [];
    log.info('delivering held events', { events: held.length });
    for (const event of held) this.dispatch(event.client, event.cmd, event.flags, event.payload, event.losses);
  }

  private expireHeld(): void {
    if (this.held.length === 0) return;
    const deadline = Date.now() - this.hold.timeoutMs;
    const keep = this.held.filter((event) => event.at >= deadline);
    const dropped = this.held.length - keep.length;
    if (dropped > 0) {
      log.error(`no business worker for ${this.hold.timeoutMs / 1000} s: dropped held events`, { events: dropped });
      this.held = keep;
    }
  }
}


import { pathToFileURL } from 'node:url';
import { GatewayApi, encodePayload, type ClientMessage, type Session } from '../api/GatewayApi.js';
import { GatewayLinks, type GatewayLink } from '../api/GatewayLinks.js';
import { setCurrentApi } from '../api/current.js';
import { makeClientId, parseClientId } from '../internal/clientId.js';
import { Cmd, PayloadFlag, decodeClientEvent, decodeMqttDeliveryState, encodeJson, encodeSend, encodeU32, type ClientEvent, type UnackedMessage } from '../internal/codec.js';
import { describeError, log } from '../worker/log.js';
import { Worker } from '../worker/Worker.js';
import { AckTracker } from './AckTracker.js';
import { createContext, type ClientInfo, type Context, type EventHandlers, type WebSocketRequest } from './context.js';

/** Options of a {@link BusinessWorker}. */
export interface BusinessWorkerOptions {
  /** Worker name. Default `BusinessWorker`. */
  name?: string;
  /** Number of processes. Default 1. */
  count?: number;
  /** Register address(es), `host:port`. Default 127.0.0.1:1236. */
  registerAddress?: string | string[];
  /** Path or URL of the `Events.ts` module, or the handlers themselves. */
  eventHandler: string | URL | EventHandlers;
  /** Shared secret of the internal links. */
  secretKey?: string;
  /** This host's address on the LAN: the source address of its links to the Register and gateways. */
  lanIp?: string;
  /** Milliseconds an API query waits for every gateway. Default 5000. */
  queryTimeout?: number;
  /** Seconds a stopping worker waits for running handlers before it exits anyway. Default 30. */
  drainTimeout?: number;
}

/** What a worker remembers of each client whose events it handles. */
interface Tracked {
  readonly id: string;
  readonly gateway: GatewayLink;
  /** The client's number on its gateway (the id's last part). */
  readonly counter: number;
  /** Made once per client (see createContext). */
  ctx: Context | null;
  /** A callback read ctx.session since the last write-back. */
  touched: boolean;
  /** The client's session as handlers see and change it. */
  session: Session;
  /** `session` as last agreed with the gateway (JSON), to see whether a handler changed it. */
  sessionJson: string;
  version: number;
  info: ClientInfo;
  unacked?: readonly UnackedMessage[];
  awaitingRelease?: readonly number[];
  /** Changes written back that the gateway may not have applied yet, with the version they make. */
  pending: { version: number; set: Session; unset: string[] } | null;
  /** Handlers of one client run one after another, in arrival order. */
  chain: Promise<void>;
}

/**
 * Runs the application's `Events.ts`: links to every gateway the Register lists, receives
 * client events and runs the matching callback, one client's events in order (different clients
 * interleave). Reloading restarts these processes one at a time; clients stay connected.
 */
export class BusinessWorker extends Worker {
  /** The Gateway API of this process (also behind the static `Gateway.*` methods). */
  api: GatewayApi | null = null;
  private readonly settings: BusinessWorkerOptions;
  private handlers: EventHandlers = {};
  private links: GatewayLinks | null = null;
  private readonly clients = new Map<string, Tracked>();
  private readonly acks = new Map<GatewayLink, AckTracker>();
  private draining: { pending: Set<GatewayLink>; done(): void } | null = null;
  private running = 0;

  constructor(options: BusinessWorkerOptions) {
    super(null, { name: options.name ?? 'BusinessWorker', count: options.count ?? 1, reloadable: true });
    if (!options.eventHandler) throw new TypeError('BusinessWorker needs an eventHandler (path or URL of Events.ts)');
    this.settings = options;
    this.onWorkerStart = () => this.start();
    this.onWorkerStop = () => this.stopGracefully();
  }

  /** Clients whose events this process currently handles. */
  get clientCount(): number {
    return this.clients.size;
  }

  private async start(): Promise<void> {
    this.handlers = await loadHandlers(this.settings.eventHandler);
    if (typeof this.handlers.onMessage !== 'function') {
      throw new TypeError(`eventHandler ${String(this.settings.eventHandler)} must export an onMessage(clientId, message, ctx) function`);
    }
    this.links = new GatewayLinks({
      registerAddress: this.settings.registerAddress ?? '127.0.0.1:1236',
      secretKey: this.settings.secretKey ?? '',
      role: 'worker',
      name: `${this.name}#${this.id}`,
      queryTimeout: this.settings.queryTimeout ?? 5000,
      localAddress: this.settings.lanIp,
      onGatewayUp: (gateway, previousEpoch) => this.gatewayUp(gateway, previousEpoch),
      onGatewayDown: (gateway) => this.gatewayDown(gateway),
      onGatewayGone: (gateway) => this.closeClientsOf(gateway, null),
      onFrame: (gateway, cmd, body) => this.frame(gateway, cmd, body),
    });
    this.api = new GatewayApi(this.links);
    setCurrentApi(this.api);
    await this.call('onWorkerStart', [this], null);
  }

  private gatewayUp(gateway: GatewayLink, previousEpoch: number): void {
    this.acks.set(gateway, new AckTracker((seq) => gateway.link.write(encodeU32(Cmd.ACK, seq))));
    // The gateway restarted: its old clients are gone, and only this side can tell the app.
    if (previousEpoch !== 0 && previousEpoch !== gateway.epoch) this.closeClientsOf(gateway, previousEpoch);
    // A link that comes up while draining may still bring events (held ones): drain it too,
    // and stop only once its gateway confirmed.
    if (this.draining) {
      this.draining.pending.add(gateway);
      gateway.link.write(encodeJson(Cmd.DRAIN, {}));
    }
  }

  private gatewayDown(gateway: GatewayLink): void {
    this.acks.delete(gateway);
    this.draining?.pending.delete(gateway);
    this.checkDrained();
  }

  /** Runs onClose for the clients this process handled on a gateway process that is gone. */
  private closeClientsOf(gateway: GatewayLink, epoch: number | null): void {
    for (const client of this.clients.values()) {
      if (client.gateway !== gateway || (epoch !== null && parseClientId(client.id).epoch !== epoch)) continue;
      this.clients.delete(client.id);
      this.enqueue(client, () => this.call('onClose', [client.id], client), null);
    }
  }

  private frame(gateway: GatewayLink, cmd: number, body: Buffer): void {
    if (cmd === Cmd.DRAIN_DONE) {
      this.draining?.pending.delete(gateway);
      this.checkDrained();
      return;
    }
    if (cmd !== Cmd.CLIENT_CONNECT && cmd !== Cmd.CLIENT_MESSAGE && cmd !== Cmd.CLIENT_CLOSE) return;
    let event: ClientEvent;
    try {
      event = decodeClientEvent(body);
    } catch (error) {
      log.warn(`malformed client event: ${(error as Error).message}`, { gateway: gateway.key });
      return;
    }
    const id = makeClientId(gateway.prefix, event.counter);
    // seq 0 marks a release: the client's events now go to another worker.
    if (event.seq === 0) {
      this.clients.delete(id);
      return;
    }
    const client = this.trackClient(id, gateway, event);
    const acks = this.acks.get(gateway);
    const ticket = acks?.received(event.seq);
    const done = (): void => {
      if (ticket !== undefined) acks?.done(ticket);
    };
    if (cmd === Cmd.CLIENT_CONNECT) {
      // A WebSocket client's handshake comes with its connect event only.
      const handshake = event.payload.length > 0 ? (JSON.parse(event.payload.toString()) as Pick<ClientInfo, 'websocket'>) : {};
      this.enqueue(client, async () => {
        await this.call('onConnect', [id], client);
        if (handshake.websocket && this.handlers.onWebSocketConnect) {
          await this.call('onWebSocketConnect', [id, websocketRequest(handshake.websocket)], client);
        }
      }, done);
    } else if (cmd === Cmd.CLIENT_MESSAGE) {
      const message = event.flags & PayloadFlag.BINARY ? Buffer.from(event.payload) : event.payload.toString();
      this.enqueue(client, () => this.call('onMessage', [id, message], client), done);
    } else {
      this.clients.delete(id);
      if (event.payload.length > 0) {
        try {
          const state = decodeMqttDeliveryState(event.payload);
          client.unacked = state.unacked;
          client.awaitingRelease = state.awaitingRelease;
        } catch (error) {
          log.warn(`malformed unacked messages in a close event: ${(error as Error).message}`, { client: id });
        }
      }
      this.enqueue(client, () => this.call('onClose', [id], client), done);
    }
  }

  /** The worker's record of a client, refreshed with the session the event carries. */
  private trackClient(id: string, gateway: GatewayLink, event: ClientEvent): Tracked {
    let client = this.clients.get(id);
    if (!client) {
      client = { id, gateway, counter: event.counter, ctx: null, touched: false, session: {}, sessionJson: 'null', version: -1, info: {}, pending: null, chain: Promise.resolve() };
      this.clients.set(id, client);
    }
    if (event.session) {
      const envelope = JSON.parse(event.session.json) as { session: Session | null; info: ClientInfo } | null;
      const incoming = envelope?.session ?? {};
      // A handler of this client may still be running with changes not yet written back: they
      // stay on top of the newer copy, in the same object the handler holds.
      const { set, unset } = sessionChanges(client.session, client.sessionJson);
      // A copy the gateway sent before it applied this worker's last write-back lacks those
      // changes (someone else changed the session meanwhile); the gateway will merge them, so
      // they stay in this worker's view too. A later copy already has them.
      const pending = client.pending;
      const stale = pending !== null && ((event.session.version - pending.version) | 0) <= 0;
      if (stale) {
        Object.assign(incoming, pending.set);
        for (const key of pending.unset) delete incoming[key];
      } else client.pending = null;
      const live = client.session;
      for (const key of Object.keys(live)) delete live[key];
      Object.assign(live, incoming, set);
      for (const key of unset) delete live[key];
      client.sessionJson = stale ? JSON.stringify(incoming) : JSON.stringify(envelope?.session ?? null);
      client.info = envelope?.info ?? client.info;
      client.version = stale && pending ? pending.version : event.session.version;
    }
    return client;
  }

  private enqueue(client: Tracked, run: () => Promise<void>, done: (() => void) | null): void {
    this.running++;
    client.chain = client.chain
      .then(run)
      .then(() => this.writeBack(client))
      .catch((error: unknown) => log.error('event handling failed', { client: client.id, error: describeError(error) }))
      .finally(() => {
        this.running--;
        done?.();
        this.checkDrained();
      });
  }

  /** Sends the session back to the gateway if the handler changed it. */
  private writeBack(client: Tracked): void {
    // A callback that never read ctx.session cannot have changed it: no JSON to compare.
    if (!client.touched) return;
    client.touched = false;
    const json = JSON.stringify(client.session);
    if (json === client.sessionJson || (json === '{}' && client.sessionJson === 'null')) return;
    const owner = this.links?.owner(client.id);
    if (!owner) return;
    // The changed keys travel too: if someone else changed the session meanwhile, the gateway
    // applies only this handler's changes instead of overwriting theirs.
    const { set, unset } = sessionChanges(client.session, client.sessionJson);
    owner.gateway.link.write(
      encodeJson(Cmd.CONTROL, { op: 'setSession', counter: owner.counter, epoch: owner.epoch, session: client.session, set, unset, base: client.version }),
    );
    client.sessionJson = json;
    client.version = (client.version + 1) >>> 0;
    const pending = client.pending;
    const pendingSet = { ...pending?.set, ...set };
    for (const key of unset) delete pendingSet[key];
    const pendingUnset = new Set([...(pending?.unset ?? []).filter((key) => !(key in set)), ...unset]);
    client.pending = { version: client.version, set: pendingSet, unset: [...pendingUnset] };
  }

  /** Calls one of the app's callbacks; a throw is logged with the client id and goes no further. */
  private async call(name: keyof EventHandlers, args: unknown[], client: Tracked | null): Promise<void> {
    const handler = this.handlers[name] as ((...a: unknown[]) => unknown) | undefined;
    if (!handler) return;
    try {
      const ctx = client ? this.context(client) : undefined;
      await handler(...args, ...(ctx ? [ctx] : []));
    } catch (error) {
      log.error(`${name} threw`, { client: client?.id, error: describeError(error) });
    }
  }

  private context(client: Tracked): Context {
    if (client.ctx) return client.ctx;
    const api = this.api as GatewayApi;
    const send = (message: ClientMessage, raw = false): Promise<void> => {
      const { bytes, flags } = encodePayload(message, raw);
      client.gateway.link.write(encodeSend(client.gateway.epoch, client.counter, flags, bytes));
      return DONE;
    };
    client.ctx = createContext(client.id, client, send, api);
    return client.ctx;
  }

  /**
   * Stop or reload: tell every gateway to stop sending new events here, finish what arrived,
   * let the acknowledgements out, then run the app's onWorkerStop.
   */
  private async stopGracefully(): Promise<void> {
    const links = this.links;
    if (links) {
      const open = links.open();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn('stopping with handlers still running', { running: this.running });
          resolve();
        }, (this.settings.drainTimeout ?? 30) * 1000);
        this.draining = {
          pending: new Set(open),
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        for (const gateway of open) gateway.link.write(encodeJson(Cmd.DRAIN, {}));
        this.checkDrained();
      });
      for (const acks of this.acks.values()) acks.flush();
      for (const gateway of links.open()) gateway.link.flush();
    }
    await this.call('onWorkerStop', [this], null);
    links?.close();
    setCurrentApi(null);
  }

  private checkDrained(): void {
    if (this.draining && this.draining.pending.size === 0 && this.running === 0) this.draining.done();
  }
}

const DONE = Promise.resolve();

/** Top-level keys of `session` that differ from `baseJson`, the copy last agreed with the gateway. */
function sessionChanges(session: Session, baseJson: string): { set: Session; unset: string[] } {
  const base = (JSON.parse(baseJson) ?? {}) as Session;
  const set: Session = {};
  for (const [key, value] of Object.entries(session)) if (JSON.stringify(value) !== JSON.stringify(base[key])) set[key] = value;
  return { set, unset: Object.keys(base).filter((key) => !(key in session)) };
}

function websocketRequest(info: { url: string; headers: Record<string, string | string[] | undefined> }): WebSocketRequest {
  const url = new URL(info.url, 'http://localhost');
  const cookies: Record<string, string> = {};
  const header = info.headers.cookie;
  for (const part of (Array.isArray(header) ? header.join(';') : (header ?? '')).split(';')) {
    const at = part.indexOf('=');
    if (at > 0) cookies[part.slice(0, at).trim()] = decodeURIComponentSafe(part.slice(at + 1).trim());
  }
  return { url: info.url, path: url.pathname, query: Object.fromEntries(url.searchParams), headers: info.headers, cookies };
}

function decodeURIComponentSafe(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

async function loadHandlers(source: string | URL | EventHandlers): Promise<EventHandlers> {
  if (typeof source === 'object' && !(source instanceof URL)) return source;
  const url = source instanceof URL ? source.href : /^file:/.test(source) ? source : pathToFileURL(source).href;
  const module = (await import(url)) as EventHandlers & { default?: EventHandlers };
  return typeof module.onMessage === 'function' ? module : (module.default ?? module);
}

import { clientIdPrefix, gatewayKey, parseClientId, splitHostPort, type ClientIdParts } from '../internal/clientId.js';
import { Cmd, decodeJson, decodeRequest, encodeJson, encodeRequest } from '../internal/codec.js';
import { dialLink, type DialedLink, type Link } from '../internal/link.js';
import { log } from '../worker/log.js';

/** A gateway process this side is linked to. */
export interface GatewayLink {
  /** `lanIp:port` of the gateway process. */
  readonly key: string;
  readonly link: Link;
  /** The gateway process's epoch (from its handshake); 0 until first authenticated. */
  epoch: number;
  /** Client id prefix of the current epoch. */
  prefix: string;
  /** The register still lists it (else the link is not re-dialled once it drops). */
  wanted: boolean;
  readonly dialed: DialedLink;
}

/** Options of {@link GatewayLinks}. */
export interface GatewayLinksOptions {
  registerAddress: string | string[];
  secretKey: string;
  /** `worker` receives client events; `client` (GatewayClient) only sends and asks. */
  role: 'worker' | 'client';
  name: string;
  /** Milliseconds a query waits for every gateway. */
  queryTimeout: number;
  /** Local address the links leave from. */
  localAddress?: string;
  /** A gateway link authenticated (again). */
  onGatewayUp?(gateway: GatewayLink, previousEpoch: number): void;
  /** A gateway link dropped. */
  onGatewayDown?(gateway: GatewayLink): void;
  /** The register no longer lists a gateway. */
  onGatewayGone?(gateway: GatewayLink): void;
  /** Frames other than query results (client events for workers). */
  onFrame?(gateway: GatewayLink, cmd: number, body: Buffer): void;
}

/** Thrown when gateways do not answer a query in time. */
export class GatewayQueryTimeoutError extends Error {
  readonly code = 'ERR_GW_QUERY_TIMEOUT';
  constructor(op: string, gateways: string[], ms: number) {
    super(`query "${op}" got no answer within ${ms} ms from gateway ${gateways.join(', ')}`);
    this.name = 'GatewayQueryTimeoutError';
  }
}

/** Thrown when no gateway can be reached (register silent, or every gateway unlinked). */
export class GatewayUnavailableError extends Error {
  readonly code = 'ERR_GW_UNAVAILABLE';
  constructor(message: string) {
    super(message);
    this.name = 'GatewayUnavailableError';
  }
}

interface PendingQuery {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/**
 * The links from a BusinessWorker or GatewayClient to every gateway process the Register lists:
 * subscribes to the Register, dials new gateways, stops re-dialling ones that left, and carries
 * queries (request id → answer) with a timeout.
 */
export class GatewayLinks {
  readonly gateways = new Map<string, GatewayLink>();
  private registers: DialedLink[] = [];
  private readonly lists = new Map<Link, string[]>();
  private readonly pending = new Map<number, PendingQuery>();
  private nextReq = 1;
  private firstList: Promise<void>;
  private gotFirstList: () => void = () => {};
  private closed = false;
  private readiness: Promise<void> | null = null;
  private listReceived = false;
  private readonly parsedIds = new Map<string, ClientIdParts>();
  private readonly registerNames: string;

  constructor(private readonly options: GatewayLinksOptions) {
    const addresses = Array.isArray(options.registerAddress) ? options.registerAddress : [options.registerAddress];
    for (const address of addresses) splitHostPort(address);
    this.registerNames = addresses.join(', ');
    this.firstList = new Promise((resolve) => (this.gotFirstList = resolve));
    const self = { role: options.role, name: options.name };
    this.registers = addresses.map((address) =>
      dialLink(address, {
        secret: options.secretKey,
        self,
        localAddress: options.localAddress,
        onOpen: (link) => {
          link.onFrame = (cmd, body) => {
            if (cmd === Cmd.GATEWAY_LIST) this.onList(link, decodeJson<{ addresses: string[] }>(body).addresses);
          };
          link.write(encodeJson(Cmd.SUBSCRIBE, {}));
        },
        onDown: () => log.debug('lost the register; reconnecting', { register: address }),
      }),
    );
  }

  /**
   * Resolves once the Register has answered and every listed gateway is linked, or after
   * `timeoutMs` (whatever is linked by then is used). Only the first call waits: later calls
   * must not stall while some gateway is restarting.
   */
  ready(timeoutMs = 3000): Promise<void> {
    this.readiness ??= (async () => {
      const deadline = Date.now() + timeoutMs;
      await Promise.race([this.firstList, sleep(timeoutMs)]);
      while (Date.now() < deadline && [...this.gateways.values()].some((g) => g.wanted && !g.link.authenticated)) await sleep(20);
    })();
    return this.readiness;
  }

  /**
   * Throws when this side cannot reach any gateway at all: the register never answered, or it
   * lists gateways none of which is linked. (No gateway registered at all is not an error.)
   * @throws GatewayUnavailableError
   */
  assertReachable(): void {
    if (!this.listReceived) {
      throw new GatewayUnavailableError(`no answer from the register at ${this.registerNames} (is it running? is the secretKey right?)`);
    }
    const listed = [...this.gateways.values()].filter((g) => g.wanted);
    if (listed.length > 0 && !listed.some((g) => g.link.authenticated)) {
      throw new GatewayUnavailableError(`none of the ${listed.length} registered gateways is linked (${listed.map((g) => g.key).join(', ')})`);
    }
  }

  /** Linked gateways that take commands now. */
  open(): GatewayLink[] {
    const out: GatewayLink[] = [];
    for (const gateway of this.gateways.values()) if (gateway.link.authenticated) out.push(gateway);
    return out;
  }

  /** The linked gateway that owns a client id, or null when that gateway (epoch) is not linked. @throws InvalidClientIdError */
  owner(clientId: string): { gateway: GatewayLink; counter: number; epoch: number } | null {
    let parts = this.parsedIds.get(clientId);
    if (!parts) {
      parts = parseClientId(clientId);
      // Ids repeat (the same clients are addressed again and again): parse each once, in a bounded cache.
      if (this.parsedIds.size >= 10_000) this.parsedIds.clear();
      this.parsedIds.set(clientId, parts);
    }
    const gateway = this.gateways.get(gatewayKey(parts.host, parts.port));
    if (!gateway || !gateway.link.authenticated || gateway.epoch !== parts.epoch) return null;
    return { gateway, counter: parts.counter, epoch: parts.epoch };
  }

  /** Asks `targets` in parallel; resolves with each answer. @throws GatewayQueryTimeoutError */
  async query<T>(targets: GatewayLink[], op: string, args: Record<string, unknown>): Promise<T[]> {
    const timeout = this.options.queryTimeout;
    const answers = targets.map(
      (gateway) =>
        new Promise<T>((resolve, reject) => {
          const req = this.nextReq++ >>> 0;
          const timer = setTimeout(() => {
            this.pending.delete(req);
            reject(new GatewayQueryTimeoutError(op, [gateway.key], timeout));
          }, timeout);
          this.pending.set(req, {
            resolve: (value) => {
              clearTimeout(timer);
              resolve(value as T);
            },
            reject: (error) => {
              clearTimeout(timer);
              reject(error);
            },
          });
          gateway.link.write(encodeRequest(Cmd.QUERY, req, { op, args }));
        }),
    );
    return Promise.all(answers);
  }

  close(): void {
    this.closed = true;
    for (const register of this.registers) register.close();
    for (const gateway of this.gateways.values()) gateway.dialed.close();
    for (const pending of this.pending.values()) pending.reject(new Error('gateway links closed'));
    this.pending.clear();
  }

  private onList(register: Link, addresses: string[]): void {
    this.lists.set(register, addresses);
    const wanted = new Set<string>();
    for (const list of this.lists.values()) for (const address of list) wanted.add(address);
    for (const address of wanted) if (!this.gateways.has(address)) this.dial(address);
    for (const gateway of this.gateways.values()) {
      const stillListed = wanted.has(gateway.key);
      if (gateway.wanted && !stillListed) {
        gateway.wanted = false;
        // A link that is up stays until it drops by itself: a restarted Register lists gateways
        // again one by one, and live links (and their clients) must not be given up meanwhile.
        // A gateway is gone only once it is both unlisted and unlinked.
        if (!gateway.link.authenticated) this.leave(gateway);
      } else if (stillListed) gateway.wanted = true;
    }
    this.listReceived = true;
    this.gotFirstList();
  }

  private dial(address: string): void {
    if (this.closed) return;
    const dialed = dialLink(address, {
      secret: this.options.secretKey,
      localAddress: this.options.localAddress,
      self: { role: this.options.role, name: this.options.name },
      onOpen: (link) => {
        const previousEpoch = gateway.epoch;
        gateway.epoch = Number(link.peer.epoch);
        const { host, port } = splitHostPort(address);
        gateway.prefix = clientIdPrefix(host, port, gateway.epoch);
        link.onFrame = (cmd, body) => this.onFrame(gateway, cmd, body);
        this.options.onGatewayUp?.(gateway, previousEpoch);
      },
      onDown: () => {
        this.options.onGatewayDown?.(gateway);
        if (!gateway.wanted) this.leave(gateway);
      },
    });
    const gateway: GatewayLink = { key: address, link: dialed.link, epoch: 0, prefix: '', wanted: true, dialed };
    this.gateways.set(address, gateway);
  }

  /** Unlisted and unlinked: its clients are gone (onGatewayGone) and it is no longer dialled. */
  private leave(gateway: GatewayLink): void {
    this.options.onGatewayGone?.(gateway);
    this.forget(gateway);
  }

  private forget(gateway: GatewayLink): void {
    gateway.dialed.close();
    this.gateways.delete(gateway.key);
  }

  private onFrame(gateway: GatewayLink, cmd: number, body: Buffer): void {
    if (cmd === Cmd.QUERY_RESULT) {
      const { req, value } = decodeRequest<{ ok?: unknown; error?: string }>(body);
      const pending = this.pending.get(req);
      if (!pending) return;
      this.pending.delete(req);
      if (value.error !== undefined) pending.reject(new Error(`gateway ${gateway.key}: ${value.error}`));
      else pending.resolve(value.ok);
      return;
    }
    this.options.onFrame?.(gateway, cmd, body);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

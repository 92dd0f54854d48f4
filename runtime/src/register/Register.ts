import { splitHostPort } from '../internal/clientId.js';
import { Cmd, decodeJson, encodeJson } from '../internal/codec.js';
import { acceptLink, type Link } from '../internal/link.js';
import type { Connection } from '../worker/Connection.js';
import { log } from '../worker/log.js';
import { Worker } from '../worker/Worker.js';

/** Options of a {@link Register}. */
export interface RegisterOptions {
  /** Shared secret every gateway, worker and GatewayClient must prove. Default: empty. */
  secretKey?: string;
  /** Worker name. Default `Register`. */
  name?: string;
}

/**
 * Discovery: keeps the live list of gateway internal addresses and pushes it to every
 * BusinessWorker and GatewayClient whenever it changes. It holds no other state, so restarting
 * it loses nothing: gateways re-announce and workers re-subscribe within a second, and the
 * gateway ↔ worker links stay up meanwhile.
 *
 * ```ts
 * new Register('text://127.0.0.1:1236', { secretKey: process.env.SECRET_KEY });
 * ```
 */
export class Register extends Worker {
  private readonly gateways = new Map<Link, string[]>();
  private readonly subscribers = new Set<Link>();
  private readonly linkHandlers = new Map<number, { onMessage(data: Buffer): void; onClose(): void }>();

  /** @param address `host:port` to listen on (any scheme prefix such as `text://` is accepted and ignored). */
  constructor(address: string, options: RegisterOptions = {}) {
    const { host, port } = splitHostPort(address);
    super(`frame://${host.includes(':') ? `[${host}]` : host}:${port}`, { name: options.name ?? 'Register', count: 1, reloadable: false });
    const secret = options.secretKey ?? '';
    this.onConnect = (conn: Connection<Buffer>) => {
      this.linkHandlers.set(
        conn.id,
        acceptLink(conn as Connection, {
          secret,
          self: { role: 'register', name: this.name },
          onAuthenticated: (link) => {
            link.onFrame = (cmd, body) => this.onFrame(link, cmd, body);
          },
          onClosed: (link) => this.onLinkClosed(link),
        }),
      );
    };
    this.onMessage = (conn, data) => this.linkHandlers.get(conn.id)?.onMessage(data as Buffer);
    this.onClose = (conn) => {
      this.linkHandlers.get(conn.id)?.onClose();
      this.linkHandlers.delete(conn.id);
    };
  }

  /** Gateway addresses currently registered. */
  get gatewayAddresses(): string[] {
    const all = new Set<string>();
    for (const addresses of this.gateways.values()) for (const address of addresses) all.add(address);
    return [...all].sort();
  }

  private onFrame(link: Link, cmd: number, body: Buffer): void {
    try {
      if (cmd === Cmd.GATEWAY_ANNOUNCE) {
        const { addresses } = decodeJson<{ addresses: string[] }>(body);
        if (!Array.isArray(addresses) || !addresses.every((a) => typeof a === 'string')) throw new TypeError('addresses must be strings');
        this.gateways.set(link, addresses);
        log.info('gateway registered', { gateway: addresses.join(','), gateways: this.gateways.size });
        this.publish();
      } else if (cmd === Cmd.SUBSCRIBE) {
        this.subscribers.add(link);
        link.write(encodeJson(Cmd.GATEWAY_LIST, { addresses: this.gatewayAddresses }));
      }
    } catch (error) {
      log.warn(`bad register command ${cmd}: ${(error as Error).message}`, { peer: link.peer.name });
      link.conn.destroy();
    }
  }

  private onLinkClosed(link: Link): void {
    this.subscribers.delete(link);
    const addresses = this.gateways.get(link);
    if (addresses && this.gateways.delete(link)) {
      log.info('gateway left', { gateway: addresses.join(','), gateways: this.gateways.size });
      this.publish();
    }
  }

  private publish(): void {
    const frame = encodeJson(Cmd.GATEWAY_LIST, { addresses: this.gatewayAddresses });
    for (const subscriber of this.subscribers) subscriber.write(frame);
  }
}

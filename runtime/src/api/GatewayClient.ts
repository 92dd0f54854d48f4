import { GatewayApi } from './GatewayApi.js';
import { GatewayLinks } from './GatewayLinks.js';

/** Options of a {@link GatewayClient}. */
export interface GatewayClientOptions {
  /** Register address(es), `host:port`. Default 127.0.0.1:1236. */
  registerAddress?: string | string[];
  /** The shared secret of the internal links. */
  secretKey?: string;
  /** Milliseconds a query waits for every gateway. Default 5000. */
  queryTimeout?: number;
  /** Name in the gateways' logs. */
  name?: string;
  /** Local address the links leave from. */
  localAddress?: string;
}

/**
 * The Gateway API from any Node process (a web app, a cron job): push to clients, groups and
 * uids, read sessions and presence.
 *
 * ```ts
 * const gateway = new GatewayClient({ registerAddress: '127.0.0.1:1236', secretKey });
 * await gateway.sendToGroup('room-1', JSON.stringify({ type: 'notice', text: 'hello' }));
 * gateway.close();
 * ```
 */
export class GatewayClient extends GatewayApi {
  constructor(options: GatewayClientOptions = {}) {
    super(
      new GatewayLinks({
        registerAddress: options.registerAddress ?? '127.0.0.1:1236',
        secretKey: options.secretKey ?? '',
        role: 'client',
        name: options.name ?? `GatewayClient pid ${process.pid}`,
        queryTimeout: options.queryTimeout ?? 5000,
        localAddress: options.localAddress,
      }),
    );
  }

  /** Resolves once every gateway the Register lists is linked (or after `timeoutMs`). */
  ready(timeoutMs = 3000): Promise<void> {
    return this.links.ready(timeoutMs);
  }

  /** Number of gateway processes linked now. */
  get gatewayCount(): number {
    return this.links.open().length;
  }

  /** Closes every link; the client cannot be used afterwards. */
  close(): void {
    this.links.close();
  }
}

import type { ClientMessage, GatewayApi, Session } from '../api/GatewayApi.js';
import type { Worker } from '../worker/Worker.js';

/** Facts about a client's connection, from its gateway. */
export interface ClientInfo {
  clientIp?: string;
  clientPort?: number;
  /** Internal address of the gateway process holding the client. */
  gatewayAddress?: string;
  /** Client-facing address of that gateway. */
  gatewayListen?: string;
  websocket?: { url: string; headers: Record<string, string | string[] | undefined> };
}

/** The WebSocket handshake request handed to `onWebSocketConnect`. */
export interface WebSocketRequest {
  /** Path and query as requested, e.g. `/chat?room=1`. */
  url: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  cookies: Record<string, string>;
}

/** What every callback gets about the client it runs for. */
export interface Context {
  readonly clientId: string;
  /**
   * The client's session: read and change it freely; changes are written back to the gateway
   * once the callback settles. `onClose` sees the last session.
   */
  session: Session;
  readonly clientIp: string;
  readonly clientPort: number;
  readonly gatewayAddress: string;
  /** Sends to this client (PHP's `sendToCurrentClient`). */
  send(message: ClientMessage, raw?: boolean): Promise<void>;
  /** Closes this client, after `message` if given (PHP's `closeCurrentClient`). */
  close(message?: ClientMessage): Promise<void>;
}

/**
 * The callbacks of an `Events.ts` module, exported as named functions. Only `onMessage` is
 * required. Any of them may be async: one client's callbacks run one after another in arrival
 * order; different clients' callbacks interleave.
 */
export interface EventHandlers {
  onWorkerStart?(worker: Worker): unknown;
  onConnect?(clientId: string, ctx: Context): unknown;
  onWebSocketConnect?(clientId: string, request: WebSocketRequest, ctx: Context): unknown;
  onMessage?(clientId: string, message: string | Buffer, ctx: Context): unknown;
  onClose?(clientId: string, ctx: Context): unknown;
  onWorkerStop?(worker: Worker): unknown;
}

/** Builds the ctx of one callback; `holder.session` is the live object the write-back reads. */
export function createContext(clientId: string, holder: { session: Session }, info: ClientInfo, api: GatewayApi): Context {
  return {
    clientId,
    get session() {
      return holder.session;
    },
    set session(value: Session) {
      holder.session = value && typeof value === 'object' ? value : {};
    },
    clientIp: info.clientIp ?? '',
    clientPort: info.clientPort ?? 0,
    gatewayAddress: info.gatewayAddress ?? '',
    send: (message, raw) => api.sendToClient(clientId, message, raw),
    close: (message) => api.closeClient(clientId, message),
  };
}

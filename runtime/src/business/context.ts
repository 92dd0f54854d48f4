import type { ClientMessage, GatewayApi, Session } from '../api/GatewayApi.js';
import type { UnackedMessage } from '../internal/codec.js';
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
  /**
   * In `onClose` of an MQTT client: the QoS ≥ 1 messages its gateway sent it that it never
   * acknowledged, oldest first, with their packet ids (`released`: QoS 2 it already received,
   * only the PUBREL is left). Keep them for its next connection (`Gateway.restoreMqttSession`).
   * Empty otherwise.
   */
  readonly unacked: readonly UnackedMessage[];
  /** In `onClose` of an MQTT client: ids of its QoS 2 messages that await its PUBREL. */
  readonly awaitingRelease: readonly number[];
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

/** What a ctx reads and reports to: the worker's record of one client. */
export interface ContextHolder {
  session: Session;
  /** Set when a callback read `ctx.session`: only then can it have changed it. */
  touched: boolean;
  info: ClientInfo;
  /** Set from the close event of an MQTT client. */
  unacked?: readonly UnackedMessage[];
  awaitingRelease?: readonly number[];
}

/**
 * Builds the ctx of a client, once per client: `send` writes straight to the gateway link the
 * client's events come from (no id parsing per message); `session` is the live object the
 * write-back reads.
 */
export function createContext(
  clientId: string,
  holder: ContextHolder,
  send: (message: ClientMessage, raw?: boolean) => Promise<void>,
  api: GatewayApi,
): Context {
  return {
    clientId,
    get session() {
      holder.touched = true;
      return holder.session;
    },
    set session(value: Session) {
      holder.touched = true;
      holder.session = value && typeof value === 'object' ? value : {};
    },
    get clientIp() {
      return holder.info.clientIp ?? '';
    },
    get clientPort() {
      return holder.info.clientPort ?? 0;
    },
    get gatewayAddress() {
      return holder.info.gatewayAddress ?? '';
    },
    get unacked() {
      return holder.unacked ?? NONE;
    },
    get awaitingRelease() {
      return holder.awaitingRelease ?? NO_IDS;
    },
    send,
    close: (message) => api.closeClient(clientId, message),
  };
}

const NONE: readonly UnackedMessage[] = Object.freeze([]);
const NO_IDS: readonly number[] = Object.freeze([]);

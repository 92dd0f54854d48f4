/**
 * What every packet handler shares: the MQTT state kept in a connection's gateway session, reason
 * codes, and small helpers to answer a client in its own protocol version.
 *
 * The state lives in the worker that handles the connection and, as a copy, in the connection's
 * gateway session (so the HTTP API, and another worker after a reload, can read it).
 */
import { encodeMqttPacket, topicMatches, type Context, type MqttPacket, type MqttVersion, type PublishProperties, type Session } from 'gatewayworker';

/** A last will, as kept in the session until the connection ends (JSON: the payload is base64). */
export interface StoredWill {
  topic: string;
  /** Payload bytes, base64. */
  payload: string;
  qos: 0 | 1 | 2;
  retain: boolean;
  properties?: SessionProperties;
  /** MQTT 5 will delay (seconds): published that long after the connection ends, unless it is back first. */
  delaySeconds?: number;
}

/** {@link PublishProperties} in a JSON-safe form: correlation data as base64. */
export type SessionProperties = Omit<PublishProperties, 'correlationData'> & { correlationData?: string };

/** The MQTT state of one connection, in its gateway session. */
export interface HubSession extends Session {
  /** `mqtt+ws` for MQTT over WebSocket (set when the WebSocket handshake arrives), else unset. */
  transport?: 'mqtt+ws';
  /** Protocol level of the CONNECT: 3 = 3.1, 4 = 3.1.1, 5 = 5.0. Set once CONNECT is being handled. */
  version?: MqttVersion;
  /** The session key (see {@link sessionKeyOf}), also bound as this connection's uid. */
  key?: string;
  /** The device (the CONNECT's username); null for an anonymous client. */
  deviceId?: string | null;
  /** The MQTT client identifier (assigned by the hub when the client sent an empty one). */
  mqttClientId?: string;
  /** True once CONNACK accepted the connection. */
  connected?: boolean;
  /**
   * The store's number for this connection of the session: of two connections with the same
   * session key, the later number wins (a late close of an older one is told apart by it too).
   */
  generation?: number;
  /** A newer connection of the session opened it while this one was restoring it: this one lost, no will, no presence 0. */
  superseded?: boolean;
  /** Clean session (3.1.1) / clean start (5.0). */
  clean?: boolean;
  /** Seconds the session outlives the connection; 0: it ends with the connection. */
  expiry?: number;
  will?: StoredWill | null;
  /** The client sent DISCONNECT (without "disconnect with will"): no will. */
  cleanDisconnect?: boolean;
  /** A newer connection with the same session key closed this one: no will, no presence 0. */
  takenOverBy?: string;
  /** Old connections (by gateway client id) that finished closing after this one took over. */
  handedOver?: Record<string, boolean>;
  /** Topic filters this connection is subscribed to. */
  filters?: string[];
  /** Remote IP address. */
  ip?: string;
  /** ms timestamps: CONNACK sent, and the last packet other than PINGREQ (updated at most every 5 s). */
  connectedAt?: number;
  lastSeen?: number;
}

/** MQTT 5 reason codes the hub sends (3.1.1 clients get the return codes noted in each handler). */
export const Reason = {
  SUCCESS: 0x00,
  NO_SUBSCRIPTION_EXISTED: 0x11,
  UNSPECIFIED_ERROR: 0x80,
  MALFORMED_PACKET: 0x81,
  PROTOCOL_ERROR: 0x82,
  CLIENT_IDENTIFIER_NOT_VALID: 0x85,
  BAD_USER_NAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  BAD_AUTHENTICATION_METHOD: 0x8c,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: 0x9e,
} as const;

/**
 * Each connection's state in this worker, by its ctx. The gateway session is the copy everyone
 * else reads (the HTTP API, a worker taking over after a reload), but a worker's `ctx.session` can
 * briefly be replaced by an older gateway copy when another process wrote to the session
 * meanwhile (a take-over marks both connections): the state a handler relies on is kept here, and
 * copied into the session after every packet ({@link saveSession}). A client's events all go to
 * one worker; after a reload the next worker starts from the gateway copy.
 *
 * Keyed by the ctx, not by client id: the runtime makes one ctx per client and drops it when the
 * client closes or its events move to another worker process, and the state goes with it. An
 * entry by id would stay behind for a connection handed to another worker or closed there.
 */
const states = new WeakMap<Context, HubSession>();

/** The hub's state of the connection `ctx` is for (changes reach the gateway via {@link saveSession}). */
export function hubSession(ctx: Context): HubSession {
  let state = states.get(ctx);
  if (!state) {
    state = { ...(ctx.session as HubSession) };
    states.set(ctx, state);
  }
  return state;
}

/** Copies the connection's state into its session, which the runtime writes back to the gateway. */
export function saveSession(ctx: Context): void {
  const state = states.get(ctx);
  if (state) Object.assign(ctx.session, state);
}

/** The connection is gone: drop its state now rather than with its ctx. */
export function forgetSession(ctx: Context): void {
  states.delete(ctx);
}

/** The protocol level packets of this connection are decoded and encoded with. */
export function versionOf(session: HubSession): MqttVersion {
  return session.version ?? 4;
}

/** Encodes `packet` in the connection's protocol version and sends it. */
export function reply(ctx: Context, packet: MqttPacket.Packet): Promise<void> {
  return ctx.send(encodeMqttPacket(packet, versionOf(hubSession(ctx))));
}

/** An MQTT 5 DISCONNECT with a reason code (the hub closes the connection after it). */
export function encodeDisconnect(reasonCode: number): Buffer {
  return encodeMqttPacket({ cmd: 'disconnect', reasonCode }, 5);
}

/**
 * The key a persistent session is stored under and the uid a connection is bound to:
 * `<deviceId>:<clientId>` (`:<clientId>` for anonymous clients). Client identifiers are scoped to
 * their device, so one device can neither take over nor read the session of another that happens
 * to use the same client identifier. Device ids never contain `:`, so keys cannot collide.
 */
export function sessionKeyOf(deviceId: string | null, mqttClientId: string): string {
  return `${deviceId ?? ''}:${mqttClientId}`;
}

/** The gateway group holding every live connection of a device (for presence). */
export function deviceGroup(deviceId: string): string {
  return `device:${deviceId}`;
}

/** The retained presence topic of a device: `1` while it has a connection, `0` after. */
export function presenceTopic(deviceId: string): string {
  return `devices/${deviceId}/online`;
}

/** Properties of a delivery to one client: {@link PublishProperties} and the subscription identifiers it matched. */
export type DeliveryProperties = PublishProperties & { subscriptionIdentifier?: number | number[] };

/**
 * `properties` with the MQTT 5 subscription identifiers of the `subscriptions` whose filter
 * matches `topic` (§3.3.4): what the gateway adds to live deliveries, for a message sent to one
 * client (retained at SUBSCRIBE, queued while it was away).
 */
export function withSubscriptionIds(
  properties: PublishProperties | undefined,
  subscriptions: ReadonlyArray<{ filter: string; subscriptionId?: number }>,
  topic: string,
): DeliveryProperties | undefined {
  const ids = [...new Set(subscriptions.filter((sub) => sub.subscriptionId && topicMatches(sub.filter, topic)).map((sub) => sub.subscriptionId as number))];
  if (ids.length === 0) return properties;
  return { ...properties, subscriptionIdentifier: ids.length === 1 ? ids[0] : ids };
}

/** The MQTT 5 properties worth passing on with a message (not topic aliases or subscription ids). */
export function forwardedProperties(properties: MqttPacket.IPublishPacket['properties'] | undefined): PublishProperties | undefined {
  if (!properties) return undefined;
  const { payloadFormatIndicator, messageExpiryInterval, contentType, responseTopic, correlationData, userProperties } = properties;
  const out: PublishProperties = {};
  if (payloadFormatIndicator !== undefined) out.payloadFormatIndicator = payloadFormatIndicator;
  if (messageExpiryInterval !== undefined) out.messageExpiryInterval = messageExpiryInterval;
  if (contentType !== undefined) out.contentType = contentType;
  if (responseTopic !== undefined) out.responseTopic = responseTopic;
  if (correlationData !== undefined) out.correlationData = Buffer.from(correlationData);
  if (userProperties !== undefined) out.userProperties = userProperties;
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Properties for a JSON session (correlation data to base64). */
export function toSessionProperties(properties: PublishProperties | undefined): SessionProperties | undefined {
  if (!properties) return undefined;
  const { correlationData, ...rest } = properties;
  return correlationData ? { ...rest, correlationData: correlationData.toString('base64') } : rest;
}

/**
 * Properties back from JSON (a session, or the store): correlation data may come as base64 or as
 * a JSON-serialised Buffer (`{ type: 'Buffer', data: [...] }`).
 */
export function fromStoredProperties(value: unknown): PublishProperties | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const { correlationData, ...rest } = value as Record<string, unknown>;
  const out = { ...rest } as PublishProperties;
  if (typeof correlationData === 'string') out.correlationData = Buffer.from(correlationData, 'base64');
  else if (Buffer.isBuffer(correlationData)) out.correlationData = correlationData;
  else if (correlationData && typeof correlationData === 'object' && Array.isArray((correlationData as { data?: unknown }).data)) {
    out.correlationData = Buffer.from((correlationData as { data: number[] }).data);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * The hub's broker logic. The gateways speak MQTT themselves — framing, keep-alive (PINGREQ), the
 * QoS handshakes of the messages they deliver, topic matching — and hand the workers only the
 * packets that need a decision, as raw bytes: CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE,
 * DISCONNECT (and AUTH). Each has its handler in handlers/, the way aedes splits its own:
 *
 *   handlers/connect.ts      who is this, which session, take-over, CONNACK, restore the session
 *   handlers/publish.ts      ACL, route (subscribers, retained store, offline queues), PUBACK/PUBREC
 *   handlers/subscribe.ts    ACL per filter, SUBACK, retained messages
 *   handlers/unsubscribe.ts  UNSUBACK
 *   handlers/disconnect.ts   DISCONNECT, and the close: session back to the store, will, presence
 *   handlers/will.ts         last wills, now or after their MQTT 5 will delay
 *
 * One client's packets are handled one after another, in order; different clients' interleave.
 */
import { decodeMqttPacket, describeError, log, type Context, type MqttPacket } from 'gatewayworker';
import { handleConnect } from './handlers/connect.ts';
import { Reason, encodeDisconnect, forgetSession, hubSession, saveSession, versionOf } from './handlers/context.ts';
import { handleClose, handleDisconnect } from './handlers/disconnect.ts';
import { handlePublish } from './handlers/publish.ts';
import { closeStore } from './handlers/store.ts';
import { handleSubscribe } from './handlers/subscribe.ts';
import { handleUnsubscribe } from './handlers/unsubscribe.ts';
import { startWillCollector, stopWillCollector } from './handlers/will.ts';

/** `lastSeen` in the session moves at most this often, not with every packet. */
const LAST_SEEN_EVERY_MS = 5000;

/** MQTT over WebSocket: the handshake comes before any packet. */
export function onWebSocketConnect(_clientId: string, _request: unknown, ctx: Context): void {
  hubSession(ctx).transport = 'mqtt+ws';
}

export async function onMessage(clientId: string, message: string | Buffer, ctx: Context): Promise<void> {
  try {
    await dispatch(clientId, typeof message === 'string' ? Buffer.from(message) : message, ctx);
  } finally {
    saveSession(ctx);
  }
}

export async function onClose(clientId: string, ctx: Context): Promise<void> {
  try {
    await handleClose(clientId, ctx);
  } finally {
    forgetSession(ctx);
  }
}

async function dispatch(clientId: string, bytes: Buffer, ctx: Context): Promise<void> {
  const session = hubSession(ctx);
  let packet: MqttPacket.Packet;
  try {
    // Before CONNECT any version decodes it: the CONNECT carries its own protocol level.
    packet = decodeMqttPacket(bytes, versionOf(session));
  } catch (error) {
    log.info('undecodable MQTT packet: closing', { client: clientId, error: describeError(error) });
    return ctx.close(session.version === 5 ? encodeDisconnect(Reason.MALFORMED_PACKET) : undefined);
  }

  if (packet.cmd === 'connect') {
    // The gateway closes a connection that sends a second CONNECT; this is the first.
    if (session.key !== undefined) return ctx.close();
    return handleConnect(clientId, packet, ctx);
  }
  if (session.connected !== true) {
    log.info(`${packet.cmd.toUpperCase()} before a successful CONNECT: closing`, { client: clientId });
    return ctx.close();
  }

  const now = Date.now();
  if (now - (session.lastSeen ?? 0) >= LAST_SEEN_EVERY_MS) session.lastSeen = now;

  switch (packet.cmd) {
    case 'publish':
      return handlePublish(clientId, packet, ctx);
    case 'subscribe':
      return handleSubscribe(clientId, packet, ctx);
    case 'unsubscribe':
      return handleUnsubscribe(clientId, packet, ctx);
    case 'disconnect':
      return handleDisconnect(clientId, packet, ctx);
    default:
      // AUTH (enhanced authentication is not offered) or anything a gateway should have kept.
      log.info(`unexpected ${packet.cmd.toUpperCase()}: closing`, { client: clientId, mqttClientId: session.mqttClientId });
      return ctx.close(versionOf(session) === 5 ? encodeDisconnect(Reason.PROTOCOL_ERROR) : undefined);
  }
}

/** Every worker collects the delayed wills that are due (they wait in the store). */
export function onWorkerStart(): void {
  startWillCollector();
}

export function onWorkerStop(): void {
  stopWillCollector();
  closeStore();
}

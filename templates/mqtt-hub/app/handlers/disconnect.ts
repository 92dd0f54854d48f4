/**
 * The end of a connection: the DISCONNECT packet (a clean goodbye), and the close itself, clean or
 * not (network gone, keep-alive timeout, protocol error, `kill -9` of the client, taken over).
 *
 * At close: first the session is handed back to the store (a persistent one keeps its delivery
 * state for the next connection: the messages the client never acknowledged, with their packet
 * ids, properties and whether only the PUBREL is left, and the ids of the client's QoS 2
 * PUBLISHes awaiting its PUBREL; a clean session drops them); unless the client said goodbye, its
 * will is published (after its MQTT 5 will delay: will.ts); and the device's presence becomes `0`
 * when this was its last connection. A connection taken over by a newer one with the same client
 * id publishes neither will nor presence: the device is still there.
 */
import { Gateway, describeError, log, type Context, type MqttPacket } from 'gatewayworker';
import { config } from '../config.ts';
import { Reason, deviceGroup, encodeDisconnect, hubSession, presenceTopic, type HubSession } from './context.ts';
import { routeMessage } from './publish.ts';
import { pickProperties, sizeOf, store, type StoredInflight } from './store.ts';
import { publishWill } from './will.ts';

/** MQTT 5 "disconnect with will message": a goodbye that still wants the will published. */
const DISCONNECT_WITH_WILL = 0x04;

export async function handleDisconnect(clientId: string, packet: MqttPacket.IDisconnectPacket, ctx: Context): Promise<void> {
  const session = hubSession(ctx);
  const requestedExpiry = packet.properties?.sessionExpiryInterval;
  // MQTT 5 §3.14.2.2.2: a session that was to end with the connection cannot be extended here.
  if (requestedExpiry !== undefined && requestedExpiry > 0 && (session.expiry ?? 0) === 0) {
    log.info('DISCONNECT sets a session expiry on a session without one: protocol error', { client: clientId, mqttClientId: session.mqttClientId });
    return ctx.close(encodeDisconnect(Reason.PROTOCOL_ERROR));
  }
  const cleanDisconnect = packet.reasonCode !== DISCONNECT_WITH_WILL;
  session.cleanDisconnect = cleanDisconnect;
  if (requestedExpiry !== undefined) session.expiry = requestedExpiry;
  // The client closes the connection after DISCONNECT; close it here too, in case it does not.
  await ctx.close();
}

export async function handleClose(clientId: string, ctx: Context): Promise<void> {
  const session = hubSession(ctx);
  if (!session.key) return; // never got as far as CONNECT

  // The session goes back to the store before anything else is awaited: until it is offline
  // there, a publish for it finds the device neither connected nor queued for, and is lost.
  if (session.connected) await handBack(clientId, session, ctx);

  // Newer connections of this session: the one that took over (it marked this connection's
  // gateway session before closing it), or one whose CONNECT is under way (the close raced its
  // take-over). They wait for this close to hand the session over.
  const takenOverBy = (ctx.session as HubSession).takenOverBy;
  let takers: string[] = takenOverBy ? [takenOverBy] : [];
  if (takers.length === 0 && session.connected && session.superseded !== true) {
    takers = await Gateway.getClientIdByUid(session.key).catch((error: unknown) => {
      log.warn('close: could not ask the gateways about the session', { client: clientId, error: describeError(error) });
      return [];
    });
  }
  takers = takers.filter((id) => id !== clientId);
  for (const taker of takers) {
    await Gateway.updateSession(taker, { handedOver: { [clientId]: true } }).catch(() => {});
  }
  if (!session.connected || takers.length > 0 || session.superseded === true) return;

  log.debug('MQTT client disconnected', { client: clientId, device: session.deviceId ?? null, mqttClientId: session.mqttClientId, clean: session.cleanDisconnect === true });
  if (session.will && session.cleanDisconnect !== true) await publishWill(clientId, session);
  if (session.deviceId) await presenceOffline(session.deviceId);
}

/**
 * Hands the session back to the store: all the gateway reported, as it reported it (packet ids,
 * released flags, properties): the next connection resends with the same packet ids (DUP set),
 * PUBREL again for the released ones (Gateway.restoreMqttSession). The store keeps it only for a
 * persistent session, within the session's byte cap (checked here too, so the request fits).
 */
async function handBack(clientId: string, session: HubSession, ctx: Context): Promise<void> {
  const unacked = withinCap(
    ctx.unacked.map(({ topic, payload, qos, retain, packetId, released, properties }) => {
      const message: StoredInflight = { topic, payload, qos, retain, packetId, released };
      const kept = pickProperties(properties, true);
      if (kept) message.properties = kept;
      return message;
    }),
    config.maxQueuedBytesPerSession,
    clientId,
  );
  const awaitingRelease = [...ctx.awaitingRelease];
  try {
    await store().closeSession(session.key as string, unacked, { generation: session.generation, expirySeconds: session.expiry, awaitingRelease });
  } catch (error) {
    log.error('close: session not handed back to the store', {
      client: clientId,
      mqttClientId: session.mqttClientId,
      unacked: unacked.length,
      awaitingRelease: awaitingRelease.length,
      error: describeError(error),
    });
  }
}

/**
 * `unacked` within `maxBytes`: a released message needs only its PUBREL (its payload is not sent
 * on), and past the cap the oldest unreleased ones are dropped, as the store would.
 */
function withinCap(unacked: StoredInflight[], maxBytes: number, clientId: string): StoredInflight[] {
  const light = unacked.map((m) => (m.released && m.payload.length > 0 ? { ...m, payload: Buffer.alloc(0) } : m));
  let bytes = light.reduce((sum, m) => sum + sizeOf(m), 0);
  if (bytes <= maxBytes) return light;
  const out: StoredInflight[] = [];
  let dropped = 0;
  for (const m of light) {
    if (bytes > maxBytes && !m.released) {
      bytes -= sizeOf(m);
      dropped++;
    } else out.push(m);
  }
  log.warn(`close: ${dropped} unacknowledged messages dropped, over the session cap of ${maxBytes} bytes`, { client: clientId });
  return out;
}

/** Presence `0`, unless another connection of the device is still (or again) online. */
async function presenceOffline(deviceId: string): Promise<void> {
  const group = deviceGroup(deviceId);
  const online = async (): Promise<boolean> => (await Gateway.getClientIdCountByGroup(group)) > 0;
  const presence = (value: '0' | '1') => routeMessage({ topic: presenceTopic(deviceId), payload: Buffer.from(value), qos: 1, retain: true });
  try {
    if (await online()) return;
    await presence('0');
    // A connection of the device that arrived meanwhile may have published `1` before our `0`.
    if (await online()) await presence('1');
  } catch (error) {
    log.warn('presence not published', { device: deviceId, error: describeError(error) });
  }
}

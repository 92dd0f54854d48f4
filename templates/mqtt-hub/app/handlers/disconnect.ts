/**
 * The end of a connection: the DISCONNECT packet (a clean goodbye), and the close itself, clean or
 * not (network gone, keep-alive timeout, protocol error, `kill -9` of the client, taken over).
 *
 * At close: the session is handed back to the store (a persistent one keeps its delivery state for
 * the next connection: the messages the client never acknowledged, with their packet ids and
 * whether only the PUBREL is left, and the ids of the client's QoS 2 PUBLISHes awaiting its
 * PUBREL; a clean session drops them); unless the client said goodbye, its will is
 * published; and the device's presence becomes `0` when this was its last connection. A connection
 * taken over by a newer one with the same client id publishes neither will nor presence: the
 * device is still there.
 */
import { Gateway, describeError, log, type Context, type MqttPacket } from 'gatewayworker';
import { canPublish } from '../acl.ts';
import { Reason, deviceGroup, encodeDisconnect, fromStoredProperties, hubSession, presenceTopic, type HubSession } from './context.ts';
import { routeMessage } from './publish.ts';
import { store, type StoredInflight } from './store.ts';

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

  // Newer connections of this session: the one that took over (it marked this connection's
  // gateway session before closing it), or one whose CONNECT is under way (the close raced its
  // take-over). They wait for this close to hand the session over.
  const takenOverBy = (ctx.session as HubSession).takenOverBy;
  let takers: string[] = takenOverBy ? [takenOverBy] : [];
  if (takers.length === 0 && session.connected) {
    takers = await Gateway.getClientIdByUid(session.key).catch((error: unknown) => {
      log.warn('close: could not ask the gateways about the session', { client: clientId, error: describeError(error) });
      return [];
    });
  }
  takers = takers.filter((id) => id !== clientId);

  if (session.connected) {
    // All of it, as the gateway reported it: the next connection resends with the same packet
    // ids (DUP set), PUBREL again for the released ones (Gateway.restoreMqttSession). The store
    // keeps it only for a persistent session.
    const unacked: StoredInflight[] = ctx.unacked.map(({ topic, payload, qos, retain, packetId, released }) => ({ topic, payload, qos, retain, packetId, released }));
    const awaitingRelease = [...ctx.awaitingRelease];
    try {
      await store().closeSession(session.key, unacked, { generation: session.generation, expirySeconds: session.expiry, awaitingRelease });
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
  for (const taker of takers) {
    await Gateway.updateSession(taker, { handedOver: { [clientId]: true } }).catch(() => {});
  }
  if (!session.connected || takers.length > 0) return;

  log.debug('MQTT client disconnected', { client: clientId, device: session.deviceId ?? null, mqttClientId: session.mqttClientId, clean: session.cleanDisconnect === true });
  if (session.will && session.cleanDisconnect !== true) await publishWill(clientId, session);
  if (session.deviceId) await presenceOffline(session.deviceId);
}

/** Publishes the will like a PUBLISH of the device itself: the same ACL, retained if flagged. */
async function publishWill(clientId: string, session: HubSession): Promise<void> {
  const will = session.will;
  if (!will) return;
  const deviceId = session.deviceId ?? null;
  if (!canPublish(deviceId, will.topic)) {
    log.info('will refused by the ACL, dropped', { client: clientId, mqttClientId: session.mqttClientId, device: deviceId, topic: will.topic });
    return;
  }
  try {
    await routeMessage({
      topic: will.topic,
      payload: Buffer.from(will.payload, 'base64'),
      qos: will.qos,
      retain: will.retain,
      properties: fromStoredProperties(will.properties),
    });
  } catch (error) {
    log.error('will not published', { client: clientId, topic: will.topic, error: describeError(error) });
  }
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

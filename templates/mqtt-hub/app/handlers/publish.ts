/**
 * PUBLISH from a client: check the topic and the ACL, route the message (live subscribers on every
 * gateway, the retained store, offline persistent sessions), then acknowledge it.
 *
 * QoS 1 gets PUBACK and QoS 2 PUBREC once the message is routed: from then on it is the hub's. The
 * rest of the QoS 2 handshake (PUBREL → PUBCOMP, and dropping a resent duplicate) is the gateway's.
 * Also the one path every message takes: wills and presence go through {@link routeMessage} too.
 */
import { Gateway, isValidTopicName, log, describeError, type Context, type MqttPacket, type PublishProperties } from 'gatewayworker';
import { canPublish } from '../acl.ts';
import { Reason, encodeDisconnect, forwardedProperties, hubSession, reply, versionOf } from './context.ts';
import { store } from './store.ts';

/** A message to route. */
export interface HubMessage {
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  properties?: PublishProperties;
}

/**
 * Routes a message the way a device's PUBLISH is routed: to every matching live subscription
 * (`from` is the publishing connection, for MQTT 5 No Local), into the retained store when
 * `retain` (an empty payload clears the topic, and still reaches live subscribers as an empty
 * message, as the spec says), and, at QoS ≥ 1, into the queue of every offline persistent session
 * that subscribed. Rejects if the gateways or the store cannot be reached.
 */
export async function routeMessage(message: HubMessage, from?: string): Promise<void> {
  const { topic, payload, qos, retain, properties } = message;
  const tasks: Promise<void>[] = [Gateway.publish(topic, payload, { qos, retain, properties, from })];
  if (retain) tasks.push(store().setRetained({ topic, payload, qos, retain: true, properties }));
  if (qos > 0) tasks.push(store().queueForOffline({ topic, payload, qos, retain, properties }));
  await Promise.all(tasks);
}

export async function handlePublish(clientId: string, packet: MqttPacket.IPublishPacket, ctx: Context): Promise<void> {
  const session = hubSession(ctx);
  const version = versionOf(session);
  const { topic, qos } = packet;

  // Also an MQTT 5 topic alias (empty topic): the hub grants none (Topic Alias Maximum 0).
  if (!isValidTopicName(topic)) {
    log.info('PUBLISH with an invalid topic name: closing the connection', { client: clientId, mqttClientId: session.mqttClientId, topic: topic.slice(0, 200) });
    return ctx.close(version === 5 ? encodeDisconnect(Reason.TOPIC_NAME_INVALID) : undefined);
  }

  if (!canPublish(session.deviceId ?? null, topic)) {
    log.info('PUBLISH refused by the ACL, dropped', { client: clientId, mqttClientId: session.mqttClientId, device: session.deviceId ?? null, topic });
    // 3.1.1 has no refusal: the message is acknowledged (the client must not resend it) and dropped.
    return acknowledge(ctx, packet, Reason.NOT_AUTHORIZED);
  }

  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  try {
    await routeMessage({ topic, payload, qos, retain: packet.retain, properties: forwardedProperties(packet.properties) }, clientId);
  } catch (error) {
    log.error('PUBLISH could not be routed', { client: clientId, mqttClientId: session.mqttClientId, topic, error: describeError(error) });
    if (qos === 0) return;
    if (version === 5) return acknowledge(ctx, packet, Reason.UNSPECIFIED_ERROR);
    // 3.1.1 cannot say "failed": without an acknowledgement, the client sends it again after reconnecting.
    return ctx.close();
  }
  return acknowledge(ctx, packet, Reason.SUCCESS);
}

/** PUBACK (QoS 1) or PUBREC (QoS 2); the reason code goes to MQTT 5 clients only. */
function acknowledge(ctx: Context, packet: MqttPacket.IPublishPacket, reasonCode: number): Promise<void> | undefined {
  if (packet.qos === 0) return undefined;
  const withReason = versionOf(hubSession(ctx)) === 5 && reasonCode !== Reason.SUCCESS ? { reasonCode } : {};
  const messageId = packet.messageId ?? 0;
  return reply(ctx, packet.qos === 1 ? { cmd: 'puback', messageId, ...withReason } : { cmd: 'pubrec', messageId, ...withReason });
}

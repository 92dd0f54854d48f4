/**
 * SUBSCRIBE: each filter is checked (valid? allowed by the ACL?) and granted at the QoS asked for
 * or refused; granted filters are subscribed on the client's gateway (and kept in a persistent
 * session); SUBACK; then the retained messages of the granted filters.
 *
 * Refusal codes: 3.1.1 → 0x80 for every refusal; 5.0 → 0x8F invalid filter, 0x9E shared
 * subscription (`$share/…`, not supported), 0x87 not allowed by the ACL.
 */
import { Gateway, describeError, isValidTopicFilter, log, topicMatches, type Context, type MqttPacket } from 'gatewayworker';
import { canSubscribe } from '../acl.ts';
import { Reason, fromStoredProperties, hubSession, reply, versionOf, withSubscriptionIds } from './context.ts';
import { store, type StoredSubscription } from './store.ts';

/** A granted subscription, and what MQTT 5 asked about its retained messages. */
interface Granted {
  sub: StoredSubscription;
  /** 0: send retained messages, 1: only if the subscription is new, 2: never. */
  retainHandling: number;
  existed: boolean;
  /** Position of its code in the SUBACK. */
  index: number;
}

export async function handleSubscribe(clientId: string, packet: MqttPacket.ISubscribePacket, ctx: Context): Promise<void> {
  const session = hubSession(ctx);
  const version = versionOf(session);
  const deviceId = session.deviceId ?? null;
  const subscriptionId = packet.properties?.subscriptionIdentifier;
  const filters = new Set(session.filters ?? []);

  const codes: number[] = [];
  const granted: Granted[] = [];
  for (const { topic: filter, qos, nl, rap, rh } of packet.subscriptions) {
    const refusal = !isValidTopicFilter(filter)
      ? Reason.TOPIC_FILTER_INVALID
      : filter.startsWith('$share/')
        ? Reason.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        : !canSubscribe(deviceId, filter)
          ? Reason.NOT_AUTHORIZED
          : null;
    if (refusal !== null) {
      log.info('SUBSCRIBE refused', { client: clientId, mqttClientId: session.mqttClientId, device: deviceId, filter: filter.slice(0, 200), reason: refusal });
      codes.push(version === 5 ? refusal : 0x80);
      continue;
    }
    const grantedQos = Math.min(qos, 2) as 0 | 1 | 2;
    granted.push({
      sub: {
        filter,
        qos: grantedQos,
        noLocal: nl === true,
        retainAsPublished: rap === true,
        ...(subscriptionId !== undefined ? { subscriptionId } : {}),
      },
      retainHandling: rh ?? 0,
      existed: filters.has(filter),
      index: codes.length,
    });
    codes.push(grantedQos);
  }

  try {
    await Promise.all(
      granted.map(({ sub }) => Gateway.subscribe(clientId, sub.filter, { qos: sub.qos, noLocal: sub.noLocal, retainAsPublished: sub.retainAsPublished, subscriptionId: sub.subscriptionId })),
    );
  } catch (error) {
    log.error('SUBSCRIBE: gateway unreachable', { client: clientId, error: describeError(error) });
    for (const { index } of granted) codes[index] = version === 5 ? Reason.UNSPECIFIED_ERROR : 0x80;
    return reply(ctx, { cmd: 'suback', messageId: packet.messageId ?? 0, granted: codes });
  }
  for (const { sub } of granted) filters.add(sub.filter);
  session.filters = [...filters];

  if ((session.expiry ?? 0) > 0 && granted.length > 0 && session.key) {
    await store()
      .addSubscriptions(session.key, granted.map(({ sub }) => sub))
      .catch((error: unknown) => log.warn('SUBSCRIBE: not saved in the persistent session (store unreachable)', { client: clientId, error: describeError(error) }));
  }

  await reply(ctx, { cmd: 'suback', messageId: packet.messageId ?? 0, granted: codes });
  await sendRetained(clientId, granted.filter((g) => g.retainHandling === 0 || (g.retainHandling === 1 && !g.existed)).map(({ sub }) => sub));
}

/**
 * The retained messages matching `subs`, to this client only, with the retain flag set, each
 * once, at the lower of its QoS and the highest QoS granted to a filter it matches, and (MQTT 5)
 * with the subscription identifier of the SUBSCRIBE, as a live message would have it.
 */
async function sendRetained(clientId: string, subs: StoredSubscription[]): Promise<void> {
  if (subs.length === 0) return;
  try {
    const retained = await store().retainedFor(subs.map((sub) => sub.filter));
    for (const message of retained) {
      let qos = -1;
      for (const sub of subs) if (sub.qos > qos && topicMatches(sub.filter, message.topic)) qos = sub.qos;
      if (qos < 0) continue;
      await Gateway.publish(message.topic, message.payload, {
        qos: Math.min(message.qos, qos) as 0 | 1 | 2,
        retain: true,
        properties: withSubscriptionIds(fromStoredProperties(message.properties), subs, message.topic),
        clientId,
      });
    }
  } catch (error) {
    log.warn('SUBSCRIBE: retained messages not sent (store unreachable)', { client: clientId, error: describeError(error) });
  }
}

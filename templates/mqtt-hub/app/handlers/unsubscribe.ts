/**
 * UNSUBSCRIBE: each filter is removed from the client's gateway (and from its persistent session),
 * then UNSUBACK. MQTT 5 clients get a reason code per filter: 0x00 removed, 0x11 there was no such
 * subscription, 0x8F not a valid filter.
 */
import { Gateway, describeError, isValidTopicFilter, log, type Context, type MqttPacket } from 'gatewayworker';
import { Reason, hubSession, reply, versionOf } from './context.ts';
import { store } from './store.ts';

export async function handleUnsubscribe(clientId: string, packet: MqttPacket.IUnsubscribePacket, ctx: Context): Promise<void> {
  const session = hubSession(ctx);
  const filters = new Set(session.filters ?? []);
  const codes: number[] = [];
  const removed: string[] = [];
  for (const filter of packet.unsubscriptions) {
    if (!isValidTopicFilter(filter)) {
      codes.push(Reason.TOPIC_FILTER_INVALID);
      continue;
    }
    codes.push(filters.delete(filter) ? Reason.SUCCESS : Reason.NO_SUBSCRIPTION_EXISTED);
    removed.push(filter);
  }

  try {
    await Promise.all(removed.map((filter) => Gateway.unsubscribe(clientId, filter)));
  } catch (error) {
    log.error('UNSUBSCRIBE: gateway unreachable', { client: clientId, error: describeError(error) });
    for (let i = 0; i < codes.length; i++) if (codes[i] === Reason.SUCCESS) codes[i] = Reason.UNSPECIFIED_ERROR;
  }
  session.filters = [...filters];
  if ((session.expiry ?? 0) > 0 && removed.length > 0 && session.key) {
    await store()
      .removeSubscriptions(session.key, removed)
      .catch((error: unknown) => log.warn('UNSUBSCRIBE: not saved in the persistent session (store unreachable)', { client: clientId, error: describeError(error) }));
  }

  const unsuback: MqttPacket.IUnsubackPacket = { cmd: 'unsuback', messageId: packet.messageId ?? 0, granted: [] };
  if (versionOf(session) === 5) unsuback.granted = codes;
  return reply(ctx, unsuback);
}

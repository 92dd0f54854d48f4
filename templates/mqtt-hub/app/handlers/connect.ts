/**
 * CONNECT: who is this (username = device id, password checked against devices.json), which
 * session (the MQTT client identifier, scoped to the device), take over an older connection of the
 * same session, open the session in the store, CONNACK, then restore what a persistent session
 * kept: first the deliveries its last connection left in flight (resent with their packet ids and
 * DUP, PUBREL again for released ones, the client's QoS 2 ids awaiting PUBREL still deduplicated),
 * then the QoS 1/2 messages queued while it was away, then its subscriptions. The store keeps what
 * it handed out until the handler acknowledges it delivered all of it.
 *
 * Two connections of one session at once (a take-over, or a client reconnecting on another
 * gateway before its old connection is gone): the store numbers each opening of the session, and
 * the later number wins. The winner closes the loser; a loser that finds out first closes itself.
 *
 * Refusals get the CONNACK code of the client's version and the connection is closed:
 *
 * | why                               | 3.1.1 return code | 5.0 reason code |
 * | --------------------------------- | ----------------- | --------------- |
 * | empty client id, no clean session | 2                 | —               |
 * | store or credentials unreachable  | 3                 | 0x88            |
 * | wrong username or password        | 4                 | 0x86            |
 * | no username, anonymous not allowed| 5                 | 0x87            |
 * | enhanced authentication (AUTH)    | —                 | 0x8C            |
 */
import { randomBytes } from 'node:crypto';
import { Gateway, describeError, encodeMqttPacket, isValidTopicName, log, type Context, type MqttPacket, type MqttVersion } from 'gatewayworker';
import { canSubscribe } from '../acl.ts';
import { config } from '../config.ts';
import { verifyDevice } from '../credentials.ts';
import {
  Reason,
  deviceGroup,
  encodeDisconnect,
  forwardedProperties,
  fromStoredProperties,
  hubSession,
  presenceTopic,
  sessionKeyOf,
  toSessionProperties,
  withSubscriptionIds,
  type HubSession,
  type StoredWill,
} from './context.ts';
import { routeMessage } from './publish.ts';
import { store, type OpenedSession, type StoredMessage, type StoredSubscription } from './store.ts';

/** How long a take-over waits for the old connection to hand its session over. */
const HANDOVER_TIMEOUT_MS = 3000;

export async function handleConnect(clientId: string, packet: MqttPacket.IConnectPacket, ctx: Context): Promise<void> {
  const version: MqttVersion = packet.protocolVersion ?? 4;
  const session = hubSession(ctx);
  session.version = version;

  const refuse = (returnCode: number, reasonCode: number, why: string): Promise<void> => {
    log.info(`CONNECT refused: ${why}`, { client: clientId, mqttClientId: packet.clientId, username: packet.username ?? null, ip: ctx.clientIp });
    const connack: MqttPacket.IConnackPacket =
      version === 5 ? { cmd: 'connack', reasonCode, sessionPresent: false } : { cmd: 'connack', returnCode, sessionPresent: false };
    return ctx.close(encodeMqttPacket(connack, version));
  };

  if (version === 5 && packet.properties?.authenticationMethod !== undefined) {
    return refuse(0, Reason.BAD_AUTHENTICATION_METHOD, `authentication method ${JSON.stringify(packet.properties.authenticationMethod)} is not supported`);
  }

  // Who: a device proves its id (the username) with its password; nobody else gets in unless the
  // config admits anonymous clients, which the ACL then limits to the shared topics.
  let deviceId: string | null = null;
  if (packet.username !== undefined) {
    let valid: boolean;
    try {
      valid = await verifyDevice(packet.username, packet.password ?? Buffer.alloc(0));
    } catch (error) {
      log.error('could not read the device credentials', { error: describeError(error) });
      return refuse(3, Reason.SERVER_UNAVAILABLE, 'credentials unreadable');
    }
    if (!valid) return refuse(4, Reason.BAD_USER_NAME_OR_PASSWORD, 'wrong username or password');
    deviceId = packet.username;
  } else if (!config.allowAnonymous) {
    return refuse(5, Reason.NOT_AUTHORIZED, 'no username, and anonymous clients are not allowed');
  }

  // Which session: an empty client id gets one of its own, if the client keeps no session (3.1.1).
  let mqttClientId = packet.clientId;
  let assigned = false;
  const clean = packet.clean !== false;
  if (mqttClientId === '') {
    if (version === 4 && !clean) return refuse(2, Reason.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id without clean session');
    if (version === 3) return refuse(2, Reason.CLIENT_IDENTIFIER_NOT_VALID, 'empty client id (MQTT 3.1)');
    mqttClientId = `auto-${randomBytes(12).toString('base64url')}`;
    assigned = true;
  }
  // MQTT 5 clients say how long their session outlives them; 3.1.1 ones only whether it does.
  const expiry = version === 5 ? (packet.properties?.sessionExpiryInterval ?? 0) : clean ? 0 : config.sessionExpiryDefault;

  let will: StoredWill | null = null;
  if (packet.will) {
    if (!isValidTopicName(packet.will.topic)) {
      if (version === 5) return refuse(0, Reason.TOPIC_NAME_INVALID, 'invalid will topic');
      log.info('CONNECT with an invalid will topic: closing', { client: clientId, mqttClientId });
      return ctx.close();
    }
    const payload = typeof packet.will.payload === 'string' ? Buffer.from(packet.will.payload) : packet.will.payload;
    will = {
      topic: packet.will.topic,
      payload: payload.toString('base64'),
      qos: packet.will.qos ?? 0,
      retain: packet.will.retain === true,
      properties: toSessionProperties(forwardedProperties(packet.will.properties)),
    };
    const delay = version === 5 ? (packet.will.properties?.willDelayInterval ?? 0) : 0;
    if (delay > 0) will.delaySeconds = delay;
  }

  const key = sessionKeyOf(deviceId, mqttClientId);
  Object.assign(session, { key, deviceId, mqttClientId } satisfies Partial<HubSession>);
  try {
    // The version in the gateway session at once, not after this CONNECT: a newer connection
    // that closes this one while it is still being set up says goodbye in its version (0x8E).
    await Gateway.updateSession(clientId, { version });
    await Gateway.bindUid(clientId, key);
    if (deviceId !== null) await Gateway.joinGroup(clientId, deviceGroup(deviceId));
    const others = (await Gateway.getClientIdByUid(key)).filter((id) => id !== clientId);
    if (others.length > 0) await takeOver(clientId, session, others);
  } catch (error) {
    log.error('CONNECT: gateway call failed', { client: clientId, error: describeError(error) });
    return refuse(3, Reason.SERVER_UNAVAILABLE, 'gateway unreachable');
  }

  let opened: OpenedSession;
  try {
    // Queueing for the session goes on until its subscriptions are live again (resumeSession
    // below): a publish in between is queued, not lost.
    opened = await store().openSession(key, { clean, expirySeconds: expiry, resume: 'later', owner: clientId });
  } catch (error) {
    log.error('CONNECT: the store is unreachable', { client: clientId, error: describeError(error) });
    return refuse(3, Reason.SERVER_UNAVAILABLE, 'store unreachable');
  }
  // A connection of this session that opened it before us and is still there (its CONNECT raced
  // ours, or it did not hand over in time) lost: it is closed, without will or presence 0.
  if (opened.replaced !== undefined && opened.replaced !== clientId) await closeLoser(opened.replaced, clientId, session);

  // Subscriptions the ACL no longer allows (SHARED_TOPICS changed) are not restored.
  const subscriptions = opened.subscriptions.filter((sub) => canSubscribe(deviceId, sub.filter));
  const now = Date.now();
  Object.assign(session, {
    connected: true,
    generation: opened.generation,
    clean,
    expiry,
    will,
    ip: ctx.clientIp,
    connectedAt: now,
    lastSeen: now,
    filters: subscriptions.map((sub) => sub.filter),
  } satisfies Partial<HubSession>);

  const connack: MqttPacket.IConnackPacket = { cmd: 'connack', sessionPresent: !clean && opened.present };
  if (version === 5) {
    connack.reasonCode = Reason.SUCCESS;
    connack.properties = {
      ...(assigned ? { assignedClientIdentifier: mqttClientId } : {}),
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: false,
    };
  } else connack.returnCode = 0;
  // The client's QoS 2 PUBLISHes still awaiting its PUBREL stay deduplicated (MQTT 4.3.3): told to
  // the gateway before the CONNACK, so a PUBLISH it resends once connected finds them there.
  if (opened.awaitingRelease.length > 0) {
    await Gateway.restoreMqttSession(clientId, { awaitingRelease: opened.awaitingRelease }).catch((error: unknown) =>
      log.error('CONNECT: restoring the QoS 2 ids awaiting release failed', { client: clientId, mqttClientId, error: describeError(error) }),
    );
  }
  // CONNACK first: everything below reaches the client through the same link, after it.
  await ctx.send(encodeMqttPacket(connack, version));
  log.debug('MQTT client connected', { client: clientId, device: deviceId, mqttClientId, version, clean, expiry, present: connack.sessionPresent });

  try {
    if (!(await restoreSession(clientId, session, opened, subscriptions))) {
      // A newer connection of this session opened it meanwhile: it has the session, this one lost.
      session.superseded = true;
      log.info('session taken over by a newer connection while restoring it: closing this one', { client: clientId, mqttClientId, device: deviceId });
      return ctx.close(version === 5 ? encodeDisconnect(Reason.SESSION_TAKEN_OVER) : undefined);
    }
  } catch (error) {
    // Closed, not left half restored: its close hands the session back to the store, which still
    // has what was not acknowledged, and the client's reconnect restores all of it.
    log.error('CONNECT: restoring the session failed; closing the connection (the client reconnects and gets the session again)', {
      client: clientId,
      mqttClientId,
      error: describeError(error),
    });
    return ctx.close(version === 5 ? encodeDisconnect(Reason.UNSPECIFIED_ERROR) : undefined);
  }

  if (deviceId !== null) {
    await routeMessage({ topic: presenceTopic(deviceId), payload: Buffer.from('1'), qos: 1, retain: true }).catch((error: unknown) =>
      log.warn('presence not published', { device: deviceId, error: describeError(error) }),
    );
  }
}

/**
 * What the session kept, after the CONNACK and in this order (MQTT §4.4): what the last
 * connection left unacknowledged, all of it (the gateway resends it with its packet ids and DUP,
 * sends PUBREL again for released messages, and sends fresh what never left); the messages queued
 * while it was away, oldest first; then its subscriptions, live again; then what was queued while
 * all that went on. Then the store may forget what it handed out. False if a newer connection
 * opened the session meanwhile (nothing acknowledged: the newer one has it all). Throws when a
 * gateway or the store cannot be reached.
 */
async function restoreSession(clientId: string, session: HubSession, opened: OpenedSession, subscriptions: StoredSubscription[]): Promise<boolean> {
  const key = session.key as string;
  if (opened.inflight.length > 0) {
    await Gateway.restoreMqttSession(clientId, { unacked: opened.inflight });
    log.debug('in-flight messages restored', { client: clientId, mqttClientId: session.mqttClientId, count: opened.inflight.length });
  }
  await deliverQueued(clientId, opened.queued, subscriptions);
  await Promise.all(
    subscriptions.map((sub) =>
      Gateway.subscribe(clientId, sub.filter, { qos: sub.qos, noLocal: sub.noLocal, retainAsPublished: sub.retainAsPublished, subscriptionId: sub.subscriptionId }),
    ),
  );
  const resumed = await store().resumeSession(key, opened.generation);
  if (!resumed.current) return false;
  await deliverQueued(clientId, resumed.queued, subscriptions);
  const handedOut = opened.inflight.length + opened.awaitingRelease.length + opened.queued.length + resumed.queued.length;
  if (handedOut > 0 || opened.dropped > 0) await store().ackSession(key, opened.generation);
  if (opened.queued.length + resumed.queued.length > 0) {
    log.debug('queued messages delivered', { client: clientId, mqttClientId: session.mqttClientId, count: opened.queued.length + resumed.queued.length });
  }
  return true;
}

/** Queued messages to this client, one by one so they arrive in order, each with its subscription identifiers. */
async function deliverQueued(clientId: string, messages: readonly StoredMessage[], subscriptions: readonly StoredSubscription[]): Promise<void> {
  for (const message of messages) {
    await Gateway.publish(message.topic, message.payload, {
      qos: message.qos,
      retain: message.retain === true,
      properties: withSubscriptionIds(fromStoredProperties(message.properties), subscriptions, message.topic),
      clientId,
    });
  }
}

/** Closes `loser`, an older connection of this session (MQTT 5: DISCONNECT "session taken over" first). */
async function closeLoser(loser: string, clientId: string, session: HubSession): Promise<void> {
  try {
    const theirs = (await Gateway.getSession(loser)) as HubSession | null;
    if (theirs === null) return; // gone already
    // The mark goes first on the same link as the close, so its close event carries it.
    await Gateway.updateSession(loser, { takenOverBy: clientId });
    await Gateway.closeClient(loser, theirs.version === 5 ? encodeDisconnect(Reason.SESSION_TAKEN_OVER) : undefined);
    log.info('session taken over from a connection that still had it open', { client: clientId, previous: loser, mqttClientId: session.mqttClientId, device: session.deviceId ?? null });
  } catch (error) {
    log.warn('take-over: could not close the older connection', { client: clientId, previous: loser, error: describeError(error) });
  }
}

/**
 * Other connections hold this session key. The established ones (CONNACK sent) are closed (MQTT
 * 5: DISCONNECT "session taken over" first) and waited for until their close has handed the
 * session over (their unacknowledged messages are back in the store; no will and no presence 0
 * from them), so the session opened next is complete. A connection still in its own CONNECT is
 * left alone: whichever of the two opens the session later wins (see handleConnect).
 */
async function takeOver(clientId: string, session: HubSession, others: string[]): Promise<void> {
  const closing: string[] = [];
  for (const other of others) {
    const theirs = (await Gateway.getSession(other)) as HubSession | null;
    if (theirs === null || theirs.connected !== true) continue;
    // The mark goes first on the same link as the close, so its close event carries it.
    await Gateway.updateSession(other, { takenOverBy: clientId });
    await Gateway.closeClient(other, theirs.version === 5 ? encodeDisconnect(Reason.SESSION_TAKEN_OVER) : undefined);
    closing.push(other);
    log.info('session taken over by a new connection', { client: clientId, previous: other, mqttClientId: session.mqttClientId, device: session.deviceId ?? null });
  }
  if (closing.length === 0) return;
  const deadline = Date.now() + HANDOVER_TIMEOUT_MS;
  for (;;) {
    const mine = (await Gateway.getSession(clientId)) as HubSession | null;
    if (closing.every((id) => mine?.handedOver?.[id] === true)) return;
    if (Date.now() > deadline) {
      log.warn('take-over: the old connection did not hand over in time; going on', { client: clientId, previous: closing.join(' ') });
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Last wills. A connection that ends without a goodbye has its will published like a PUBLISH of
 * the device itself (the same ACL, retained if flagged): at once, or — MQTT 5 with a will delay
 * and a persistent session — once the delay is over, unless the client is back first.
 *
 * A delayed will waits in the store, not in a timer of this worker: it survives a `reload`, a
 * reconnect cancels it there (openSession), and every worker collects the due ones once a second
 * ({@link startWillCollector}). The session ending earlier (its expiry, a clean start) makes it
 * due at once (MQTT 5 §3.1.3.2.2).
 */
import { describeError, log } from 'gatewayworker';
import { canPublish } from '../acl.ts';
import { fromStoredProperties, type HubSession } from './context.ts';
import { routeMessage, type HubMessage } from './publish.ts';
import { store } from './store.ts';

/** How often each worker asks the store for due wills. */
const COLLECT_EVERY_MS = 1000;

/**
 * The will of a connection that ended without a goodbye (`session` as it was at the close, after
 * the session went back to the store): published now, or left in the store for its will delay.
 */
export async function publishWill(clientId: string, session: HubSession): Promise<void> {
  const will = session.will;
  if (!will) return;
  const deviceId = session.deviceId ?? null;
  if (!canPublish(deviceId, will.topic)) {
    log.info('will refused by the ACL, dropped', { client: clientId, mqttClientId: session.mqttClientId, device: deviceId, topic: will.topic });
    return;
  }
  const message: HubMessage = { topic: will.topic, payload: Buffer.from(will.payload, 'base64'), qos: will.qos, retain: will.retain, properties: fromStoredProperties(will.properties) };
  // A session that ends with its connection ends now, and its will is due now (MQTT 5 §3.1.3.2.2).
  const delay = will.delaySeconds ?? 0;
  if (delay > 0 && (session.expiry ?? 0) > 0 && session.key && session.generation !== undefined) {
    try {
      const outcome = await store().delayWill(session.key, session.generation, message, delay);
      if (outcome === 'kept') {
        log.debug('will delayed', { client: clientId, mqttClientId: session.mqttClientId, topic: will.topic, delaySeconds: delay });
        return;
      }
      if (outcome === 'reconnected') return; // the session is back: no will
    } catch (error) {
      // Better early than never: the will says the device is gone, and it is.
      log.warn('will delay not kept (store unreachable): publishing the will now', { client: clientId, topic: will.topic, error: describeError(error) });
    }
  }
  await routeWill(message, clientId);
}

/** Publishes the delayed wills that are due; returns how many. Rejects if the store cannot be reached. */
export async function publishDueWills(): Promise<number> {
  const due = await store().takeDueWills();
  for (const { clientId, message } of due) {
    await routeWill({ topic: message.topic, payload: message.payload, qos: message.qos, retain: message.retain === true, properties: fromStoredProperties(message.properties) }, clientId);
  }
  return due.length;
}

async function routeWill(message: HubMessage, client: string): Promise<void> {
  try {
    await routeMessage(message);
  } catch (error) {
    log.error('will not published', { client, topic: message.topic, error: describeError(error) });
  }
}

let collector: NodeJS.Timeout | null = null;

/** Starts collecting due wills in this worker (once a second; a store outage is logged once). */
export function startWillCollector(): void {
  if (collector) return;
  let busy = false;
  let failing = false;
  collector = setInterval(() => {
    if (busy) return;
    busy = true;
    publishDueWills()
      .then(() => {
        if (failing) log.info('delayed wills: the store is reachable again');
        failing = false;
      })
      .catch((error: unknown) => {
        if (!failing) log.warn('delayed wills: cannot ask the store (retrying every second)', { error: describeError(error) });
        failing = true;
      })
      .finally(() => {
        busy = false;
      });
  }, COLLECT_EVERY_MS);
}

/** Stops collecting (the worker stops). */
export function stopWillCollector(): void {
  if (collector) clearInterval(collector);
  collector = null;
}

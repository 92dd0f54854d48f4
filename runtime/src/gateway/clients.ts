import type { Connection } from '../worker/Connection.js';
import type { MqttSession } from './mqtt.js';
import type { SubscriptionOptions } from './subscriptions.js';

/** What the gateway knows about one client connection. */
export interface Client {
  readonly counter: number;
  readonly id: string;
  readonly conn: Connection;
  uid: string | null;
  /** Groups it is in; null until it joins one (most idle clients never do). */
  groups: Set<string> | null;
  session: Record<string, unknown> | null;
  /** `{ session, info }` as JSON for workers that lack this version; made when first needed. */
  sessionJson: Buffer | null;
  /** Bumped on every session change. */
  version: number;
  /** Last time anything arrived from the client (ms), for the heartbeat. */
  lastSeen: number;
  closed: boolean;
  /** Topic filters it subscribed to; null until the first. */
  subscriptions: Map<string, SubscriptionOptions> | null;
  /** MQTT state, for clients of an MQTT gateway. */
  mqtt: MqttSession | null;
}

/**
 * Clients of one gateway process with their groups, uid bindings and sessions. Groups and uids
 * map to sets of clients, so a group send touches only its members.
 */
export class ClientTable {
  readonly byCounter = new Map<number, Client>();
  readonly groups = new Map<string, Set<Client>>();
  readonly uids = new Map<string, Set<Client>>();

  add(client: Client): void {
    this.byCounter.set(client.counter, client);
  }

  /** Removes a client from every index; it keeps its fields for the close event. */
  remove(client: Client): void {
    client.closed = true;
    this.byCounter.delete(client.counter);
    if (client.groups) for (const group of client.groups) this.leaveGroup(client, group);
    if (client.uid !== null) this.unbindUid(client);
  }

  get(counter: number): Client | undefined {
    return this.byCounter.get(counter);
  }

  joinGroup(client: Client, group: string): void {
    let members = this.groups.get(group);
    if (!members) this.groups.set(group, (members = new Set()));
    members.add(client);
    (client.groups ??= new Set()).add(group);
  }

  leaveGroup(client: Client, group: string): void {
    const members = this.groups.get(group);
    client.groups?.delete(group);
    if (!members) return;
    members.delete(client);
    if (members.size === 0) this.groups.delete(group);
  }

  /** Empties a group (its clients stay connected). */
  ungroup(group: string): void {
    const members = this.groups.get(group);
    if (!members) return;
    for (const client of members) client.groups?.delete(group);
    this.groups.delete(group);
  }

  bindUid(client: Client, uid: string): void {
    if (client.uid === uid) return;
    if (client.uid !== null) this.unbindUid(client);
    let clients = this.uids.get(uid);
    if (!clients) this.uids.set(uid, (clients = new Set()));
    clients.add(client);
    client.uid = uid;
  }

  unbindUid(client: Client): void {
    if (client.uid === null) return;
    const clients = this.uids.get(client.uid);
    if (clients) {
      clients.delete(client);
      if (clients.size === 0) this.uids.delete(client.uid);
    }
    client.uid = null;
  }

  /** Replaces a session (null clears it). */
  setSession(client: Client, session: Record<string, unknown> | null): void {
    client.session = session;
    client.version = (client.version + 1) >>> 0;
    client.sessionJson = null;
  }
}

/** Facts of the gateway process every client shares (kept once, not per client). */
export interface GatewayFacts {
  gatewayAddress: string;
  gatewayListen: string;
}

/**
 * What workers receive about a client: its session and its connection facts. Encoded once per
 * change, and kept only for clients that have a session (idle ones stay small).
 */
export function envelopeOf(client: Client, facts: GatewayFacts): Buffer {
  if (client.sessionJson) return client.sessionJson;
  const info = { clientIp: client.conn.remoteAddress, clientPort: client.conn.remotePort, ...facts };
  const json = Buffer.from(JSON.stringify({ session: client.session, info }));
  if (client.session !== null) client.sessionJson = json;
  return json;
}

/** Recursive merge of plain objects (arrays and other values are replaced), for `updateSession`. */
export function deepMerge(target: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    const current = out[key];
    out[key] = isPlainObject(value) && isPlainObject(current) ? deepMerge(current, value) : value;
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

import { Cmd, PayloadFlag, Target, encodeBroadcast, encodeJson, encodePublish, encodeSend, payloadOf, type MqttDeliveryState } from '../internal/codec.js';
import { isValidTopicFilter, isValidTopicName } from '../topics/index.js';
import type { GatewayLink, GatewayLinks } from './GatewayLinks.js';

/** What can be sent to clients: text, or bytes (binary WebSocket frames). */
export type ClientMessage = string | Buffer | Uint8Array;

/** A session: a plain JSON-serialisable object kept on the gateway for each client. */
export type Session = Record<string, unknown>;

/** How a client subscribes to a topic filter. */
export interface SubscribeOptions {
  /** Highest QoS the client gets messages on this filter with (MQTT clients). Default 0. */
  qos?: 0 | 1 | 2;
  /** MQTT 5: do not deliver the client's own publishes (those made with `from` = its id). */
  noLocal?: boolean;
  /** MQTT 5: keep the retain flag of live messages on delivery. */
  retainAsPublished?: boolean;
  /** MQTT 5 subscription identifier (1–268,435,455), echoed in each delivery. */
  subscriptionId?: number;
}

/** MQTT 5 properties a publish may carry to MQTT 5 clients. */
export interface PublishProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: Record<string, string | string[]>;
}

/** How a message is published to a topic. */
export interface PublishOptions {
  /** QoS for MQTT subscribers (each gets the lower of this and its subscription's). Default 0. */
  qos?: 0 | 1 | 2;
  /** The retain flag as published (routing keeps nothing: retained storage is the application's). */
  retain?: boolean;
  properties?: PublishProperties;
  /** The publishing client, for `noLocal` subscriptions. */
  from?: string;
  /** Deliver only to this client, whatever it subscribed to (retained or queued messages). */
  clientId?: string;
}

/** Thrown synchronously-rejected for arguments that can never work (empty group, empty uid, …). */
export class GatewayArgumentError extends TypeError {
  readonly code = 'ERR_GW_INVALID_ARGUMENT';
  constructor(message: string) {
    super(message);
    this.name = 'GatewayArgumentError';
  }
}

/**
 * The Gateway API: send to clients, uids, groups or everyone, manage groups, uid bindings and
 * sessions, and ask who is online. The same methods work inside a BusinessWorker (as static
 * methods of `Gateway`) and in any other Node process (`GatewayClient`). Sends resolve once
 * handed to every gateway link; queries ask every gateway in parallel and reject with a
 * `GatewayQueryTimeoutError` when one does not answer in time. Every call rejects with
 * `GatewayUnavailableError` when no gateway can be reached at all.
 */
export class GatewayApi {
  constructor(protected readonly links: GatewayLinks) {}

  // ---- sending -------------------------------------------------------------------------------

  /** Sends to every client (or only `clientIds`), except `excludeClientIds`. */
  async sendToAll(message: ClientMessage, clientIds?: readonly string[] | null, excludeClientIds?: readonly string[] | null, raw = false): Promise<void> {
    await this.reachable();
    const { bytes, flags } = encodePayload(message, raw);
    if (clientIds) {
      for (const [gateway, counters] of this.byGateway(clientIds)) {
        gateway.link.write(encodeBroadcast(Target.CLIENTS, gateway.epoch, counters, [], flags, bytes));
      }
      return;
    }
    const excluded = this.byGateway(excludeClientIds ?? []);
    for (const gateway of this.links.open()) {
      gateway.link.write(encodeBroadcast(Target.ALL, gateway.epoch, [], excluded.get(gateway) ?? [], flags, bytes));
    }
  }

  /** Sends to one client. A client that is gone is skipped silently (see `isOnline`). */
  async sendToClient(clientId: string, message: ClientMessage, raw = false): Promise<void> {
    await this.reachable();
    const owner = this.links.owner(clientId);
    if (!owner) return;
    const { bytes, flags } = encodePayload(message, raw);
    owner.gateway.link.write(encodeSend(owner.epoch, owner.counter, flags, bytes));
  }

  /** Sends to every connection bound to `uid` (or to any of `uids`). */
  async sendToUid(uid: string | readonly string[], message: ClientMessage, raw = false): Promise<void> {
    const uids = names(uid, 'uid');
    await this.broadcastNamed(Target.UIDS, uids, message, [], raw);
  }

  /** Sends to the members of `group` (or of any of `groups`), except `excludeClientIds`. */
  async sendToGroup(group: string | readonly string[], message: ClientMessage, excludeClientIds?: readonly string[] | null, raw = false): Promise<void> {
    const groups = names(group, 'group');
    await this.broadcastNamed(Target.GROUPS, groups, message, excludeClientIds ?? [], raw);
  }

  /** Closes a client after sending `message` (if given) and flushing what is queued for it. */
  async closeClient(clientId: string, message?: ClientMessage): Promise<void> {
    if (message === undefined) return this.control(clientId, 'close', {});
    const { bytes, flags } = encodePayload(message, false);
    const binary = (flags & PayloadFlag.BINARY) !== 0;
    return this.control(clientId, 'close', { data: binary ? bytes.toString('base64') : bytes.toString(), binary });
  }

  /** Drops a client at once. */
  async destroyClient(clientId: string): Promise<void> {
    return this.control(clientId, 'destroy', {});
  }

  // ---- groups and uids -----------------------------------------------------------------------

  async joinGroup(clientId: string, group: string): Promise<void> {
    return this.control(clientId, 'joinGroup', { group: name(group, 'group') });
  }

  async leaveGroup(clientId: string, group: string): Promise<void> {
    return this.control(clientId, 'leaveGroup', { group: name(group, 'group') });
  }

  /** Empties a group on every gateway; its clients stay connected. */
  async ungroup(group: string): Promise<void> {
    const frame = encodeJson(Cmd.CONTROL, { op: 'ungroup', group: name(group, 'group') });
    await this.reachable();
    for (const gateway of this.links.open()) gateway.link.write(frame);
  }

  /** Binds a client to a uid (a user may have several connections). */
  async bindUid(clientId: string, uid: string): Promise<void> {
    return this.control(clientId, 'bindUid', { uid: name(uid, 'uid') });
  }

  async unbindUid(clientId: string, uid: string): Promise<void> {
    return this.control(clientId, 'unbindUid', { uid: name(uid, 'uid') });
  }

  // ---- sessions ------------------------------------------------------------------------------

  /** Replaces a client's session. */
  async setSession(clientId: string, session: Session): Promise<void> {
    return this.control(clientId, 'setSession', { session: plainObject(session) });
  }

  /** Deep-merges `patch` into a client's session (nested plain objects merge, other values replace). */
  async updateSession(clientId: string, patch: Session): Promise<void> {
    return this.control(clientId, 'updateSession', { session: plainObject(patch) });
  }

  /** A client's session, or null when the client is not online. */
  async getSession(clientId: string): Promise<Session | null> {
    const info = await this.clientInfo(clientId);
    return info ? (info.session ?? {}) : null;
  }

  // ---- topics --------------------------------------------------------------------------------

  /**
   * Subscribes a client to a topic filter (`+` one level, `#` the rest). The subscription lives on
   * the client's gateway and ends with its connection. Works for every protocol: MQTT clients get
   * PUBLISH packets, others the message itself.
   */
  async subscribe(clientId: string, filter: string, options: SubscribeOptions = {}): Promise<void> {
    if (typeof filter !== 'string' || !isValidTopicFilter(filter)) throw new GatewayArgumentError(`invalid topic filter ${JSON.stringify(filter)}`);
    const qos = options.qos ?? 0;
    if (qos !== 0 && qos !== 1 && qos !== 2) throw new GatewayArgumentError(`qos must be 0, 1 or 2, got ${JSON.stringify(qos)}`);
    return this.control(clientId, 'subscribe', {
      filter,
      qos,
      noLocal: options.noLocal === true,
      retainAsPublished: options.retainAsPublished === true,
      ...(options.subscriptionId ? { subscriptionId: options.subscriptionId } : {}),
    });
  }

  async unsubscribe(clientId: string, filter: string): Promise<void> {
    if (typeof filter !== 'string' || !isValidTopicFilter(filter)) throw new GatewayArgumentError(`invalid topic filter ${JSON.stringify(filter)}`);
    return this.control(clientId, 'unsubscribe', { filter });
  }

  /**
   * Publishes to a topic: one frame per gateway, which delivers it to each of its clients whose
   * filters match, once per client. With `options.clientId`, only that client gets it.
   */
  async publish(topic: string, message: ClientMessage, options: PublishOptions = {}): Promise<void> {
    if (typeof topic !== 'string' || !isValidTopicName(topic)) throw new GatewayArgumentError(`invalid topic name ${JSON.stringify(topic)}`);
    const qos = options.qos ?? 0;
    if (qos !== 0 && qos !== 1 && qos !== 2) throw new GatewayArgumentError(`qos must be 0, 1 or 2, got ${JSON.stringify(qos)}`);
    const { bytes, flags } = encodePayload(message, false);
    await this.reachable();
    const properties = options.properties ? propertiesJson(options.properties) : null;
    const from = options.from ? this.links.owner(options.from) : null;
    const frame = {
      qos,
      retain: options.retain === true,
      binary: (flags & PayloadFlag.BINARY) !== 0,
      topic,
      from: from ? { epoch: from.epoch, counter: from.counter } : null,
      properties,
      payload: bytes,
    };
    if (options.clientId !== undefined) {
      const owner = this.links.owner(options.clientId);
      if (!owner) return;
      owner.gateway.link.write(encodePublish({ ...frame, target: { epoch: owner.epoch, counter: owner.counter } }));
      return;
    }
    const wire = encodePublish({ ...frame, target: null });
    for (const gateway of this.links.open()) gateway.link.write(wire);
  }

  /**
   * Continues an MQTT client's previous connection on its new one (a persistent session, MQTT
   * §4.4): what `ctx.unacked` and `ctx.awaitingRelease` gave at that connection's close. The
   * gateway resends unacknowledged messages with their packet ids and DUP set, sends PUBREL again
   * for released ones, and keeps deduplicating the client's QoS 2 ids awaiting release. Call it
   * after CONNACK was sent (on the same worker, so it arrives after), before other deliveries.
   */
  async restoreMqttSession(clientId: string, state: Partial<MqttDeliveryState>): Promise<void> {
    const unacked = (state.unacked ?? []).map((m) => ({
      topic: m.topic,
      payload: Buffer.from(m.payload).toString('base64'),
      qos: m.qos === 2 ? 2 : 1,
      retain: m.retain === true,
      packetId: Number.isInteger(m.packetId) ? m.packetId : 0,
      released: m.released === true,
      ...(m.properties ? { properties: propertiesJson(m.properties) } : {}),
    }));
    const awaitingRelease = (state.awaitingRelease ?? []).filter((id) => Number.isInteger(id) && id > 0 && id <= 0xffff);
    if (unacked.length === 0 && awaitingRelease.length === 0) return;
    return this.control(clientId, 'restoreMqtt', { unacked, awaitingRelease });
  }

  // ---- queries -------------------------------------------------------------------------------

  async isOnline(clientId: string): Promise<boolean> {
    return (await this.clientInfo(clientId)) !== null;
  }

  async getUidByClientId(clientId: string): Promise<string | null> {
    return (await this.clientInfo(clientId))?.uid ?? null;
  }

  async isUidOnline(uid: string): Promise<boolean> {
    return (await this.getClientIdByUid(uid)).length > 0;
  }

  async getClientIdByUid(uid: string): Promise<string[]> {
    return (await this.batchGetClientIdByUid([name(uid, 'uid')]))[uid] ?? [];
  }

  async isUidsOnline(uids: readonly string[]): Promise<Record<string, boolean>> {
    const ids = await this.batchGetClientIdByUid(uids);
    return Object.fromEntries(Object.entries(ids).map(([uid, list]) => [uid, list.length > 0]));
  }

  async batchGetClientIdByUid(uids: readonly string[]): Promise<Record<string, string[]>> {
    const list = names(uids, 'uid');
    const answers = await this.ask<Record<string, string[]>>('clientIdsByUid', { uids: list });
    const out: Record<string, string[]> = Object.fromEntries(list.map((uid) => [uid, [] as string[]]));
    for (const answer of answers) for (const [uid, ids] of Object.entries(answer)) out[uid].push(...ids);
    return out;
  }

  async getAllClientIdCount(): Promise<number> {
    return sum(await this.ask<number>('count', {}));
  }

  async getAllClientIdList(): Promise<string[]> {
    return (await this.ask<string[]>('clientIds', {})).flat();
  }

  async getClientIdCountByGroup(group: string): Promise<number> {
    return (await this.batchGetClientIdCountByGroup([group]))[group] ?? 0;
  }

  async batchGetClientIdCountByGroup(groups: readonly string[]): Promise<Record<string, number>> {
    const list = names(groups, 'group');
    const answers = await this.ask<Record<string, number>>('groupCounts', { groups: list });
    const out: Record<string, number> = Object.fromEntries(list.map((group) => [group, 0]));
    for (const answer of answers) for (const [group, n] of Object.entries(answer)) out[group] += n;
    return out;
  }

  async getClientIdListByGroup(group: string): Promise<string[]> {
    return (await this.ask<string[]>('groupClientIds', { group: name(group, 'group') })).flat();
  }

  async getUidListByGroup(group: string): Promise<string[]> {
    return unique((await this.ask<string[]>('groupUids', { group: name(group, 'group') })).flat());
  }

  async getUidCountByGroup(group: string): Promise<number> {
    return (await this.getUidListByGroup(group)).length;
  }

  async getAllUidList(): Promise<string[]> {
    return unique((await this.ask<string[]>('uids', {})).flat());
  }

  async getAllUidCount(): Promise<number> {
    return (await this.getAllUidList()).length;
  }

  async getAllGroupIdList(): Promise<string[]> {
    return unique((await this.ask<string[]>('groups', {})).flat());
  }

  /** group → uids bound in it. */
  async getAllGroupUidList(): Promise<Record<string, string[]>> {
    return mergeLists(await this.ask<Record<string, string[]>>('groupUidMap', {}), true);
  }

  /** group → client ids in it. */
  async getAllGroupClientIdList(): Promise<Record<string, string[]>> {
    return mergeLists(await this.ask<Record<string, string[]>>('groupClientIdMap', {}), false);
  }

  /** client id → session, for every client. */
  async getAllClientSessions(): Promise<Record<string, Session | null>> {
    return Object.assign({}, ...(await this.ask<Record<string, Session | null>>('sessions', {})));
  }

  /** client id → session, for the members of a group. */
  async getClientSessionsByGroup(group: string): Promise<Record<string, Session | null>> {
    return Object.assign({}, ...(await this.ask<Record<string, Session | null>>('sessions', { group: name(group, 'group') })));
  }

  // ---- plumbing ------------------------------------------------------------------------------

  /** Waits for the first links, then fails loudly if no gateway can be reached. */
  protected async reachable(): Promise<void> {
    await this.links.ready();
    this.links.assertReachable();
  }

  /** Session, uid and groups of a client, or null when it is not online. */
  protected async clientInfo(clientId: string): Promise<{ session: Session | null; uid: string | null; groups: string[] } | null> {
    await this.reachable();
    const owner = this.links.owner(clientId);
    if (!owner) return null;
    const [answer] = await this.links.query<{ session: Session | null; uid: string | null; groups: string[] } | null>([owner.gateway], 'client', {
      counter: owner.counter,
      epoch: owner.epoch,
    });
    return answer;
  }

  private async ask<T>(op: string, args: Record<string, unknown>): Promise<T[]> {
    await this.reachable();
    return this.links.query<T>(this.links.open(), op, args);
  }

  private async control(clientId: string, op: string, args: Record<string, unknown>): Promise<void> {
    await this.reachable();
    const owner = this.links.owner(clientId);
    if (!owner) return;
    owner.gateway.link.write(encodeJson(Cmd.CONTROL, { op, counter: owner.counter, epoch: owner.epoch, ...args }));
  }

  private async broadcastNamed(target: Target, list: string[], message: ClientMessage, exclude: readonly string[], raw: boolean): Promise<void> {
    await this.reachable();
    const { bytes, flags } = encodePayload(message, raw);
    const excluded = this.byGateway(exclude);
    for (const gateway of this.links.open()) {
      gateway.link.write(encodeBroadcast(target, gateway.epoch, list, excluded.get(gateway) ?? [], flags, bytes));
    }
  }

  /** Client counters grouped by the linked gateway that owns them (ids of gateways not linked are skipped). */
  private byGateway(clientIds: readonly string[]): Map<GatewayLink, number[]> {
    const out = new Map<GatewayLink, number[]>();
    for (const id of clientIds) {
      const owner = this.links.owner(id);
      if (!owner) continue;
      let counters = out.get(owner.gateway);
      if (!counters) out.set(owner.gateway, (counters = []));
      counters.push(owner.counter);
    }
    return out;
  }
}

/** Payload bytes and flags for the wire. @throws GatewayArgumentError for anything but text or bytes. @internal */
export function encodePayload(message: ClientMessage, raw: boolean): { bytes: Buffer; flags: number } {
  if (typeof message !== 'string' && !Buffer.isBuffer(message) && !(message instanceof Uint8Array)) {
    throw new GatewayArgumentError(`message must be a string or bytes, got ${message === null ? 'null' : typeof message}`);
  }
  const { bytes, binary } = payloadOf(message);
  return { bytes, flags: (binary ? PayloadFlag.BINARY : 0) | (raw ? PayloadFlag.RAW : 0) };
}

/** MQTT 5 properties as the gateway reads them: JSON, correlation data as base64. */
function propertiesJson(properties: object): string {
  return JSON.stringify(properties, (key, value: unknown) =>
    key === 'correlationData' && value && typeof value === 'object' && 'data' in value ? Buffer.from((value as { data: number[] }).data).toString('base64') : value,
  );
}

function name(value: unknown, what: string): string {
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value !== 'string' || value === '') throw new GatewayArgumentError(`${what} must be a non-empty string, got ${JSON.stringify(value)}`);
  if (Buffer.byteLength(value) > 0xffff) throw new GatewayArgumentError(`${what} is longer than 65535 bytes`);
  return value;
}

function names(value: string | readonly string[], what: string): string[] {
  const list = typeof value === 'string' || typeof value === 'number' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0) throw new GatewayArgumentError(`${what} list must not be empty`);
  return list.map((item) => name(item, what));
}

function plainObject(value: unknown): Session {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new GatewayArgumentError('session must be a plain object');
  return value as Session;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

function mergeLists(answers: Array<Record<string, string[]>>, dedupe: boolean): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const answer of answers) for (const [key, list] of Object.entries(answer)) (out[key] ??= []).push(...list);
  if (dedupe) for (const key of Object.keys(out)) out[key] = unique(out[key]);
  return out;
}

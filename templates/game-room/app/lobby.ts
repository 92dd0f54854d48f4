/**
 * The rooms of this BusinessWorker process, and how players get into them.
 *
 * Every room is owned by exactly one worker: the one whose tag starts the room id (routing.ts).
 * The gateways send each event of a client in a room to its owner, so a room's state is plain
 * memory here — no locks, no store. What the gateways hold is what the workers share:
 *   - group `room:<id>`: the room's connected players (and players on their way in);
 *   - each client's session: `room` (routing), `playerId`/`name`/`token`, and a `pending` join.
 *
 * Matchmaking (a `join` without a room) runs in whichever worker got the message: it asks the
 * gateways for every room group and its size (`getAllGroupIdList`, `batchGetClientIdCountByGroup`)
 * and picks the fullest open room, or opens a new room of its own. A room of its own it joins at
 * once. A room of another worker it can only *place* the player in: it writes the session
 * (`room` + `pending`) and adds the client to the room's group, so from then on the client's
 * events go to the owner. The owner notices the newcomer — at the client's next event, or at its
 * own reconcile pass (every 100 ms it compares its rooms with their groups) — checks the seat
 * (a room filled meanwhile: a matchmade player goes to another room, an explicit join gets an
 * error) and sends `joined`. `resume` works the same way: the token names the room.
 */
import { randomBytes } from 'node:crypto';
import { Gateway, Timer } from 'gatewayworker';
import { config } from './config.ts';
import { NO_KEYS, Room, spawnPoint, type Player } from './room.ts';
import { ROOM_GROUP, ownerTag, tagOf } from './routing.ts';

/** What this app keeps in a client's session on the gateway (null means unset). */
export interface GameSession {
  room?: string | null;
  playerId?: string | null;
  name?: string | null;
  token?: string | null;
  /** A join or resume waiting for the room's owner. */
  pending?: Pending | null;
  /** Position saved when the owner stopped (reload), so the room continues where it was. */
  x?: number | null;
  y?: number | null;
}

export interface Pending {
  id: string;
  kind: 'join' | 'resume';
  name?: string;
  /** The client asked for this room by id (a full room is then an error, not another room). */
  explicit?: boolean;
  token?: string;
}

/** Seconds between two reconcile passes. */
const RECONCILE_SECONDS = 0.1;
/** Seconds a placement may wait for the owner before the client is told the room is unavailable. */
const PLACEMENT_TIMEOUT_SECONDS = 5;
/** A freshly attached connection is not yet in the group everywhere: reconcile leaves it alone. */
const SETTLE_MS = 2000;

const json = (value: unknown) => JSON.stringify(value);
const randomId = (bytes: number) => BigInt(`0x${randomBytes(bytes).toString('hex')}`).toString(36);

function send(clientId: string, message: object): Promise<void> {
  return Gateway.sendToClient(clientId, json(message)).catch(() => {});
}

export function sendError(clientId: string, message: string, extra: object = {}): Promise<void> {
  return send(clientId, { type: 'error', message, ...extra });
}

export class Lobby {
  readonly tag: string;
  readonly rooms = new Map<string, Room>();
  /** clientId → its seat, for clients playing in a room of this worker. */
  private readonly seats = new Map<string, { room: Room; player: Player }>();
  /** clientId → pending id, for clients this worker placed in another worker's room. */
  private readonly placed = new Map<string, string>();
  /** Pending ids already handled (a placement can be seen by reconcile and by an event). */
  private readonly settled = new Map<string, number>();
  private reconcileTimer: number | null = null;
  private reconciling = false;
  private stopped = false;

  constructor(readonly workerName: string) {
    this.tag = tagOf(workerName);
  }

  start(): void {
    this.reconcileTimer = Timer.add(RECONCILE_SECONDS, () => this.reconcile());
  }

  /**
   * The worker stops (stop, restart, reload): stop every timer, and save each connected player's
   * position in its session, so the restarted worker continues the room from there.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.reconcileTimer !== null) Timer.del(this.reconcileTimer);
    const saves: Promise<void>[] = [];
    for (const room of this.rooms.values()) {
      room.stop();
      if (room.disposeTimer !== null) Timer.del(room.disposeTimer);
      for (const player of room.players.values()) {
        if (player.graceTimer !== null) Timer.del(player.graceTimer);
        if (player.clientId !== null) saves.push(Gateway.updateSession(player.clientId, { x: player.x, y: player.y }).catch(() => {}));
      }
    }
    await Promise.all(saves);
  }

  owns(roomId: unknown): boolean {
    return ownerTag(roomId) === this.tag;
  }

  seatOf(clientId: string): { room: Room; player: Player } | undefined {
    return this.seats.get(clientId);
  }

  /** Whether this worker should act on the client's pending placement first. */
  hasPendingHere(clientId: string, session: GameSession): boolean {
    return !this.seats.has(clientId) && !!session.pending && this.owns(session.room) && !this.settled.has(session.pending.id);
  }

  // ---- protocol operations ---------------------------------------------------------------------

  async join(clientId: string, session: GameSession, name: string, roomId?: string): Promise<void> {
    if (await this.busy(clientId, session)) return sendError(clientId, 'already in a room: send leave first');
    if (roomId !== undefined) {
      if (ownerTag(roomId) === null) return sendError(clientId, 'no such room');
      if (!this.owns(roomId)) return this.place(clientId, roomId, { id: randomId(8), kind: 'join', name, explicit: true });
      const room = this.rooms.get(roomId);
      if (!room) return sendError(clientId, 'no such room');
      if (room.occupancy >= config.maxPlayers) return sendError(clientId, 'the room is full');
      return this.admit(room, clientId, name, null);
    }
    const target = await this.matchmake();
    if (target !== null && !this.owns(target)) return this.place(clientId, target, { id: randomId(8), kind: 'join', name });
    const room = (target !== null && this.openRoom(this.rooms.get(target))) || this.fullestOpenRoom() || this.createRoom();
    return this.admit(room, clientId, name, null);
  }

  async resume(clientId: string, session: GameSession, token: string): Promise<void> {
    if (await this.busy(clientId, session)) return sendError(clientId, 'already in a room: send leave first');
    const roomId = token.split('.')[0];
    if (ownerTag(roomId) === null) return sendError(clientId, 'resume failed: unknown token', { code: 'resume_failed' });
    if (this.owns(roomId)) return this.resumeHere(clientId, token, null);
    return this.place(clientId, roomId, { id: randomId(8), kind: 'resume', token });
  }

  /**
   * Whether the client is in a room, or on its way into one. A client placed by this worker may
   * send again before the gateway applied the placement (its event carries the older session);
   * once the owner answered, the session is what counts.
   */
  private async busy(clientId: string, session: GameSession): Promise<boolean> {
    if (this.seats.has(clientId) || session.room) return true;
    if (!this.placed.has(clientId)) return false;
    const current = (await Gateway.getSession(clientId).catch(() => null)) as GameSession | null;
    if (current?.room) return true;
    this.placed.delete(clientId);
    return false;
  }

  /** Queues an input of a seated client; false if the client has no seat here. */
  input(clientId: string, seq: number, keys: Player['keys']): boolean {
    const seat = this.seats.get(clientId);
    if (!seat) return false;
    seat.room.input(seat.player, seq, keys);
    return true;
  }

  async leave(clientId: string, session: GameSession): Promise<void> {
    const seat = this.seats.get(clientId);
    if (seat) {
      const { room, player } = seat;
      this.seats.delete(clientId);
      room.players.delete(player.id);
      this.afterDeparture(room);
      await Gateway.sendToGroup(room.group, json({ type: 'left', playerId: player.id })).catch(() => {});
      await this.clearSession(clientId, room.id);
      return;
    }
    // Not seated here: on the way into another worker's room, or its owner is restarting.
    if (typeof session.room === 'string') {
      this.placed.delete(clientId);
      await this.clearSession(clientId, session.room);
      return send(clientId, { type: 'left', playerId: session.playerId ?? null });
    }
    return sendError(clientId, 'not in a room');
  }

  /** The client's connection closed: a seated player keeps the seat for the grace period. */
  closed(clientId: string): void {
    this.placed.delete(clientId);
    const seat = this.seats.get(clientId);
    if (seat) this.away(seat.room, seat.player);
  }

  /** The lobby: every room with players, from the gateways (and this worker's own counts). */
  async list(): Promise<Array<{ id: string; players: number; maxPlayers: number }>> {
    const counts = await this.roomCounts();
    for (const room of this.rooms.values()) if (room.occupancy > 0) counts.set(room.id, 0);
    const rooms = [];
    for (const [id, connected] of counts) {
      const players = this.owns(id) ? (this.rooms.get(id)?.occupancy ?? connected) : connected;
      if (players > 0) rooms.push({ id, players, maxPlayers: config.maxPlayers });
    }
    return rooms.sort((a, b) => b.players - a.players || a.id.localeCompare(b.id));
  }

  /** A placement in one of this worker's rooms: seat the client, or tell it why not. */
  async settle(clientId: string, session: GameSession): Promise<void> {
    const pending = session.pending;
    const roomId = session.room;
    if (!pending || typeof roomId !== 'string' || this.seats.has(clientId) || this.settled.has(pending.id)) return;
    this.settled.set(pending.id, Date.now());
    if (pending.kind === 'resume') return this.resumeHere(clientId, String(pending.token ?? ''), roomId);
    const room = this.rooms.get(roomId);
    if (room && room.occupancy < config.maxPlayers) return this.admit(room, clientId, pending.name ?? 'player', roomId);
    if (pending.explicit) return this.refuse(clientId, roomId, room ? 'the room is full' : 'no such room');
    // Matchmade into a room that filled up (or emptied and went) meanwhile: another room here.
    return this.admit(this.fullestOpenRoom() ?? this.createRoom(), clientId, pending.name ?? 'player', roomId);
  }

  // ---- seats -----------------------------------------------------------------------------------

  private async admit(room: Room, clientId: string, name: string, placedIn: string | null): Promise<void> {
    const { x, y } = spawnPoint(room);
    const player: Player = {
      id: randomId(4),
      name,
      token: `${room.id}.${randomId(4)}.${randomBytes(16).toString('hex')}`,
      clientId,
      x,
      y,
      keys: { ...NO_KEYS },
      inputs: [],
      lastSeq: 0,
      ack: 0,
      since: Date.now(),
      graceTimer: null,
    };
    room.players.set(player.id, player);
    this.seats.set(clientId, { room, player });
    this.wake(room);
    await this.attach(room, player, clientId, placedIn, false);
  }

  private async resumeHere(clientId: string, token: string, placedIn: string | null): Promise<void> {
    const room = this.rooms.get(token.split('.')[0]);
    const player = room ? [...room.players.values()].find((p) => p.token === token) : undefined;
    if (!room || !player) return this.refuse(clientId, placedIn, 'resume failed: unknown token, or the grace period is over', 'resume_failed');
    const old = player.clientId;
    if (old !== null && old !== clientId) {
      // The old connection is still open (its network died and nobody noticed yet): it loses the seat.
      this.seats.delete(old);
      void this.clearSession(old, room.id).then(() => Gateway.closeClient(old, json({ type: 'error', message: 'resumed on another connection' }))).catch(() => {});
    }
    if (player.graceTimer !== null) Timer.del(player.graceTimer);
    player.graceTimer = null;
    player.clientId = clientId;
    player.since = Date.now();
    player.keys = { ...NO_KEYS };
    player.inputs.length = 0;
    player.lastSeq = 0; // a new connection numbers its inputs afresh
    player.ack = 0;
    this.seats.set(clientId, { room, player });
    this.wake(room);
    await this.attach(room, player, clientId, placedIn, true);
  }

  /** Session first (so the client's next event comes here), then the group, then `joined`. */
  private async attach(room: Room, player: Player, clientId: string, placedIn: string | null, resumed: boolean): Promise<void> {
    try {
      await Gateway.updateSession(clientId, { room: room.id, playerId: player.id, name: player.name, token: player.token, pending: null, x: null, y: null });
      if (placedIn !== null && placedIn !== room.id) await Gateway.leaveGroup(clientId, ROOM_GROUP + placedIn);
      await Gateway.joinGroup(clientId, room.group);
    } catch {
      return; // the client left meanwhile; its onClose (or reconcile) frees the seat
    }
    await send(clientId, {
      type: 'joined',
      room: room.id,
      playerId: player.id,
      token: player.token,
      players: room.list(),
      tickRate: config.tickRate,
      maxPlayers: config.maxPlayers,
      arena: config.arena,
      resumed,
      // Which worker process owns the room: handy when you scale out (and for the tests).
      pid: process.pid,
    });
  }

  /** Into another worker's room: write the session and the group; the owner takes it from there. */
  private async place(clientId: string, roomId: string, pending: Pending): Promise<void> {
    this.placed.set(clientId, pending.id);
    try {
      await Gateway.updateSession(clientId, { room: roomId, pending });
      await Gateway.joinGroup(clientId, ROOM_GROUP + roomId);
    } catch {
      this.placed.delete(clientId);
      return;
    }
    Timer.add(PLACEMENT_TIMEOUT_SECONDS, () => this.placementTimedOut(clientId, roomId, pending.id), [], false);
  }

  /** The owner never answered (it is gone, or the id was made up). */
  private async placementTimedOut(clientId: string, roomId: string, pendingId: string): Promise<void> {
    if (this.placed.get(clientId) === pendingId) this.placed.delete(clientId);
    const session = (await Gateway.getSession(clientId).catch(() => null)) as GameSession | null;
    if (session?.pending?.id !== pendingId) return;
    await this.refuse(clientId, roomId, 'the room is not available', session.pending.kind === 'resume' ? 'resume_failed' : undefined);
  }

  private async refuse(clientId: string, placedIn: string | null, message: string, code?: string): Promise<void> {
    if (placedIn !== null) await this.clearSession(clientId, placedIn);
    await sendError(clientId, message, code ? { code } : {});
  }

  private async clearSession(clientId: string, roomId: string): Promise<void> {
    await Gateway.updateSession(clientId, { room: null, playerId: null, token: null, pending: null, x: null, y: null }).catch(() => {});
    await Gateway.leaveGroup(clientId, ROOM_GROUP + roomId).catch(() => {});
  }

  /** A player's connection is gone: keep the seat for the grace period. */
  private away(room: Room, player: Player): void {
    if (player.clientId === null) return;
    this.seats.delete(player.clientId);
    player.clientId = null;
    player.keys = { ...NO_KEYS };
    player.inputs.length = 0;
    player.graceTimer = Timer.add(config.graceSeconds, () => this.expire(room, player), [], false);
    if (room.connected === 0) room.stop();
  }

  private expire(room: Room, player: Player): void {
    player.graceTimer = null;
    if (player.clientId !== null || room.players.get(player.id) !== player) return;
    room.players.delete(player.id);
    void Gateway.sendToGroup(room.group, json({ type: 'left', playerId: player.id, reason: 'timeout' })).catch(() => {});
    this.afterDeparture(room);
  }

  // ---- rooms -----------------------------------------------------------------------------------

  private createRoom(): Room {
    let id: string;
    do id = `${this.tag}-${randomId(6)}`;
    while (this.rooms.has(id));
    const room = new Room(id);
    this.rooms.set(id, room);
    return room;
  }

  /** The room, if it exists, has a free seat and somebody in it. */
  private openRoom(room: Room | undefined): Room | undefined {
    return room && room.occupancy < config.maxPlayers && room.connected > 0 ? room : undefined;
  }

  private fullestOpenRoom(): Room | undefined {
    let best: Room | undefined;
    for (const room of this.rooms.values()) if (this.openRoom(room) && (!best || room.occupancy > best.occupancy)) best = room;
    return best;
  }

  /** Someone is (back) in the room: no disposal, the loop runs. */
  private wake(room: Room): void {
    if (room.disposeTimer !== null) Timer.del(room.disposeTimer);
    room.disposeTimer = null;
    room.start();
  }

  /** Nobody connected: the loop stops. Nobody at all: the room goes after emptyRoomSeconds. */
  private afterDeparture(room: Room): void {
    if (room.connected === 0) room.stop();
    if (room.occupancy > 0 || room.disposeTimer !== null) return;
    room.disposeTimer = Timer.add(config.emptyRoomSeconds, () => {
      room.disposeTimer = null;
      if (room.occupancy > 0 || this.rooms.get(room.id) !== room) return;
      room.stop();
      this.rooms.delete(room.id);
    }, [], false);
  }

  /** Fullest open room anywhere (gateway counts; exact seats for this worker's rooms), or null. */
  private async matchmake(): Promise<string | null> {
    let best: { id: string; seats: number; mine: boolean } | null = null;
    for (const [id, connected] of await this.roomCounts()) {
      if (connected === 0) continue;
      const mine = this.owns(id);
      const room = this.rooms.get(id);
      if (mine && !room) continue; // not (yet) known here: being adopted after a restart
      const seats = mine ? room!.occupancy : connected;
      if (seats >= config.maxPlayers) continue;
      if (!best || seats > best.seats || (seats === best.seats && mine && !best.mine)) best = { id, seats, mine };
    }
    return best?.id ?? null;
  }

  /** room id → connected clients (plus placements on their way in), over every gateway. */
  private async roomCounts(): Promise<Map<string, number>> {
    const groups = (await Gateway.getAllGroupIdList()).filter((g) => g.startsWith(ROOM_GROUP) && ownerTag(g.slice(ROOM_GROUP.length)) !== null);
    const counts = groups.length > 0 ? await Gateway.batchGetClientIdCountByGroup(groups) : {};
    return new Map(groups.map((g) => [g.slice(ROOM_GROUP.length), counts[g] ?? 0]));
  }

  // ---- reconcile -------------------------------------------------------------------------------

  /**
   * Compares this worker's rooms with their groups on the gateways: seats players placed by other
   * workers, notices connections whose onClose went elsewhere, and adopts the rooms it owned
   * before a restart (their players' sessions say who was there and where).
   */
  private async reconcile(): Promise<void> {
    if (this.reconciling || this.stopped) return;
    this.reconciling = true;
    try {
      const groups = new Set((await Gateway.getAllGroupIdList()).filter((g) => g.startsWith(ROOM_GROUP) && this.owns(g.slice(ROOM_GROUP.length))));
      for (const room of this.rooms.values()) if (room.connected > 0) groups.add(room.group);
      if (groups.size === 0) return;
      const counts = await Gateway.batchGetClientIdCountByGroup([...groups]);
      for (const group of groups) {
        const id = group.slice(ROOM_GROUP.length);
        const count = counts[group] ?? 0;
        const room = this.rooms.get(id);
        if (room && count === room.connected) continue;
        const sessions = count > 0 ? ((await Gateway.getClientSessionsByGroup(group)) as Record<string, GameSession | null>) : {};
        if (this.stopped) return;
        await this.sync(id, sessions);
      }
      const old = Date.now() - 60_000;
      for (const [id, at] of this.settled) if (at < old) this.settled.delete(id);
    } catch {
      // a gateway did not answer in time: next pass
    } finally {
      this.reconciling = false;
    }
  }

  private async sync(roomId: string, sessions: Record<string, GameSession | null>): Promise<void> {
    let room = this.rooms.get(roomId);
    const adopting = room === undefined;
    const now = Date.now();
    if (room) {
      for (const player of room.players.values()) {
        if (player.clientId !== null && !(player.clientId in sessions) && now - player.since > SETTLE_MS) {
          this.away(room, player);
        }
      }
    }
    for (const [clientId, raw] of Object.entries(sessions)) {
      const session = raw ?? {};
      if (session.room !== roomId || this.seats.has(clientId)) continue;
      if (session.pending) {
        await this.settle(clientId, session);
        continue;
      }
      if (!adopting) continue;
      if (typeof session.playerId !== 'string' || typeof session.token !== 'string' || !session.token.startsWith(`${roomId}.`)) continue;
      // A player of a room this worker owned before it restarted: take the room over.
      if (!room) {
        room = new Room(roomId);
        this.rooms.set(roomId, room);
      }
      const { x, y } = typeof session.x === 'number' && typeof session.y === 'number' ? { x: session.x, y: session.y } : spawnPoint(room);
      const player: Player = {
        id: session.playerId,
        name: String(session.name ?? 'player'),
        token: session.token,
        clientId,
        x,
        y,
        keys: { ...NO_KEYS },
        inputs: [],
        lastSeq: 0,
        ack: 0,
        since: now,
        graceTimer: null,
      };
      room.players.set(player.id, player);
      this.seats.set(clientId, { room, player });
      this.wake(room);
    }
  }
}

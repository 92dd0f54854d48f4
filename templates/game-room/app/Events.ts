/**
 * The game server's protocol: the only file most apps change. JSON text frames (see README.md):
 *
 *   → {"type":"join","name":N,"room"?:ID}     ← {"type":"joined","room","playerId","token","players","tickRate",…}
 *   → {"type":"input","seq":n,"keys":{up,down,left,right}}   applied at the room's next tick
 *   ← {"type":"state","tick","ack","players":[{id,name,x,y}]}  tickRate times a second
 *   → {"type":"leave"}                        ← room: {"type":"left","playerId"}
 *   → {"type":"rooms"}                        ← {"type":"rooms","rooms":[{id,players,maxPlayers}]}
 *   → {"type":"resume","token"}               ← joined (same player, place and room) or an error
 *   → {"type":"ping","t"?}                    ← {"type":"pong","t","pid"}
 *   ← {"type":"ping"} (gateway heartbeat)     → {"type":"pong"}
 *   bad input ← {"type":"error","message"};  flooding ← {"type":"warning"}, then disconnected
 *
 * Rooms live in lobby.ts (who owns which room, matchmaking) and room.ts (the simulation).
 */
import { config } from './config.ts';
import { Lobby, sendError, type GameSession } from './lobby.ts';
import type { Keys } from './room.ts';

/** The part of the handler context this app uses. */
interface Context {
  /** The gateway's copy of the session when the event was sent. This app changes it through
   * `Gateway.updateSession` (lobby.ts), never here. */
  readonly session: GameSession;
  send(data: string): Promise<void>;
  close(data?: string): Promise<void>;
}

const MAX_NAME = 24;
const KEY_NAMES = ['up', 'down', 'left', 'right'] as const;

let lobby: Lobby;

export function onWorkerStart(worker: { name: string; id: number }): void {
  lobby = new Lobby(`${worker.name}#${worker.id}`);
  lobby.start();
}

export async function onWorkerStop(): Promise<void> {
  await lobby?.stop();
}

export async function onMessage(clientId: string, message: string | Uint8Array, ctx: Context): Promise<void> {
  if (!(await floodCheck(clientId, ctx))) return;

  let data: Record<string, unknown>;
  try {
    data = JSON.parse(typeof message === 'string' ? message : Buffer.from(message).toString('utf8'));
  } catch {
    return sendError(clientId, 'invalid JSON');
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return sendError(clientId, 'expected a JSON object');

  const session = ctx.session ?? {};
  // Placed in one of this worker's rooms by another worker: take the seat before anything else.
  if (lobby.hasPendingHere(clientId, session)) await lobby.settle(clientId, session);

  switch (data.type) {
    case 'pong':
      return;
    case 'ping':
      return ctx.send(JSON.stringify({ type: 'pong', t: typeof data.t === 'number' ? data.t : null, pid: process.pid }));
    case 'join': {
      if (data.room !== undefined && data.room !== null && typeof data.room !== 'string') return sendError(clientId, 'room must be a room id');
      return lobby.join(clientId, session, playerName(data.name), (data.room as string | null | undefined) ?? undefined);
    }
    case 'resume':
      if (typeof data.token !== 'string' || data.token === '') return sendError(clientId, 'token must be a non-empty string');
      return lobby.resume(clientId, session, data.token);
    case 'input':
      return input(clientId, session, data);
    case 'leave':
      return lobby.leave(clientId, session);
    case 'rooms':
      return ctx.send(JSON.stringify({ type: 'rooms', rooms: await lobby.list(), pid: process.pid }));
    default:
      return sendError(clientId, `unknown message type: ${String(data.type).slice(0, 32)}`);
  }
}

export function onClose(clientId: string): void {
  flood.delete(clientId);
  lobby.closed(clientId);
}

function input(clientId: string, session: GameSession, data: Record<string, unknown>): Promise<void> | void {
  const { seq, keys } = data;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return sendError(clientId, 'input: seq must be a positive integer');
  if (keys === null || typeof keys !== 'object' || Array.isArray(keys)) return sendError(clientId, 'input: keys must be an object like {"up":true}');
  const held: Keys = { up: false, down: false, left: false, right: false };
  for (const name of KEY_NAMES) {
    const value = (keys as Record<string, unknown>)[name];
    if (value === undefined) continue;
    if (typeof value !== 'boolean') return sendError(clientId, `input: keys.${name} must be true or false`);
    held[name] = value;
  }
  if (lobby.input(clientId, seq, held)) return;
  // In a room of another worker (on the way in, or its owner is restarting): dropped quietly.
  if (typeof session.room === 'string') return;
  return sendError(clientId, 'input before join: send join first');
}

function playerName(value: unknown): string {
  // eslint-disable-next-line no-control-regex
  const name = typeof value === 'string' ? value.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, MAX_NAME) : '';
  return name === '' ? 'player' : name;
}

// ---- flood control ---------------------------------------------------------------------------

/**
 * Per client, per one-second window (counted in the worker that gets the client's messages):
 * past maxMessagesPerSecond the messages are dropped and the client gets one warning; going past
 * twice the limit in that window, or past the limit again later, closes the connection.
 */
const flood = new Map<string, { start: number; count: number; warned: boolean; closing: boolean }>();

async function floodCheck(clientId: string, ctx: Context): Promise<boolean> {
  const now = Date.now();
  let entry = flood.get(clientId);
  if (!entry) flood.set(clientId, (entry = { start: now, count: 0, warned: false, closing: false }));
  if (now - entry.start >= 1000) {
    entry.start = now;
    entry.count = 0;
  }
  entry.count++;
  const max = config.maxMessagesPerSecond;
  if (entry.closing) return false;
  if (entry.count <= max) return true;
  if (!entry.warned) {
    entry.warned = true;
    await ctx.send(JSON.stringify({ type: 'warning', code: 'flood', message: `more than ${max} messages a second: slow down or be disconnected` }));
    return false;
  }
  if (entry.count === max + 1 || entry.count > 2 * max) {
    entry.closing = true;
    await ctx.close(JSON.stringify({ type: 'error', code: 'flood', message: 'too many messages: disconnected' }));
  }
  return false;
}

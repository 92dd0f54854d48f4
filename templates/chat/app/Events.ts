/**
 * The chat room: the only file most apps change. It runs in every BusinessWorker process, so it
 * keeps no state of its own: who is in a room lives on the gateways (groups and sessions), the
 * history in ./history.ts.
 *
 * Wire protocol (compatible with workerman-chat clients), JSON text frames:
 *   → {"type":"login","client_name":N,"room_id":R}
 *       ← room: {"type":"login","client_id","client_name","time"}; the new client's copy also has
 *         "client_list" ({client_id: name}), then {"type":"history","messages":[…]}
 *   → {"type":"say","to_client_id":"all"|ID,"content":C}
 *       ← room (or the target and the sender): {"type":"say","from_client_id","from_client_name",
 *         "to_client_id","content","time"}
 *   → {"type":"pong"} (answer to the gateway's {"type":"ping"}): ignored
 *   on disconnect ← room: {"type":"logout","from_client_id","from_client_name","time"}
 *   bad input ← that client only: {"type":"error","message"}
 *   flooding ← {"type":"warning","code":"flood"}, then {"type":"error","code":"flood"} and disconnected
 * User text is HTML-escaped here, because workerman-chat pages insert it as HTML.
 *
 * Hostile input stays with its sender: a message over MAX_MESSAGE_BYTES never gets here (the
 * gateway closes that connection, code 1009), anything else that is not what the protocol expects
 * gets an error reply, and a client sending too fast is warned, then disconnected (floodCheck).
 */
import { Gateway } from 'gatewayworker';
import { config } from './config.ts';
import { appendMessage, recentMessages } from './history.ts';

/** What this app keeps in a client's session (written back to the gateway after each handler). */
interface ChatSession {
  room_id?: string;
  client_name?: string;
}

/** The part of the handler context this app uses. */
interface Context {
  session: ChatSession;
  send(data: string): unknown;
  /** Sends `data` (if given), then closes the client's connection. */
  close(data?: string): unknown;
}

const MAX_NAME = 32;
const MAX_ROOM = 64;
const MAX_CONTENT = 2000;

export async function onMessage(clientId: string, message: string | Uint8Array, ctx: Context): Promise<void> {
  if (!(await floodCheck(clientId, ctx))) return;

  let data: Record<string, unknown>;
  try {
    data = JSON.parse(typeof message === 'string' ? message : Buffer.from(message).toString('utf8'));
  } catch {
    return fail(ctx, 'invalid JSON');
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return fail(ctx, 'expected a JSON object');

  switch (data.type) {
    case 'pong':
      return;
    case 'login':
      return login(clientId, data, ctx);
    case 'say':
      return say(clientId, data, ctx);
    default:
      return fail(ctx, `unknown message type: ${escapeHtml(String(data.type).slice(0, 32))}`);
  }
}

export async function onClose(clientId: string, ctx: Context): Promise<void> {
  flood.delete(clientId);
  const { room_id, client_name } = ctx.session;
  if (room_id === undefined) return; // never logged in
  // The gateway has already taken the client out of its groups.
  await Gateway.sendToGroup(room_id, json({ type: 'logout', from_client_id: clientId, from_client_name: client_name, time: now() }));
}

async function login(clientId: string, data: Record<string, unknown>, ctx: Context): Promise<void> {
  const room = typeof data.room_id === 'string' || typeof data.room_id === 'number' ? String(data.room_id).trim() : '';
  if (room === '' || room.length > MAX_ROOM) return fail(ctx, `room_id must be 1-${MAX_ROOM} characters`);
  // Control characters (line breaks, escapes) are dropped from names; markup is escaped below.
  // eslint-disable-next-line no-control-regex
  const wanted = typeof data.client_name === 'string' ? data.client_name.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, MAX_NAME) : '';
  const requested = escapeHtml(wanted === '' ? 'guest' : wanted);

  // Logging in again (e.g. another room): leave the old room first.
  const old = ctx.session.room_id;
  if (old !== undefined) {
    await Gateway.leaveGroup(clientId, old);
    await Gateway.sendToGroup(old, json({ type: 'logout', from_client_id: clientId, from_client_name: ctx.session.client_name, time: now() }));
  }

  // Everyone already in the room; a name in use gets a suffix rather than a refusal.
  const sessions = (await Gateway.getClientSessionsByGroup(room)) as Record<string, ChatSession | null>;
  const clientList: Record<string, string> = {};
  for (const [id, s] of Object.entries(sessions)) {
    if (id !== clientId && s?.client_name !== undefined) clientList[id] = s.client_name;
  }
  const name = uniqueName(requested, new Set(Object.values(clientList)));
  clientList[clientId] = name;
  ctx.session.room_id = room;
  ctx.session.client_name = name;

  const announcement = { type: 'login', client_id: clientId, client_name: name, time: now() };
  await Gateway.sendToGroup(room, json(announcement));
  await Gateway.joinGroup(clientId, room);
  await ctx.send(json({ ...announcement, client_list: clientList }));
  await ctx.send(json({ type: 'history', messages: await recentMessages(room) }));
}

async function say(clientId: string, data: Record<string, unknown>, ctx: Context): Promise<void> {
  const { room_id, client_name } = ctx.session;
  if (room_id === undefined) return fail(ctx, 'login first');
  if (typeof data.content !== 'string' || data.content.trim() === '') return fail(ctx, 'content must be a non-empty string');
  if (data.content.length > MAX_CONTENT) return fail(ctx, `content is longer than ${MAX_CONTENT} characters`);

  const to = data.to_client_id === undefined || data.to_client_id === 'all' ? 'all' : String(data.to_client_id);
  const said = {
    type: 'say',
    from_client_id: clientId,
    from_client_name: client_name,
    to_client_id: to,
    content: escapeHtml(data.content),
    time: now(),
  };

  if (to === 'all') {
    await Gateway.sendToGroup(room_id, json(said));
    await appendMessage(room_id, said);
    return;
  }
  // A private message goes to its target and back to the sender, and is not kept in the history.
  let online = false;
  try {
    online = await Gateway.isOnline(to);
  } catch {
    // a malformed client id: same answer as an offline one
  }
  if (!online) return fail(ctx, 'that person is not online');
  await Gateway.sendToClient(to, json(said));
  if (to !== clientId) await ctx.send(json(said));
}

/** `alice`, `alice (2)`, `alice (3)`, … — the first one nobody in the room uses. */
function uniqueName(name: string, taken: Set<string>): string {
  if (!taken.has(name)) return name;
  let n = 2;
  while (taken.has(`${name} (${n})`)) n++;
  return `${name} (${n})`;
}

function fail(ctx: Context, message: string): Promise<void> {
  return Promise.resolve(ctx.send(json({ type: 'error', message }))).then(() => undefined);
}

function json(value: unknown): string {
  return JSON.stringify(value);
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

// ---- flood control ---------------------------------------------------------------------------

/**
 * Per client, per one-second window (counted in the worker that gets the client's messages; the
 * gateway sends all of one client's messages to the same worker): past maxMessagesPerSecond the
 * messages are dropped and the client gets one warning; going past twice the limit in that window,
 * or past the limit again later, closes the connection after an error saying why.
 */
const flood = new Map<string, { start: number; count: number; warned: boolean; closing: boolean }>();

async function floodCheck(clientId: string, ctx: Context): Promise<boolean> {
  const now = Date.now();
  let entry = flood.get(clientId);
  if (!entry) {
    if (flood.size >= 10_000) forgetIdle(now);
    flood.set(clientId, (entry = { start: now, count: 0, warned: false, closing: false }));
  }
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
    await ctx.send(json({ type: 'warning', code: 'flood', message: `more than ${max} messages a second: slow down or be disconnected` }));
    return false;
  }
  if (entry.count === max + 1 || entry.count > 2 * max) {
    entry.closing = true;
    await ctx.close(json({ type: 'error', code: 'flood', message: 'too many messages: disconnected' }));
  }
  return false;
}

/** Entries of clients silent for a minute (their close may have reached another worker). */
function forgetIdle(now: number): void {
  for (const [id, entry] of flood) if (now - entry.start > 60_000) flood.delete(id);
}

/** `YYYY-MM-DD HH:mm:ss` in the server's local time, as workerman-chat sends it. */
function now(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

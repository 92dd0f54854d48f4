/**
 * Which BusinessWorker owns a room. A room id starts with a tag of the worker that created it
 * (`k3x9q-…`): the gateways' router sends every event of a client in that room (its session has
 * `room`) to that worker, and the worker knows which rooms are its own without asking anyone.
 *
 * Why not `hash(room) % workers.length`? The list the router gets holds only the workers taking
 * events: during a `reload` one of them is missing, and a modulo would move most rooms to other
 * workers and back. With the owner named in the id nothing moves; while the owner restarts its
 * rooms' events go to another worker, which drops them (see README, "Reload").
 *
 * Worker names (`<Name>#<id>`) are the same on every gateway, so every gateway process routes
 * alike. Give each worker host its own BusinessWorker name (`WORKER_NAME`), or two hosts' `#0`
 * would share a tag.
 */
import type { Router, WorkerInfo } from 'gatewayworker';

/** Prefix of the gateway groups that are rooms (a room's connected players are its members). */
export const ROOM_GROUP = 'room:';

/** A short, stable tag of a worker name (FNV-1a, base 36, 5 characters). */
export function tagOf(workerName: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < workerName.length; i++) {
    hash ^= workerName.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(36).padStart(7, '0').slice(-5);
}

const ROOM_ID = /^([0-9a-z]{5})-[0-9a-z]{1,16}$/;

/** The owner tag of a room id, or null for something that is not a room id. */
export function ownerTag(roomId: unknown): string | null {
  if (typeof roomId !== 'string') return null;
  return ROOM_ID.exec(roomId)?.[1] ?? null;
}

const tags = new Map<string, string>();

/**
 * The Gateway `router`: a client in a room goes to the room's owner; anyone else (and everyone
 * while the owner is restarting) to the default router (sticky, fewest clients first).
 */
export const roomRouter: Router = (_clientId, ctx, workers) => {
  const tag = ownerTag(ctx.session?.room);
  if (tag === null) return undefined;
  return workers.find((worker: WorkerInfo) => {
    let t = tags.get(worker.name);
    if (t === undefined) tags.set(worker.name, (t = tagOf(worker.name)));
    return t === tag;
  });
};

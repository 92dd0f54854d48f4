/**
 * Events of the gatewayworker peer: same contract as servers/ws.ts. `R` once the client joined
 * the group named by `?room=`; `B…` goes to that group with `Gateway.sendToGroup` (encoded once
 * per gateway); anything else is echoed with `ctx.send`.
 */
import type { Context, WebSocketRequest } from '../../runtime/src/index.js';

// The same runtime module as the worker that loads this file (see gw.ts).
const { Gateway } = (await import(process.env.BENCH_RUNTIME ?? '../../runtime/src/index.js')) as typeof import('../../runtime/src/index.js');

export async function onWebSocketConnect(clientId: string, request: WebSocketRequest, ctx: Context): Promise<void> {
  const room = request.query.room;
  if (room) {
    ctx.session.room = room;
    await Gateway.joinGroup(clientId, room);
  }
  await ctx.send('R');
}

export function onMessage(clientId: string, message: string | Buffer, ctx: Context): Promise<void> {
  const room = ctx.session.room as string | undefined;
  if (room && typeof message === 'string' && message.charCodeAt(0) === 0x42 /* B */) return Gateway.sendToGroup(room, message);
  return ctx.send(message);
}

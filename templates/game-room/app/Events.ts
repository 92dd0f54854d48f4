/**
 * The game room's business logic. Preview: this stub echoes each message back; matchmaking,
 * authoritative rooms and reconnection come with the game room template.
 */
interface Context {
  send(data: string): unknown;
}

export async function onMessage(clientId: string, message: string | Uint8Array, ctx: Context): Promise<void> {
  await ctx.send(typeof message === 'string' ? message : Buffer.from(message).toString('utf8'));
}

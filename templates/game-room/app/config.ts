/**
 * The game's settings, from environment variables (defaults in brackets). Shared by every role, so
 * the gateway, the workers and the page agree on them.
 */
const num = (value: string | undefined, fallback: number): number => {
  const n = Number(value);
  return value === undefined || value === '' || !Number.isFinite(n) ? fallback : n;
};

export const config = {
  /** Players a room holds [4]; matchmaking never puts anyone in a full room. */
  maxPlayers: Math.max(1, Math.floor(num(process.env.{{envPrefix}}MAX_PLAYERS, 4))),
  /** Simulation steps and state messages per second [20]. */
  tickRate: Math.min(120, Math.max(1, num(process.env.{{envPrefix}}TICK_RATE, 20))),
  /** Seconds a dropped player keeps their seat and can `resume` [30]. */
  graceSeconds: Math.max(0, num(process.env.{{envPrefix}}GRACE_SECONDS, 30)),
  /** Seconds an empty room waits for a player before it is disposed [10]. */
  emptyRoomSeconds: Math.max(0, num(process.env.{{envPrefix}}EMPTY_ROOM_SECONDS, 10)),
  /** Messages a client may send per second; more gets a warning, then the door [30]. */
  maxMessagesPerSecond: Math.max(1, num(process.env.{{envPrefix}}MAX_MESSAGES_PER_SECOND, 30)),
  /** Arena size in world units (the page draws 1 unit = 1 CSS pixel). */
  arena: { width: 800, height: 600 },
  /** Player radius: positions stay at least this far inside the arena. */
  playerRadius: 12,
  /** Top speed in units per second; diagonal movement is no faster. */
  speed: 200,
};

/**
 * The chat's limits, from environment variables (defaults in brackets). Shared by the gateway
 * (message size) and the workers (message rate).
 */
const num = (value: string | undefined, fallback: number): number => {
  const n = Number(value);
  return value === undefined || value === '' || !Number.isFinite(n) ? fallback : n;
};

export const config = {
  /**
   * Largest WebSocket message a client may send, in bytes [16384]. The gateway closes a connection
   * that sends a bigger one (close code 1009) before reading it; nothing reaches the workers.
   * The longest valid `say` (2000 characters) fits with room to spare.
   */
  maxMessageBytes: Math.max(1024, Math.floor(num(process.env.{{envPrefix}}MAX_MESSAGE_BYTES, 16 * 1024))),
  /**
   * Messages a client may send per second [60]; more gets a warning and is dropped, then the door
   * (see floodCheck in Events.ts). Counted by the worker that gets the client's messages.
   */
  maxMessagesPerSecond: Math.max(1, Math.floor(num(process.env.{{envPrefix}}MAX_MESSAGES_PER_SECOND, 60))),
  /**
   * Connections one IP address may hold open per gateway process [256]; more are refused at accept.
   * Clients behind one NAT share an address: raise it for an office or a campus.
   */
  maxConnectionsPerIp: Math.max(1, Math.floor(num(process.env.{{envPrefix}}MAX_CONNECTIONS_PER_IP, 256))),
};

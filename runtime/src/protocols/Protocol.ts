/**
 * The framing contract for byte-stream protocols, Workerman's `ProtocolInterface` in TypeScript.
 * A protocol turns a byte stream into packages (`input` + `decode`) and messages into bytes
 * (`encode`). The runtime buffers bytes, enforces `maxPackageSize` and calls these in order;
 * a protocol never touches the socket itself.
 */

/** What a protocol sees of the connection it frames. */
export interface ProtocolConnection<State = unknown> {
  /** Largest package the connection accepts, in bytes. */
  readonly maxPackageSize: number;
  /** Per-connection state created by {@link Protocol.createState}. */
  protocolState: State;
}

/**
 * A byte-stream protocol.
 * @typeParam Message what `decode` yields and `onMessage` receives.
 * @typeParam State per-connection parser state (`undefined` for stateless protocols).
 */
export interface Protocol<Message = unknown, State = unknown> {
  /** Name shown by `status` and `connections`. */
  readonly name: string;
  /**
   * Measures the first package at the start of `buffer`.
   * @returns its length in bytes (which may exceed `buffer.length`: the runtime waits for the
   * rest), 0 when more bytes are needed to tell, or -1 when the bytes can never form a valid
   * package (the connection is closed with a reason).
   */
  input(buffer: Buffer, conn: ProtocolConnection<State>): number;
  /** Turns exactly one complete package (the bytes `input` measured) into a message. May throw on malformed content. */
  decode(packet: Buffer, conn: ProtocolConnection<State>): Message;
  /** Turns a message the application sends into wire bytes. */
  encode(message: unknown, conn: ProtocolConnection<State>): Buffer | string;
  /** Creates the per-connection state; omit for stateless protocols. */
  createState?(): State;
  /** Serialises the per-connection state (JSON-compatible) so a connection can move to another process. */
  exportState?(state: State): unknown;
  /** Rebuilds the state exported by {@link Protocol.exportState}. */
  importState?(data: unknown): State;
}

const registry = new Map<string, Protocol>();

/**
 * Makes `protocol` available as the scheme `scheme://` of a Worker address
 * (`new Worker('myproto://0.0.0.0:9000')`). Built-in schemes cannot be replaced.
 */
export function registerProtocol(scheme: string, protocol: Protocol): void {
  if (!/^[a-z][a-z0-9+.-]*$/i.test(scheme)) throw new TypeError(`invalid protocol scheme "${scheme}"`);
  const key = scheme.toLowerCase();
  if (BUILT_IN_TRANSPORT_SCHEMES.has(key)) throw new TypeError(`"${scheme}" is a built-in scheme and cannot be replaced`);
  registry.set(key, protocol);
}

/** The protocol registered under `scheme`, if any. */
export function getProtocol(scheme: string): Protocol | undefined {
  return registry.get(scheme.toLowerCase());
}

/** Schemes that name a transport rather than a framing protocol. */
export const BUILT_IN_TRANSPORT_SCHEMES = new Set(['tcp', 'unix', 'ssl', 'websocket', 'ws', 'wss']);

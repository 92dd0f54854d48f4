import type { Protocol, ProtocolConnection } from './Protocol.js';

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

interface TextState {
  /** Bytes already searched for a newline, so a long partial line is not rescanned per chunk. */
  scanned: number;
}

/** Newline-delimited UTF-8 text: one message per line; `\r\n` and `\n` both end a line. */
export const text: Protocol<string, TextState> = {
  name: 'text',
  createState: () => ({ scanned: 0 }),
  input(buffer: Buffer, conn: ProtocolConnection<TextState>): number {
    const state = conn.protocolState;
    const at = buffer.indexOf(NEWLINE, state.scanned);
    if (at === -1) {
      state.scanned = buffer.length;
      return 0;
    }
    state.scanned = 0;
    return at + 1;
  },
  decode(packet: Buffer): string {
    let end = packet.length - 1;
    if (end > 0 && packet[end - 1] === CARRIAGE_RETURN) end--;
    return packet.toString('utf8', 0, end);
  },
  encode(message: unknown): Buffer | string {
    if (Buffer.isBuffer(message)) return Buffer.concat([message, Buffer.from('\n')]);
    return `${String(message)}\n`;
  },
  exportState: (state) => state,
  importState: (data) => ({ scanned: (data as TextState | undefined)?.scanned ?? 0 }),
};

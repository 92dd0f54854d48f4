import type { Protocol } from './Protocol.js';

const HEADER = 4;

/** Length-prefixed binary frames: a u32 big-endian total length (header included), then the body. */
export const frame: Protocol<Buffer, undefined> = {
  name: 'frame',
  input(buffer: Buffer): number {
    if (buffer.length < HEADER) return 0;
    const length = buffer.readUInt32BE(0);
    return length < HEADER ? -1 : length;
  },
  decode(packet: Buffer): Buffer {
    return packet.subarray(HEADER);
  },
  encode(message: unknown): Buffer {
    const body = Buffer.isBuffer(message) ? message : Buffer.from(String(message));
    const out = Buffer.allocUnsafe(HEADER + body.length);
    out.writeUInt32BE(HEADER + body.length, 0);
    body.copy(out, HEADER);
    return out;
  },
};

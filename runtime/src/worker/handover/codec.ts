/**
 * What crosses the IPC channel (JSON) besides the handle: bytes as base64, the app's sends made
 * during a move as tagged values, the context under its cap.
 */
import type { CarriedSend } from '../ipc.js';
import { HANDOVER_LIMITS, TransferError, TransferErrorCode } from './errors.js';

/** Base64 of the concatenated chunks. */
export function encodeBytes(chunks: readonly Buffer[]): string {
  if (chunks.length === 0) return '';
  return (chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)).toString('base64');
}

export function decodeBytes(text: string): Buffer {
  return text ? Buffer.from(text, 'base64') : Buffer.alloc(0);
}

/** A queued send as JSON: strings stay strings, binary data goes as base64, anything else as JSON. */
export function encodeSend(data: unknown, raw: boolean): CarriedSend {
  if (typeof data === 'string') return { raw, s: data };
  if (Buffer.isBuffer(data)) return { raw, b: data.toString('base64') };
  if (ArrayBuffer.isView(data)) return { raw, b: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
  if (data instanceof ArrayBuffer) return { raw, b: Buffer.from(data).toString('base64') };
  return { raw, j: JSON.stringify(data) ?? 'null' };
}

export function decodeSend(send: CarriedSend): { data: unknown; raw: boolean } {
  if ('s' in send) return { data: send.s, raw: send.raw };
  if ('b' in send) return { data: Buffer.from(send.b, 'base64'), raw: send.raw };
  return { data: JSON.parse(send.j) as unknown, raw: send.raw };
}

/**
 * JSON of `value` (the `transferTo` context, or `conn.context`); refuses what does not serialise
 * or exceeds `cap` bytes.
 */
export function encodeJson(value: unknown, what: string, cap = HANDOVER_LIMITS.maxContextBytes): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (error) {
    throw new TransferError(TransferErrorCode.CONTEXT_TOO_LARGE, `${what} is not JSON-serialisable: ${(error as Error).message}`);
  }
  json ??= 'null';
  const size = Buffer.byteLength(json);
  if (size > cap) throw new TransferError(TransferErrorCode.CONTEXT_TOO_LARGE, `${what} is ${size} bytes of JSON, more than the ${cap} allowed`);
  return json;
}

export function decodeJson(json: string): unknown {
  try {
    return JSON.parse(json) as unknown;
  } catch {
    return undefined;
  }
}

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Mutual challenge-response over a shared secret: each side sends a fresh nonce and proves it
 * knows the secret with an HMAC over both nonces. The secret itself never crosses the wire.
 */
export function nonce(): string {
  return randomBytes(16).toString('hex');
}

/** The proof a connecting peer sends: HMAC(secret, "client" | serverNonce | clientNonce | role). */
export function clientProof(secret: string, serverNonce: string, clientNonce: string, role: string): string {
  return createHmac('sha256', secret).update(`client|${serverNonce}|${clientNonce}|${role}`).digest('hex');
}

/** The proof the accepting side answers with, so a peer cannot be fooled by an impostor either. */
export function serverProof(secret: string, serverNonce: string, clientNonce: string): string {
  return createHmac('sha256', secret).update(`server|${serverNonce}|${clientNonce}`).digest('hex');
}

/** Constant-time comparison of two hex proofs. */
export function proofsMatch(expected: string, actual: unknown): boolean {
  if (typeof actual !== 'string' || actual.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(expected), Buffer.from(actual));
}

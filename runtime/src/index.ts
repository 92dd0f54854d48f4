/**
 * gatewayworker: multi-process long-connection servers for Node.
 * @packageDocumentation
 */
export * from './worker/index.js';
export { ErrorCode, registerProtocol, getProtocol, encodeFrame, text, frame } from './protocols/index.js';
export type { Protocol, ProtocolConnection } from './protocols/index.js';

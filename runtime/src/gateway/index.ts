export type { GatewayOptions } from './Gateway.js';
export type { Router, RouteContext, WorkerInfo } from './WorkerPool.js';
export { staticFiles } from './static.js';

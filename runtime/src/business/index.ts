export { BusinessWorker } from './BusinessWorker.js';
export type { BusinessWorkerOptions } from './BusinessWorker.js';
export type { Context, EventHandlers, WebSocketRequest, ClientInfo } from './context.js';

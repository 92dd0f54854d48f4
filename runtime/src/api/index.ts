export { GatewayApi, GatewayArgumentError } from './GatewayApi.js';
export type { ClientMessage, Session, SubscribeOptions, PublishOptions, PublishProperties } from './GatewayApi.js';
export { GatewayClient } from './GatewayClient.js';
export type { GatewayClientOptions } from './GatewayClient.js';
export { GatewayLinks, GatewayQueryTimeoutError, GatewayUnavailableError } from './GatewayLinks.js';
export type { GatewayLink, GatewayLinksOptions } from './GatewayLinks.js';
export { currentApi, setCurrentApi } from './current.js';

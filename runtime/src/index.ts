/**
 * gatewayworker: multi-process long-connection servers for Node.
 * @packageDocumentation
 */
export * from './worker/index.js';
export { ErrorCode, registerProtocol, getProtocol, encodeFrame, text, frame, mqtt, decodeMqttPacket, encodeMqttPacket } from './protocols/index.js';
export type { Protocol, ProtocolConnection, MqttVersion } from './protocols/index.js';
export type * as MqttPacket from 'mqtt-packet';
export { TopicTree, topicMatches, isValidTopicName, isValidTopicFilter } from './topics/index.js';
export { Register } from './register/index.js';
export type { RegisterOptions } from './register/index.js';
export { Gateway } from './api/facade.js';
export type { GatewayOptions, Router, RouteContext, WorkerInfo } from './gateway/index.js';
export { staticFiles } from './gateway/index.js';
export { BusinessWorker } from './business/index.js';
export type { BusinessWorkerOptions, Context, EventHandlers, WebSocketRequest, ClientInfo } from './business/index.js';
export { GatewayApi, GatewayClient, GatewayArgumentError, GatewayQueryTimeoutError, GatewayUnavailableError } from './api/index.js';
export type { ClientMessage, Session, GatewayClientOptions, SubscribeOptions, PublishOptions, PublishProperties } from './api/index.js';
export type { UnackedMessage, MqttDeliveryState } from './internal/codec.js';
export { parseClientId, InvalidClientIdError } from './internal/index.js';
export type { ClientIdParts } from './internal/index.js';

export type { Protocol, ProtocolConnection } from './Protocol.js';
export { registerProtocol, getProtocol, BUILT_IN_TRANSPORT_SCHEMES } from './Protocol.js';
export { ErrorCode } from './errors.js';
export type { Transport, TransportInfo, TransportSink, PeerAddress } from './Transport.js';
export { peerAddress } from './Transport.js';
export { SocketTransport } from './SocketTransport.js';
export { StreamTransport, toWire } from './stream.js';
export type { StreamTransportOptions } from './stream.js';
export { WebSocketTransport, WebSocketAcceptor, encodeFrame } from './websocket.js';
export type { WebSocketAcceptorHooks, WebSocketAcceptorOptions } from './websocket.js';
export { text } from './text.js';
export { frame } from './frame.js';
export { mqtt, mqttPacketLength, decodeMqttPacket, encodeMqttPacket } from './mqtt.js';
export type { MqttVersion } from './mqtt.js';

import { registerProtocol } from './Protocol.js';
import { text } from './text.js';
import { frame } from './frame.js';
import { mqtt } from './mqtt.js';

registerProtocol('text', text);
registerProtocol('frame', frame);
registerProtocol('mqtt', mqtt);

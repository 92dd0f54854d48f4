/**
 * The internal wire format. Every internal link (register, gateway ↔ worker, GatewayClient) is a
 * `frame` stream (u32 big-endian length, header included); a frame's body starts with one
 * command byte. Hot commands (client messages, sends, broadcasts, acks) are fixed binary headers
 * followed by the raw client payload; rare ones (handshake, control, queries) carry JSON.
 */

/** Command bytes. */
export const Cmd = {
  // Handshake (JSON), every link.
  HELLO: 1,
  AUTH: 2,
  AUTH_OK: 3,
  PING: 4,
  // Register.
  GATEWAY_ANNOUNCE: 10,
  SUBSCRIBE: 11,
  GATEWAY_LIST: 12,
  // Gateway → worker events (binary header, sequence numbered for acks).
  CLIENT_CONNECT: 20,
  CLIENT_MESSAGE: 21,
  CLIENT_CLOSE: 22,
  DRAIN_DONE: 23,
  // Worker/API → gateway.
  ACK: 30,
  SEND: 31,
  BROADCAST: 32,
  CONTROL: 33,
  QUERY: 34,
  DRAIN: 35,
  PUBLISH: 36,
  // Gateway → worker/API.
  QUERY_RESULT: 40,
} as const;
export type Cmd = (typeof Cmd)[keyof typeof Cmd];

/** Flags of a payload. */
export const PayloadFlag = {
  /** Payload is binary (else UTF-8 text). */
  BINARY: 1,
  /** Payload is already encoded for the client's protocol. */
  RAW: 2,
  /** A session (version + JSON) precedes the payload. */
  SESSION: 4,
} as const;

/** Targets of a broadcast. */
export const Target = { ALL: 0, CLIENTS: 1, GROUPS: 2, UIDS: 3 } as const;
export type Target = (typeof Target)[keyof typeof Target];

const HEADER = 4;

/** Starts a frame for `cmd` with room for `bodyLength` bytes after the command byte. */
function allocate(cmd: number, bodyLength: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER + 1 + bodyLength);
  frame.writeUInt32BE(frame.length, 0);
  frame[HEADER] = cmd;
  return frame;
}

/** A frame whose body is JSON. */
export function encodeJson(cmd: Cmd, value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value));
  const frame = allocate(cmd, json.length);
  json.copy(frame, HEADER + 1);
  return frame;
}

/** A frame with a u32 request id and a JSON body (queries and their results). */
export function encodeRequest(cmd: Cmd, req: number, value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value));
  const frame = allocate(cmd, 4 + json.length);
  frame.writeUInt32BE(req >>> 0, HEADER + 1);
  json.copy(frame, HEADER + 5);
  return frame;
}

/** A frame with one u32 (acks). */
export function encodeU32(cmd: Cmd, value: number): Buffer {
  const frame = allocate(cmd, 4);
  frame.writeUInt32BE(value >>> 0, HEADER + 1);
  return frame;
}

/** Payload bytes and their flag. */
export function payloadOf(message: unknown): { bytes: Buffer; binary: boolean } {
  if (typeof message === 'string') return { bytes: Buffer.from(message), binary: false };
  if (Buffer.isBuffer(message)) return { bytes: message, binary: true };
  if (ArrayBuffer.isView(message)) return { bytes: Buffer.from(message.buffer, message.byteOffset, message.byteLength), binary: true };
  return { bytes: Buffer.from(String(message)), binary: false };
}

/**
 * Gateway → worker event: `seq u32 | counter u32 | flags u8 | [version u32 | len u32 | session] | payload`.
 * CLIENT_CONNECT carries JSON client info as payload; CLIENT_CLOSE carries none.
 */
export function encodeClientEvent(
  cmd: number,
  seq: number,
  counter: number,
  flags: number,
  payload: Buffer,
  session?: { version: number; json: Buffer },
): Buffer {
  const sessionLength = session ? 8 + session.json.length : 0;
  const frame = allocate(cmd, 9 + sessionLength + payload.length);
  let at = HEADER + 1;
  frame.writeUInt32BE(seq >>> 0, at);
  frame.writeUInt32BE(counter >>> 0, at + 4);
  frame[at + 8] = session ? flags | PayloadFlag.SESSION : flags & ~PayloadFlag.SESSION;
  at += 9;
  if (session) {
    frame.writeUInt32BE(session.version >>> 0, at);
    frame.writeUInt32BE(session.json.length, at + 4);
    session.json.copy(frame, at + 8);
    at += 8 + session.json.length;
  }
  payload.copy(frame, at);
  return frame;
}

export interface ClientEvent {
  seq: number;
  counter: number;
  flags: number;
  session: { version: number; json: string } | null;
  payload: Buffer;
}

/** @throws RangeError on a truncated event. */
export function decodeClientEvent(body: Buffer): ClientEvent {
  if (body.length < 10) throw new RangeError('truncated client event');
  const seq = body.readUInt32BE(1);
  const counter = body.readUInt32BE(5);
  const flags = body[9];
  let at = 10;
  let session: ClientEvent['session'] = null;
  if (flags & PayloadFlag.SESSION) {
    const version = body.readUInt32BE(at);
    const length = body.readUInt32BE(at + 4);
    if (at + 8 + length > body.length) throw new RangeError('truncated session');
    session = { version, json: body.toString('utf8', at + 8, at + 8 + length) };
    at += 8 + length;
  }
  return { seq, counter, flags, session, payload: body.subarray(at) };
}

/** Worker → gateway send to one client: `epoch u48 | counter u32 | flags u8 | payload`. */
export function encodeSend(epoch: number, counter: number, flags: number, payload: Buffer): Buffer {
  const frame = allocate(Cmd.SEND, 11 + payload.length);
  frame.writeUIntBE(epoch, HEADER + 1, 6);
  frame.writeUInt32BE(counter >>> 0, HEADER + 7);
  frame[HEADER + 11] = flags;
  payload.copy(frame, HEADER + 12);
  return frame;
}

export function decodeSend(body: Buffer): { epoch: number; counter: number; flags: number; payload: Buffer } {
  if (body.length < 12) throw new RangeError('truncated send');
  return { epoch: body.readUIntBE(1, 6), counter: body.readUInt32BE(7), flags: body[11], payload: body.subarray(12) };
}

/**
 * Broadcast, encoded once per gateway: `flags u8 | target u8 | epoch u48 | n u32 | targets | m u32 |
 * excluded counters | payload`. Targets are client counters (CLIENTS) or u16-length UTF-8 strings.
 */
export function encodeBroadcast(
  target: Target,
  epoch: number,
  targets: readonly number[] | readonly string[],
  excluded: readonly number[],
  flags: number,
  payload: Buffer,
): Buffer {
  const strings = target === Target.GROUPS || target === Target.UIDS ? (targets as readonly string[]).map((s) => Buffer.from(s)) : null;
  const targetBytes = strings ? strings.reduce((sum, s) => sum + 2 + s.length, 0) : targets.length * 4;
  const frame = allocate(Cmd.BROADCAST, 16 + targetBytes + excluded.length * 4 + payload.length);
  let at = HEADER + 1;
  frame[at] = flags;
  frame[at + 1] = target;
  frame.writeUIntBE(epoch, at + 2, 6);
  frame.writeUInt32BE(targets.length, at + 8);
  at += 12;
  if (strings) {
    for (const s of strings) {
      frame.writeUInt16BE(s.length, at);
      s.copy(frame, at + 2);
      at += 2 + s.length;
    }
  } else {
    for (const counter of targets as readonly number[]) {
      frame.writeUInt32BE(counter >>> 0, at);
      at += 4;
    }
  }
  frame.writeUInt32BE(excluded.length, at);
  at += 4;
  for (const counter of excluded) {
    frame.writeUInt32BE(counter >>> 0, at);
    at += 4;
  }
  payload.copy(frame, at);
  return frame;
}

export interface Broadcast {
  flags: number;
  target: Target;
  epoch: number;
  targets: number[] | string[];
  excluded: number[];
  payload: Buffer;
}

export function decodeBroadcast(body: Buffer): Broadcast {
  if (body.length < 13) throw new RangeError('truncated broadcast');
  const flags = body[1];
  const target = body[2] as Target;
  const epoch = body.readUIntBE(3, 6);
  const count = body.readUInt32BE(9);
  let at = 13;
  let targets: number[] | string[];
  if (target === Target.GROUPS || target === Target.UIDS) {
    const strings: string[] = [];
    for (let i = 0; i < count; i++) {
      const length = body.readUInt16BE(at);
      if (at + 2 + length > body.length) throw new RangeError('truncated broadcast target');
      strings.push(body.toString('utf8', at + 2, at + 2 + length));
      at += 2 + length;
    }
    targets = strings;
  } else {
    if (at + count * 4 > body.length) throw new RangeError('truncated broadcast targets');
    const counters: number[] = [];
    for (let i = 0; i < count; i++, at += 4) counters.push(body.readUInt32BE(at));
    targets = counters;
  }
  const excludedCount = body.readUInt32BE(at);
  at += 4;
  if (at + excludedCount * 4 > body.length) throw new RangeError('truncated broadcast exclusions');
  const excluded: number[] = [];
  for (let i = 0; i < excludedCount; i++, at += 4) excluded.push(body.readUInt32BE(at));
  return { flags, target, epoch, targets, excluded, payload: body.subarray(at) };
}

/** The JSON body after the command byte. @throws SyntaxError */
export function decodeJson<T>(body: Buffer): T {
  return JSON.parse(body.toString('utf8', 1)) as T;
}

/** A request frame's id and JSON body. */
export function decodeRequest<T>(body: Buffer): { req: number; value: T } {
  if (body.length < 5) throw new RangeError('truncated request');
  return { req: body.readUInt32BE(1), value: JSON.parse(body.toString('utf8', 5)) as T };
}

export function decodeU32(body: Buffer): number {
  if (body.length < 5) throw new RangeError('truncated frame');
  return body.readUInt32BE(1);
}


/** Delivery options of a topic publish as they cross the wire. */
export interface PublishFrame {
  qos: 0 | 1 | 2;
  retain: boolean;
  binary: boolean;
  topic: string;
  /** Only this client (epoch + counter) gets it, whatever its subscriptions. */
  target: { epoch: number; counter: number } | null;
  /** The publishing client, for `noLocal` subscriptions. */
  from: { epoch: number; counter: number } | null;
  /** MQTT 5 publish properties as JSON (Buffers as base64), or null. */
  properties: string | null;
  payload: Buffer;
}

const PUB_RETAIN = 4;
const PUB_TARGET = 8;
const PUB_FROM = 16;
const PUB_PROPS = 32;
const PUB_BINARY = 64;

/**
 * Topic publish, one frame per gateway: `flags u8 | [target epoch u48 counter u32] |
 * [from epoch u48 counter u32] | topic u16+bytes | [properties u32+JSON] | payload`.
 * Flags: qos in bits 0–1, then retain, target, from, properties, binary.
 */
export function encodePublish(message: Omit<PublishFrame, 'properties'> & { properties: string | null }): Buffer {
  const topic = Buffer.from(message.topic);
  const props = message.properties === null ? null : Buffer.from(message.properties);
  const length = 1 + (message.target ? 10 : 0) + (message.from ? 10 : 0) + 2 + topic.length + (props ? 4 + props.length : 0) + message.payload.length;
  const frame = allocate(Cmd.PUBLISH, length);
  let at = HEADER + 1;
  frame[at++] =
    message.qos |
    (message.retain ? PUB_RETAIN : 0) |
    (message.target ? PUB_TARGET : 0) |
    (message.from ? PUB_FROM : 0) |
    (props ? PUB_PROPS : 0) |
    (message.binary ? PUB_BINARY : 0);
  for (const party of [message.target, message.from]) {
    if (!party) continue;
    frame.writeUIntBE(party.epoch, at, 6);
    frame.writeUInt32BE(party.counter >>> 0, at + 6);
    at += 10;
  }
  frame.writeUInt16BE(topic.length, at);
  topic.copy(frame, at + 2);
  at += 2 + topic.length;
  if (props) {
    frame.writeUInt32BE(props.length, at);
    props.copy(frame, at + 4);
    at += 4 + props.length;
  }
  message.payload.copy(frame, at);
  return frame;
}

/** @throws RangeError on a truncated frame. */
export function decodePublish(body: Buffer): PublishFrame {
  if (body.length < 4) throw new RangeError('truncated publish');
  const flags = body[1];
  let at = 2;
  const party = (present: boolean): { epoch: number; counter: number } | null => {
    if (!present) return null;
    if (at + 10 > body.length) throw new RangeError('truncated publish');
    const value = { epoch: body.readUIntBE(at, 6), counter: body.readUInt32BE(at + 6) };
    at += 10;
    return value;
  };
  const target = party((flags & PUB_TARGET) !== 0);
  const from = party((flags & PUB_FROM) !== 0);
  if (at + 2 > body.length) throw new RangeError('truncated publish');
  const topicLength = body.readUInt16BE(at);
  if (at + 2 + topicLength > body.length) throw new RangeError('truncated publish topic');
  const topic = body.toString('utf8', at + 2, at + 2 + topicLength);
  at += 2 + topicLength;
  let properties: string | null = null;
  if (flags & PUB_PROPS) {
    if (at + 4 > body.length) throw new RangeError('truncated publish');
    const length = body.readUInt32BE(at);
    if (at + 4 + length > body.length) throw new RangeError('truncated publish properties');
    properties = body.toString('utf8', at + 4, at + 4 + length);
    at += 4 + length;
  }
  const qos = flags & 3;
  if (qos > 2) throw new RangeError('publish qos must be 0, 1 or 2');
  return { qos: qos as 0 | 1 | 2, retain: (flags & PUB_RETAIN) !== 0, binary: (flags & PUB_BINARY) !== 0, topic, target, from, properties, payload: body.subarray(at) };
}

/** A QoS ≥ 1 message a client never acknowledged, handed back with its close event. */
export interface UnackedMessage {
  topic: string;
  payload: Buffer;
  qos: 1 | 2;
  retain: boolean;
  /** The packet id it was sent with; 0 when it never left the gateway (the client's receive maximum). */
  packetId: number;
  /**
   * QoS 2 the client already received (it sent PUBREC, the gateway sent PUBREL): only the release
   * is left. Resending it as a new message would deliver it twice.
   */
  released: boolean;
  /** MQTT 5 publish properties it was sent with. */
  properties?: PublishProperties;
}

/** MQTT 5 properties a delivery carries (mqtt-packet's shape). */
export type PublishProperties = Record<string, unknown>;

/** Properties as JSON, with Buffers (correlation data) as base64. */
function propertiesJson(properties: PublishProperties): Buffer {
  return Buffer.from(JSON.stringify(properties, (_key, value: unknown) => (isBufferJson(value) ? { $b64: Buffer.from(value.data).toString('base64') } : value)));
}

function parsePropertiesJson(text: string): PublishProperties {
  return JSON.parse(text, (_key, value: unknown) =>
    value && typeof value === 'object' && typeof (value as { $b64?: unknown }).$b64 === 'string' ? Buffer.from((value as { $b64: string }).$b64, 'base64') : value,
  ) as PublishProperties;
}

function isBufferJson(value: unknown): value is { type: 'Buffer'; data: number[] } {
  return typeof value === 'object' && value !== null && (value as { type?: unknown }).type === 'Buffer' && Array.isArray((value as { data?: unknown }).data);
}

/** An MQTT client's delivery state when its connection ended, for its next connection (MQTT §4.4). */
export interface MqttDeliveryState {
  /** Messages to it, unacknowledged, oldest first. */
  unacked: UnackedMessage[];
  /** Packet ids of QoS 2 messages from it that were passed on and await its PUBREL. */
  awaitingRelease: number[];
}

/**
 * Close-event payload: `n u16 | awaiting ids u16×n | messages`, each message
 * `qos u8 | flags u8 (1 retain, 2 released, 4 properties) | packet id u16 | topic u16+bytes |
 * [properties u32+JSON] | payload u32+bytes`.
 */
export function encodeMqttDeliveryState(state: MqttDeliveryState): Buffer {
  const messages = state.unacked;
  const topics = messages.map((m) => Buffer.from(m.topic));
  const props = messages.map((m) => (m.properties && Object.keys(m.properties).length > 0 ? propertiesJson(m.properties) : null));
  const ids = state.awaitingRelease.slice(0, 0xffff);
  const size = 2 + ids.length * 2 + messages.reduce((sum, m, i) => sum + 10 + topics[i].length + (props[i] ? 4 + props[i]!.length : 0) + m.payload.length, 0);
  const out = Buffer.allocUnsafe(size);
  out.writeUInt16BE(ids.length, 0);
  let at = 2;
  for (const id of ids) {
    out.writeUInt16BE(id & 0xffff, at);
    at += 2;
  }
  messages.forEach((m, i) => {
    out[at] = m.qos;
    const json = props[i];
    out[at + 1] = (m.retain ? 1 : 0) | (m.released ? 2 : 0) | (json ? 4 : 0);
    out.writeUInt16BE(m.packetId & 0xffff, at + 2);
    out.writeUInt16BE(topics[i].length, at + 4);
    topics[i].copy(out, at + 6);
    at += 6 + topics[i].length;
    if (json) {
      out.writeUInt32BE(json.length, at);
      json.copy(out, at + 4);
      at += 4 + json.length;
    }
    out.writeUInt32BE(m.payload.length, at);
    m.payload.copy(out, at + 4);
    at += 4 + m.payload.length;
  });
  return out;
}

/** @throws RangeError on truncated bytes. */
export function decodeMqttDeliveryState(bytes: Buffer): MqttDeliveryState {
  if (bytes.length < 2) throw new RangeError('truncated MQTT delivery state');
  const count = bytes.readUInt16BE(0);
  if (2 + count * 2 > bytes.length) throw new RangeError('truncated MQTT delivery state');
  const awaitingRelease: number[] = [];
  for (let i = 0; i < count; i++) awaitingRelease.push(bytes.readUInt16BE(2 + i * 2));
  const unacked: UnackedMessage[] = [];
  let at = 2 + count * 2;
  while (at < bytes.length) {
    if (at + 6 > bytes.length) throw new RangeError('truncated unacked message');
    const qos = bytes[at] === 2 ? 2 : 1;
    const flags = bytes[at + 1];
    const packetId = bytes.readUInt16BE(at + 2);
    const topicLength = bytes.readUInt16BE(at + 4);
    if (at + 10 + topicLength > bytes.length) throw new RangeError('truncated unacked message');
    const topic = bytes.toString('utf8', at + 6, at + 6 + topicLength);
    at += 6 + topicLength;
    let properties: PublishProperties | undefined;
    if (flags & 4) {
      if (at + 4 > bytes.length) throw new RangeError('truncated unacked properties');
      const jsonLength = bytes.readUInt32BE(at);
      if (at + 8 + jsonLength > bytes.length) throw new RangeError('truncated unacked properties');
      try {
        properties = parsePropertiesJson(bytes.toString('utf8', at + 4, at + 4 + jsonLength));
      } catch {
        throw new RangeError('malformed unacked properties');
      }
      at += 4 + jsonLength;
    }
    if (at + 4 > bytes.length) throw new RangeError('truncated unacked payload');
    const length = bytes.readUInt32BE(at);
    if (at + 4 + length > bytes.length) throw new RangeError('truncated unacked payload');
    const message: UnackedMessage = { topic, payload: Buffer.from(bytes.subarray(at + 4, at + 4 + length)), qos, retain: (flags & 1) !== 0, released: (flags & 2) !== 0, packetId };
    if (properties) message.properties = properties;
    unacked.push(message);
    at += 4 + length;
  }
  return { unacked, awaitingRelease };
}

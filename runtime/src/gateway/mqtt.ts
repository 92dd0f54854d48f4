import type { IPublishPacket, Packet } from 'mqtt-packet';
import type { MqttDeliveryState, UnackedMessage } from '../internal/codec.js';
import { decodeMqttPacket, encodeMqttPacket, mqttPacketLength, type MqttVersion } from '../protocols/mqtt.js';

/** Packet types by their fixed-header nibble. */
const CONNECT = 1;

/** MQTT 5 reason codes the gateway itself sends. */
export const MqttReason = {
  MALFORMED_PACKET: 0x81,
  PROTOCOL_ERROR: 0x82,
  PACKET_TOO_LARGE: 0x95,
  KEEP_ALIVE_TIMEOUT: 0x8d,
  RECEIVE_MAXIMUM_EXCEEDED: 0x93,
} as const;

/** A QoS ≥ 1 message on its way to a client. */
interface Outgoing {
  topic: string;
  payload: Buffer;
  qos: 1 | 2;
  retain: boolean;
  properties?: IPublishPacket['properties'];
}

/** A QoS ≥ 1 message sent to a client and not yet acknowledged. */
interface Inflight extends Outgoing {
  /** `publish` until PUBACK/PUBREC; `pubrel` once PUBREL was sent (QoS 2). */
  stage: 'publish' | 'pubrel';
}

/** The MQTT side of one client connection, kept by its gateway. */
export class MqttSession {
  /** Protocol level from the CONNECT; 0 before it. */
  version: MqttVersion | 0 = 0;
  /** Keep-alive in ms from the CONNECT; 0 = none. */
  keepAliveMs = 0;
  /** Pieces of a packet split over WebSocket messages, joined once it is complete. */
  readonly partial: Buffer[] = [];
  /** Bytes in {@link partial}. */
  partialBytes = 0;
  /** Length of the split packet once its fixed header arrived; 0 before. */
  partialNeed = 0;
  private nextId = 0;
  /** Outgoing QoS ≥ 1 messages by packet id. */
  readonly inflight = new Map<number, Inflight>();
  /** Outgoing QoS ≥ 1 messages waiting for a free slot (the client's receive maximum). */
  readonly waiting: Outgoing[] = [];
  /** Inbound QoS 2 packet ids that were acknowledged (PUBREC) and await the client's PUBREL. */
  readonly awaitingRelease = new Set<number>();
  /** Inbound QoS 2 packet ids passed to a worker that has not answered with PUBREC yet. */
  readonly forwardedQos2 = new Set<number>();
  /** Payload bytes of the messages in {@link inflight} and {@link waiting}. */
  queuedBytes = 0;
  /** Most unacknowledged outgoing messages the client accepts (v5 receive maximum). */
  receiveMaximum = 65_535;
  /** Messages dropped because `waiting` was full. */
  dropped = 0;
  /** Largest packet the client accepts (v5 maximum packet size); 0 = no limit. */
  maximumPacketSize = 0;

  /**
   * Whether a PUBLISH of this message would be over the client's maximum packet size: such a
   * message is not sent to it (MQTT 5 §3.1.2.11.4). Counted with room for the packet's headers.
   */
  refuses(topic: string, payload: Buffer): boolean {
    return this.maximumPacketSize > 0 && payload.length + topic.length * 3 + 16 > this.maximumPacketSize;
  }

  /** A free packet id for an outgoing message, or 0 when every id is in use. */
  allocateId(): number {
    if (this.inflight.size >= MAX_INFLIGHT) return 0;
    do this.nextId = (this.nextId % 65_535) + 1;
    while (this.inflight.has(this.nextId));
    return this.nextId;
  }

  /** What the next connection of this client must resend and expect (MQTT §4.4), for the close event. */
  deliveryState(): MqttDeliveryState {
    const unacked: UnackedMessage[] = [];
    const entry = (m: Outgoing, packetId: number, released: boolean): UnackedMessage => {
      const out: UnackedMessage = { topic: m.topic, payload: m.payload, qos: m.qos, retain: m.retain, packetId, released };
      if (m.properties) out.properties = m.properties as UnackedMessage['properties'];
      return out;
    };
    for (const [packetId, m] of this.inflight) unacked.push(entry(m, packetId, m.stage === 'pubrel'));
    for (const m of this.waiting) unacked.push(entry(m, 0, false));
    return { unacked, awaitingRelease: [...this.awaitingRelease] };
  }

  /** Whether another QoS ≥ 1 message may be sent now (the client's receive maximum, and the gateway's own cap). */
  get hasFreeSlot(): boolean {
    return this.inflight.size < Math.min(this.receiveMaximum, MAX_INFLIGHT);
  }

  /** Whether the close event has anything to hand back. */
  get hasDeliveryState(): boolean {
    return this.inflight.size > 0 || this.waiting.length > 0 || this.awaitingRelease.size > 0;
  }
}

/** What the MQTT layer asks of its gateway. */
export interface MqttHost<C> {
  session(client: C): MqttSession;
  /** Passes a packet's bytes to a BusinessWorker. */
  forward(client: C, packet: Buffer): void;
  /**
   * Writes packet bytes to the client. An `essential` packet (a QoS ≥ 1 delivery, an
   * acknowledgement) that cannot be queued must close the connection: the client would wait for it
   * forever, while the close event hands the undelivered messages back.
   */
  write(client: C, packet: Buffer, essential?: boolean): void;
  /** Closes the client, after `last` if given. */
  close(client: C, reason: string, last?: Buffer): void;
  log(message: string, client: C): void;
}

/**
 * MQTT in a gateway: checks every packet, answers what needs no business code (PINGREQ, the QoS
 * handshakes of messages the gateway delivers, PUBREL) and forwards the rest (CONNECT, PUBLISH,
 * SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, AUTH) to workers as raw bytes.
 */
export class MqttLayer<C> {
  constructor(
    private readonly host: MqttHost<C>,
    private readonly maxPacketSize: number,
  ) {}

  /**
   * Bytes from the client: one whole packet (`mqtt://`, framed by the protocol) or a WebSocket
   * message, which may hold several packets or part of one.
   */
  receive(client: C, bytes: Buffer, stream: boolean): void {
    const session = this.host.session(client);
    if (stream) {
      this.packet(client, session, bytes);
      return;
    }
    let buffer = bytes;
    if (session.partialBytes > 0) {
      // The pieces of a split packet are kept apart and joined once: joining on every message
      // would cost the square of the packet size.
      session.partial.push(bytes);
      session.partialBytes += bytes.length;
      if (session.partialNeed > 0 && session.partialBytes < session.partialNeed) return;
      buffer = Buffer.concat(session.partial, session.partialBytes);
      session.partial.length = 0;
      session.partialBytes = 0;
      session.partialNeed = 0;
    }
    while (buffer.length > 0) {
      const length = mqttPacketLength(buffer, this.maxPacketSize);
      if (length < 0) {
        this.refuse(client, session, buffer.length >= 2 && buffer[0] >> 4 !== 0 ? MqttReason.PACKET_TOO_LARGE : MqttReason.MALFORMED_PACKET, 'not an MQTT packet or larger than the limit');
        return;
      }
      if (length === 0 || length > buffer.length) {
        session.partial.push(Buffer.from(buffer));
        session.partialBytes = buffer.length;
        session.partialNeed = length;
        return;
      }
      if (!this.packet(client, session, buffer.subarray(0, length))) return;
      buffer = buffer.subarray(length);
    }
  }

  /** Handles one complete packet. @returns false when the connection was closed. */
  private packet(client: C, session: MqttSession, bytes: Buffer): boolean {
    if (session.version === 0) {
      if (bytes[0] >> 4 !== CONNECT) {
        this.refuse(client, session, MqttReason.PROTOCOL_ERROR, 'the first packet must be CONNECT');
        return false;
      }
      let connect: Packet;
      try {
        connect = decodeMqttPacket(bytes, 4);
      } catch (error) {
        this.refuse(client, session, MqttReason.MALFORMED_PACKET, (error as Error).message);
        return false;
      }
      if (connect.cmd !== 'connect') return false;
      session.version = connect.protocolVersion ?? 4;
      session.keepAliveMs = (connect.keepalive ?? 0) * 1000;
      if (connect.properties?.receiveMaximum) session.receiveMaximum = connect.properties.receiveMaximum;
      if (connect.properties?.maximumPacketSize) session.maximumPacketSize = connect.properties.maximumPacketSize;
      this.host.forward(client, bytes);
      return true;
    }
    // Acknowledgements and pings are most of the packets a gateway reads and have one valid
    // 2- or 4-byte shape when they carry no reason code: read them without the parser.
    if (bytes.length === 4 && bytes[1] === 2) {
      const id = bytes.readUInt16BE(2);
      if (id !== 0 && (bytes[0] === 0x40 || bytes[0] === 0x70)) {
        this.acknowledged(client, session, id);
        return true;
      }
    } else if (bytes.length === 2 && bytes[0] === 0xc0 && bytes[1] === 0) {
      this.host.write(client, PINGRESP, true);
      return true;
    }
    let packet: Packet;
    try {
      packet = decodeMqttPacket(bytes, session.version);
    } catch (error) {
      this.refuse(client, session, MqttReason.MALFORMED_PACKET, (error as Error).message);
      return false;
    }
    switch (packet.cmd) {
      case 'connect':
        this.refuse(client, session, MqttReason.PROTOCOL_ERROR, 'a second CONNECT');
        return false;
      case 'pingreq':
        this.host.write(client, PINGRESP, true);
        return true;
      case 'puback':
      case 'pubcomp':
        this.acknowledged(client, session, packet.messageId ?? 0);
        return true;
      case 'pubrec': {
        const id = packet.messageId ?? 0;
        const message = session.inflight.get(id);
        // v5: a PUBREC with an error ends the flow (the client refused the message).
        if (message && (packet.reasonCode ?? 0) < 0x80) {
          message.stage = 'pubrel';
          this.host.write(client, this.encode({ cmd: 'pubrel', messageId: id }, session), true);
        } else this.acknowledged(client, session, id);
        return true;
      }
      case 'pubrel': {
        const id = packet.messageId ?? 0;
        session.awaitingRelease.delete(id);
        this.host.write(client, this.encode({ cmd: 'pubcomp', messageId: id }, session), true);
        return true;
      }
      case 'publish':
        if (packet.qos === 2) {
          const id = packet.messageId ?? 0;
          // A resent QoS 2 message already passed on: acknowledge again, deliver once.
          if (session.awaitingRelease.has(id)) {
            this.host.write(client, this.encode({ cmd: 'pubrec', messageId: id }, session), true);
            return true;
          }
          // Passed on and not answered yet: the worker's PUBREC answers this copy too.
          if (session.forwardedQos2.has(id)) return true;
          session.forwardedQos2.add(id);
        }
        this.host.forward(client, bytes);
        return true;
      default:
        this.host.forward(client, bytes);
        return true;
    }
  }

  /**
   * Bytes a worker sends to the client: a PUBREC in them settles the QoS 2 message it answers —
   * awaiting PUBREL if accepted, forgotten if refused (MQTT 5 reason ≥ 0x80), so a refused id can
   * be used again.
   */
  sentByWorker(session: MqttSession, bytes: Buffer): void {
    if (session.forwardedQos2.size === 0) return;
    let offset = 0;
    while (offset < bytes.length) {
      const rest = bytes.subarray(offset);
      const length = mqttPacketLength(rest);
      if (length <= 0 || length > rest.length) return;
      if (rest[0] === 0x50) {
        let header = 2;
        while (header < 5 && rest[header - 1] & 0x80) header++;
        const id = length >= header + 2 ? rest.readUInt16BE(header) : 0;
        const reason = length > header + 2 ? rest[header + 2] : 0;
        if (session.forwardedQos2.delete(id) && reason < 0x80) session.awaitingRelease.add(id);
      }
      offset += length;
    }
  }

  /**
   * Sends a published message to a client at `qos` (already the minimum of publish and
   * subscription). QoS 0 bytes may be shared by many clients (`shared`); QoS ≥ 1 get their own
   * packet id and wait for the client's acknowledgement.
   */
  deliver(client: C, message: { topic: string; payload: Buffer; retain: boolean; properties?: IPublishPacket['properties'] }, qos: 0 | 1 | 2, shared?: Buffer): void {
    const session = this.host.session(client);
    if (session.version === 0 || session.refuses(message.topic, message.payload)) return;
    if (qos === 0) {
      this.host.write(client, shared ?? this.encodePublish(session, message, 0, 0));
      return;
    }
    const outgoing: Outgoing = { topic: message.topic, payload: message.payload, qos, retain: message.retain, properties: message.properties };
    // A client that stops acknowledging must not grow the gateway without bound.
    if (session.waiting.length >= MAX_WAITING || session.queuedBytes + outgoing.payload.length > MAX_QUEUED_BYTES) {
      if (session.dropped++ === 0) {
        this.host.log(`client stopped acknowledging: QoS ${qos} messages beyond ${MAX_WAITING} queued or ${MAX_QUEUED_BYTES >> 20} MB are dropped`, client);
      }
      return;
    }
    session.queuedBytes += outgoing.payload.length;
    if (!session.hasFreeSlot || session.waiting.length > 0) {
      session.waiting.push(outgoing);
      return;
    }
    this.send(client, session, outgoing);
  }

  /** PUBLISH bytes for a client of `session`'s version. */
  encodePublish(session: MqttSession, message: { topic: string; payload: Buffer; retain: boolean; properties?: IPublishPacket['properties'] }, qos: 0 | 1 | 2, messageId: number, dup = false): Buffer {
    const packet: IPublishPacket = { cmd: 'publish', topic: message.topic, payload: message.payload, qos, retain: message.retain, dup };
    if (messageId) packet.messageId = messageId;
    if (message.properties && session.version === 5) packet.properties = message.properties;
    return encodeMqttPacket(packet, session.version || 4);
  }

  /**
   * Continues a previous connection's deliveries on this one (MQTT §4.4): unacknowledged messages
   * go out again with their packet ids and DUP set, released ones get their PUBREL again, and
   * the client's QoS 2 ids awaiting release stay deduplicated.
   */
  restore(client: C, state: Partial<MqttDeliveryState>): void {
    const session = this.host.session(client);
    if (session.version === 0) return;
    for (const id of state.awaitingRelease ?? []) if (id > 0 && id <= 0xffff) session.awaitingRelease.add(id);
    for (const m of state.unacked ?? []) {
      const id = m.packetId;
      const outgoing: Outgoing = { topic: m.topic, payload: m.payload, qos: m.qos === 2 ? 2 : 1, retain: m.retain };
      if (m.properties) outgoing.properties = m.properties as IPublishPacket['properties'];
      if (!(id > 0 && id <= 0xffff) || session.inflight.has(id)) {
        // Never sent, or its id is taken on this connection: a fresh delivery (a released one is done).
        if (!m.released) this.deliver(client, outgoing, outgoing.qos);
        continue;
      }
      session.inflight.set(id, { ...outgoing, stage: m.released ? 'pubrel' : 'publish' });
      session.queuedBytes += outgoing.payload.length;
      this.host.write(client, m.released ? this.encode({ cmd: 'pubrel', messageId: id }, session) : this.encodePublish(session, outgoing, outgoing.qos, id, true), true);
    }
  }

  private send(client: C, session: MqttSession, message: Outgoing): void {
    const id = session.allocateId();
    if (id === 0) {
      session.waiting.push(message);
      return;
    }
    session.inflight.set(id, { ...message, stage: 'publish' });
    this.host.write(client, this.encodePublish(session, message, message.qos, id), true);
  }

  private acknowledged(client: C, session: MqttSession, id: number): void {
    const message = session.inflight.get(id);
    if (!message) return;
    session.inflight.delete(id);
    session.queuedBytes -= message.payload.length;
    while (session.waiting.length > 0 && session.hasFreeSlot) {
      this.send(client, session, session.waiting.shift() as Outgoing);
    }
  }

  /** Closes a client for a protocol violation; MQTT 5 clients get a DISCONNECT with the reason first. */
  private refuse(client: C, session: MqttSession, reasonCode: number, reason: string): void {
    this.host.log(`MQTT protocol error: ${reason}`, client);
    const last = session.version === 5 ? encodeMqttPacket({ cmd: 'disconnect', reasonCode }, 5) : undefined;
    this.host.close(client, reason, last);
  }

  /** DISCONNECT for a keep-alive timeout (MQTT 5), or undefined. */
  keepAliveDisconnect(session: MqttSession): Buffer | undefined {
    return session.version === 5 ? encodeMqttPacket({ cmd: 'disconnect', reasonCode: MqttReason.KEEP_ALIVE_TIMEOUT }, 5) : undefined;
  }

  private encode(packet: Packet, session: MqttSession): Buffer {
    return encodeMqttPacket(packet, session.version || 4);
  }
}

const PINGRESP = Buffer.from([0xd0, 0x00]);

/** QoS ≥ 1 messages queued per client beyond its receive maximum before new ones are dropped. */
const MAX_WAITING = 10_000;
/** Payload bytes of QoS ≥ 1 messages, sent or queued, held per client before new ones are dropped. */
const MAX_QUEUED_BYTES = 16 * 1024 * 1024;
/**
 * QoS ≥ 1 messages sent to one client and not yet acknowledged. MQTT 5 clients lower it with their
 * receive maximum; 3.1.1 clients have none, and a bound keeps a client that never acknowledges
 * from holding 65,535 messages.
 */
const MAX_INFLIGHT = 1000;

import * as mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import type { Protocol, ProtocolConnection } from './Protocol.js';

/** MQTT protocol levels: 3 = 3.1, 4 = 3.1.1, 5 = 5.0. */
export type MqttVersion = 3 | 4 | 5;

/** Largest remaining length the MQTT varint can express (268,435,455 bytes). */
const MAX_REMAINING_LENGTH = 268_435_455;

/**
 * Measures the MQTT packet at the start of `buffer`: fixed header byte, remaining length (a
 * 1–4 byte varint), then the rest.
 * @returns the packet's total length (possibly more than `buffer.length`), 0 when the length is
 * not complete yet, -1 when the bytes can never form a packet (a fifth length byte, type 0) or
 * the packet is larger than `maxPacketSize`.
 */
export function mqttPacketLength(buffer: Buffer, maxPacketSize = MAX_REMAINING_LENGTH + 5): number {
  if (buffer.length < 2) return 0;
  // Packet type 0 is reserved: whatever this is, it is not MQTT.
  if (buffer[0] >> 4 === 0) return -1;
  let remaining = 0;
  let multiplier = 1;
  for (let i = 1; i <= 4; i++) {
    if (i >= buffer.length) return 0;
    const byte = buffer[i];
    remaining += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) {
      const total = 1 + i + remaining;
      return total > maxPacketSize ? -1 : total;
    }
    multiplier *= 128;
  }
  return -1;
}

/** One parser per protocol level, reused: a packet handed to it is always complete. */
interface CachedParser {
  parser: mqttPacket.Parser;
  packets: Packet[];
  error: Error | null;
}
const parsers = new Map<MqttVersion, CachedParser>();

function parserFor(version: MqttVersion): CachedParser {
  let entry = parsers.get(version);
  if (!entry) {
    const fresh: CachedParser = { parser: mqttPacket.parser({ protocolVersion: version }), packets: [], error: null };
    fresh.parser.on('packet', (packet: Packet) => void fresh.packets.push(packet));
    fresh.parser.on('error', (error: Error) => {
      fresh.error ??= error;
    });
    parsers.set(version, fresh);
    entry = fresh;
  }
  return entry;
}

/**
 * Decodes exactly one complete MQTT packet (as a gateway forwards it to workers).
 * A CONNECT decodes with any `version`: it carries its own protocol level.
 * @throws Error when the bytes are not one valid packet of that version.
 */
export function decodeMqttPacket(bytes: Buffer, version: MqttVersion = 4): Packet {
  const entry = parserFor(version);
  entry.packets = [];
  entry.error = null;
  let left: number;
  try {
    left = entry.parser.parse(bytes);
  } catch (error) {
    parsers.delete(version);
    throw new Error(`malformed MQTT packet: ${(error as Error).message}`);
  }
  const packets = entry.packets;
  const error = entry.error as Error | null;
  entry.packets = [];
  entry.error = null;
  // A parser left mid-packet must not see the next caller's bytes, and mqtt-packet's parser adopts
  // a CONNECT's protocol level for every packet after it: neither is reused.
  if (error || packets.length !== 1 || left !== 0 || packets[0].cmd === 'connect') parsers.delete(version);
  if (error) throw new Error(`malformed MQTT packet: ${error.message}`);
  if (packets.length === 0 || left !== 0) throw new Error('malformed MQTT packet: incomplete');
  if (packets.length > 1) throw new Error('malformed MQTT packet: bytes after the packet');
  const missing = missingPart(packets[0]);
  if (missing) throw new Error(`malformed MQTT packet: ${packets[0].cmd} without ${missing}`);
  return packets[0];
}

/**
 * What mqtt-packet lets through that the spec requires: a packet identifier (it reads a missing one
 * as -1) on acknowledgements, QoS ≥ 1 PUBLISH, SUBSCRIBE and UNSUBSCRIBE, and at least one topic
 * filter in SUBSCRIBE / UNSUBSCRIBE (MQTT-3.8.3-3, MQTT-3.10.3-2).
 */
function missingPart(packet: Packet): string | null {
  const needsId =
    packet.cmd === 'puback' || packet.cmd === 'pubrec' || packet.cmd === 'pubrel' || packet.cmd === 'pubcomp' || packet.cmd === 'subscribe' || packet.cmd === 'unsubscribe' || packet.cmd === 'suback' || packet.cmd === 'unsuback' || (packet.cmd === 'publish' && packet.qos > 0);
  if (needsId) {
    const id = (packet as { messageId?: number }).messageId;
    if (id === undefined || !Number.isInteger(id) || id < 1 || id > 0xffff) return 'a packet identifier';
  }
  if (packet.cmd === 'subscribe' && (packet.subscriptions ?? []).length === 0) return 'a topic filter';
  if (packet.cmd === 'unsubscribe' && (packet.unsubscriptions ?? []).length === 0) return 'a topic filter';
  return null;
}

/** Encodes an MQTT packet for a client of protocol level `version`. @throws Error for an invalid packet. */
export function encodeMqttPacket(packet: Packet, version: MqttVersion = 4): Buffer {
  return mqttPacket.generate(packet, { protocolVersion: version });
}

/**
 * MQTT over a byte stream (`mqtt://`, `mqtts://`): a package is one whole MQTT packet, passed on as
 * its bytes. Messages sent are bytes already encoded (`encodeMqttPacket`) or packet objects.
 * A Gateway on this protocol does the rest of MQTT (CONNECT, keep-alive, QoS handshakes).
 */
export const mqtt: Protocol<Buffer, MqttStreamState> = {
  name: 'mqtt',
  input(buffer: Buffer, conn: ProtocolConnection<MqttStreamState>): number {
    // Anything but a CONNECT first is refused on its first byte (an HTTP request, a TLS hello…),
    // not after waiting for a "packet" it only seems to announce.
    if (!conn.protocolState.connected && buffer.length > 0 && buffer[0] !== 0x10) return -1;
    // The size limit is the stream's (it reports PACKAGE_TOO_LARGE, which the gateway tells MQTT 5 clients).
    return mqttPacketLength(buffer);
  },
  decode(packet: Buffer, conn: ProtocolConnection<MqttStreamState>): Buffer {
    conn.protocolState.connected = true;
    return packet;
  },
  encode(message: unknown): Buffer {
    if (Buffer.isBuffer(message)) return message;
    if (message instanceof Uint8Array) return Buffer.from(message.buffer, message.byteOffset, message.byteLength);
    if (typeof message === 'object' && message !== null && 'cmd' in message) return encodeMqttPacket(message as Packet, 4);
    throw new TypeError('an MQTT connection sends encoded packets (Buffer) or packet objects');
  },
  createState: () => ({ connected: false }),
  exportState: (state) => ({ connected: state.connected }),
  importState: (data) => ({ connected: (data as MqttStreamState | null)?.connected === true }),
};

/** Per-connection state of the `mqtt` stream protocol. */
export interface MqttStreamState {
  /** The first packet (which must be a CONNECT) has arrived. */
  connected: boolean;
}

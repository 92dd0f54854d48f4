/**
 * Events of the gatewayworker MQTT peer: a minimal broker on Gateway.subscribe / Gateway.publish
 * (the logic of test/fixtures/mqtt/Events.ts, MQTT part): CONNACK, SUBACK after subscribing,
 * PUBLISH to the topic's subscribers on every gateway, PUBACK (QoS 1) / PUBREC (QoS 2) after the
 * publish was handed on. No auth, no retained store, no persistence (the driver connects with
 * clean sessions, so the fixture's persistent-session keeping and its `unacked/…` publish on close
 * are left out) — like the Aedes and mosquitto peers as the harness runs them.
 */
import type { Context, MqttVersion } from '../../runtime/src/index.js';

// The same runtime module as the worker that loads this file (see gw-mqtt.ts).
const { Gateway, decodeMqttPacket, encodeMqttPacket } = (await import(process.env.BENCH_RUNTIME ?? '../../runtime/src/index.js')) as typeof import('../../runtime/src/index.js');

export async function onMessage(clientId: string, message: string | Buffer, ctx: Context): Promise<void> {
  if (typeof message === 'string') return;
  const version = (ctx.session.version as MqttVersion | undefined) ?? 4;
  const packet = decodeMqttPacket(message, version);
  const reply = (p: Parameters<typeof encodeMqttPacket>[0]): Promise<void> => ctx.send(encodeMqttPacket(p, version));
  switch (packet.cmd) {
    case 'connect': {
      const v = packet.protocolVersion ?? 4;
      ctx.session.version = v;
      ctx.session.mqttId = packet.clientId;
      await ctx.send(encodeMqttPacket(v === 5 ? { cmd: 'connack', sessionPresent: false, reasonCode: 0 } : { cmd: 'connack', sessionPresent: false, returnCode: 0 }, v));
      break;
    }
    case 'subscribe': {
      const granted: number[] = [];
      for (const sub of packet.subscriptions) {
        await Gateway.subscribe(clientId, sub.topic, { qos: sub.qos, noLocal: sub.nl, retainAsPublished: sub.rap, subscriptionId: packet.properties?.subscriptionIdentifier as number | undefined });
        granted.push(sub.qos);
      }
      await reply({ cmd: 'suback', messageId: packet.messageId ?? 0, granted });
      break;
    }
    case 'unsubscribe':
      for (const filter of packet.unsubscriptions) await Gateway.unsubscribe(clientId, filter);
      await reply({ cmd: 'unsuback', messageId: packet.messageId ?? 0, granted: version === 5 ? packet.unsubscriptions.map(() => 0) : [] });
      break;
    case 'publish':
      await Gateway.publish(packet.topic, Buffer.from(packet.payload), { qos: packet.qos, retain: packet.retain, from: clientId, properties: packet.properties });
      if (packet.qos === 1) await reply({ cmd: 'puback', messageId: packet.messageId ?? 0 });
      if (packet.qos === 2) await reply({ cmd: 'pubrec', messageId: packet.messageId ?? 0 });
      break;
    case 'disconnect':
      ctx.session.clean = true;
      await ctx.close();
      break;
    default:
      break;
  }
}

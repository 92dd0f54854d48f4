/**
 * The MQTT hub's business logic. Preview: this stub only logs; topic routing, retained messages
 * and the per-packet handlers come with the MQTT hub template.
 */
export async function onMessage(clientId: string, message: unknown): Promise<void> {
  console.log('message from', clientId, message);
}

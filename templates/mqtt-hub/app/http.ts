/**
 * The HTTP API, on the WebSocket gateway's port beside the dashboard (web/). It runs in the gateway
 * process and reaches the cluster like any other program would: a GatewayClient (sessions,
 * presence, publish) and the store client (offline queues).
 *
 *   GET  /api/devices               online MQTT clients: [{ id, clientId, ip, connectedAt, lastSeen, protocol, version }]
 *   POST /api/devices/<id>/command  JSON body (≤ 64 KB) → published to devices/<id>/command at QoS 1
 *                                   → 202 { topic, delivered } (delivered: the device is online now)
 *
 * With ADMIN_TOKEN set, every /api/ request needs `Authorization: Bearer <token>`; without it, only
 * requests addressed to localhost (or API_HOSTS) are answered. Requests that change something must
 * not come from another origin, and a POST body must be `application/json` (http-guard.ts says
 * why). Errors are JSON: `{ "error": "…" }`. Anything outside /api/ is left to the static files.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GatewayClient, GatewayQueryTimeoutError, GatewayUnavailableError, describeError, log } from 'gatewayworker';
import { config } from './config.ts';
import { isValidDeviceId } from './credentials.ts';
import { deviceGroup, type HubSession } from './handlers/context.ts';
import { checkRequest } from './http-guard.ts';
import { store } from './handlers/store.ts';

/** Largest command body accepted. */
const MAX_BODY = 64 * 1024;

/** An online MQTT connection, as `GET /api/devices` lists it. */
export interface DeviceInfo {
  /** The device id (its username); null for an anonymous client. */
  id: string | null;
  /** Its MQTT client identifier. */
  clientId: string;
  ip: string;
  /** ISO 8601 times: when it connected, and its last packet other than a keep-alive ping (to within 5 s). */
  connectedAt: string;
  lastSeen: string;
  protocol: 'mqtt' | 'mqtt+ws';
  /** MQTT version: `3.1`, `3.1.1` or `5.0`. */
  version: string;
}

/** A request that ends with an HTTP error status and a JSON `{ error }`. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

let cluster: GatewayClient | null = null;

/** The gateways, through a GatewayClient made on first use (one per gateway process). */
function gateways(): GatewayClient {
  cluster ??= new GatewayClient({
    registerAddress: process.env.{{envPrefix}}REGISTER_ADDRESS ?? '127.0.0.1:{{registerPort}}',
    secretKey: process.env.SECRET_KEY,
    name: '{{appName}} HTTP API',
  });
  return cluster;
}

/**
 * The gateway's `httpHandler`: answers `/api/…` and returns true; returns false for anything else
 * (the dashboard's static files).
 */
export async function httpHandler(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
  const url = new URL(request.url ?? '/', 'http://localhost');
  if (url.pathname !== '/api' && !url.pathname.startsWith('/api/')) return false;
  try {
    authorize(request);
    const refusal = checkRequest(request, config);
    if (refusal) throw new HttpError(refusal.status, refusal.message);
    if (url.pathname === '/api/devices') {
      allow(request, 'GET');
      send(response, 200, await onlineDevices());
      return true;
    }
    const command = /^\/api\/devices\/([^/]+)\/command$/.exec(url.pathname);
    if (command) {
      allow(request, 'POST');
      send(response, 202, await sendCommand(decodeId(command[1]), request));
      return true;
    }
    throw new HttpError(404, `no such API route: ${request.method} ${url.pathname}`);
  } catch (error) {
    if (error instanceof HttpError) send(response, error.status, { error: error.message }, error.headers);
    else if (error instanceof GatewayUnavailableError || error instanceof GatewayQueryTimeoutError) {
      send(response, 503, { error: `the gateways cannot be reached: ${error.message}` });
    } else {
      log.error('HTTP API request failed', { url: request.url, error: describeError(error) });
      send(response, 500, { error: `internal error: ${(error as Error).message ?? String(error)}` });
    }
    return true;
  }
}

/** Every MQTT connection that completed its CONNECT, by device id then client id. */
async function onlineDevices(): Promise<DeviceInfo[]> {
  const sessions = await gateways().getAllClientSessions();
  const devices: DeviceInfo[] = [];
  for (const value of Object.values(sessions)) {
    const session = value as HubSession | null;
    if (session?.connected !== true || typeof session.mqttClientId !== 'string') continue;
    devices.push({
      id: session.deviceId ?? null,
      clientId: session.mqttClientId,
      ip: session.ip ?? '',
      connectedAt: new Date(session.connectedAt ?? 0).toISOString(),
      lastSeen: new Date(session.lastSeen ?? session.connectedAt ?? 0).toISOString(),
      protocol: session.transport ?? 'mqtt',
      version: session.version === 5 ? '5.0' : session.version === 3 ? '3.1' : '3.1.1',
    });
  }
  return devices.sort((a, b) => (a.id ?? '').localeCompare(b.id ?? '') || a.clientId.localeCompare(b.clientId));
}

/**
 * Publishes the request body to `devices/<id>/command` at QoS 1: live to the device's subscribed
 * connections, and queued for its persistent session if it is offline. The body is JSON (the
 * guard saw to the Content-Type) and must parse; its bytes are published as sent, with
 * `application/json` as the MQTT 5 content type.
 */
async function sendCommand(id: string, request: IncomingMessage): Promise<{ topic: string; delivered: boolean }> {
  const body = await readBody(request);
  try {
    JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new HttpError(400, `the body is not valid JSON: ${(error as Error).message}`);
  }
  const topic = `devices/${id}/command`;
  const properties = { contentType: 'application/json' };
  const client = gateways();
  const delivered = (await client.getClientIdCountByGroup(deviceGroup(id))) > 0;
  await client.publish(topic, body, { qos: 1, properties });
  try {
    await store().queueForOffline({ topic, payload: body, qos: 1, properties });
  } catch (error) {
    throw new HttpError(503, `the store cannot be reached (the command went only to online subscribers): ${(error as Error).message}`);
  }
  log.info('command sent over HTTP', { device: id, bytes: body.length, delivered });
  return { topic, delivered };
}

/** With ADMIN_TOKEN set: the request must carry it as a Bearer token (compared in constant time). */
function authorize(request: IncomingMessage): void {
  const token = config.adminToken;
  if (!token) return;
  const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
  const digest = (value: string) => createHash('sha256').update(value).digest();
  if (!match || !timingSafeEqual(digest(match[1].trim()), digest(token))) {
    throw new HttpError(401, 'missing or wrong bearer token (Authorization: Bearer <ADMIN_TOKEN>)', { 'WWW-Authenticate': 'Bearer' });
  }
}

function allow(request: IncomingMessage, method: string): void {
  if (request.method !== method) throw new HttpError(405, `${request.method} not allowed here: use ${method}`, { Allow: method });
}

function decodeId(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, 'malformed device id in the URL');
  }
  if (!isValidDeviceId(id)) throw new HttpError(400, `invalid device id ${JSON.stringify(id.slice(0, 100))}: 1-64 characters of A-Z a-z 0-9 _ . -`);
  return id;
}

/** The request body, up to {@link MAX_BODY} bytes (413 past it). */
async function readBody(request: IncomingMessage): Promise<Buffer> {
  const length = Number(request.headers['content-length']);
  // The rest of an oversized body is not read: the connection closes after the answer.
  const tooLarge = () => new HttpError(413, `the body is larger than ${MAX_BODY} bytes`, { Connection: 'close' });
  if (Number.isFinite(length) && length > MAX_BODY) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const bytes = chunk as Buffer;
    size += bytes.length;
    if (size > MAX_BODY) throw tooLarge();
    chunks.push(bytes);
  }
  return Buffer.concat(chunks);
}

function send(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const json = JSON.stringify(body);
  response.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(json),
    'Cache-Control': 'no-store',
    ...headers,
  });
  response.end(json);
}

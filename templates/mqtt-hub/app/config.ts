/**
 * The hub's settings, from environment variables (defaults in brackets). Shared by every role, so
 * the gateways, the workers, the store and `npm run device:add` agree on them.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root: this file lives in Applications/<App>/. */
export const projectRoot = fileURLToPath(new URL('../../', import.meta.url));

const num = (value: string | undefined, fallback: number): number => {
  const n = Number(value);
  return value === undefined || value === '' || !Number.isFinite(n) ? fallback : n;
};

const bool = (value: string | undefined, fallback: boolean): boolean => {
  if (value === undefined || value === '') return fallback;
  return ['1', 'true', 'yes', 'on'].includes(value.trim().toLowerCase());
};

const list = (value: string | undefined, fallback: string[]): string[] =>
  value === undefined ? fallback : value.split(',').map((item) => item.trim()).filter((item) => item !== '');

/** Upper bound of MAX_QUEUED_BYTES_PER_SESSION (see `maxQueuedBytesPerSession`). */
const MAX_SESSION_BYTES = 32 * 1024 * 1024;

export const config = {
  /**
   * Where devices.json (credentials) and store.json (retained messages, persistent sessions) live
   * [`data` under the project root; a relative DATA_DIR is taken from the project root too].
   */
  dataDir: path.resolve(projectRoot, process.env.{{envPrefix}}DATA_DIR || 'data'),
  /**
   * Let clients connect without username and password [false]. Anonymous clients may only use
   * `sharedTopics`; a device that does send credentials must still send valid ones.
   */
  allowAnonymous: bool(process.env.{{envPrefix}}ALLOW_ANONYMOUS, false),
  /**
   * Topic filters every device (and anonymous client) may publish to and subscribe to, besides its
   * own `devices/<id>/#` [`broadcast/#`]. SHARED_TOPICS is comma-separated; set it empty for none.
   */
  sharedTopics: list(process.env.{{envPrefix}}SHARED_TOPICS, ['broadcast/#']),
  /** host:port of the store process (retained messages, persistent sessions) [`127.0.0.1:{{storePort}}`]. */
  storeAddress: process.env.{{envPrefix}}STORE_ADDRESS || '127.0.0.1:{{storePort}}',
  /**
   * QoS 1/2 messages kept for one offline device [1000]; past it the oldest are dropped (and
   * counted in the store's log line when the device comes back).
   */
  maxQueuedPerSession: Math.max(1, Math.floor(num(process.env.{{envPrefix}}MAX_QUEUED_PER_SESSION, 1000))),
  /**
   * Bytes (payloads and topics) kept for one session, queued and in-flight messages together
   * [16 MiB]; past it the oldest are dropped like past `maxQueuedPerSession`. At most 32 MiB: a
   * session travels between the store and a worker in one 64 MiB frame, base64 included.
   */
  maxQueuedBytesPerSession: Math.min(MAX_SESSION_BYTES, Math.max(1024, Math.floor(num(process.env.{{envPrefix}}MAX_QUEUED_BYTES_PER_SESSION, 16 * 1024 * 1024)))),
  /**
   * Persistent sessions one device keeps [100] (anonymous clients share one count): a device
   * connecting with ever new client ids and a persistent session would otherwise fill the store.
   * Past it, its sessions offline the longest end.
   */
  maxSessionsPerDevice: Math.max(1, Math.floor(num(process.env.{{envPrefix}}MAX_SESSIONS_PER_DEVICE, 100))),
  /** Retained topics the store keeps [10000]; past it, new retained topics are not kept (updates and clears of existing ones still are). */
  maxRetained: Math.max(1, Math.floor(num(process.env.{{envPrefix}}MAX_RETAINED, 10000))),
  /**
   * Bearer token the HTTP API (`/api/…`) requires [none]. Without one the API is open to anyone who
   * can reach the WebSocket port: set it whenever that port is reachable from outside this host.
   */
  adminToken: process.env.{{envPrefix}}ADMIN_TOKEN || undefined,
  /**
   * Without `adminToken`, the HTTP API answers only requests addressed (Host header) to a loopback
   * name — localhost, 127.0.0.1, [::1] — or to one of these [none]: a web page elsewhere cannot
   * reach it through DNS rebinding. API_HOSTS is comma-separated host names or addresses.
   */
  apiHosts: list(process.env.{{envPrefix}}API_HOSTS, []).map((host) => host.toLowerCase()),
  /**
   * Seconds an MQTT 3.1.1 `clean session = false` session outlives its connection [604800 = 7
   * days]: its subscriptions and QoS 1/2 messages are kept that long. (MQTT 5 clients say how long
   * themselves, with the Session Expiry Interval.)
   */
  sessionExpiryDefault: Math.max(0, Math.floor(num(process.env.{{envPrefix}}SESSION_EXPIRY_DEFAULT, 7 * 24 * 3600))),
};

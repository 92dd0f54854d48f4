/**
 * What keeps a web browser from being used against the HTTP API. A page on another site can make
 * the browser send requests to the hub (CSRF), and a page whose domain its owner points at the
 * hub's address can even read the answers (DNS rebinding) — without any token, the API would do
 * what they ask. So:
 *
 * - without ADMIN_TOKEN, a request must be addressed (its Host header) to a loopback name or to a
 *   name of API_HOSTS: a rebinding page sends its own domain there;
 * - a request that changes something (not GET or HEAD) is refused when the browser says it comes
 *   from another origin (`Origin`, `Sec-Fetch-Site`);
 * - a POST must be `Content-Type: application/json`: a browser sends that to another site only
 *   after asking it (a CORS preflight), which the hub never grants; a plain HTML form cannot.
 *
 * With ADMIN_TOKEN set a browser cannot make these requests at all (it has no token to add, and
 * adding one needs the preflight too); the Origin and Content-Type checks stay, the Host check
 * is left out so the hub can be reached by any name.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { isIP } from 'node:net';

/** Why a request is refused: the HTTP status and a message for its JSON error. */
export interface Refusal {
  status: 403 | 415;
  message: string;
}

/** What {@link checkRequest} looks at. */
export interface GuardOptions {
  /** ADMIN_TOKEN, if set (then the Host header is not checked). */
  adminToken?: string;
  /** API_HOSTS: host names besides the loopback ones the API answers to without a token (lowercase). */
  apiHosts: readonly string[];
}

/** A Host header: a name or IPv4 address, or an IPv6 one in brackets, and maybe a port. */
const HOST = /^(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;

/** The host name of a Host header value, lowercased, without port or IPv6 brackets; null if malformed. */
export function hostnameOf(host: string): string | null {
  if (!HOST.test(host)) return null;
  try {
    const { hostname } = new URL(`http://${host}`);
    if (hostname === '') return null;
    return hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  } catch {
    return null;
  }
}

/** Whether `hostname` always means this machine: localhost (and `*.localhost`), 127.0.0.0/8, ::1. */
export function isLoopback(hostname: string): boolean {
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) return true;
  if (isIP(hostname) === 4) return hostname.startsWith('127.');
  return hostname === '::1';
}

/**
 * Null if the API may answer `request`, else why not (see the top of this file). Call it for
 * every `/api/` request; the route then checks the method.
 */
export function checkRequest(request: { method?: string; headers: IncomingHttpHeaders }, options: GuardOptions): Refusal | null {
  const host = request.headers.host ?? '';
  if (!options.adminToken) {
    const hostname = hostnameOf(host);
    if (hostname === null || !(isLoopback(hostname) || options.apiHosts.includes(hostname))) {
      return {
        status: 403,
        message: `requests to this API must be addressed to localhost or a name in API_HOSTS (got Host ${JSON.stringify(host.slice(0, 100))}); or set ADMIN_TOKEN`,
      };
    }
  }
  const method = (request.method ?? 'GET').toUpperCase();
  if (method === 'GET' || method === 'HEAD') return null;
  const site = request.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    return { status: 403, message: `cross-site requests may not change anything here (Sec-Fetch-Site: ${site})` };
  }
  const origin = request.headers.origin;
  if (origin !== undefined && !sameOrigin(origin, host)) {
    return { status: 403, message: `requests from another origin may not change anything here (Origin: ${origin.slice(0, 100)})` };
  }
  if (method === 'POST') {
    const type = request.headers['content-type']?.split(';')[0].trim().toLowerCase();
    if (type !== 'application/json') return { status: 415, message: `the body must be JSON, sent as Content-Type: application/json (got ${type ?? 'none'})` };
  }
  return null;
}

/** Whether an Origin header names the site the request was addressed to (the scheme aside: a proxy may end TLS). */
function sameOrigin(origin: string, host: string): boolean {
  if (!HOST.test(host)) return false;
  try {
    const url = new URL(origin);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
    // Both through URL, so that a default port written out or left out compares equal.
    return url.host === new URL(`${url.protocol}//${host}`).host;
  } catch {
    return false; // `null` (a sandboxed page, a file) or garbage
  }
}

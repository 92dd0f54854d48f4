import net from 'node:net';

/**
 * A client id names the gateway process that holds the connection, so any process can route to
 * it without a lookup: `hex(ip) + hex(port, 4) + hex(epoch, 12) + hex(counter, 8)`.
 * The epoch is the gateway process's start time in ms, so ids are never reused after a restart.
 * IPv4 ids are 32 hex digits, IPv6 ids 56.
 */
export interface ClientIdParts {
  /** The gateway's internal address (lanIp). */
  host: string;
  /** The gateway's internal port. */
  port: number;
  /** The gateway process's epoch (ms). */
  epoch: number;
  /** The connection's number within that gateway process. */
  counter: number;
}

/** Thrown for a string that is not a client id. */
export class InvalidClientIdError extends TypeError {
  readonly code = 'ERR_GW_INVALID_CLIENT_ID';
  constructor(id: unknown) {
    super(`invalid client id ${JSON.stringify(id)}: expected 32 or 56 hex digits`);
    this.name = 'InvalidClientIdError';
  }
}

const V4_LENGTH = 32;
const V6_LENGTH = 56;
const HEX = /^[0-9a-f]+$/;

/** The fixed part of every id a gateway process hands out: host, port and epoch. */
export function clientIdPrefix(host: string, port: number, epoch: number): string {
  return hostHex(host) + port.toString(16).padStart(4, '0') + epoch.toString(16).padStart(12, '0');
}

/** Builds an id from its prefix and the connection counter. */
export function makeClientId(prefix: string, counter: number): string {
  return prefix + (counter >>> 0).toString(16).padStart(8, '0');
}

/** Takes an id apart. @throws InvalidClientIdError */
export function parseClientId(id: string): ClientIdParts {
  if (typeof id !== 'string' || (id.length !== V4_LENGTH && id.length !== V6_LENGTH) || !HEX.test(id)) {
    throw new InvalidClientIdError(id);
  }
  const hostDigits = id.length === V4_LENGTH ? 8 : 32;
  const host = id.length === V4_LENGTH ? v4FromHex(id.slice(0, 8)) : v6FromHex(id.slice(0, 32));
  return {
    host,
    port: parseInt(id.slice(hostDigits, hostDigits + 4), 16),
    epoch: parseInt(id.slice(hostDigits + 4, hostDigits + 16), 16),
    counter: parseInt(id.slice(hostDigits + 16), 16),
  };
}

/** The gateway key (`host:port`) an id routes to, without a full parse. */
export function gatewayKeyOf(id: string): string {
  const parts = parseClientId(id);
  return gatewayKey(parts.host, parts.port);
}

/** `host:port`, IPv6 in brackets: how gateways are named everywhere. */
export function gatewayKey(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Splits `host:port` / `[v6]:port`. @throws TypeError */
export function splitHostPort(address: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/i.exec(address.replace(/^[a-z]+:\/\//i, ''));
  if (!match) throw new TypeError(`invalid address "${address}": expected host:port`);
  return { host: match[1] ?? match[2], port: Number(match[3]) };
}

function hostHex(host: string): string {
  if (net.isIPv4(host)) {
    return host
      .split('.')
      .map((octet) => Number(octet).toString(16).padStart(2, '0'))
      .join('');
  }
  if (net.isIPv6(host)) return expandV6(host);
  throw new TypeError(`gateway lanIp must be an IP address, got "${host}"`);
}

function v4FromHex(hex: string): string {
  const octets: number[] = [];
  for (let i = 0; i < 8; i += 2) octets.push(parseInt(hex.slice(i, i + 2), 16));
  return octets.join('.');
}

function v6FromHex(hex: string): string {
  const groups: string[] = [];
  for (let i = 0; i < 32; i += 4) groups.push(parseInt(hex.slice(i, i + 4), 16).toString(16));
  // Canonical compressed form, so the key matches what the gateway announced.
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

function expandV6(host: string): string {
  let [head, tail] = host.split('::') as [string, string | undefined];
  if (host.includes('.')) {
    // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
    const v4 = host.slice(host.lastIndexOf(':') + 1);
    const [a, b, c, d] = v4.split('.').map(Number);
    const groups = `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
    if (tail !== undefined) tail = tail.replace(v4, groups);
    else head = head.replace(v4, groups);
  }
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const missing = 8 - left.length - right.length;
  const all = [...left, ...Array<string>(tail !== undefined ? missing : 0).fill('0'), ...right];
  return all.map((group) => group.padStart(4, '0')).join('');
}

/** Canonical text form of an IP (so `::1` and `0:0::1` name the same gateway). */
export function canonicalHost(host: string): string {
  return net.isIPv6(host) ? v6FromHex(expandV6(host)) : host;
}

import { BUILT_IN_TRANSPORT_SCHEMES, getProtocol, type Protocol } from '../protocols/index.js';

/** Where a socket listens: the master binds it, the children accept on it. */
export type ListenSpec =
  | { kind: 'tcp'; host: string; port: number; backlog?: number }
  | { kind: 'unix'; path: string; backlog?: number };

/** A Worker or AsyncConnection address, taken apart. */
export interface ParsedAddress {
  scheme: string;
  /** `stream` frames bytes with `protocol`; `websocket` uses ws. */
  family: 'stream' | 'websocket';
  protocol: Protocol | null;
  /** The scheme itself asks for TLS (`wss`, `ssl`). */
  tls: boolean;
  endpoint: ListenSpec;
  /** Path and query of ws:// client addresses. */
  path: string;
}

/**
 * Parses `scheme://host:port` (IPv6 as `[::1]:port`) and `unix:///path`.
 * @throws TypeError with the offending address when it cannot be used.
 */
export function parseAddress(address: string, protocolOverride?: string | Protocol): ParsedAddress {
  const match = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(address);
  if (!match) throw new TypeError(`invalid address "${address}": expected scheme://host:port or unix:///path`);
  const scheme = match[1].toLowerCase();
  const rest = match[2];
  let endpoint: ListenSpec;
  let path = '/';
  if (scheme === 'unix') {
    if (!rest.startsWith('/')) throw new TypeError(`invalid address "${address}": unix sockets need an absolute path (unix:///tmp/app.sock)`);
    endpoint = { kind: 'unix', path: rest };
  } else {
    const hostPort = /^(\[[0-9a-f:.]+\]|[^:/?#[\]]+):(\d{1,5})([/?].*)?$/i.exec(rest);
    if (!hostPort) throw new TypeError(`invalid address "${address}": expected ${scheme}://host:port`);
    const port = Number(hostPort[2]);
    if (port > 65535) throw new TypeError(`invalid address "${address}": port ${port} is out of range`);
    endpoint = { kind: 'tcp', host: hostPort[1].replace(/^\[|\]$/g, ''), port };
    path = hostPort[3] ?? '/';
  }
  // `<protocol>+ws://` carries a protocol's bytes in WebSocket messages (`mqtt+ws://`);
  // `mqtts://` is MQTT over TLS.
  const carried = /^(.+)\+(ws|wss)$/.exec(scheme);
  const transport = carried ? carried[2] : scheme === 'mqtts' ? 'ssl' : scheme;
  const protocolName = carried ? carried[1] : scheme === 'mqtts' ? 'mqtt' : scheme;
  const websocket = transport === 'websocket' || transport === 'ws' || transport === 'wss';
  let protocol: Protocol | null = null;
  const override = typeof protocolOverride === 'string' ? lookup(protocolOverride, address) : protocolOverride;
  if (override) protocol = override;
  else if (!BUILT_IN_TRANSPORT_SCHEMES.has(protocolName)) protocol = lookup(protocolName, address);
  return {
    scheme,
    family: websocket ? 'websocket' : 'stream',
    protocol,
    tls: transport === 'wss' || transport === 'ssl',
    endpoint,
    path,
  };
}

function lookup(name: string, address: string): Protocol {
  const protocol = getProtocol(name);
  if (!protocol) {
    throw new TypeError(`unknown protocol "${name}" in "${address}": built in are tcp, text, frame, mqtt, websocket, unix; register others with registerProtocol()`);
  }
  return protocol;
}

/** `scheme://host:port` with the port actually bound. */
export function formatListen(scheme: string, endpoint: ListenSpec, port?: number): string {
  if (endpoint.kind === 'unix') return `${scheme}://${endpoint.path}`;
  const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
  return `${scheme}://${host}:${port ?? endpoint.port}`;
}

import { AsyncConnection } from '../worker/AsyncConnection.js';
import type { Connection } from '../worker/Connection.js';
import { log } from '../worker/log.js';
import { clientProof, nonce, proofsMatch, serverProof } from './auth.js';
import { Cmd, decodeJson, encodeJson } from './codec.js';

/** Seconds between keep-alive pings on an idle link; a link silent for 3 intervals is dropped. */
export const LINK_PING_INTERVAL = 5;
/** Seconds a new link has to authenticate. */
const AUTH_TIMEOUT = 5;
/** Default bound on bytes queued for one internal link. */
export const DEFAULT_LINK_BUFFER = 64 * 1024 * 1024;
/**
 * Largest frame either side of an internal link accepts. A client event carries a whole client
 * package plus its session, so a gateway's `maxPackageSize` must stay well below this (the
 * gateway checks it at construction): a frame over the limit would close the link.
 */
export const LINK_MAX_PACKAGE = 64 * 1024 * 1024;

/** What each side tells the other in the handshake. */
export interface PeerInfo {
  /** `register`, `gateway`, `worker` or `client` (a GatewayClient). */
  role: string;
  /** Worker name and id, for logs. */
  name: string;
  [key: string]: unknown;
}

/**
 * One authenticated internal link over a `frame` connection. Frames written in one event-loop
 * turn leave in one socket write.
 */
export class Link {
  /** What the other side said about itself in the handshake. */
  peer: PeerInfo = { role: 'unknown', name: 'unknown' };
  authenticated = false;
  /** Set when this side dropped the link because the peer went silent (a partition, not a crash). */
  droppedForSilence = false;
  onFrame: (cmd: number, body: Buffer) => void = () => {};
  private queue: Buffer[] = [];
  private queued = 0;
  private flushScheduled = false;
  private lastHeard = Date.now();
  private pingTimer: NodeJS.Timeout | null = null;

  constructor(readonly conn: Connection) {}

  /** Queues one encoded frame; all frames of this turn are written together. */
  write(frame: Buffer): void {
    this.queue.push(frame);
    this.queued += frame.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Writes what is queued now: corked, so the frames leave in one writev without being copied together. */
  flush(): void {
    this.flushScheduled = false;
    if (this.queue.length === 0) return;
    const frames = this.queue;
    const bytes = this.queued;
    this.queue = [];
    this.queued = 0;
    let dropped = 0;
    const batch = frames.length > 1;
    if (batch) this.conn.cork();
    for (const frame of frames) if (this.conn.send(frame, true) === false) dropped++;
    if (batch) this.conn.uncork();
    if (dropped > 0 && this.conn.status === 'established') {
      log.error('internal link send buffer full: frames dropped', { peer: this.peer.name, frames: dropped, bytes });
    }
  }

  get open(): boolean {
    return this.conn.status === 'established';
  }

  close(): void {
    this.flush();
    this.stopPing();
    this.conn.close();
  }

  /** @internal called for every frame: keeps the link alive. */
  heard(): void {
    this.lastHeard = Date.now();
  }

  /** Pings while idle and drops a link whose peer went silent (a partition shows as silence). */
  startPing(): void {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > LINK_PING_INTERVAL * 3000) {
        log.warn('internal link silent, dropping it', { peer: this.peer.name });
        this.droppedForSilence = true;
        this.conn.destroy();
        return;
      }
      this.write(encodeJson(Cmd.PING, 0));
    }, LINK_PING_INTERVAL * 1000);
    this.pingTimer.unref();
  }

  stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }
}

/** Hooks of the accepting side. */
export interface AcceptOptions {
  secret: string;
  /** What this side says about itself. */
  self: PeerInfo;
  /** The peer proved the secret. */
  onAuthenticated(link: Link): void;
  /** Authenticated link closed. */
  onClosed(link: Link): void;
}

/**
 * Runs the accepting side of the handshake on a fresh connection of an internal `frame://`
 * Worker. Returns the handlers to wire into that Worker's callbacks.
 */
export function acceptLink(conn: Connection, options: AcceptOptions): { onMessage(data: Buffer): void; onClose(): void } {
  const link = new Link(conn);
  const serverNonce = nonce();
  link.write(encodeJson(Cmd.HELLO, { nonce: serverNonce, ...options.self }));
  const timer = setTimeout(() => {
    if (!link.authenticated) {
      log.warn('internal link did not authenticate in time, closed', { remote: `${conn.remoteAddress}:${conn.remotePort}` });
      conn.destroy();
    }
  }, AUTH_TIMEOUT * 1000);
  timer.unref();
  return {
    onMessage(body: Buffer): void {
      link.heard();
      const cmd = body[0];
      if (link.authenticated) {
        if (cmd !== Cmd.PING) link.onFrame(cmd, body);
        return;
      }
      if (cmd !== Cmd.AUTH) return refuse(conn, `command ${cmd} before authentication`);
      let auth: { nonce?: unknown; proof?: unknown; peer?: PeerInfo };
      try {
        auth = decodeJson(body);
      } catch {
        return refuse(conn, 'malformed AUTH');
      }
      const peer = auth.peer;
      if (typeof auth.nonce !== 'string' || !peer || typeof peer.role !== 'string') return refuse(conn, 'malformed AUTH');
      if (!proofsMatch(clientProof(options.secret, serverNonce, auth.nonce, peer.role), auth.proof)) {
        return refuse(conn, 'wrong secret key');
      }
      clearTimeout(timer);
      link.peer = peer;
      link.authenticated = true;
      link.write(encodeJson(Cmd.AUTH_OK, { proof: serverProof(options.secret, serverNonce, auth.nonce) }));
      link.startPing();
      options.onAuthenticated(link);
    },
    onClose(): void {
      clearTimeout(timer);
      link.stopPing();
      if (link.authenticated) options.onClosed(link);
    },
  };
}

function refuse(conn: Connection, reason: string): void {
  log.warn(`internal link refused: ${reason}`, { remote: `${conn.remoteAddress}:${conn.remotePort}` });
  conn.destroy();
}

/** Hooks of the connecting side. */
export interface DialOptions {
  secret: string;
  self: PeerInfo;
  /** Authenticated (again, after each reconnect); `peer` is what the other side said in HELLO. */
  onOpen(link: Link): void;
  /** The link went down (it reconnects by itself unless {@link DialedLink.close} was called). */
  onDown(link: Link): void;
  /** Seconds between reconnect attempts. Default 1. */
  retry?: number;
  /** Local address to dial from. */
  localAddress?: string;
  /** Largest frame accepted from the peer. Default {@link LINK_MAX_PACKAGE}. */
  maxPackageSize?: number;
}

/** Milliseconds a dialled peer may be unreachable before it is worth a warning. */
const GRACE_MS = 5000;

/** A link this process keeps up to `host:port`, reconnecting after failures. */
export interface DialedLink {
  readonly link: Link;
  close(): void;
}

/** Connects to an internal port, authenticates, and reconnects every `retry` seconds when it drops. */
export function dialLink(address: string, options: DialOptions): DialedLink {
  const conn = new AsyncConnection<Buffer>(`frame://${address}`, {
    maxSendBufferSize: DEFAULT_LINK_BUFFER,
    maxPackageSize: options.maxPackageSize ?? LINK_MAX_PACKAGE,
    localAddress: options.localAddress,
  });
  const link = new Link(conn);
  let closed = false;
  let clientNonce = '';
  let warned = false;
  let failingSince = 0;
  conn.onConnect = () => {
    failingSince = 0;
    link.authenticated = false;
    link.heard();
  };
  conn.onMessage = (_c, body) => {
    link.heard();
    const cmd = body[0];
    if (link.authenticated) {
      if (cmd !== Cmd.PING) link.onFrame(cmd, body);
      return;
    }
    try {
      if (cmd === Cmd.HELLO) {
        const hello = decodeJson<PeerInfo & { nonce: string }>(body);
        clientNonce = nonce();
        link.peer = hello;
        const proof = clientProof(options.secret, hello.nonce, clientNonce, options.self.role);
        conn.send(encodeJson(Cmd.AUTH, { nonce: clientNonce, proof, peer: options.self }), true);
        (link.peer as PeerInfo & { serverNonce?: string }).serverNonce = hello.nonce;
      } else if (cmd === Cmd.AUTH_OK) {
        const ok = decodeJson<{ proof: string }>(body);
        const serverNonce = String((link.peer as PeerInfo & { serverNonce?: string }).serverNonce);
        if (!proofsMatch(serverProof(options.secret, serverNonce, clientNonce), ok.proof)) {
          log.error('internal peer failed to prove the secret key; disconnecting', { address });
          conn.destroy();
          return;
        }
        link.authenticated = true;
        warned = false;
        link.startPing();
        options.onOpen(link);
      }
    } catch {
      conn.destroy();
    }
  };
  conn.onError = (_c, _code, message) => {
    // Peers start in any order: a refusal during the first seconds is normal, a longer one is news.
    failingSince ||= Date.now();
    if (warned || Date.now() - failingSince < GRACE_MS) return;
    log.warn(`internal link to ${address}: ${message}; retrying every ${options.retry ?? 1} s`, { peer: options.self.role });
    warned = true;
  };
  conn.onClose = () => {
    link.stopPing();
    if (link.authenticated) {
      link.authenticated = false;
      options.onDown(link);
    }
    if (!closed) conn.reconnect(options.retry ?? 1);
  };
  conn.connect();
  return {
    link,
    close(): void {
      closed = true;
      link.close();
    },
  };
}

/**
 * The shared listening socket. The master binds it once and never accepts on it; every child
 * of the worker receives the handle over IPC and accepts on it itself (cluster's SCHED_NONE),
 * so connections never cross the IPC channel (DESIGN.md §3).
 */
import fs from 'node:fs';
import net from 'node:net';
import util from 'node:util';

/** What a Worker listens on. */
export type ListenSpec =
  | { kind: 'tcp'; host: string; port: number; backlog?: number }
  | { kind: 'unix'; path: string; backlog?: number };

/** The raw libuv handle (TCP or Pipe) that `child.send(msg, handle)` accepts. */
export interface ServerHandle {
  getsockname?(out: { address?: string; port?: number; family?: string }): number;
  close(callback?: () => void): void;
}

/** A bound handle and where it really listens (port 0 resolved). */
export interface SharedHandle {
  spec: ListenSpec;
  handle: ServerHandle;
  /** Resolved port (tcp) or null (unix). */
  port: number | null;
  close(): void;
}

type CreateServerHandle = (address: string, port: number, addressType: number) => ServerHandle | number;

/** Node's internal binder (used by cluster); not in @types/node. */
const createServerHandle = (net as unknown as { _createServerHandle: CreateServerHandle })._createServerHandle;

function listenError(errno: number, where: string, workerName: string): Error {
  const code = util.getSystemErrorName(errno);
  return Object.assign(new Error(`listen ${code} ${where} (worker "${workerName}")`), { code, errno });
}

/** Bind-time checks miss a live listener (SO_REUSEADDR), so try an exclusive listen first. */
function probeTcp(host: string, port: number): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(null)));
  });
}

/** A socket file nobody answers on is left over from a crash; one that answers is in use. */
function isLiveSocket(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function removeStaleSocket(path: string, workerName: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw listenError(-17 /* EEXIST */, path, workerName);
  if (await isLiveSocket(path)) throw listenError(-98 /* EADDRINUSE */, path, workerName);
  fs.unlinkSync(path);
}

/**
 * Bind (without accepting) the socket described by `spec`.
 * @throws Error `listen <CODE> <address> (worker "<name>")` when the address cannot be used.
 */
export async function createSharedHandle(spec: ListenSpec, workerName: string): Promise<SharedHandle> {
  if (spec.kind === 'unix') {
    await removeStaleSocket(spec.path, workerName);
    const result = createServerHandle(spec.path, -1, -1);
    if (typeof result === 'number') throw listenError(result, spec.path, workerName);
    // libuv unlinks the socket file when a bound Pipe closes.
    return { spec, handle: result, port: null, close: () => result.close() };
  }
  const where = `${spec.host}:${spec.port}`;
  if (spec.port !== 0) {
    const err = await probeTcp(spec.host, spec.port);
    if (err) {
      const errno = typeof err.errno === 'number' ? err.errno : -98;
      throw listenError(errno, where, workerName);
    }
  }
  const addressType = net.isIPv6(spec.host) ? 6 : 4;
  const result = createServerHandle(spec.host, spec.port, addressType);
  if (typeof result === 'number') throw listenError(result, where, workerName);
  const out: { port?: number } = {};
  const err = result.getsockname ? result.getsockname(out) : 0;
  if (err !== 0 || typeof out.port !== 'number') {
    result.close();
    throw listenError(err || -22 /* EINVAL */, where, workerName);
  }
  return { spec, handle: result, port: out.port, close: () => result.close() };
}

/** Display address with the real port: `websocket://0.0.0.0:0` → `websocket://0.0.0.0:41234`. */
export function resolvedAddress(address: string | null, shared: SharedHandle | null): string {
  if (address === null) {
    if (!shared) return 'none';
    return shared.spec.kind === 'unix' ? `unix://${shared.spec.path}` : `tcp://${shared.spec.host}:${shared.port}`;
  }
  if (shared?.port != null) return address.replace(/:\d+(\/?)$/, `:${shared.port}$1`);
  return address;
}

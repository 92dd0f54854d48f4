/**
 * The contract between the master and its children, carried over Node's IPC channel
 * (`child_process.fork`). Every message has a `gw` tag so that user code sharing the
 * channel (process.send) is never mistaken for ours.
 */

/** Environment variable that marks a process as a child: `"<workerIndex>:<workerId>"`. */
export const CHILD_ENV = 'GATEWAYWORKER_CHILD';

/** One row of `status`: what a child reports about itself. */
export interface ProcessStatus {
  pid: number;
  /** Worker name. */
  name: string;
  /** Worker id, 0…count-1. */
  id: number;
  /** What the process listens on, e.g. `websocket://0.0.0.0:8080`, or `none`. */
  listening: string;
  /** Resident set size in bytes. */
  memory: number;
  connections: number;
  /** Sends dropped because a send buffer was full or the connection was gone. */
  sendFail: number;
  timers: number;
  /** Messages received since the process started. */
  totalRequest: number;
  /** Messages received during the last full second. */
  qps: number;
  /** Event-loop utilisation over the last second, 0…1. */
  eventLoop: number;
  /** Process start time, ms since the epoch. */
  startedAt: number;
}

/** One row of `connections`. */
export interface ConnectionInfo {
  pid: number;
  worker: string;
  /** Connection id, unique within its process. */
  id: number;
  protocol: string;
  /** Transport: tcp, ssl or unix. */
  transport: string;
  remoteAddress: string;
  localAddress: string;
  bytesRead: number;
  bytesWritten: number;
  /** Bytes waiting in the send buffer. */
  sendBuffer: number;
  status: string;
}

/** Messages the master sends to a child. */
export type MasterMessage =
  /** Sent with the shared listening handle (or `handle: false` when the worker listens on nothing). */
  | { gw: 'listen'; handle: boolean }
  | { gw: 'stop'; graceful: boolean }
  /** Reload: a reloadable worker stops (as `stop`) and the master starts a new one; others get `onWorkerReload`. */
  | { gw: 'reload'; graceful: boolean }
  | { gw: 'status'; req: number }
  | { gw: 'connections'; req: number };

/** Messages a child sends to the master. */
export type ChildMessage =
  /** After `onWorkerStart` settled and the process accepts connections. */
  | { gw: 'ready'; pid: number; listening: string }
  | { gw: 'status'; req: number; data: ProcessStatus }
  | { gw: 'connections'; req: number; data: ConnectionInfo[] }
  /** Progress while a graceful stop waits for connections to end. */
  | { gw: 'stopping'; pid: number; connections: number };

export function isMasterMessage(value: unknown): value is MasterMessage {
  return typeof value === 'object' && value !== null && typeof (value as { gw?: unknown }).gw === 'string';
}

export const isChildMessage = isMasterMessage as (value: unknown) => value is ChildMessage;

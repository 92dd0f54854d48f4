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
  | { gw: 'connections'; req: number }
  | HandoverToChild;

/**
 * Everything a moving connection carries (JSON): where it was, its parser state and the bytes
 * to parse first, the app's context. Built by the source, read by the target.
 */
export interface HandoverState {
  /** Worker index (source and target run the same Worker). */
  worker: number;
  /** How the connection is framed. */
  family: 'stream' | 'websocket';
  transport: 'tcp' | 'unix';
  /** Protocol name, checked by the target. */
  protocol: string;
  /** Exported protocol state (stream), or the negotiated sub-protocol (websocket). */
  parser: { state?: unknown; expected: number } | { subprotocol: string };
  /** Bytes (base64) the new parser reads before anything from the socket. */
  input: string;
  /** JSON of the `context` given to `transferTo` (`conn.context` follows with `released`/`start`, as it is at that moment). */
  context: string;
  maxSendBufferSize: number;
  /** `pauseRecv` was in force. */
  paused: boolean;
  bytesRead: number;
  bytesWritten: number;
}

/** A message the app sent while the connection was moving, carried to the target. */
export type CarriedSend = { raw: boolean } & ({ s: string } | { b: string } | { j: string });

/** Handover messages from the master. */
export type HandoverToChild =
  /** To the target, with the socket handle. */
  | { gw: 'handover'; op: 'offer'; mid: string; from: number; state: HandoverState }
  /** To the source: the target is ready, release the connection. */
  | { gw: 'handover'; op: 'commit'; mid: string }
  /** To the source: the move is off, keep serving. */
  | { gw: 'handover'; op: 'abort'; mid: string; code: string; message: string }
  /** To the target: the source released the connection; start reading. */
  | { gw: 'handover'; op: 'start'; mid: string; conn: string; sends: CarriedSend[]; close: 'close' | 'destroy' | null }
  /** To the target: forget the offer (never read from it). */
  | { gw: 'handover'; op: 'cancel'; mid: string };

/** Handover messages to the master. */
export type HandoverFromChild =
  /** From the source, with the socket handle. */
  | { gw: 'handover'; op: 'prepare'; mid: string; to: number; state: HandoverState }
  /** From the target. */
  | { gw: 'handover'; op: 'ready'; mid: string }
  | { gw: 'handover'; op: 'refuse'; mid: string; code: string; message: string }
  /** From the source: it closed its copy and will never read again; here is what the app sent meanwhile. */
  | { gw: 'handover'; op: 'released'; mid: string; conn: string; sends: CarriedSend[]; close: 'close' | 'destroy' | null }
  /** From the source: it took the connection back (timeout, master's commit came too late). */
  | { gw: 'handover'; op: 'abandon'; mid: string };

/** Messages a child sends to the master. */
export type ChildMessage =
  /** After `onWorkerStart` settled and the process accepts connections. */
  | { gw: 'ready'; pid: number; listening: string }
  | { gw: 'status'; req: number; data: ProcessStatus }
  | { gw: 'connections'; req: number; data: ConnectionInfo[] }
  /** Progress while a graceful stop waits for connections to end. */
  | { gw: 'stopping'; pid: number; connections: number }
  | HandoverFromChild;

export function isMasterMessage(value: unknown): value is MasterMessage {
  return typeof value === 'object' && value !== null && typeof (value as { gw?: unknown }).gw === 'string';
}

export const isChildMessage = isMasterMessage as (value: unknown) => value is ChildMessage;

/**
 * The master's part of a move: it is the only process with a channel to both sides. It checks
 * the target, forwards the raw socket handle (never wrapped in a net.Socket, which would start
 * reading) and closes its own copy, then decides: commit when the target is ready, abort when
 * it refuses, is gone or is silent. The target starts reading only after the source reported
 * `released`, so at every moment exactly one process may read the connection.
 */
import type { HandoverFromChild, HandoverToChild } from '../ipc.js';
import { HANDOVER_LIMITS, TransferErrorCode } from './errors.js';

/** One child process as the relay sees it. */
export interface RelayPeer {
  readonly pid: number;
  readonly workerIndex: number;
  readonly id: number;
  /** Sends to this child; `done(false)` when the message could not be written. */
  send(message: HandoverToChild, handle?: object, done?: (ok: boolean) => void): void;
}

/** What the relay asks of the supervisor. */
export interface RelayHost {
  /** Number of processes of a worker. */
  count(workerIndex: number): number;
  /** The running, ready process of a worker with that id, or null. */
  peer(workerIndex: number, id: number): RelayPeer | null;
}

interface Move {
  source: RelayPeer;
  target: RelayPeer;
  /** offered: waiting for the target; committing: commit sent to the source; orphaned: the source died. */
  phase: 'offered' | 'committing' | 'orphaned';
  timer: NodeJS.Timeout;
}

export class HandoverRelay {
  private readonly moves = new Map<string, Move>();

  constructor(private readonly host: RelayHost) {}

  /** Moves in progress (for tests and status). */
  get size(): number {
    return this.moves.size;
  }

  onMessage(from: RelayPeer, message: HandoverFromChild, handle: unknown): void {
    switch (message.op) {
      case 'prepare':
        this.prepare(from, message, handle);
        break;
      case 'ready': {
        const move = this.moves.get(message.mid);
        if (!move || move.target.pid !== from.pid) return;
        if (move.phase === 'orphaned') {
          // The source died after sending the handle: it can no longer read, the target may.
          this.finish(message.mid);
          move.target.send({ gw: 'handover', op: 'start', mid: message.mid, conn: '{}', sends: [], close: null });
          return;
        }
        move.phase = 'committing';
        move.source.send({ gw: 'handover', op: 'commit', mid: message.mid });
        break;
      }
      case 'refuse': {
        const move = this.moves.get(message.mid);
        if (!move || move.target.pid !== from.pid) return;
        this.finish(message.mid);
        move.source.send({ gw: 'handover', op: 'abort', mid: message.mid, code: TransferErrorCode.TARGET_REFUSED, message: `target refused: ${message.message}` });
        break;
      }
      case 'released': {
        const move = this.moves.get(message.mid);
        if (!move || move.source.pid !== from.pid) return;
        this.finish(message.mid);
        move.target.send({ gw: 'handover', op: 'start', mid: message.mid, conn: message.conn, sends: message.sends, close: message.close });
        break;
      }
      case 'abandon': {
        const move = this.moves.get(message.mid);
        if (!move || move.source.pid !== from.pid) return;
        this.finish(message.mid);
        move.target.send({ gw: 'handover', op: 'cancel', mid: message.mid });
        break;
      }
    }
  }

  /** A child exited: settle every move it took part in. */
  onExit(pid: number): void {
    for (const [mid, move] of [...this.moves]) {
      if (move.target.pid === pid) {
        // Offered: the source still owns it. Committing: the source releases it and the
        // connection ends with the target (nobody else may read it).
        this.finish(mid);
        if (move.phase === 'offered') {
          move.source.send({ gw: 'handover', op: 'abort', mid, code: TransferErrorCode.TARGET_NOT_RUNNING, message: 'target process exited' });
        }
      } else if (move.source.pid === pid) {
        if (move.phase === 'committing') {
          this.finish(mid);
          move.target.send({ gw: 'handover', op: 'start', mid, conn: '{}', sends: [], close: null });
        } else {
          move.phase = 'orphaned';
        }
      }
    }
  }

  private prepare(source: RelayPeer, message: Extract<HandoverFromChild, { op: 'prepare' }>, handle: unknown): void {
    const abort = (code: TransferErrorCode, text: string): void => {
      closeHandle(handle);
      source.send({ gw: 'handover', op: 'abort', mid: message.mid, code, message: text });
    };
    if (!handle || typeof handle !== 'object') return abort(TransferErrorCode.NOT_SUPPORTED, 'no socket handle arrived');
    const count = this.host.count(source.workerIndex);
    if (!Number.isInteger(message.to) || message.to < 0 || message.to >= count || message.to === source.id) {
      return abort(TransferErrorCode.UNKNOWN_TARGET, `no sibling process ${message.to}`);
    }
    const target = this.host.peer(source.workerIndex, message.to);
    if (!target) return abort(TransferErrorCode.TARGET_NOT_RUNNING, `process ${message.to} is not running`);
    const timer = setTimeout(() => {
      const move = this.moves.get(message.mid);
      if (!move) return;
      this.finish(message.mid);
      if (move.phase === 'offered') {
        target.send({ gw: 'handover', op: 'cancel', mid: message.mid });
        source.send({ gw: 'handover', op: 'abort', mid: message.mid, code: TransferErrorCode.TARGET_NOT_RUNNING, message: `target did not answer within ${HANDOVER_LIMITS.offerTimeoutMs} ms` });
      } else if (move.phase === 'orphaned') {
        target.send({ gw: 'handover', op: 'cancel', mid: message.mid });
      }
    }, HANDOVER_LIMITS.offerTimeoutMs);
    timer.unref();
    this.moves.set(message.mid, { source, target, phase: 'offered', timer });
    target.send({ gw: 'handover', op: 'offer', mid: message.mid, from: source.id, state: message.state }, handle, (ok) => {
      // The fd is in the target's channel (or the send failed): the master's copy goes.
      closeHandle(handle);
      if (ok) return;
      const move = this.moves.get(message.mid);
      if (!move) return;
      this.finish(message.mid);
      source.send({ gw: 'handover', op: 'abort', mid: message.mid, code: TransferErrorCode.TARGET_NOT_RUNNING, message: 'could not reach the target process' });
    });
  }

  private finish(mid: string): void {
    const move = this.moves.get(mid);
    if (move) clearTimeout(move.timer);
    this.moves.delete(mid);
  }
}

function closeHandle(handle: unknown): void {
  if (handle && typeof handle === 'object' && typeof (handle as { close?: unknown }).close === 'function') {
    try {
      (handle as { close(): void }).close();
    } catch {
      // Already closed.
    }
  }
}

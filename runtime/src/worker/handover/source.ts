/**
 * The source side of a move, in the process that owns the connection: refuse what cannot move,
 * quiesce the socket, flush, export the parser, send the handle to the master, then either
 * release the connection (commit) or take it back (abort). Until it releases, this process is
 * the owner: the target never reads before the master hears `released`.
 */
import type { Connection } from '../Connection.js';
import type { HandoverFromChild, HandoverState, HandoverToChild } from '../ipc.js';
import { WebSocketTransport } from '../../protocols/index.js';
import { encodeBytes, encodeJson, encodeSend } from './codec.js';
import { HANDOVER_LIMITS, TransferError, TransferErrorCode } from './errors.js';
import { flush, handleOf, isFullyOpen, quiesce, release, type QuiescedSocket } from './socket.js';
import { exportReceiver, receiverOf, wsSupport } from './wsReceiver.js';

/** How the source reaches the master. */
export interface SourceChannel {
  /** Sends to the master; `done(false)` when it could not be sent. */
  send(message: HandoverFromChild, handle?: object, done?: (ok: boolean) => void): void;
  /** False once the channel to the master is closed. */
  connected(): boolean;
  /**
   * The channel closed while a handle was waiting for its acknowledgement: Node then never emits
   * 'disconnect' (it waits for the handle queue to drain), so the process must be told here.
   */
  lost(): void;
}

/** How often a source waiting for the master's decision checks that the master is still there, ms. */
const WATCH_MS = 50;

/** The Worker process the connection belongs to. */
export interface SourceHost {
  readonly index: number;
  readonly id: number;
  readonly count: number;
}

type Verdict = { commit: true } | { commit: false; code: TransferErrorCode; message: string };

interface Waiting {
  resolve(verdict: Verdict): void;
  timer: NodeJS.Timeout;
}

const ERROR_CODES = new Set<string>(Object.values(TransferErrorCode));

export class SourceMoves {
  private readonly waiting = new Map<string, Waiting>();
  private seq = 0;

  constructor(
    private readonly host: SourceHost,
    private readonly channel: SourceChannel,
  ) {}

  /** Moves `conn` to process `target` of this Worker. @throws TransferError (the connection stays here). */
  async transfer(conn: Connection<never>, target: number, context: unknown): Promise<void> {
    if (!Number.isInteger(target) || target < 0 || target >= this.host.count || target === this.host.id) {
      throw new TransferError(TransferErrorCode.UNKNOWN_TARGET, `no sibling process ${target} (this is ${this.host.id} of ${this.host.count})`);
    }
    const transport = conn.beginMove();
    let quiesced: QuiescedSocket | null = null;
    try {
      const handover = transport.handover;
      if (!handover) throw new TransferError(TransferErrorCode.NOT_SUPPORTED, `${transport.protocol} connections cannot move`);
      if (transport.kind === 'ssl') throw new TransferError(TransferErrorCode.TLS, 'TLS connections cannot move (their session state lives in this process)');
      const socket = handover.socket;
      const refuse = (): void => {
        const refusal = handover.refusal();
        if (refusal) throw new TransferError(TransferErrorCode[refusal.code], refusal.message);
        if (!isFullyOpen(socket) || conn.status !== 'established') throw new TransferError(TransferErrorCode.NOT_ESTABLISHED, 'connection is closing or half-closed');
      };
      refuse();
      if (handover.family === 'websocket') {
        const why = wsSupport();
        if (why) throw new TransferError(TransferErrorCode.UNSUPPORTED_PROTOCOL, why);
      }
      const contextJson = encodeJson(context, 'context');
      encodeJson(conn.context, 'conn.context');
      // Never detach inside a 'data'/'message' handler: let the parser finish its chunk first.
      await new Promise<void>((resolve) => setImmediate(resolve));
      refuse();
      quiesced = quiesce(socket);
      if (!(await flush(socket, handover.pendingOutput, HANDOVER_LIMITS.flushTimeoutMs))) {
        throw new TransferError(TransferErrorCode.SEND_BUFFER_NOT_FLUSHED, `send buffer not flushed within ${HANDOVER_LIMITS.flushTimeoutMs} ms (the peer is not reading)`);
      }
      refuse();
      const exported = handover.exportParser();
      let input = exported.input;
      if (transport instanceof WebSocketTransport) {
        try {
          input = exportReceiver(receiverOf(transport.websocket));
        } catch (error) {
          throw new TransferError(TransferErrorCode.UNSUPPORTED_PROTOCOL, `websocket parser state cannot be exported: ${(error as Error).message}`);
        }
      }
      input = input.concat(quiesced.taken);
      const carried = input.reduce((n, chunk) => n + chunk.length, 0);
      if (carried > HANDOVER_LIMITS.maxCarriedBytes) {
        throw new TransferError(TransferErrorCode.STATE_TOO_LARGE, `${carried} unparsed bytes, more than the ${HANDOVER_LIMITS.maxCarriedBytes} a move carries`);
      }
      const facts = conn.moveFacts;
      const state: HandoverState = {
        worker: this.host.index,
        family: handover.family,
        transport: transport.kind === 'unix' ? 'unix' : 'tcp',
        protocol: transport.protocol,
        parser: exported.parser,
        input: encodeBytes(input),
        context: contextJson,
        maxSendBufferSize: conn.maxSendBufferSize,
        paused: facts.paused,
        bytesRead: facts.bytesRead,
        bytesWritten: facts.bytesWritten,
      };
      const mid = `${process.pid}.${++this.seq}`;
      const verdict = await this.ask(mid, { gw: 'handover', op: 'prepare', mid, to: target, state }, handleOf(socket));
      if (!verdict.commit) throw new TransferError(verdict.code, verdict.message);
      // conn.context and the connection's timers go as they are now (timers may have changed
      // the context during the move); the timers stop here once the move is certain.
      let connJson: string;
      try {
        connJson = encodeJson({ context: conn.context, timers: conn.timers.snapshot() }, 'conn.context');
      } catch (error) {
        this.channel.send({ gw: 'handover', op: 'abandon', mid });
        throw error;
      }
      // Commit: from here on the target owns the connection. Close our fd without a FIN.
      handover.detach();
      release(socket);
      conn.timers.delAll();
      const backlog = conn.commitMove();
      const sends = backlog.sends.map(({ data, raw }) => encodeSend(data, raw));
      this.channel.send({ gw: 'handover', op: 'released', mid, conn: connJson, sends, close: backlog.close });
    } catch (error) {
      quiesced?.restore();
      conn.abortMove();
      if (error instanceof TransferError) throw error;
      throw new TransferError(TransferErrorCode.NOT_SUPPORTED, `move failed: ${(error as Error).message}`);
    }
  }

  /** A decision from the master. */
  onMessage(message: HandoverToChild): void {
    if (message.op !== 'commit' && message.op !== 'abort') return;
    const waiting = this.waiting.get(message.mid);
    if (!waiting) {
      // We gave up on this move already (timeout): the master must cancel the target.
      if (message.op === 'commit') this.channel.send({ gw: 'handover', op: 'abandon', mid: message.mid });
      return;
    }
    if (message.op === 'commit') waiting.resolve({ commit: true });
    else waiting.resolve({ commit: false, code: toCode(message.code), message: message.message });
  }

  /** The master is gone: every move not yet released stays here. */
  masterGone(): void {
    for (const waiting of [...this.waiting.values()]) {
      waiting.resolve({ commit: false, code: TransferErrorCode.MASTER_GONE, message: 'the master went away during the move' });
    }
  }

  private ask(mid: string, message: HandoverFromChild, handle: object): Promise<Verdict> {
    return new Promise((resolve) => {
      const finish = (verdict: Verdict): void => {
        if (this.waiting.get(mid) !== waiting) return;
        clearTimeout(waiting.timer);
        clearInterval(watch);
        this.waiting.delete(mid);
        resolve(verdict);
      };
      const watch = setInterval(() => {
        if (this.channel.connected()) return;
        finish({ commit: false, code: TransferErrorCode.MASTER_GONE, message: 'the master went away during the move' });
        this.channel.lost();
      }, WATCH_MS);
      const waiting: Waiting = {
        resolve: (verdict) => {
          clearInterval(watch);
          finish(verdict);
        },
        timer: setTimeout(() => {
          finish({ commit: false, code: TransferErrorCode.TARGET_NOT_RUNNING, message: `no decision within ${HANDOVER_LIMITS.decisionTimeoutMs} ms` });
          this.channel.send({ gw: 'handover', op: 'abandon', mid });
        }, HANDOVER_LIMITS.decisionTimeoutMs),
      };
      this.waiting.set(mid, waiting);
      this.channel.send(message, handle, (ok) => {
        if (!ok) finish({ commit: false, code: TransferErrorCode.MASTER_GONE, message: 'could not reach the master' });
      });
    });
  }
}

function toCode(code: string): TransferErrorCode {
  return ERROR_CODES.has(code) ? (code as TransferErrorCode) : TransferErrorCode.TARGET_REFUSED;
}

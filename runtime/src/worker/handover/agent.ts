/**
 * Connection handover in a child process: routes the master's `handover` messages to the
 * source and target halves and sends theirs over the IPC channel.
 */
import type { Connection } from '../Connection.js';
import type { HandoverFromChild, HandoverToChild } from '../ipc.js';
import { SourceMoves, type SourceHost } from './source.js';
import { TargetMoves, type TargetHost } from './target.js';

export class HandoverAgent {
  private readonly source: SourceMoves;
  private readonly target: TargetMoves;

  /** @param onMasterLost called when the master vanished without a 'disconnect' event (see SourceChannel.lost). */
  constructor(host: SourceHost & TargetHost, onMasterLost: () => void) {
    const send = (message: HandoverFromChild, handle?: object, done?: (ok: boolean) => void): void => {
      if (!process.connected || !process.send) {
        done?.(false);
        return;
      }
      try {
        process.send(message, handle as never, {}, (error: Error | null) => done?.(!error));
      } catch {
        done?.(false);
      }
    };
    let lost = false;
    this.source = new SourceMoves(host, {
      send,
      connected: () => process.connected === true,
      lost: () => {
        if (lost) return;
        lost = true;
        // Let the failed move roll back first.
        setImmediate(onMasterLost);
      },
    });
    this.target = new TargetMoves(host, (message) => send(message));
  }

  transfer(conn: Connection<never>, target: number, context: unknown): Promise<void> {
    return this.source.transfer(conn, target, context);
  }

  onMessage(message: HandoverToChild, handle: unknown): void {
    if (message.op === 'commit' || message.op === 'abort') this.source.onMessage(message);
    else this.target.onMessage(message, handle);
  }

  /** The IPC channel closed: moves not released stay with their source, offers are dropped. */
  masterGone(): void {
    this.source.masterGone();
    this.target.masterGone();
  }
}

/**
 * Cumulative acknowledgements for one gateway link. Events finish out of order (clients
 * interleave), but the gateway is told only "everything up to seq N is done", once per
 * event-loop turn, so an ack costs one small frame per batch.
 */
export class AckTracker {
  private readonly seqs: number[] = [];
  private readonly finished: boolean[] = [];
  private head = 0;
  private acked = -1;
  private scheduled = false;

  constructor(private readonly send: (seq: number) => void) {}

  /** An event arrived; returns its ticket for {@link done}. */
  received(seq: number): number {
    this.seqs.push(seq);
    this.finished.push(false);
    return this.head + this.seqs.length - 1;
  }

  /** The event's handler settled. */
  done(ticket: number): void {
    const index = ticket - this.head;
    if (index < 0 || index >= this.finished.length) return;
    this.finished[index] = true;
    let n = 0;
    while (n < this.finished.length && this.finished[n]) n++;
    if (n === 0) return;
    this.acked = this.seqs[n - 1];
    this.seqs.splice(0, n);
    this.finished.splice(0, n);
    this.head += n;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends the latest cumulative ack now. */
  flush(): void {
    this.scheduled = false;
    if (this.acked >= 0) this.send(this.acked);
    this.acked = -1;
  }
}

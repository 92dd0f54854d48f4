/**
 * Who got what: for every (receiver, sender) pair, how many times each of the sender's sequence
 * numbers arrived. From that: delivered (distinct), duplicates, and — once sending stopped and the
 * stragglers had time to arrive — what is missing.
 */
export class DeliveryTracker {
  /** counts[receiver][sender][seq]: times seq of sender arrived at receiver (seq from 1). */
  private readonly counts: Uint8Array[][];
  /** Deliveries owed: every message sent, times the receivers it is meant for. */
  expected = 0;
  /** Every delivery that arrived, duplicates included. */
  received = 0;
  /** Distinct (receiver, sender, seq) deliveries. */
  delivered = 0;
  /** Arrivals of a (receiver, sender, seq) that had arrived before. */
  dup = 0;
  /** Arrivals a receiver should never have got (another room's, a seq never sent, unparsable). */
  foreign = 0;

  constructor(receivers: number, senders: number) {
    this.counts = Array.from({ length: receivers }, () => Array.from({ length: senders }, () => new Uint8Array(64)));
  }

  /** A message was sent to `audience` receivers. */
  expect(audience: number): void {
    this.expected += audience;
  }

  /** `seq` of `sender` arrived at `receiver`. */
  got(receiver: number, sender: number, seq: number): void {
    const row = this.counts[receiver];
    if (!row || sender < 0 || sender >= row.length || !Number.isSafeInteger(seq) || seq < 1) {
      this.foreign++;
      return;
    }
    let arr = row[sender];
    if (seq >= arr.length) {
      let size = arr.length;
      while (size <= seq) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(arr);
      row[sender] = arr = grown;
    }
    this.received++;
    if (arr[seq] === 0) this.delivered++;
    else this.dup++;
    if (arr[seq] < 255) arr[seq]++;
  }

  /** expected − delivered: in flight while running, lost once everything had time to arrive. */
  get pending(): number {
    return this.expected - this.delivered;
  }

  /**
   * The deliveries that did not arrive: for every pair the caller says is owed (receiver, sender,
   * seqs 1..sent), the seqs with no arrival. Counts all of them, lists the first `limit`.
   */
  missing(pairs: Iterable<[receiver: number, sender: number]>, sentBy: (sender: number) => number, limit = 20): { count: number; examples: string[] } {
    let count = 0;
    const examples: string[] = [];
    for (const [receiver, sender] of pairs) {
      const arr = this.counts[receiver][sender];
      const sent = sentBy(sender);
      for (let seq = 1; seq <= sent; seq++) {
        if (seq < arr.length && arr[seq] > 0) continue;
        count++;
        if (examples.length < limit) examples.push(`${sender}#${seq} → ${receiver}`);
      }
    }
    return { count, examples };
  }

  /** The first `limit` duplicated deliveries, with how often each arrived. */
  duplicates(limit = 20): string[] {
    const out: string[] = [];
    this.counts.forEach((row, receiver) =>
      row.forEach((arr, sender) => {
        for (let seq = 1; seq < arr.length && out.length < limit; seq++) if (arr[seq] > 1) out.push(`${sender}#${seq} → ${receiver} ×${arr[seq]}`);
      }),
    );
    return out;
  }
}

/**
 * A small latency histogram in microseconds: exact below 1,024 µs, then log buckets of ~1.1%.
 * Cheap to record into (one array increment) and to merge across driver processes.
 */
const LINEAR = 1024;
const PER_OCTAVE = 64;
const SIZE = LINEAR + PER_OCTAVE * 24;

export class Histogram {
  counts = new Float64Array(SIZE);
  total = 0;

  record(us: number): void {
    const v = us < 0 ? 0 : us;
    let i: number;
    if (v < LINEAR) i = v | 0;
    else i = Math.min(SIZE - 1, LINEAR + Math.floor(Math.log2(v / LINEAR) * PER_OCTAVE));
    this.counts[i]++;
    this.total++;
  }

  /** Sparse form for IPC: [index, count] pairs. */
  toJSON(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < SIZE; i++) if (this.counts[i] > 0) out.push([i, this.counts[i]]);
    return out;
  }

  merge(sparse: Array<[number, number]>): void {
    for (const [i, n] of sparse) {
      this.counts[i] += n;
      this.total += n;
    }
  }

  /** Value (µs) at quantile q in [0, 1]; NaN when empty. */
  quantile(q: number): number {
    if (this.total === 0) return Number.NaN;
    const target = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < SIZE; i++) {
      seen += this.counts[i];
      if (seen >= target) return i < LINEAR ? i : LINEAR * 2 ** ((i - LINEAR + 0.5) / PER_OCTAVE);
    }
    return Number.NaN;
  }
}

/** Microseconds on CLOCK_MONOTONIC: the same clock in every process of this machine. */
export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

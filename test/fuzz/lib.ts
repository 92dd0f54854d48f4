/**
 * Shared machinery of the fuzz suites: case counts (small by default, `FUZZ_RUNS` for the long
 * form), one seed per file (`FUZZ_SEED` to replay), a fast-check runner that reports through tap,
 * mutation operators over valid encodings, a watchdog that turns a synchronous hang into a report
 * with the input, and heap measurement.
 *
 *   FUZZ_RUNS=100000   cases per target (overrides every default)
 *   FUZZ_SEED=<n>      replay: the seed a failure printed (every target of the file uses it)
 *   FUZZ_VERBOSE=1     fast-check's verbose failure report (every failing step of the shrink)
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import { Worker as Thread } from 'node:worker_threads';
import fc from 'fast-check';
import type { Test } from 'tap';

/** `FUZZ_RUNS` when set: the dedicated long run. */
export const LONG_RUNS = Number(process.env.FUZZ_RUNS) > 0 ? Math.floor(Number(process.env.FUZZ_RUNS)) : 0;

/** Cases for a target: `FUZZ_RUNS` when set, else the target's default (sized for `npm test`). */
export function runs(defaultRuns: number): number {
  return LONG_RUNS || defaultRuns;
}

/** The seed of this file's run: `FUZZ_SEED`, or a fresh one (printed with every target). */
export const SEED: number = process.env.FUZZ_SEED !== undefined && process.env.FUZZ_SEED !== '' ? Number(process.env.FUZZ_SEED) | 0 : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

export interface FuzzOptions<Ts> {
  /** Cases to run (see {@link runs}). */
  numRuns: number;
  /** Values tried first, every run (known edge cases). */
  examples?: Ts[];
  /** Skip shrinking (live targets: a shrink re-runs cases against the server). */
  endOnFailure?: boolean;
  /** Seed override (parallel lanes of one target). */
  seed?: number;
  /**
   * A known runtime bug: the property runs and its counterexample is printed, but the failure is
   * reported as a tap `todo` (it does not fail the suite until the runtime is fixed).
   */
  todo?: string;
}

/**
 * Runs a fast-check property and reports it through tap: the number of cases and the time as a
 * comment, the seed with any failure (replay with `FUZZ_SEED=<seed>`), and the shrunk
 * counterexample.
 */
export async function fuzz<Ts>(t: Test, name: string, property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>, options: FuzzOptions<Ts>): Promise<fc.RunDetails<Ts>> {
  const seed = options.seed ?? SEED;
  const started = Date.now();
  // A long run says how far it got, every tenth of the way.
  let done = 0;
  const step = Math.max(1000, Math.ceil(options.numRuns / 10));
  const progress = fc.afterEach(() => {
    if (++done % step === 0 && done < options.numRuns) t.comment(`${name}: ${done} cases, ${((Date.now() - started) / 1000).toFixed(0)} s`);
  });
  const details = await fc.check(property as fc.IAsyncProperty<Ts>, {
    numRuns: options.numRuns,
    seed,
    examples: options.examples as never,
    endOnFailure: options.endOnFailure ?? false,
    verbose: process.env.FUZZ_VERBOSE ? 2 : 1,
    plugins: (LONG_RUNS ? [progress] : []) as never,
  });
  const ms = Date.now() - started;
  t.comment(`${name}: ${details.numRuns} cases in ${ms} ms (seed ${seed}${details.numShrinks ? `, ${details.numShrinks} shrinks` : ''})`);
  if (details.failed) {
    const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
    const report = `${fc.defaultReportMessage(details) ?? ''}\nError: ${cause}`;
    // The counterexample and the error, not every step of the shrink.
    let steps = 0;
    for (const line of report.split('\n')) {
      if (line.startsWith('- ') && ++steps > 2) continue;
      t.comment(printable(line).slice(0, 1500));
    }
    const extra = { diagnostic: true, report: report.slice(0, 20_000), ...(options.todo ? { todo: options.todo } : {}) };
    t.fail(`${name}: counterexample found; replay with FUZZ_SEED=${seed}`, extra as never);
  } else {
    if (options.todo) t.comment(`${name}: no counterexample although marked as a known bug (fixed?): ${options.todo.slice(0, 120)}`);
    t.pass(`${name}: ${details.numRuns} cases`);
  }
  return details;
}

const described = new Set<string>();

/**
 * A known runtime bug: prints its description once (as a comment of `t`) and returns the short
 * tap `todo` reason to put on the assertions it makes fail.
 */
export function knownBug(t: Test, name: string, description: string): string {
  if (!described.has(name)) {
    described.add(name);
    t.comment(`KNOWN BUG ${name}: ${description}`);
  }
  return `known runtime bug ${name} (see the KNOWN BUG comment)`;
}

// ---- byte helpers ------------------------------------------------------------------------------

export const hex = (bytes: Uint8Array, max = 256): string => {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return b.length > max ? `${b.subarray(0, max).toString('hex')}…(${b.length} bytes)` : b.toString('hex');
};

/** Random bytes, biased towards short inputs. */
export const bytes = (maxLength = 64): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength }).map((a) => Buffer.from(a));

// ---- mutations of valid encodings --------------------------------------------------------------

/** Interesting integers for length and count fields. */
const INTERESTING = [0, 1, 2, 3, 4, 5, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];

export type Mutation =
  | { op: 'flip'; pos: number; bit: number }
  | { op: 'set'; pos: number; value: number }
  | { op: 'truncate'; at: number }
  | { op: 'append'; extra: Uint8Array }
  | { op: 'insert'; pos: number; extra: Uint8Array }
  | { op: 'remove'; pos: number; length: number }
  | { op: 'duplicate'; pos: number; length: number }
  | { op: 'splice'; pos: number; donorPos: number }
  | { op: 'int'; pos: number; width: 1 | 2 | 4; value: number; relative: number | null }
  | { op: 'field'; which: number; value: number; relative: number | null };

/** A place in an encoding that holds a big-endian length or count (for targeted mutations). */
export interface Field {
  pos: number;
  width: 1 | 2 | 4;
}

const position = fc.nat({ max: 1 << 16 });
const intValue = fc.oneof(fc.constantFrom(...INTERESTING), fc.nat({ max: 0xffffffff }));
/** `relative` ≠ null: the field's current value plus this delta instead of `value`. */
const relative = fc.option(fc.integer({ min: -4, max: 4 }), { freq: 2 });

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), pos: position, bit: fc.nat({ max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), pos: position, value: fc.nat({ max: 255 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: position }),
  fc.record({ op: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ op: fc.constant('insert' as const), pos: position, extra: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('remove' as const), pos: position, length: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('duplicate' as const), pos: position, length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('splice' as const), pos: position, donorPos: position }),
  fc.record({ op: fc.constant('int' as const), pos: position, width: fc.constantFrom(1 as const, 2 as const, 4 as const), value: intValue, relative }),
  fc.record({ op: fc.constant('field' as const), which: fc.nat({ max: 64 }), value: intValue, relative }),
);

function writeInt(buf: Buffer, pos: number, width: 1 | 2 | 4, value: number): void {
  if (pos + width > buf.length) return;
  const v = value >>> 0;
  if (width === 1) buf[pos] = v & 0xff;
  else if (width === 2) buf.writeUInt16BE(v & 0xffff, pos);
  else buf.writeUInt32BE(v, pos);
}

function readInt(buf: Buffer, pos: number, width: 1 | 2 | 4): number {
  if (pos + width > buf.length) return 0;
  return width === 1 ? buf[pos] : width === 2 ? buf.readUInt16BE(pos) : buf.readUInt32BE(pos);
}

/** Applies mutations in order; positions wrap around the current length. Never mutates its inputs. */
export function applyMutations(valid: Buffer, donor: Buffer, mutations: readonly Mutation[], fields: readonly Field[] = []): Buffer {
  let buf = Buffer.from(valid);
  for (const m of mutations) {
    const at = (p: number): number => (buf.length === 0 ? 0 : p % buf.length);
    switch (m.op) {
      case 'flip':
        if (buf.length > 0) buf[at(m.pos)] ^= 1 << m.bit;
        break;
      case 'set':
        if (buf.length > 0) buf[at(m.pos)] = m.value;
        break;
      case 'truncate':
        buf = buf.subarray(0, buf.length === 0 ? 0 : m.at % buf.length);
        break;
      case 'append':
        buf = Buffer.concat([buf, m.extra]);
        break;
      case 'insert': {
        const p = buf.length === 0 ? 0 : m.pos % (buf.length + 1);
        buf = Buffer.concat([buf.subarray(0, p), m.extra, buf.subarray(p)]);
        break;
      }
      case 'remove': {
        const p = at(m.pos);
        buf = Buffer.concat([buf.subarray(0, p), buf.subarray(p + m.length)]);
        break;
      }
      case 'duplicate': {
        const p = at(m.pos);
        buf = Buffer.concat([buf.subarray(0, p + m.length), buf.subarray(p)]);
        break;
      }
      case 'splice': {
        const p = buf.length === 0 ? 0 : m.pos % (buf.length + 1);
        const q = donor.length === 0 ? 0 : m.donorPos % (donor.length + 1);
        buf = Buffer.concat([buf.subarray(0, p), donor.subarray(q)]);
        break;
      }
      case 'int': {
        const p = at(m.pos);
        const width = m.width;
        writeInt(buf, p, width, m.relative === null ? m.value : readInt(buf, p, width) + m.relative);
        break;
      }
      case 'field': {
        if (fields.length === 0) break;
        const f = fields[m.which % fields.length];
        writeInt(buf, f.pos, f.width, m.relative === null ? m.value : readInt(buf, f.pos, f.width) + m.relative);
        break;
      }
    }
    // A private copy: later mutations write in place.
    buf = Buffer.from(buf);
  }
  return buf;
}

/** One input of a mutation fuzz: the result, and what it came from (for reports). */
export interface Mutated {
  bytes: Buffer;
  valid: Buffer;
  mutations: Mutation[];
}

/**
 * Mutants of valid encodings: 1–4 mutations (bit flips, byte sets, truncation, extension,
 * insertion, removal, duplication, splicing with a second valid encoding, and integer overwrites,
 * aimed at the known length/count `fields` when the encoder tells where they are).
 */
export function mutated(valid: fc.Arbitrary<Buffer>, fields?: (bytes: Buffer) => Field[]): fc.Arbitrary<Mutated> {
  return fc.tuple(valid, valid, fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(
    ([v, donor, mutations]) => ({ bytes: applyMutations(v, donor, mutations, fields ? fields(v) : []), valid: v, mutations }),
    // Shrinking runs on the underlying tuple; unmapper not needed for examples.
  );
}

/** Valid encodings (as they are), mutants of them, and plain random bytes, in one input stream. */
export function validMutatedRandom(valid: fc.Arbitrary<Buffer>, fields?: (bytes: Buffer) => Field[], randomMax = 96): fc.Arbitrary<{ kind: 'valid' | 'mutated' | 'random'; bytes: Buffer }> {
  return fc.oneof(
    { weight: 1, arbitrary: valid.map((bytes) => ({ kind: 'valid' as const, bytes })) },
    { weight: 4, arbitrary: mutated(valid, fields).map((m) => ({ kind: 'mutated' as const, bytes: m.bytes })) },
    { weight: 2, arbitrary: bytes(randomMax).map((b) => ({ kind: 'random' as const, bytes: b })) },
  );
}

/** Split points for delivering bytes in chunks (chunking must never change a result). */
export const chunking = fc.array(fc.nat({ max: 1 << 16 }), { maxLength: 6 });

/** Splits `bytes` at the given points (taken modulo its length), in order, dropping empty chunks. */
export function chunks(bytes: Buffer, points: readonly number[]): Buffer[] {
  if (bytes.length === 0) return [];
  const cuts = [...new Set(points.map((p) => p % bytes.length))].filter((p) => p > 0).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    out.push(bytes.subarray(from, cut));
    from = cut;
  }
  out.push(bytes.subarray(from));
  return out;
}

// ---- errors ------------------------------------------------------------------------------------

/** Counts error messages (numbers folded), to show in a comment which documented errors a run hit. */
export class ErrorTally {
  private readonly counts = new Map<string, number>();
  add(error: unknown): void {
    const key = printable(error instanceof Error ? `${error.name}: ${foldMessage(error.message)}` : String(error)).slice(0, 100);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
  get size(): number {
    return this.counts.size;
  }
  toString(): string {
    return [...this.counts].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n}× ${k}`).join('; ');
  }
}

/** A message without the input it quotes or the numbers it names, so that like errors count together. */
function foldMessage(message: string): string {
  return message
    .replace(/"[^]*"/g, '"…"')
    .replace(/'[^]*?'/g, "'…'")
    .replace(/\d+/g, 'N');
}

/** One line of printable ASCII (tap comments must not carry newlines or control bytes). */
export function printable(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, (c) => (c === '\n' ? '\\n' : '?'));
}

// ---- watchdog: a synchronous hang becomes a report -------------------------------------------------

const NAME_BYTES = 128;
const INPUT_BYTES = 64 * 1024;

/**
 * A synchronous decoder that never returns cannot be interrupted from its own thread. A watcher
 * thread sees the case that is running (shared memory) and, when one runs longer than
 * `limitMs`, writes the target and input to stderr and kills the process: the file fails with
 * the input that hung instead of a bare tap timeout.
 */
export class Watchdog {
  private readonly control: Int32Array;
  private readonly name: Uint8Array;
  private readonly input: Uint8Array;
  private readonly thread: Thread;

  constructor(limitMs: number) {
    const shared = new SharedArrayBuffer(16 + NAME_BYTES + INPUT_BYTES);
    this.control = new Int32Array(shared, 0, 4); // [busy, seq, nameLength, inputLength]
    this.name = new Uint8Array(shared, 16, NAME_BYTES);
    this.input = new Uint8Array(shared, 16 + NAME_BYTES, INPUT_BYTES);
    this.thread = new Thread(
      `
      const { workerData } = require('node:worker_threads');
      const fs = require('node:fs');
      const { shared, limitMs } = workerData;
      const control = new Int32Array(shared, 0, 4);
      const name = Buffer.from(shared, 16, ${NAME_BYTES});
      const input = Buffer.from(shared, 16 + ${NAME_BYTES}, ${INPUT_BYTES});
      let seen = -1, since = 0;
      setInterval(() => {
        if (Atomics.load(control, 0) !== 1) { seen = -1; return; }
        const seq = Atomics.load(control, 1);
        if (seq !== seen) { seen = seq; since = Date.now(); return; }
        if (Date.now() - since < limitMs) return;
        const target = name.subarray(0, control[2]).toString();
        const bytes = input.subarray(0, control[3]).toString('hex');
        fs.writeSync(2, '\\nFUZZ HANG: ' + target + ' ran over ' + limitMs + ' ms on input (hex, ' + control[3] + ' bytes): ' + bytes + '\\n');
        process.kill(process.pid, 'SIGKILL');
      }, Math.max(20, limitMs / 10));
      `,
      { eval: true, workerData: { shared, limitMs } },
    );
    this.thread.unref();
  }

  /** Marks the start of one case of `target` on `input`. */
  enter(target: string, input: Uint8Array): void {
    const name = Buffer.from(target).subarray(0, NAME_BYTES);
    this.name.set(name);
    Atomics.store(this.control, 2, name.length);
    const n = Math.min(input.length, INPUT_BYTES);
    this.input.set(input.subarray(0, n));
    Atomics.store(this.control, 3, n);
    Atomics.add(this.control, 1, 1);
    Atomics.store(this.control, 0, 1);
  }

  leave(): void {
    Atomics.store(this.control, 0, 0);
  }

  /** Runs `fn` as one watched case and returns its result and duration. */
  run<T>(target: string, input: Uint8Array, fn: () => T): { value: T; ms: number } {
    this.enter(target, input);
    const started = performance.now();
    try {
      return { value: fn(), ms: performance.now() - started };
    } finally {
      this.leave();
    }
  }

  /**
   * {@link run} with a time bound: a case over `limitMs` is timed once more (a busy machine can
   * stall any call) and fails only when it is slow again.
   */
  bounded<T>(target: string, input: Uint8Array, fn: () => T, limitMs: number): { value: T; ms: number } {
    const first = this.run(target, input, fn);
    if (first.ms < limitMs) return first;
    const again = this.run(target, input, fn);
    if (again.ms >= limitMs) throw new Error(`${target} took ${first.ms.toFixed(0)} ms, then ${again.ms.toFixed(0)} ms (limit ${limitMs}) on ${hex(input)}`);
    return { value: first.value, ms: again.ms };
  }

  async stop(): Promise<void> {
    await this.thread.terminate();
  }
}

// ---- memory ------------------------------------------------------------------------------------

let gcFn: (() => void) | null = null;

/** A full GC (flag set at run time, so no node option is needed). */
export function collect(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
}

/** Heap in use after a full GC, bytes. */
export function heapAfterGc(): number {
  collect();
  return process.memoryUsage().heapUsed;
}

export { fc };

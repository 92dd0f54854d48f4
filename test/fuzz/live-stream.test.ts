// Live fuzz of the text and frame protocols: echo Workers on 127.0.0.1:0 in their own process
// (test/fixtures/fuzz/servers.ts). Each case opens a connection, writes valid streams, mutants of
// them or random bytes in random chunks, and checks the server against the reference framer
// (./reference.ts):
//   - the echo of every complete package arrives, byte for byte;
//   - a connection whose input breaks the framing or the size limit is closed by the server
//     (within a bounded time), after echoing at most what came before;
//   - a connection whose input is valid survives: a probe package sent after it (finishing any
//     partial package first) is echoed on the same connection.
// Throughout, a well-behaved client on another connection is answered; at the end the server
// process is up, every fuzzed connection is gone from its table and its heap has not grown.
import assert from 'node:assert/strict';
import t from 'tap';
import { frame } from '../../runtime/src/protocols/frame.js';
import { frameFields, frameStream, textStream } from './arbitraries.js';
import { RawClient, bounded, sleep, startServers, type Servers } from './live.js';
import { chunking, chunks, fc, fuzz, hex, runs, validMutatedRandom, type Field } from './lib.js';
import { refFrame, refText, type Outcome } from './reference.js';

const DEFAULT_RUNS = 300;
/** Time a server has to answer or close (generous: the machine may be busy with other suites). */
const REPLY_MS = 3000;
/** A case that has not settled by then is a hang. */
const CASE_MS = 10_000;

interface LiveTarget {
  name: 'text' | 'frame';
  reference(input: Buffer, max: number): Outcome;
  /** What the server sends back for the messages it got. */
  echo(messages: unknown[]): Buffer;
  /** Bytes that finish a pending partial package (when possible) and add a probe package. */
  suffix(input: Buffer, expected: Outcome, probe: string, max: number): Buffer;
  valid(max: number): fc.Arbitrary<Buffer>;
  fields?(b: Buffer): Field[];
  /** A well-behaved request and its reply. */
  goodRequest(n: number): { request: Buffer; reply: Buffer };
}

const frameOf = (body: Buffer | string): Buffer => frame.encode(body, { maxPackageSize: Infinity, protocolState: undefined }) as Buffer;

const textTarget: LiveTarget = {
  name: 'text',
  reference: refText,
  echo: (messages) => Buffer.from((messages as string[]).map((m) => `${m}\n`).join('')),
  // A partial line is shorter than the limit (or the reference closed): "\n" ends it.
  suffix: (_input, _expected, probe) => Buffer.from(`\n${probe}\n`),
  valid: textStream,
  goodRequest: (n) => ({ request: Buffer.from(`good-${n}\n`), reply: Buffer.from(`good-${n}\n`) }),
};

const frameTarget: LiveTarget = {
  name: 'frame',
  reference: refFrame,
  echo: (messages) => Buffer.concat((messages as Buffer[]).map(frameOf)),
  suffix(input, expected, probe, max) {
    const consumed = (expected.messages as Buffer[]).reduce((sum, m) => sum + 4 + m.length, 0);
    const pending = input.subarray(consumed);
    let finish = Buffer.alloc(0);
    if (pending.length > 0) {
      // The header's missing bytes: the smallest length it can still have (at least 4).
      const header = Buffer.alloc(4);
      pending.copy(header, 0, 0, Math.min(4, pending.length));
      if (pending.length < 4 && header.readUInt32BE(0) < 4) header[3] = 4;
      const length = header.readUInt32BE(0);
      const have = pending.length;
      // Over the limit, the header alone closes the connection: no body to send.
      const body = length > max ? 0 : Math.max(0, length - Math.max(4, have));
      finish = Buffer.concat([header.subarray(Math.min(4, have)), Buffer.alloc(body)]);
    }
    return Buffer.concat([finish, frameOf(probe)]);
  },
  valid: frameStream,
  fields: frameFields,
  goodRequest: (n) => ({ request: frameOf(`good-${n}`), reply: frameOf(`good-${n}`) }),
};

/** The good client: one connection for the whole run, asked every few cases. */
class GoodClient {
  private n = 0;
  private expected = 0;
  private constructor(
    private readonly client: RawClient,
    private readonly target: LiveTarget,
  ) {}

  static async open(port: number, target: LiveTarget): Promise<GoodClient> {
    return new GoodClient(await RawClient.connect(port), target);
  }

  async ask(): Promise<void> {
    const { request, reply } = this.target.goodRequest(++this.n);
    this.client.write(request);
    const from = this.expected;
    this.expected += reply.length;
    const ok = await this.client.waitUntil(() => this.client.received >= this.expected || this.client.closed, REPLY_MS);
    assert.ok(ok && !this.client.closed, `the well-behaved ${this.target.name} client got no answer to request ${this.n} (closed: ${this.client.closed})`);
    assert.ok(this.client.bytes().subarray(from, this.expected).equals(reply), `the well-behaved ${this.target.name} client got a wrong answer`);
  }

  close(): void {
    this.client.destroy();
  }
}

/** One live case: returns how it ended. */
async function liveCase(servers: Servers, target: LiveTarget, input: Buffer, points: number[], probe: string): Promise<'closed' | 'open'> {
  const max = servers.max;
  const first = target.reference(input, max);
  const all = first.closed ? input : Buffer.concat([input, target.suffix(input, first, probe, max)]);
  const expected = target.reference(all, max);
  const reply = target.echo(expected.messages);
  const client = await RawClient.connect(servers.ports[target.name]);
  try {
    // The fuzzed bytes in random chunks, the suffix in a write of its own.
    await client.writeChunks([...chunks(input, points), all.subarray(input.length)].filter((c) => c.length > 0));
    const context = `${target.name} input ${hex(input)} chunked at ${JSON.stringify(points)}`;
    if (expected.closed) {
      const closed = await client.waitUntil(() => client.closed, REPLY_MS);
      assert.ok(closed, `the server did not close after invalid input (${context}); got ${hex(client.bytes())}`);
      const got = client.bytes();
      assert.ok(reply.subarray(0, got.length).equals(got), `echo before the close differs: ${hex(got)} vs expected ${hex(reply)} (${context})`);
      return 'closed';
    }
    const answered = await client.waitUntil(() => client.received >= reply.length || client.closed, REPLY_MS);
    assert.ok(answered && !client.closed, `a connection with valid input was ${client.closed ? 'closed' : 'not answered'} (${context}); got ${hex(client.bytes())}, expected ${hex(reply)}`);
    assert.ok(client.bytes().equals(reply), `echo differs: ${hex(client.bytes())} vs expected ${hex(reply)} (${context})`);
    return 'open';
  } finally {
    client.destroy();
  }
}

t.test('live text and frame servers', async (t) => {
  const servers = await startServers(t);
  for (const target of [textTarget, frameTarget]) {
    await t.test(`${target.name}://`, async (t) => {
      const good = await GoodClient.open(servers.ports[target.name], target);
      t.teardown(() => good.close());
      await good.ask();
      // Warm-up before the heap baseline: the first connections allocate lasting structures.
      for (let i = 0; i < 20; i++) await liveCase(servers, target, Buffer.from(target.goodRequest(i).request), [], `warm-${i}`);
      const before = await servers.stats();
      const counts = { valid: 0, mutated: 0, random: 0, closed: 0, open: 0 };
      let n = 0;
      await fuzz(
        t,
        `${target.name}:// live`,
        fc.asyncProperty(fc.record({ c: validMutatedRandom(target.valid(servers.max), target.fields, 2 * servers.max), points: chunking }), async ({ c, points }) => {
          assert.ok(servers.alive(), `the server process died:\n${servers.output().slice(-4000)}`);
          counts[c.kind]++;
          const ended = await bounded(liveCase(servers, target, c.bytes, points, `probe-${++n}`), CASE_MS, `${target.name} case ${hex(c.bytes)}`);
          counts[ended]++;
          if (n % 25 === 0) await good.ask();
        }),
        { numRuns: runs(DEFAULT_RUNS), endOnFailure: true },
      );
      t.comment(`${target.name}: ${JSON.stringify(counts)}`);
      await good.ask();
      t.ok(servers.alive(), 'the server process is up');
      // Every fuzzed connection is gone from the server's table: only the good client is left.
      let after = await servers.stats();
      for (let i = 0; i < 100 && after.connections[target.name] > 1; i++) {
        await sleep(50);
        after = await servers.stats();
      }
      t.equal(after.connections[target.name], 1, 'no fuzzed connection left open on the server');
      const grown = after.heapUsed - before.heapUsed;
      t.comment(`${target.name}: server heap ${(before.heapUsed / 1048576).toFixed(1)} → ${(after.heapUsed / 1048576).toFixed(1)} MB, rss ${(after.rss / 1048576).toFixed(0)} MB`);
      t.ok(grown < 16 * 1024 * 1024, `server heap after GC within 16 MB of before (+${(grown / 1048576).toFixed(1)} MB)`);
    });
  }
});

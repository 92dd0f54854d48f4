// Live fuzz of the internal links' framing and handshake: the accepting side (acceptLink over a
// frame:// Worker, as the Register and every Gateway run it on their internal ports) in the fuzz
// server process (test/fixtures/fuzz/servers.ts, maxPackageSize 64 KB).
//
// 1. Before authentication: random bytes, random frames, mutants of a real AUTH (wrong proof,
//    broken JSON, other commands). The server sends its HELLO and nothing else, and closes the
//    connection as soon as a first frame is complete (or the framing is broken) — no frame of an
//    unauthenticated peer reaches a handler.
// 2. After a valid handshake: codec frames of every command, mutants, random bytes, in random
//    chunks. Each complete frame (PING excepted) is answered with what the same decoder says
//    in this process (./fixtures link-decoders.ts): the decoders behave the same over the wire;
//    a broken framing closes the link; a valid link still answers a probe frame.
// A well-behaved authenticated link is answered throughout; at the end the process is up and only
// that link is left.
import assert from 'node:assert/strict';
import t from 'tap';
import { clientProof, serverProof } from '../../runtime/src/internal/auth.js';
import { Cmd, encodeJson, encodeU32 } from '../../runtime/src/internal/codec.js';
import { frame } from '../../runtime/src/protocols/frame.js';
import { LINK_SECRET, answer } from '../fixtures/fuzz/link-decoders.js';
import { frameFields, linkStream } from './arbitraries.js';
import { RawClient, bounded, sleep, startServers, type Servers } from './live.js';
import { ErrorTally, applyMutations, bytes, chunking, chunks, fc, fuzz, hex, knownBug, mutationArb, runs, validMutatedRandom } from './lib.js';
import { refFrame } from './reference.js';

const DEFAULT_RUNS = 300;
const REPLY_MS = 3000;
const CASE_MS = 10_000;

const servers: Servers = await startServers(t);
const port = servers.ports.link;
const max = servers.linkMax;

const frameOf = (body: Buffer): Buffer => frame.encode(body, { maxPackageSize: Infinity, protocolState: undefined }) as Buffer;

/** Frames in `bytes` (complete ones) and how many bytes they used. */
function framesIn(bytes: Buffer): { bodies: Buffer[]; used: number } {
  const bodies: Buffer[] = [];
  let pos = 0;
  while (bytes.length - pos >= 4) {
    const length = bytes.readUInt32BE(pos);
    if (length < 4 || bytes.length - pos < length) break;
    bodies.push(bytes.subarray(pos + 4, pos + length));
    pos += length;
  }
  return { bodies, used: pos };
}

/** Answers in `bytes`: complete frames except the PINGs an idle link gets every 5 s. */
const answersIn = (bytes: Buffer): Buffer[] => framesIn(bytes).bodies.filter((body) => body[0] !== Cmd.PING);

/** Reads the server's HELLO. */
async function hello(client: RawClient): Promise<{ nonce: string; role: string }> {
  const ok = await client.waitUntil(() => framesIn(client.bytes()).bodies.length > 0, REPLY_MS);
  const body = framesIn(client.bytes()).bodies[0];
  assert.ok(ok && body, `no HELLO (closed: ${client.closed})`);
  assert.equal(body[0], Cmd.HELLO, 'the first frame is HELLO');
  return JSON.parse(body.toString('utf8', 1)) as { nonce: string; role: string };
}

/** Opens a link and authenticates it; returns it with the byte offset where replies start. */
async function authenticated(): Promise<{ client: RawClient; from: number }> {
  const client = await RawClient.connect(port);
  const { nonce: serverNonce } = await hello(client);
  const clientNonce = 'c'.repeat(32);
  client.write(encodeJson(Cmd.AUTH, { nonce: clientNonce, proof: clientProof(LINK_SECRET, serverNonce, clientNonce, 'client'), peer: { role: 'client', name: 'fuzz' } }));
  const ok = await client.waitUntil(() => framesIn(client.bytes()).bodies.length >= 2, REPLY_MS);
  const { bodies, used } = framesIn(client.bytes());
  assert.ok(ok && bodies[1]?.[0] === Cmd.AUTH_OK, `no AUTH_OK (closed: ${client.closed})`);
  const ack = JSON.parse(bodies[1].toString('utf8', 1)) as { proof: string };
  assert.equal(ack.proof, serverProof(LINK_SECRET, serverNonce, clientNonce), 'the server proves the secret');
  return { client, from: used };
}

/** The good link: asked with an ACK frame every few cases. */
async function goodLink(): Promise<{ ask(): Promise<void> }> {
  const { client, from } = await authenticated();
  // As every real peer does: a link silent for 15 s is dropped by the other side.
  const keepAlive = setInterval(() => client.write(encodeJson(Cmd.PING, 0)), 2000);
  t.teardown(() => {
    clearInterval(keepAlive);
    client.destroy();
  });
  let n = 0;
  return {
    async ask() {
      client.write(encodeU32(Cmd.ACK, ++n));
      const ok = await client.waitUntil(() => answersIn(client.bytes().subarray(from)).length >= n, REPLY_MS);
      assert.ok(ok && !client.closed, `the well-behaved link got no answer to frame ${n}`);
      const reply = answersIn(client.bytes().subarray(from))[n - 1];
      assert.deepEqual(JSON.parse(reply.toString('utf8', 5)), { cmd: Cmd.ACK, ok: String(n).length }, 'the well-behaved link gets the right answer');
    },
  };
}

const good = await goodLink();
await good.ask();
const base = await servers.stats();

t.test('before authentication', async (t) => {
  const auth = fc.tuple(fc.string({ maxLength: 40 }), fc.string({ maxLength: 70 }), fc.constantFrom('client', 'worker', 'gateway', '')).map(([nonce, proof, role]) => encodeJson(Cmd.AUTH, { nonce, proof, peer: { role, name: 'x' } }));
  const input = fc.oneof(
    validMutatedRandom(auth, frameFields, 200),
    bytes(64).map((body) => ({ kind: 'random frame', bytes: frameOf(body) })),
    fc.tuple(auth, linkStream, fc.array(mutationArb, { maxLength: 3 })).map(([a, b, m]) => ({ kind: 'spliced', bytes: applyMutations(Buffer.concat([a, b]), b, m) })),
  );
  const outcomes = new ErrorTally();
  await fuzz(
    t,
    'link before AUTH',
    fc.asyncProperty(input, chunking, async (c, points) => {
      assert.ok(servers.alive(), `the server process died:\n${servers.output().slice(-4000)}`);
      await bounded(
        (async () => {
          const client = await RawClient.connect(port);
          try {
            await hello(client);
            // Finish a partial frame (zeros) so the server has a whole first frame to judge.
            const first = refFrame(c.bytes, max);
            let all = c.bytes;
            if (!first.closed) {
              const used = (first.messages as Buffer[]).reduce((sum, m) => sum + 4 + m.length, 0);
              const pending = c.bytes.subarray(used);
              if (first.messages.length === 0) {
                const header = Buffer.alloc(4);
                pending.copy(header, 0, 0, Math.min(4, pending.length));
                if (pending.length < 4 && header.readUInt32BE(0) < 4) header[3] = 5;
                const length = header.readUInt32BE(0);
                const body = length > max ? 0 : Math.max(0, length - Math.max(4, pending.length));
                all = Buffer.concat([c.bytes, header.subarray(Math.min(4, pending.length)), Buffer.alloc(body)]);
              }
            }
            await client.writeChunks([...chunks(c.bytes, points), all.subarray(c.bytes.length)].filter((b) => b.length > 0));
            const closed = await client.waitUntil(() => client.closed, REPLY_MS);
            assert.ok(closed, `an unauthenticated link was not closed after ${hex(all)}`);
            const { bodies } = framesIn(client.bytes());
            assert.deepEqual(bodies.map((b) => b[0]), [Cmd.HELLO], `only the HELLO was sent to an unauthenticated peer, got commands ${bodies.map((b) => b[0]).join(',')}`);
            outcomes.add(c.kind);
          } finally {
            client.destroy();
          }
        })(),
        CASE_MS,
        `pre-auth ${hex(c.bytes)}`,
      );
    }),
    { numRuns: runs(DEFAULT_RUNS), endOnFailure: true },
  );
  t.comment(`inputs: ${outcomes.toString()}`);
});

t.test('after authentication', async (t) => {
  const counts = { valid: 0, mutated: 0, random: 0, closed: 0, open: 0, frames: 0 };
  let n = 0;
  await fuzz(
    t,
    'link after AUTH',
    fc.asyncProperty(validMutatedRandom(linkStream, frameFields, 200), chunking, async (c, points) => {
      assert.ok(servers.alive(), `the server process died:\n${servers.output().slice(-4000)}`);
      counts[c.kind]++;
      const first = refFrame(c.bytes, max);
      let all = c.bytes;
      if (!first.closed) {
        const used = (first.messages as Buffer[]).reduce((sum, m) => sum + 4 + m.length, 0);
        const pending = c.bytes.subarray(used);
        const header = Buffer.alloc(4);
        let finish = Buffer.alloc(0);
        if (pending.length > 0) {
          pending.copy(header, 0, 0, Math.min(4, pending.length));
          if (pending.length < 4 && header.readUInt32BE(0) < 4) header[3] = 4;
          const length = header.readUInt32BE(0);
          const body = length > max ? 0 : Math.max(0, length - Math.max(4, pending.length));
          finish = Buffer.concat([header.subarray(Math.min(4, pending.length)), Buffer.alloc(body)]);
        }
        all = Buffer.concat([c.bytes, finish, encodeU32(Cmd.ACK, ++n)]);
      }
      const expected = refFrame(all, max);
      // PINGs keep the link alive and are not passed on; every other frame is answered.
      const answers = (expected.messages as Buffer[]).filter((body) => body[0] !== Cmd.PING).map((body) => JSON.parse(JSON.stringify(answer(body[0], body))) as unknown);
      counts[expected.closed ? 'closed' : 'open']++;
      counts.frames += answers.length;
      await bounded(
        (async () => {
          const { client, from } = await authenticated();
          try {
            await client.writeChunks([...chunks(c.bytes, points), all.subarray(c.bytes.length)].filter((b) => b.length > 0));
            const replies = (): Buffer[] => answersIn(client.bytes().subarray(from));
            const context = `input ${hex(c.bytes)} chunked at ${JSON.stringify(points)}`;
            if (expected.closed) {
              const closed = await client.waitUntil(() => client.closed, REPLY_MS);
              assert.ok(closed, `broken framing did not close the link (${context})`);
            } else {
              const ok = await client.waitUntil(() => replies().length >= answers.length, REPLY_MS);
              assert.ok(ok && !client.closed, `a link with valid framing was ${client.closed ? 'closed' : 'not answered'} (${context})`);
            }
            const got = replies().map((body) => {
              assert.equal(body[0], Cmd.QUERY_RESULT);
              return JSON.parse(body.toString('utf8', 5)) as unknown;
            });
            // Over the wire, each decoder says what it says in this process.
            assert.deepEqual(got, expected.closed ? answers.slice(0, got.length) : answers, `answers (${context})`);
          } finally {
            client.destroy();
          }
        })(),
        CASE_MS,
        `post-auth ${hex(c.bytes)}`,
      );
      if (n % 25 === 0) await good.ask();
    }),
    { numRuns: runs(DEFAULT_RUNS), endOnFailure: true },
  );
  t.comment(`link: ${JSON.stringify(counts)}`);
});

const TODO_PREAUTH =
  'hardening bug: before authentication, an internal port (Register, Gateway: acceptLink over a frame:// Worker with ' +
  'maxPackageSize LINK_MAX_PACKAGE = 64 MB) buffers a first frame of up to 64 MB from a peer that has proved nothing; the ' +
  'AUTH timeout (5 s) is the only bound, per connection, and connections are not limited: 4 such peers took a test server ' +
  'from 97 to 331 MB RSS. An AUTH frame is well under 1 KB. Fix: a pre-authentication limit of a few KB on the accepting ' +
  'side (runtime/src/internal/link.ts acceptLink + the internal Workers: e.g. a frame protocol whose input() returns -1 ' +
  'for a package over 4 KB until the link is authenticated, or a per-connection maxPackageSize raised on AUTH_OK).';

t.test('an unauthenticated peer cannot make an internal port buffer a large frame (known bug: todo)', async (t) => {
  const client = await RawClient.connect(servers.ports.linkProduction);
  t.teardown(() => client.destroy());
  await hello(client);
  // A frame announced at 1 MB, half of it sent: an AUTH is far smaller.
  const header = Buffer.alloc(4);
  header.writeUInt32BE(1024 * 1024);
  await client.writeChunks([header, Buffer.alloc(512 * 1024)]);
  const closed = await client.waitUntil(() => client.closed, 1000);
  t.ok(closed, 'the connection is closed before the frame is complete', closed ? {} : { todo: knownBug(t, 'link-preauth-buffer', TODO_PREAUTH) });
});

t.test('the server after the fuzzing', async (t) => {
  await good.ask();
  let after = await servers.stats();
  for (let i = 0; i < 100 && (after.connections.link > base.connections.link || after.links > base.links); i++) {
    await sleep(50);
    after = await servers.stats();
  }
  t.ok(servers.alive(), 'the server process is up');
  t.equal(after.connections.link, base.connections.link, 'no fuzzed link left open');
  t.equal(after.links, base.links, 'no fuzzed link left authenticated');
  const grown = after.heapUsed - base.heapUsed;
  t.comment(`server heap ${(base.heapUsed / 1048576).toFixed(1)} → ${(after.heapUsed / 1048576).toFixed(1)} MB`);
  t.ok(grown < 16 * 1024 * 1024, `server heap after GC within 16 MB of before (+${(grown / 1048576).toFixed(1)} MB)`);
});

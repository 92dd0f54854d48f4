// Fuzz of the byte-stream framing, in process: the real StreamTransport (runtime/src/protocols/
// stream.ts) over a scripted socket, framed by text, frame (also the framing of every internal
// link) and mqtt (runtime/src/protocols/{text,frame,mqtt}.ts). Each input — valid streams,
// mutants of them, random bytes — is delivered in random chunks and compared with a reference
// framer written from the protocol descriptions:
//   - the messages delivered, the error reported and whether the socket was destroyed are exactly
//     the reference's, whatever the chunking (and across a connection move: the parser exported
//     at a random point and imported into a fresh transport, as worker/handover does);
//   - the transport never holds more than maxPackageSize bytes of a partial package;
//   - input() and decode() never throw, and each case is bounded in time.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import t from 'tap';
import { frame } from '../../runtime/src/protocols/frame.js';
import { mqtt } from '../../runtime/src/protocols/mqtt.js';
import type { Protocol } from '../../runtime/src/protocols/Protocol.js';
import { StreamTransport } from '../../runtime/src/protocols/stream.js';
import { text } from '../../runtime/src/protocols/text.js';
import type { TransportSink } from '../../runtime/src/protocols/Transport.js';
import { refFrame, refMqttStream, refText, type Outcome } from './reference.js';
import { frameFields, frameStream, mqttFields, mqttStream, textStream } from './arbitraries.js';
import { Watchdog, chunking, chunks, fc, fuzz, hex, runs, validMutatedRandom, type Field } from './lib.js';

const DEFAULT_RUNS = 1000;
/** A case over this (twice: see Watchdog.bounded) is a failure; these calls take microseconds. */
const CASE_LIMIT_MS = 2000;
/** Small, so that random inputs hit the limit often. */
const MAX_PACKAGE = 256;

const watchdog = new Watchdog(10_000);
t.teardown(() => watchdog.stop());

/** A socket that records what the transport does to it; `destroy` closes on the next "tick" (flushed by the test). */
class ScriptedSocket extends EventEmitter {
  destroyed = false;
  writableLength = 0;
  bytesRead = 0;
  bytesWritten = 0;
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 40000;
  readonly localAddress = '127.0.0.1';
  readonly localPort = 9000;
  private closePending = false;
  setNoDelay(): this {
    return this;
  }
  cork(): void {}
  uncork(): void {}
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  write(_data: unknown, cb?: () => void): boolean {
    cb?.();
    return true;
  }
  end(): this {
    return this.destroy();
  }
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.closePending = true;
    return this;
  }
  /** Delivers one chunk as the socket's 'data' event (nothing once destroyed, as Node does). */
  feed(chunk: Buffer): void {
    if (this.destroyed) return;
    this.bytesRead += chunk.length;
    this.emit('data', chunk);
  }
  /** What Node does on the next tick after destroy(). */
  flush(): void {
    if (!this.closePending) return;
    this.closePending = false;
    this.emit('close', false);
  }
}


class RecordingSink implements TransportSink {
  readonly messages: unknown[] = [];
  error: number | null = null;
  errorMessage = '';
  closes = 0;
  onTransportMessage(message: unknown): void {
    this.messages.push(Buffer.isBuffer(message) ? Buffer.from(message) : message);
  }
  onTransportClose(): void {
    this.closes++;
  }
  onTransportError(code: number, message: string): void {
    if (this.error === null) {
      this.error = code;
      this.errorMessage = message;
    }
  }
  onTransportDrain(): void {}
}

/**
 * Feeds `input` in chunks to a StreamTransport; with `moveAt`, exports the parser after that many
 * chunks and continues in a fresh transport (a connection moved to another process).
 */
function runTransport(protocol: Protocol, input: Buffer, points: number[], moveAt: number | null): Outcome {
  const parts = chunks(input, points);
  const sink = new RecordingSink();
  let socket = new ScriptedSocket();
  let transport = new StreamTransport(socket as unknown as Socket, sink, { protocol, maxPackageSize: MAX_PACKAGE, kind: 'tcp' });
  const bufferedOf = (tr: StreamTransport): number => (tr as unknown as { buffered: number }).buffered;
  parts.forEach((chunk, i) => {
    if (moveAt !== null && i === moveAt && !socket.destroyed) {
      const handover = transport.handover;
      assert.equal(handover.refusal(), null, 'a stream connection can move');
      const exported = handover.exportParser() as { parser: { state?: unknown; expected: number }; input: Buffer[] };
      handover.detach();
      // What crosses the process boundary is JSON (the state) and bytes.
      const parser = JSON.parse(JSON.stringify(exported.parser)) as { state?: unknown; expected: number };
      socket = new ScriptedSocket();
      transport = new StreamTransport(socket as unknown as Socket, sink, { protocol, maxPackageSize: MAX_PACKAGE, kind: 'tcp' });
      transport.importParser(parser, Buffer.concat(exported.input));
      transport.parseCarried();
    }
    socket.feed(chunk);
    if (!socket.destroyed) assert.ok(bufferedOf(transport) <= MAX_PACKAGE, `${bufferedOf(transport)} bytes held for a partial package (limit ${MAX_PACKAGE})`);
  });
  const destroyed = socket.destroyed;
  socket.flush();
  assert.ok(sink.closes <= 1, 'one close event');
  return { messages: sink.messages, error: sink.error, closed: destroyed };
}

const TARGETS: Array<{ name: string; protocol: Protocol; reference(input: Buffer): Outcome; valid: fc.Arbitrary<Buffer>; fields?(b: Buffer): Field[] }> = [
  { name: 'text', protocol: text as Protocol, reference: (b) => refText(b, MAX_PACKAGE), valid: textStream(MAX_PACKAGE) },
  { name: 'frame', protocol: frame as Protocol, reference: (b) => refFrame(b, MAX_PACKAGE), valid: frameStream(MAX_PACKAGE), fields: frameFields },
  { name: 'mqtt', protocol: mqtt as Protocol, reference: (b) => refMqttStream(b, MAX_PACKAGE), valid: mqttStream(MAX_PACKAGE), fields: mqttFields },
];

const same = (a: unknown, b: unknown): boolean => {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  return a === b;
};

for (const target of TARGETS) {
  t.test(`StreamTransport + ${target.name}`, async (t) => {
    const counts = { valid: 0, mutated: 0, random: 0, closed: 0, moved: 0 };
    let slowest = 0;
    const input = fc.record({
      c: validMutatedRandom(target.valid, target.fields, 600),
      points: chunking,
      moveAt: fc.option(fc.nat({ max: 6 })),
    });
    await fuzz(
      t,
      `StreamTransport + ${target.name}`,
      fc.property(input, ({ c, points, moveAt }) => {
        counts[c.kind]++;
        const expected = target.reference(c.bytes);
        if (c.kind === 'valid' && target.name === 'frame') assert.equal(expected.error, null, `reference refuses a valid stream ${hex(c.bytes)}`);
        const { value: got, ms } = watchdog.bounded(target.name, c.bytes, () => runTransport(target.protocol, c.bytes, points, moveAt), CASE_LIMIT_MS);
        slowest = Math.max(slowest, ms);
        if (got.closed) counts.closed++;
        if (moveAt !== null && moveAt < chunks(c.bytes, points).length) counts.moved++;
        const context = `input ${hex(c.bytes)} in chunks at ${JSON.stringify(points)}${moveAt !== null ? `, moved after chunk ${moveAt}` : ''}`;
        assert.equal(got.messages.length, expected.messages.length, `message count (${context})`);
        got.messages.forEach((m, i) => assert.ok(same(m, expected.messages[i]), `message ${i}: ${String(m)} vs ${String(expected.messages[i])} (${context})`));
        assert.equal(got.error, expected.error, `error code (${context})`);
        assert.equal(got.closed, expected.closed, `closed (${context})`);
      }),
      { numRuns: runs(DEFAULT_RUNS) },
    );
    t.comment(`${target.name}: ${JSON.stringify(counts)}, slowest case ${slowest.toFixed(2)} ms`);
  });
}

t.test('protocol input() and decode() on raw buffers never throw', async (t) => {
  await fuzz(
    t,
    'input/decode',
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (raw, connected) => {
      const b = Buffer.from(raw);
      for (const [name, protocol, st] of [
        ['text', text, { scanned: 0 }],
        ['frame', frame, undefined],
        ['mqtt', mqtt, { connected }],
      ] as const) {
        const conn = { maxPackageSize: MAX_PACKAGE, protocolState: st as never };
        const length = (protocol as Protocol).input(b, conn);
        assert.ok(Number.isInteger(length) && length >= -1, `${name}.input → ${length}`);
        if (length > 0 && length <= b.length) (protocol as Protocol).decode(b.subarray(0, length), conn);
      }
    }),
    { numRuns: runs(DEFAULT_RUNS) },
  );
});

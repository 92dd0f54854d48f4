// The parser state a move carries: a stream of frames (frame, text, WebSocket) is cut at every
// byte offset; the first parser gets the bytes before the cut, its state is exported and a fresh
// parser gets the export then the rest. Together they must yield exactly the uncut messages.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import t from 'tap';
import { Receiver } from 'ws';
import { frame, StreamTransport, text, type Protocol } from '../../runtime/src/protocols/index.js';
import { exportReceiver, wsSupport } from '../../runtime/src/worker/handover/wsReceiver.js';

/** Just enough of a net.Socket for a StreamTransport. */
function fakeSocket(): Socket {
  const socket = new EventEmitter() as unknown as Socket & { [k: string]: unknown };
  Object.assign(socket, {
    remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1', localPort: 2, bytesRead: 0, bytesWritten: 0,
    writableLength: 0, destroyed: false,
    setNoDelay: () => socket, write: () => true, end: () => {}, destroy: () => {}, pause: () => socket, resume: () => socket,
  });
  return socket;
}

function streamMessages(protocol: Protocol, stream: Buffer, cut: number | null): string[] {
  const seen: string[] = [];
  const sink = (prefix: string) => ({
    onTransportMessage: (m: unknown) => seen.push(Buffer.isBuffer(m) ? m.toString('latin1') : String(m)),
    onTransportClose: () => {},
    onTransportError: (_code: unknown, message: string) => seen.push(`${prefix}error ${message}`),
    onTransportDrain: () => {},
  });
  const a = fakeSocket();
  const first = new StreamTransport(a, sink('a'), { protocol, maxPackageSize: 1 << 20, kind: 'tcp' });
  if (cut === null) {
    // Uneven chunks, as a socket would deliver them.
    for (let at = 0; at < stream.length; at += 7) a.emit('data', stream.subarray(at, at + 7));
    return seen;
  }
  if (cut > 0) a.emit('data', stream.subarray(0, cut));
  const exported = first.handover.exportParser();
  // Through JSON, as over IPC.
  const parser = JSON.parse(JSON.stringify(exported.parser)) as { state?: unknown; expected: number };
  const b = fakeSocket();
  const second = new StreamTransport(b, sink('b'), { protocol, maxPackageSize: 1 << 20, kind: 'tcp' });
  second.importParser(parser, Buffer.concat(exported.input));
  second.parseCarried();
  if (cut < stream.length) b.emit('data', stream.subarray(cut));
  return seen;
}

t.test('frame: every cut gives the same messages', async (t) => {
  const bodies = ['', 'a', 'hello', 'x'.repeat(300), '\u00e9t\u00e9', 'y'.repeat(70)];
  const stream = Buffer.concat(bodies.map((body) => frame.encode(Buffer.from(body), { maxPackageSize: 1 << 20, protocolState: undefined }) as Buffer));
  const expected = streamMessages(frame, stream, null);
  t.equal(expected.length, bodies.length);
  let bad = 0;
  for (let cut = 0; cut <= stream.length; cut++) if (streamMessages(frame, stream, cut).join('|') !== expected.join('|')) bad++;
  t.equal(bad, 0, `${stream.length + 1} cuts`);
});

t.test('text: every cut gives the same messages (also inside \\r\\n and multi-byte UTF-8)', async (t) => {
  const stream = Buffer.from(['one', '', 'two with spaces', '\u00e9l\u00e8ve \u{1F600}', 'z'.repeat(500), 'last'].map((l, i) => (i % 2 ? `${l}\r\n` : `${l}\n`)).join(''));
  const expected = streamMessages(text, stream, null);
  t.equal(expected.length, 6);
  let bad = 0;
  for (let cut = 0; cut <= stream.length; cut++) if (streamMessages(text, stream, cut).join('|') !== expected.join('|')) bad++;
  t.equal(bad, 0, `${stream.length + 1} cuts`);
});

t.test('tcp (no framing): the carried bytes come first', async (t) => {
  const seen: string[] = [];
  const sink = { onTransportMessage: (m: unknown) => seen.push(String(m)), onTransportClose() {}, onTransportError() {}, onTransportDrain() {} };
  const b = fakeSocket();
  const second = new StreamTransport(b, sink, { protocol: null, maxPackageSize: 1 << 20, kind: 'tcp' });
  second.importParser({ expected: 0 }, Buffer.from('carried'));
  second.parseCarried();
  b.emit('data', Buffer.from('-then-socket'));
  t.same(seen, ['carried', '-then-socket']);
});

// ---- WebSocket: client frames (masked) into ws's own server Receiver.

const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

function clientFrame(fin: boolean, opcode: number, payload: Buffer, lengthBytes?: 0 | 2 | 8): Buffer {
  const data = Buffer.from(payload);
  for (let i = 0; i < data.length; i++) data[i]! ^= MASK[i & 3]!;
  const n = data.length;
  const width = lengthBytes ?? (n < 126 ? 0 : n < 0x10000 ? 2 : 8);
  const header = Buffer.alloc(2 + width);
  header[0] = (fin ? 0x80 : 0) | opcode;
  if (width === 0) header[1] = 0x80 | n;
  else if (width === 2) {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(n, 2);
  } else {
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([header, MASK, data]);
}

function wsEvents(stream: Buffer, cut: number | null): string {
  const seen: string[] = [];
  const make = () => {
    const r = new (Receiver as unknown as new (o: object) => EventEmitter & { write(b: Buffer): void })({ isServer: true, maxPayload: 0 });
    r.on('message', (data: Buffer, binary: boolean) => seen.push(`${binary ? 'B' : 'T'}:${data.toString('latin1')}`));
    r.on('ping', (data: Buffer) => seen.push(`ping:${data}`));
    r.on('pong', (data: Buffer) => seen.push(`pong:${data}`));
    r.on('error', (error: Error) => seen.push(`error:${error.message}`));
    return r;
  };
  const first = make();
  // Receivers unmask in place: give each run its own copy.
  const copy = Buffer.from(stream);
  if (cut === null) {
    for (let at = 0; at < copy.length; at += 5) first.write(copy.subarray(at, at + 5));
    return seen.join('|');
  }
  if (cut > 0) first.write(copy.subarray(0, cut));
  const carried = Buffer.concat(exportReceiver(first as never));
  const second = make();
  const rest = Buffer.concat([carried, copy.subarray(cut)]);
  if (rest.length) second.write(rest);
  return seen.join('|');
}

t.test('websocket: ws internals are there (pinned ws)', async (t) => {
  t.equal(wsSupport(), null);
});

t.test('websocket: every cut gives the same messages, pings and fragments included', async (t) => {
  const stream = Buffer.concat([
    clientFrame(true, 1, Buffer.from('hello')),
    clientFrame(true, 2, Buffer.alloc(0)),
    // Fragmented text: first fragment, ping, empty continuation, pong, 16-bit length continuation, final.
    clientFrame(false, 1, Buffer.from('fr\u00e9')),
    clientFrame(true, 9, Buffer.from('ping1')),
    clientFrame(false, 0, Buffer.alloc(0)),
    clientFrame(true, 10, Buffer.from('pong1')),
    clientFrame(false, 0, Buffer.from('m'.repeat(200))),
    clientFrame(true, 0, Buffer.from('end')),
    // Fragmented binary whose first fragment is empty, with a non-minimal 64-bit length.
    clientFrame(false, 2, Buffer.alloc(0)),
    clientFrame(true, 9, Buffer.alloc(0)),
    clientFrame(true, 0, Buffer.from('bin'), 8),
    clientFrame(true, 1, Buffer.from('x'.repeat(130)), 2),
    clientFrame(true, 1, Buffer.from('tail')),
  ]);
  const expected = wsEvents(stream, null);
  t.equal(expected.split('|').length, 9, expected.slice(0, 200));
  t.notMatch(expected, /error/);
  const failures: number[] = [];
  for (let cut = 0; cut <= stream.length; cut++) if (wsEvents(stream, cut) !== expected) failures.push(cut);
  t.same(failures, [], `${stream.length + 1} cuts`);
});

t.test('websocket: a large frame cut inside its payload', async (t) => {
  const stream = Buffer.concat([clientFrame(false, 2, Buffer.alloc(70_000, 3)), clientFrame(true, 0, Buffer.alloc(10, 4)), clientFrame(true, 1, Buffer.from('ok'))]);
  const expected = wsEvents(stream, null);
  const failures: number[] = [];
  for (const cut of [1, 2, 9, 10, 13, 14, 15, 1000, 69_999, 70_014, 70_015, 70_016, 70_019, 70_020, 70_030, stream.length - 3]) {
    if (wsEvents(stream, cut) !== expected) failures.push(cut);
  }
  t.same(failures, []);
});

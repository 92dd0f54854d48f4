// frame:// and tcp:// connections move too (text and WebSocket are covered by stress.test.ts).
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { registerTeardown, sleep, startApp } from '../helpers/app.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'move-app.ts');
const app = await startApp(fixture, { env: { KINDS: 'Frame,Tcp', COUNT: '2' } });
registerTeardown(t, app);

function connect(port: number): Promise<{ socket: net.Socket; received: () => Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    socket.on('data', (chunk) => (data = Buffer.concat([data, chunk])));
    socket.once('connect', () => resolve({ socket, received: () => data }));
    socket.once('error', reject);
  });
}

const frameOf = (text: string): Buffer => {
  const body = Buffer.from(text);
  const out = Buffer.alloc(4 + body.length);
  out.writeUInt32BE(4 + body.length, 0);
  body.copy(out, 4);
  return out;
};

function frames(data: Buffer): string[] {
  const out: string[] = [];
  while (data.length >= 4 && data.length >= data.readUInt32BE(0)) {
    out.push(data.subarray(4, data.readUInt32BE(0)).toString());
    data = data.subarray(data.readUInt32BE(0));
  }
  return out;
}

t.test('frame: a move mid-package, then echoes from the new process', async (t) => {
  const c = await connect(app.ports.Frame!);
  c.socket.write(frameOf('pid'));
  await sleep(200);
  const first = Number(frames(c.received())[0]!.split(' ')[1]);
  // The move request and the first half of the next package in one write.
  const next = frameOf('d 1 ' + 'z'.repeat(5000));
  c.socket.write(Buffer.concat([frameOf('m'), next.subarray(0, 2500)]));
  await sleep(300);
  c.socket.write(next.subarray(2500));
  c.socket.write(frameOf('pid'));
  await sleep(300);
  const got = frames(c.received());
  const second = Number(got[2]!.split(' ')[1]);
  t.not(second, first, `moved ${first} → ${second}`);
  t.equal(got[1], `e ${second} 1 ${'z'.repeat(5000)}`, 'the package split by the move arrives whole, completed by the new process');
  c.socket.destroy();
});

t.test('tcp: raw chunks continue in the new process', async (t) => {
  const c = await connect(app.ports.Tcp!);
  c.socket.write('PID');
  await sleep(200);
  const first = Number(c.received().toString().split(' ')[1]);
  c.socket.write('MOVE');
  await sleep(300);
  c.socket.write('PID');
  await sleep(200);
  const text = c.received().toString();
  const second = Number(text.slice(text.lastIndexOf('pid ')).split(' ')[1]);
  t.not(second, first, `moved ${first} → ${second}`);
  c.socket.write('hello');
  await sleep(200);
  t.ok(c.received().toString().endsWith('hello'), 'echo from the new process');
  c.socket.destroy();
});

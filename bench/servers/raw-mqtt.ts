/**
 * Opt-in reference peer `rawmqtt`: the least a Node process can do for the MQTT scenarios — one
 * process, plain `net` sockets, packets framed by hand, exact-topic and `prefix/+` subscriptions
 * only, a PUBLISH's bytes written as they are (QoS 0) to every subscriber, QoS 1: PUBACK to the
 * publisher and the same bytes to QoS 1 subscribers (the publisher's packet id reused, no
 * tracking). Not a broker anyone should run: it shows how much of a delivery is the kernel's write.
 */
import net from 'node:net';

const port = Number(process.env.PORT ?? 0);
const exact = new Map<string, Set<net.Socket>>();
const wildcard = new Map<string, Set<net.Socket>>(); // 'a/b/+' kept as 'a/b/'
const CONNACK = Buffer.from([0x20, 0x02, 0x00, 0x00]);

function subscribers(topic: string): Array<Set<net.Socket>> {
  const out: Array<Set<net.Socket>> = [];
  const e = exact.get(topic);
  if (e) out.push(e);
  const slash = topic.lastIndexOf('/');
  const w = wildcard.get(topic.slice(0, slash + 1));
  if (w) out.push(w);
  return out;
}

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  let pending: Buffer | null = null;
  const mine: Array<Set<net.Socket>> = [];
  socket.on('data', (chunk: Buffer) => {
    const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let at = 0;
    while (at + 2 <= buf.length) {
      let remaining = 0;
      let multiplier = 1;
      let i = at + 1;
      let complete = false;
      for (; i < buf.length && i <= at + 4; i++) {
        remaining += (buf[i] & 0x7f) * multiplier;
        multiplier *= 128;
        if ((buf[i] & 0x80) === 0) {
          complete = true;
          i++;
          break;
        }
      }
      if (!complete || i + remaining > buf.length) break;
      const type = buf[at] >> 4;
      if (type === 1) socket.write(CONNACK);
      else if (type === 8) {
        const id = buf.subarray(i, i + 2);
        const length = (buf[i + 2] << 8) | buf[i + 3];
        const filter = buf.toString('utf8', i + 4, i + 4 + length);
        const qos = buf[i + 4 + length];
        const index = filter.endsWith('/+') ? wildcard : exact;
        const key = filter.endsWith('/+') ? filter.slice(0, -1) : filter;
        let set = index.get(key);
        if (!set) index.set(key, (set = new Set()));
        set.add(socket);
        mine.push(set);
        socket.write(Buffer.from([0x90, 0x03, id[0], id[1], qos]));
      } else if (type === 3) {
        const length = (buf[i] << 8) | buf[i + 1];
        const topic = buf.toString('utf8', i + 2, i + 2 + length);
        const packet = buf.subarray(at, i + remaining);
        for (const set of subscribers(topic)) for (const s of set) s.write(packet);
        if ((buf[at] & 0x06) !== 0) socket.write(Buffer.from([0x40, 0x02, buf[i + 2 + length], buf[i + 3 + length]]));
      }
      at = i + remaining;
    }
    if (at < buf.length) pending = buf.subarray(at);
  });
  const forget = (): void => {
    for (const set of mine) set.delete(socket);
  };
  socket.on('close', forget);
  socket.on('error', () => {});
});

server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
  const address = server.address() as { port: number };
  process.stdout.write(`READY ${JSON.stringify({ port: address.port })}\n`);
});
process.on('SIGTERM', () => process.exit(0));

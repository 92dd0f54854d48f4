// Room affinity: N processes share one port; `join <room>` moves the connection to the process
// that owns the room (hash of the name mod N), so a room's members all live in one process and
// a room broadcast is a local loop — no inter-process hop, no shared store.
//
//   npx tsx start.ts start
//   nc 127.0.0.1 7400        (or: wscat -c ws://127.0.0.1:7401)
//   join lobby / say hi / who / pid
import { createHash } from 'node:crypto';
import { TransferError, Worker, type Connection } from 'gatewayworker';

const count = Number(process.env.COUNT ?? 4);
const host = process.env.HOST ?? '0.0.0.0';

/** The process (worker id) that owns `room`. */
export function ownerOf(room: string, processes: number): number {
  return createHash('sha1').update(room).digest().readUInt32BE(0) % processes;
}

function rooms(worker: Worker): void {
  /** Members of the rooms this process owns. */
  const members = new Map<string, Set<Connection<string>>>();
  const reply = (conn: Connection<string>, text: string): void => void conn.send(`[pid ${process.pid}] ${text}`);

  const enter = (conn: Connection<string>, room: string): void => {
    conn.context.room = room;
    let set = members.get(room);
    if (!set) members.set(room, (set = new Set()));
    set.add(conn);
    for (const other of set) if (other !== conn) reply(other, `${conn.context.name} joined ${room}`);
    reply(conn, `joined ${room} (${set.size} here)`);
  };
  const leave = (conn: Connection<string>): void => {
    const room = conn.context.room as string | undefined;
    if (room) members.get(room)?.delete(conn);
  };

  const w = worker as Worker<string>;
  w.onConnect = (conn) => {
    conn.context.name = `guest${conn.id}@${process.pid}`;
    reply(conn, `hello ${conn.context.name}; try: join <room>`);
  };
  // A connection arrives from a sibling process: it wanted a room this process owns.
  w.onTransfer = (conn, context) => enter(conn as Connection<string>, (context as { room: string }).room);
  w.onClose = (conn) => leave(conn as Connection<string>);
  w.onMessage = async (conn, line) => {
    const c = conn as Connection<string>;
    const [command, ...rest] = String(line).trim().split(' ');
    const arg = rest.join(' ');
    switch (command) {
      case 'join': {
        if (!arg) return reply(c, 'usage: join <room>');
        leave(c);
        const owner = ownerOf(arg, worker.count);
        if (owner === worker.id) return enter(c, arg);
        try {
          // Sends made until this resolves are delivered by the new process, in order.
          await c.transferTo(owner, { room: arg });
        } catch (error) {
          // Refused (TLS, target restarting, …): the connection stays here, outside any room.
          reply(c, `cannot join ${arg} now: ${error instanceof TransferError ? error.code : String(error)}`);
        }
        return;
      }
      case 'say': {
        const room = c.context.room as string | undefined;
        if (!room) return reply(c, 'join a room first');
        for (const other of members.get(room) ?? []) reply(other, `${c.context.name}: ${arg}`);
        return;
      }
      case 'who':
        return reply(c, `in ${c.context.room ?? 'no room'}: ${[...(members.get(c.context.room as string) ?? [])].map((m) => m.context.name).join(', ')}`);
      case 'pid':
        return reply(c, `served by worker ${worker.id}`);
      default:
        return reply(c, 'commands: join <room>, say <text>, who, pid');
    }
  };
}

rooms(new Worker(`text://${host}:${process.env.TEXT_PORT ?? 7400}`, { name: 'Rooms', count }) as Worker);
rooms(new Worker(`websocket://${host}:${process.env.WS_PORT ?? 7401}`, { name: 'WsRooms', count }) as Worker);

Worker.runAll();

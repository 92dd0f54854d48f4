// Router option: `router: (id, ctx, workers) => …` routes by ctx.session.room (room-<n> → the
// n-th worker by name), so every client of one room, on either gateway, lands on one worker pid.
import t from 'tap';
import { startCore, textPeer, wsPeer, type Peer } from './helpers.js';

t.test('router by ctx.session.room', async (t) => {
  const core = await startCore(t, { ROUTER: 'room', WORKER_COUNT: '2' });
  const peers: Peer[] = [];
  for (let i = 0; i < 4; i++) peers.push(await wsPeer(t, core.wsPort));
  for (let i = 0; i < 4; i++) peers.push(await textPeer(t, core.textPort));
  // Without a room the default router spreads clients over both workers.
  t.equal(new Set(peers.map((p) => p.pid)).size, 2, 'before joining a room, clients are spread over both workers');

  const rooms = new Map<string, Peer[]>([
    ['room-0', []],
    ['room-1', []],
  ]);
  peers.forEach((peer, i) => rooms.get(`room-${i % 2}`)!.push(peer));
  for (const [room, members] of rooms) for (const peer of members) await peer.ask(`room ${room}`, 'room');

  const pidOf = new Map<string, number>();
  for (const [room, members] of rooms) {
    const pids = new Set<number>();
    for (const peer of members) {
      for (let i = 0; i < 3; i++) pids.add((await peer.ask('pid', 'pid')).pid);
      const session = (await peer.ask('session', 'session')) as { session: { room?: string }; pid: number };
      t.equal(session.session.room, room, `${peer.kind} client's session (seen by the room's worker) has its room`);
      pids.add(session.pid);
    }
    t.equal(pids.size, 1, `${room}: every message of its ${members.length} clients (ws and text) ran in one worker`);
    pidOf.set(room, [...pids][0]);
  }
  t.not(pidOf.get('room-0'), pidOf.get('room-1'), 'the two rooms live in different workers');

  // Interleaved traffic from both rooms keeps the placement.
  const replies = await Promise.all(peers.map((peer) => peer.ask('pid', 'pid')));
  peers.forEach((peer, i) => t.equal(replies[i].pid, pidOf.get(`room-${i % 2}`), `client ${i} (${peer.kind}) stays with its room's worker`));

  // A client that changes room moves to the other room's worker.
  const mover = peers[0];
  await mover.ask('room room-1', 'room');
  t.equal((await mover.ask('pid', 'pid')).pid, pidOf.get('room-1'), 'a client that changes room follows it');
  t.same((await mover.ask('session', 'session')).session, { room: 'room-1' }, 'and its session moved with it');
});

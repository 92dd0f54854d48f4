// Heartbeat with pingInterval 1 s and pingNotResponseLimit 2: a silent client is closed after
// 2–3 s (the first check after 2 s of silence), a client that sends something every second stays,
// and an idle client receives pingData before that.
import t from 'tap';
import { sleep, startCore, textPeer, wsPeer, type Peer } from './helpers.js';

const PING = '{"type":"ping"}';

t.test('heartbeat', async (t) => {
  const core = await startCore(t, { PING_INTERVAL: '1', PING_LIMIT: '2', PING_DATA: PING, WORKER_COUNT: '1' });
  const connect = async (kind: 'ws' | 'text'): Promise<{ peer: Peer; at: number }> => {
    const at = Date.now();
    const peer = kind === 'ws' ? await wsPeer(t, core.wsPort) : await textPeer(t, core.textPort);
    return { peer, at };
  };
  const [silentWs, silentText, activeWs, activeText] = await Promise.all([connect('ws'), connect('text'), connect('ws'), connect('text')]);

  // The active clients say something every second.
  let beats = 0;
  const beat = setInterval(() => {
    beats++;
    if (!activeWs.peer.isClosed) activeWs.peer.send('noop');
    if (!activeText.peer.isClosed) activeText.peer.send('noop');
  }, 1000);
  t.teardown(() => clearInterval(beat));

  await Promise.race([Promise.all([silentWs.peer.closed, silentText.peer.closed]), sleep(5000)]);
  for (const [name, { peer, at }] of Object.entries({ ws: silentWs, text: silentText })) {
    t.ok(peer.isClosed, `silent ${name} client was closed`);
    const after = peer.closedAt - at;
    t.ok(after >= 1900 && after <= 3600, `silent ${name} client closed after ${after} ms (expected 2–3 s)`);
    t.ok(peer.queue.some((m) => m.raw === PING), `silent ${name} client received pingData before the close`);
  }
  await sleep(Math.max(0, 4500 - (Date.now() - activeWs.at)));
  clearInterval(beat);
  t.ok(beats >= 3, `active clients sent ${beats} beats`);
  t.notOk(activeWs.peer.isClosed, 'a ws client that sends every second stays connected (4.5 s)');
  t.notOk(activeText.peer.isClosed, 'a text client that sends every second stays connected (4.5 s)');
  // It is still served.
  t.equal((await activeWs.peer.ask('pid', 'pid')).type, 'pid', 'active ws client still answered');
  t.equal((await activeText.peer.ask('pid', 'pid')).type, 'pid', 'active text client still answered');
});

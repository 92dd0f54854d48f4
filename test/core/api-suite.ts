/**
 * The Gateway API battery, run once from inside a BusinessWorker (api-worker.test.ts) and once
 * from a GatewayClient (api-client.test.ts) against the same kind of app: two ws clients and two
 * text clients, so every send must reach both gateways.
 */
import type { Test } from 'tap';
import { failure, sorted, type CoreApp, type Peer, textPeer, waitFor, wsPeer } from './helpers.js';

export interface Caller {
  /** Calls the API method; rejects with the API's error (name and code kept). */
  call(method: string, ...args: unknown[]): Promise<unknown>;
  /** Clients that exist besides the four under test (the driver of the worker caller). */
  extra: Peer[];
}

export interface Clients {
  w1: Peer;
  w2: Peer;
  t1: Peer;
  t2: Peer;
}

export async function connectClients(t: Test, core: CoreApp): Promise<Clients> {
  const [w1, w2, t1, t2] = await Promise.all([wsPeer(t, core.wsPort), wsPeer(t, core.wsPort), textPeer(t, core.textPort), textPeer(t, core.textPort)]);
  return { w1, w2, t1, t2 };
}

export async function apiSuite(t: Test, caller: Caller, clients: Clients): Promise<void> {
  const { w1, w2, t1, t2 } = clients;
  const call = caller.call;
  const everyone = [w1, w2, t1, t2, ...caller.extra];
  const allIds = sorted(everyone.map((p) => p.id));
  let barrier = 0;

  /** After a send: every client gets a broadcast marker; counts what each got before it. */
  async function delivered(t: Test, payload: string, expected: Peer[], times = 1): Promise<void> {
    const marker = `barrier-${++barrier}`;
    await call('sendToAll', marker);
    for (const peer of everyone) {
      if (peer.isClosed) continue;
      const before = await peer.until((m) => m.raw === marker, 3000, marker);
      const got = before.filter((m) => m.raw === payload).length;
      t.equal(got, expected.includes(peer) ? times : 0, `${payload}: ${peer.kind} client ${name(peer)} got it ${expected.includes(peer) ? times : 0} time(s)`);
    }
  }
  const name = (peer: Peer): string => Object.entries(clients).find(([, p]) => p === peer)?.[0] ?? 'driver';

  await t.test('sendToAll reaches ws and text clients; clientIds and excludeClientIds', async (t) => {
    await call('sendToAll', 'all-1');
    await delivered(t, 'all-1', everyone);
    await call('sendToAll', 'all-2', [w1.id, t1.id]);
    await delivered(t, 'all-2', [w1, t1]);
    await call('sendToAll', 'all-3', null, [w1.id, t2.id]);
    await delivered(t, 'all-3', everyone.filter((p) => p !== w1 && p !== t2));
  });

  await t.test('sendToClient', async (t) => {
    await call('sendToClient', t2.id, 'direct-t2');
    await delivered(t, 'direct-t2', [t2]);
    await call('sendToClient', w2.id, 'direct-w2');
    await delivered(t, 'direct-w2', [w2]);
  });

  await t.test('bindUid, sendToUid (one and list), uid queries', async (t) => {
    await call('bindUid', w1.id, 'u1');
    await call('bindUid', t1.id, 'u1');
    await call('bindUid', w2.id, 'u2');
    await call('bindUid', t2.id, 'u3');
    await call('sendToUid', 'u1', 'uid-1');
    await delivered(t, 'uid-1', [w1, t1]);
    await call('sendToUid', ['u2', 'u3'], 'uid-23');
    await delivered(t, 'uid-23', [w2, t2]);
    t.same(sorted((await call('getClientIdByUid', 'u1')) as string[]), sorted([w1.id, t1.id]), 'getClientIdByUid');
    t.same(await call('getClientIdByUid', 'nobody'), [], 'getClientIdByUid of an unknown uid');
    t.equal(await call('getUidByClientId', w2.id), 'u2', 'getUidByClientId');
    t.equal(await call('isUidOnline', 'u3'), true, 'isUidOnline');
    t.equal(await call('isUidOnline', 'nobody'), false, 'isUidOnline of an unknown uid');
    t.same(await call('isUidsOnline', ['u1', 'nobody', 'u2']), { u1: true, nobody: false, u2: true }, 'isUidsOnline');
    const batch = (await call('batchGetClientIdByUid', ['u1', 'u3', 'nobody'])) as Record<string, string[]>;
    t.same(
      { u1: sorted(batch.u1), u3: batch.u3, nobody: batch.nobody },
      { u1: sorted([w1.id, t1.id]), u3: [t2.id], nobody: [] },
      'batchGetClientIdByUid',
    );
    t.same(sorted((await call('getAllUidList')) as string[]), ['u1', 'u2', 'u3'], 'getAllUidList');
    t.equal(await call('getAllUidCount'), 3, 'getAllUidCount');
  });

  await t.test('joinGroup, sendToGroup (one, list, exclude), group queries', async (t) => {
    await call('joinGroup', w1.id, 'g1');
    await call('joinGroup', t1.id, 'g1');
    await call('joinGroup', w2.id, 'g2');
    await call('joinGroup', t2.id, 'g2');
    await call('joinGroup', t1.id, 'g2');
    await call('sendToGroup', 'g1', 'group-1');
    await delivered(t, 'group-1', [w1, t1]);
    await call('sendToGroup', ['g1', 'g2'], 'group-12');
    // t1 is in both groups and must get the message once.
    await delivered(t, 'group-12', [w1, w2, t1, t2]);
    await call('sendToGroup', 'g1', 'group-1-ex', [t1.id]);
    await delivered(t, 'group-1-ex', [w1]);
    await call('sendToGroup', ['g1', 'g2'], 'group-12-ex', [w1.id, t2.id]);
    await delivered(t, 'group-12-ex', [w2, t1]);

    t.equal(await call('getClientIdCountByGroup', 'g2'), 3, 'getClientIdCountByGroup');
    t.equal(await call('getClientIdCountByGroup', 'nope'), 0, 'getClientIdCountByGroup of an unknown group');
    t.same(sorted((await call('getClientIdListByGroup', 'g2')) as string[]), sorted([w2.id, t2.id, t1.id]), 'getClientIdListByGroup');
    t.same(sorted((await call('getUidListByGroup', 'g2')) as string[]), ['u1', 'u2', 'u3'], 'getUidListByGroup');
    t.equal(await call('getUidCountByGroup', 'g1'), 1, 'getUidCountByGroup (w1 and t1 share u1)');
    t.same(sorted((await call('getAllGroupIdList')) as string[]), ['g1', 'g2'], 'getAllGroupIdList');
    const groupUids = (await call('getAllGroupUidList')) as Record<string, string[]>;
    t.same({ g1: sorted(groupUids.g1), g2: sorted(groupUids.g2) }, { g1: ['u1'], g2: ['u1', 'u2', 'u3'] }, 'getAllGroupUidList');
    t.same(sorted(Object.keys(groupUids)), ['g1', 'g2'], 'getAllGroupUidList has no other groups');
    const groupIds = (await call('getAllGroupClientIdList')) as Record<string, string[]>;
    t.same(
      { g1: sorted(groupIds.g1), g2: sorted(groupIds.g2) },
      { g1: sorted([w1.id, t1.id]), g2: sorted([w2.id, t2.id, t1.id]) },
      'getAllGroupClientIdList',
    );
    t.same(await call('batchGetClientIdCountByGroup', ['g1', 'g2', 'nope']), { g1: 2, g2: 3, nope: 0 }, 'batchGetClientIdCountByGroup');
  });

  await t.test('client queries', async (t) => {
    t.equal(await call('isOnline', w1.id), true, 'isOnline (ws)');
    t.equal(await call('isOnline', t2.id), true, 'isOnline (text)');
    // Well-formed id of a gateway that does not exist.
    t.equal(await call('isOnline', `7f000001ffff${'0'.repeat(12)}00000001`), false, 'isOnline of an id on an unknown gateway');
    // Right gateway and epoch, counter never handed out.
    t.equal(await call('isOnline', `${w1.id.slice(0, 24)}7ffffff0`), false, 'isOnline of an unused counter');
    t.equal(await call('getAllClientIdCount'), everyone.length, 'getAllClientIdCount');
    t.same(sorted((await call('getAllClientIdList')) as string[]), allIds, 'getAllClientIdList');
  });

  await t.test('sessions: setSession, updateSession (deep merge), getSession, getAllClientSessions, getClientSessionsByGroup', async (t) => {
    await call('setSession', w1.id, { name: 'ann', nested: { x: 1, y: 2 }, list: [1, 2] });
    t.same(await call('getSession', w1.id), { name: 'ann', nested: { x: 1, y: 2 }, list: [1, 2] }, 'getSession after setSession');
    await call('updateSession', w1.id, { nested: { y: 3, z: { deep: true } }, list: [9], extra: 'e' });
    t.same(
      await call('getSession', w1.id),
      { name: 'ann', nested: { x: 1, y: 3, z: { deep: true } }, list: [9], extra: 'e' },
      'updateSession merges nested objects and replaces arrays',
    );
    await call('updateSession', t1.id, { fresh: 1 });
    t.same(await call('getSession', t1.id), { fresh: 1 }, 'updateSession of a client without a session');
    t.same(await call('getSession', w2.id), {}, 'getSession of a client without a session is {}');
    t.equal(await call('getSession', `7f000001ffff${'0'.repeat(12)}00000001`), null, 'getSession of an unknown client is null');
    const all = (await call('getAllClientSessions')) as Record<string, unknown>;
    t.same(sorted(Object.keys(all)), allIds, 'getAllClientSessions has every client');
    t.same(all[w1.id], { name: 'ann', nested: { x: 1, y: 3, z: { deep: true } }, list: [9], extra: 'e' }, 'getAllClientSessions: w1');
    t.same(all[t1.id], { fresh: 1 }, 'getAllClientSessions: t1');
    const g1 = (await call('getClientSessionsByGroup', 'g1')) as Record<string, unknown>;
    t.same(sorted(Object.keys(g1)), sorted([w1.id, t1.id]), 'getClientSessionsByGroup keys');
    t.same(g1[t1.id], { fresh: 1 }, 'getClientSessionsByGroup: t1');
    await call('setSession', t1.id, { replaced: true });
    t.same(await call('getSession', t1.id), { replaced: true }, 'setSession replaces the whole session');
  });

  await t.test('bad arguments reject with typed errors', async (t) => {
    const argument = { name: 'GatewayArgumentError', code: 'ERR_GW_INVALID_ARGUMENT' };
    const invalidId = { name: 'InvalidClientIdError', code: 'ERR_GW_INVALID_CLIENT_ID' };
    const cases: Array<[string, unknown[], typeof argument]> = [
      ['sendToGroup', ['', 'x'], argument],
      ['sendToGroup', [[], 'x'], argument],
      ['sendToGroup', [['g1', ''], 'x'], argument],
      ['sendToUid', ['', 'x'], argument],
      ['joinGroup', [w1.id, ''], argument],
      ['leaveGroup', [w1.id, ''], argument],
      ['ungroup', [''], argument],
      ['bindUid', [w1.id, ''], argument],
      ['getClientIdListByGroup', [''], argument],
      ['getClientIdCountByGroup', [''], argument],
      ['batchGetClientIdCountByGroup', [[]], argument],
      ['getClientSessionsByGroup', [''], argument],
      ['setSession', [w1.id, 'not an object'], argument],
      ['updateSession', [w1.id, [1, 2]], argument],
      ['sendToClient', ['not-a-client-id', 'x'], invalidId],
      ['sendToClient', ['abc', 'x'], invalidId],
      ['isOnline', ['zz'], invalidId],
      ['getSession', ['0123'], invalidId],
      ['joinGroup', ['XYZ', 'g1'], invalidId],
      ['closeClient', [`${w1.id}0`, 'x'], invalidId],
      ['destroyClient', [w1.id.toUpperCase().replace(/[0-9]/g, 'G')], invalidId],
    ];
    for (const [method, args, expected] of cases) {
      const result = await failure(call(method, ...args));
      t.same(result === 'resolved' ? result : { name: result.name, code: result.code }, expected, `${method}(${JSON.stringify(args)}) rejects with ${expected.name}`);
    }
    t.equal(await call('isOnline', w1.id), true, 'w1 is still online after the bad calls');
  });

  await t.test('leaveGroup, unbindUid, ungroup', async (t) => {
    await call('leaveGroup', t1.id, 'g2');
    t.same(sorted((await call('getClientIdListByGroup', 'g2')) as string[]), sorted([w2.id, t2.id]), 'leaveGroup');
    await call('sendToGroup', 'g2', 'after-leave');
    await delivered(t, 'after-leave', [w2, t2]);
    await call('unbindUid', t2.id, 'u3');
    t.equal(await call('getUidByClientId', t2.id), null, 'unbindUid: no uid');
    t.equal(await call('isUidOnline', 'u3'), false, 'unbindUid: uid offline');
    await call('sendToUid', 'u3', 'after-unbind');
    await delivered(t, 'after-unbind', []);
    await call('ungroup', 'g2');
    t.equal(await call('getClientIdCountByGroup', 'g2'), 0, 'ungroup empties the group');
    t.same(sorted((await call('getAllGroupIdList')) as string[]), ['g1'], 'ungroup: only g1 left');
    await call('sendToGroup', 'g2', 'after-ungroup');
    await delivered(t, 'after-ungroup', []);
    t.equal(await call('isOnline', w2.id), true, 'members of an ungrouped group stay connected');
  });

  await t.test('closeClient with a final message, destroyClient', async (t) => {
    await call('closeClient', t2.id, 'bye-text');
    await t2.closed;
    t.ok(t2.queue.some((m) => m.raw === 'bye-text'), 'text client got its final message before the close');
    await call('closeClient', w2.id, 'bye-ws');
    await w2.closed;
    t.ok(w2.queue.some((m) => m.raw === 'bye-ws'), 'ws client got its final message before the close');
    await call('destroyClient', t1.id);
    await t1.closed;
    t.pass('destroyClient closed the text client');
    await waitFor(async () => !(await call('isOnline', t2.id)) && !(await call('isOnline', w2.id)) && !(await call('isOnline', t1.id)), 3000, 'closed clients offline');
    t.equal(await call('getAllClientIdCount'), everyone.length - 3, 'count after closes');
    t.same(await call('getClientIdByUid', 'u1'), [w1.id], 'uid binding of a closed client is gone');
    t.same(await call('getClientIdListByGroup', 'g1'), [w1.id], 'group membership of a closed client is gone');
    // A send to a client that left is skipped silently.
    t.equal(await call('sendToClient', t2.id, 'to-the-gone'), null, 'sendToClient to a closed client resolves');
    await call('destroyClient', w1.id);
    await w1.closed;
    t.pass('destroyClient closed the ws client');
  });
}

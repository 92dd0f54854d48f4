// Sessions: ctx.session changes are written back to the gateway after the handler settles, are
// seen by the next message and by GatewayClient.getSession; GatewayClient changes are seen by the
// next handler; onClose sees the last session.
import t from 'tap';
import { startCore, textPeer, wsPeer, type Peer } from './helpers.js';

t.test('sessions', async (t) => {
  const core = await startCore(t);
  const gateway = await core.client();
  const observer = await textPeer(t, core.textPort);
  await observer.ask('join observers', 'join');
  const closedSession = async (peer: Peer): Promise<unknown> => (await observer.expectType('closed', (j) => j.clientId === peer.id, 5000)).session;

  await t.test('ctx.session changes reach the next message and getSession (ws and text)', async (t) => {
    for (const peer of [await wsPeer(t, core.wsPort), await textPeer(t, core.textPort)]) {
      t.same((await peer.ask('session', 'session')).session, {}, `${peer.kind}: a new client has an empty session`);
      t.same(await gateway.getSession(peer.id), {}, `${peer.kind}: getSession of a new client is {}`);
      await peer.ask('set a 1', 'set');
      await peer.ask('set nested {"x":{"y":2}}', 'set');
      const expected = { a: 1, nested: { x: { y: 2 } } };
      t.same((await peer.ask('session', 'session')).session, expected, `${peer.kind}: the next message sees the change`);
      t.same(await gateway.getSession(peer.id), expected, `${peer.kind}: GatewayClient.getSession sees it once the handler settled`);
      await peer.ask('replace {"only":"this"}', 'replace');
      t.same(await gateway.getSession(peer.id), { only: 'this' }, `${peer.kind}: assigning ctx.session replaces it`);
      t.same((await peer.ask('session', 'session')).session, { only: 'this' }, `${peer.kind}: the next message sees the replacement`);
      await peer.ask('replace {}', 'replace');
      t.same(await gateway.getSession(peer.id), {}, `${peer.kind}: a session can be emptied`);
    }
  });

  await t.test('GatewayClient updateSession / setSession are seen by the next handler', async (t) => {
    for (const peer of [await wsPeer(t, core.wsPort), await textPeer(t, core.textPort)]) {
      await peer.ask('set mine {"keep":1,"deep":{"a":1}}', 'set');
      await gateway.updateSession(peer.id, { mine: { deep: { b: 2 } }, web: 'yes' });
      // A query on the same link is answered after the update was applied.
      t.same(await gateway.getSession(peer.id), { mine: { keep: 1, deep: { a: 1, b: 2 } }, web: 'yes' }, `${peer.kind}: updateSession deep-merges`);
      t.same(
        (await peer.ask('session', 'session')).session,
        { mine: { keep: 1, deep: { a: 1, b: 2 } }, web: 'yes' },
        `${peer.kind}: the next handler's ctx.session has the update`,
      );
      await peer.ask('set after 1', 'set');
      t.same(
        await gateway.getSession(peer.id),
        { mine: { keep: 1, deep: { a: 1, b: 2 } }, web: 'yes', after: 1 },
        `${peer.kind}: a handler change after the update keeps the update`,
      );
      await gateway.setSession(peer.id, { fresh: true });
      await gateway.getSession(peer.id);
      t.same((await peer.ask('session', 'session')).session, { fresh: true }, `${peer.kind}: setSession replaces what the next handler sees`);
    }
  });

  await t.test('onClose sees the last session', async (t) => {
    const a = await wsPeer(t, core.wsPort);
    await a.ask('set k "v1"', 'set');
    await a.ask('set k "v2"', 'set');
    a.close();
    t.same(await closedSession(a), { k: 'v2' }, 'ws: onClose sees the last handler change');

    const b = await textPeer(t, core.textPort);
    await b.ask('set a 1', 'set');
    await gateway.updateSession(b.id, { b: 2 });
    await gateway.getSession(b.id);
    b.close();
    t.same(await closedSession(b), { a: 1, b: 2 }, 'text: onClose sees an updateSession made from a GatewayClient');

    const c = await wsPeer(t, core.wsPort);
    await c.ask('set first 1', 'set');
    c.send('slowset 300 k "late"');
    await new Promise((r) => setTimeout(r, 50));
    c.close();
    t.same(await closedSession(c), { first: 1, k: 'late' }, 'onClose runs after a handler in flight and sees its change');

    // The handler changes the session before and after an await; the client leaves in between.
    const d = await textPeer(t, core.textPort);
    d.send('twostep 400');
    await new Promise((r) => setTimeout(r, 100));
    d.close();
    t.same(await closedSession(d), { before: true, after: true }, 'onClose sees changes made before the close event arrived');
  });

  await t.test('a handler write-back does not undo a concurrent GatewayClient update', async (t) => {
    const peer = await wsPeer(t, core.wsPort);
    await peer.ask('set base 1', 'set');
    peer.send('slowset 400 k "handler"');
    await new Promise((r) => setTimeout(r, 100));
    await gateway.updateSession(peer.id, { banned: true });
    t.same(await gateway.getSession(peer.id), { base: 1, banned: true }, 'update applied while the handler runs');
    await peer.expectType('slowset');
    await new Promise((r) => setTimeout(r, 100));
    t.same(await gateway.getSession(peer.id), { base: 1, banned: true, k: 'handler' }, 'both the handler change and the update are kept');
  });
});

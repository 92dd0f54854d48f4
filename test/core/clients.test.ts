// Two gateways with different protocols (websocket and text) serving one Events.ts: their
// clients talk through a group; ctx facts; onWebSocketConnect gets url, query, headers, cookies.
import t from 'tap';
import { startCore, textPeer, wsPeer } from './helpers.js';

t.test('a websocket gateway and a text gateway serve one Events.ts', async (t) => {
  const core = await startCore(t);

  await t.test('ws and text clients exchange messages through a group', async (t) => {
    const ws = await wsPeer(t, core.wsPort);
    const text = await textPeer(t, core.textPort);
    const outsider = await wsPeer(t, core.wsPort);
    await ws.ask('join chat', 'join');
    await text.ask('join chat', 'join');

    ws.send('group chat hello from ws');
    const atText = await text.expectType('group', (j) => j.from === ws.id);
    t.same(atText, { type: 'group', group: 'chat', from: ws.id, text: 'hello from ws' }, 'text client got the ws client message');
    t.ok(await ws.expectType('group', (j) => j.from === ws.id), 'the sender (a group member) got it too');

    text.send('group chat héllo from text ✓');
    const atWs = await ws.expectType('group', (j) => j.from === text.id);
    t.same(atWs, { type: 'group', group: 'chat', from: text.id, text: 'héllo from text ✓' }, 'ws client got the text client message (UTF-8 intact)');
    t.ok(await text.expectType('group', (j) => j.from === text.id), 'the text sender got it too');

    // The outsider got neither: a marker sent to it afterwards arrives with nothing before it.
    outsider.send('marker');
    const before = await outsider.until((m) => m.json?.type === 'echo' && m.json.text === 'marker');
    t.same(before.filter((m) => m.json?.type === 'group'), [], 'a client outside the group got no group message');
  });

  await t.test('ctx carries clientIp, clientPort and gatewayAddress', async (t) => {
    const ws = await wsPeer(t, core.wsPort);
    const text = await textPeer(t, core.textPort);
    const wsCtx = await ws.ask('ctx', 'ctx');
    const textCtx = await text.ask('ctx', 'ctx');
    t.equal(wsCtx.clientId, ws.id, 'ws: ctx.clientId');
    t.equal(wsCtx.clientIp, '127.0.0.1', 'ws: ctx.clientIp');
    t.ok(wsCtx.clientPort > 0, 'ws: ctx.clientPort');
    t.equal(wsCtx.gatewayAddress, `127.0.0.1:${core.wsInternal}`, 'ws: ctx.gatewayAddress is the ws gateway internal address');
    t.equal(textCtx.clientId, text.id, 'text: ctx.clientId');
    t.equal(textCtx.clientIp, '127.0.0.1', 'text: ctx.clientIp');
    t.equal(textCtx.gatewayAddress, `127.0.0.1:${core.textInternal}`, 'text: ctx.gatewayAddress is the text gateway internal address');
  });

  await t.test('ctx.send / ctx.close with a final message, on both protocols', async (t) => {
    for (const peer of [await wsPeer(t, core.wsPort), await textPeer(t, core.textPort)]) {
      t.same((await peer.ask('hi there', 'echo')).text, 'hi there', `${peer.kind}: ctx.send answers`);
      peer.send('quit');
      t.same(await peer.expectType('bye'), { type: 'bye', clientId: peer.id }, `${peer.kind}: got the final message`);
      await peer.closed;
      t.pass(`${peer.kind}: then the connection closed`);
    }
  });

  await t.test('onWebSocketConnect(clientId, request, ctx) gets url, query, headers and cookies', async (t) => {
    const path = '/chat/room?room=r1&name=a%20b&empty=';
    const ws = await wsPeer(t, core.wsPort, path, {
      headers: { 'X-Test-Header': 'yes', Cookie: 'sid=abc123; user=J%C3%BCrgen; flag' },
    });
    const infoMsg = await ws.expect((m) => m.json?.type === 'wsconnect', 3000, 'wsconnect');
    const info = infoMsg.json;
    t.equal(info.clientId, ws.id, 'clientId');
    t.equal(info.url, path, 'url is the request path and query as sent');
    t.equal(info.path, '/chat/room', 'path');
    t.same(info.query, { room: 'r1', name: 'a b', empty: '' }, 'query (decoded)');
    t.equal(info.headers['x-test-header'], 'yes', 'custom header (lower-cased name)');
    t.equal(info.headers.host, `127.0.0.1:${core.wsPort}`, 'host header');
    t.equal(info.headers.upgrade?.toLowerCase(), 'websocket', 'upgrade header');
    t.same(info.cookies, { sid: 'abc123', user: 'Jürgen' }, 'cookies (decoded)');
    t.ok(infoMsg.n > ws.welcomeN, 'onConnect (welcome) ran before onWebSocketConnect');

    const plain = await wsPeer(t, core.wsPort);
    const plainInfo = await plain.expectType('wsconnect');
    t.equal(plainInfo.url, '/', 'url of a bare connection');
    t.same(plainInfo.query, {}, 'no query');
    t.same(plainInfo.cookies, {}, 'no cookies');

    const text = await textPeer(t, core.textPort);
    text.send('marker');
    const before = await text.until((m) => m.json?.type === 'echo');
    t.same(before.filter((m) => m.json?.type === 'wsconnect'), [], 'a text client gets no onWebSocketConnect');
  });
});

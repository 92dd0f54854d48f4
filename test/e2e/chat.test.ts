/**
 * End to end, the chat template as a person gets it: `create-gatewayworker-app` generates it into
 * a temp dir and installs it (npm), `tsx start.ts start` runs it on free ports, and real clients
 * use it — `ws` clients for the wire protocol (workerman-chat's), two Chromium pages (through
 * playwright-core) for the page the gateway serves. The app is stopped and started again (the
 * history survives), stopped with nothing left running, and `add` puts a second app beside it
 * that starts with the first.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import {
  chatClient,
  ensureRuntimeBuilt,
  freePort,
  generator,
  sleep,
  startApp,
  tempDir,
  waitFor,
  type ChatClient,
  type Message,
  type RunningApp,
} from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const TIME = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/;
const PING = '{"type":"ping"}';

/** A pid that is running (a zombie waiting for its parent counts as gone). */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Stops the app with `start.ts stop` and checks that every process `status` showed is gone. */
async function stopAndCheck(t: Test, app: RunningApp, expected: number): Promise<void> {
  const pids = await app.pids();
  t.equal(pids.length, expected, `status shows the master and ${expected - 1} processes`);
  t.ok(pids.every(isRunning), 'all of them running before stop');
  const stop = await app.cli('stop');
  t.equal(stop.code, 0, `stop succeeds ${stop.stderr}`);
  const exit = await Promise.race([app.exited, sleep(10_000).then(() => 'still running')]);
  t.equal(exit, 0, 'the master exits with 0');
  await waitFor(() => pids.every((pid) => !isRunning(pid)), 5000, 'every process to exit').catch(() => {});
  t.same(pids.filter(isRunning), [], 'no process of the app is left');
  const status = await app.cli('status');
  t.not(status.code, 0, 'status afterwards: not running');
}

/** Ports and counts for one run; PING_INTERVAL is short so the heartbeat shows within a test. */
async function appEnv(): Promise<Record<string, string>> {
  return {
    GATEWAY_PORT: String(await freePort()),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort(2)),
    GATEWAY_COUNT: '2',
    WORKER_COUNT: '2',
    PING_INTERVAL: '0.5',
  };
}
// master + register + 2 gateways + 2 workers
const PROCESSES = 6;

// About a minute alone with a warm npm cache (half of it the install); next to other test files
// (tap runs 2 at a time) it can take twice that, more than the suite's 120 s per file.
t.setTimeout(300_000);

let project = '';
const workDir = tempDir(t, 'gw-e2e-chat-');

t.before(async () => {
  await ensureRuntimeBuilt();
  const r = await generator(['chat-app', '--template', 'chat', '--yes', '--package-manager', 'npm'], workDir);
  if (r.code !== 0) throw new Error(`generating the chat app failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  project = join(workDir, 'chat-app');
});

t.test('generate and install', async (t) => {
  t.ok(existsSync(join(project, 'node_modules/gatewayworker/package.json')), 'the runtime is installed');
  t.ok(existsSync(join(project, 'node_modules/.bin/tsx')), 'tsx is installed');
  t.ok(existsSync(join(project, 'Applications/YourApp/Events.ts')));
  t.ok(existsSync(join(project, 'web/index.html')));
});

let env: Record<string, string>;

t.test('first run', async (t) => {
  env = await appEnv();
  const port = Number(env.GATEWAY_PORT);
  const app = await startApp(t, project, env);
  t.equal(app.ports.YourAppGateway, port, 'the banner shows the gateway on GATEWAY_PORT');
  const connect = (t: Test) => chatClient(t, port);

  t.test('the gateway serves the page at /', async (t) => {
    const res = await fetch(`http://127.0.0.1:${port}/`);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /^text\/html/);
    const html = await res.text();
    t.match(html, '<title>YourApp chat</title>');
    t.notMatch(html, '{{', 'no template placeholders left');
  });

  t.test('login, client list, broadcast, private message, logout', async (t) => {
    const alice = await connect(t);
    const a = await alice.login('alice', 'lobby');
    t.equal(a.login.client_name, 'alice');
    t.match(a.login.time, TIME);
    t.same(a.login.client_list, { [alice.id!]: 'alice' }, 'the newcomer is in its own list');
    t.same(a.history, { type: 'history', messages: [] });

    const bob = await connect(t);
    const b = await bob.login('bob', 'lobby');
    t.same(b.login.client_list, { [alice.id!]: 'alice', [bob.id!]: 'bob' }, 'the list has everyone in the room');
    const seen = await alice.next('login');
    t.same(seen, { type: 'login', client_id: bob.id, client_name: 'bob', time: seen.time }, 'the room hears of the newcomer');
    t.match(seen.time, TIME);

    const dave = await connect(t);
    await dave.login('dave', 'lobby');
    await alice.next('login');
    await bob.next('login');
    const carol = await connect(t);
    await carol.login('carol', 'elsewhere');

    alice.send({ type: 'say', to_client_id: 'all', content: 'hello everyone' });
    for (const c of [alice, bob, dave]) {
      const said = await c.next('say');
      t.same(said, { type: 'say', from_client_id: alice.id, from_client_name: 'alice', to_client_id: 'all', content: 'hello everyone', time: said.time });
      t.match(said.time, TIME);
    }

    alice.send({ type: 'say', to_client_id: bob.id, to_client_name: 'bob', content: 'psst' });
    const got = await bob.next('say');
    t.same(got, { type: 'say', from_client_id: alice.id, from_client_name: 'alice', to_client_id: bob.id, content: 'psst', time: got.time }, 'the target gets it');
    t.equal((await alice.next('say')).content, 'psst', 'the sender gets its copy');
    // Only then a broadcast: whatever dave got before it would have come with the private one.
    bob.send({ type: 'say', to_client_id: 'all', content: 'marker' });
    t.same(await dave.until((m) => m.content === 'marker'), [], 'a third person in the room does not get it');
    await alice.next('say');
    await bob.next('say');

    alice.send({ type: 'say', to_client_id: 'not-a-client', content: 'hello?' });
    t.match(await alice.next('error'), { message: /not online/ }, 'a private message to nobody is an error');

    bob.close();
    for (const c of [alice, dave]) {
      const logout = await c.next('logout');
      t.same(logout, { type: 'logout', from_client_id: bob.id, from_client_name: 'bob', time: logout.time }, 'the room hears of the leave');
    }

    // Nothing of the lobby reached another room.
    carol.send({ type: 'say', to_client_id: 'all', content: 'carol here' });
    t.same(await carol.until((m) => m.content === 'carol here'), [], 'rooms are separate');
  });

  t.test('a nickname in use is made unique', async (t) => {
    const first = await connect(t);
    t.equal((await first.login('alice', 'names')).login.client_name, 'alice');
    const second = await connect(t);
    const s = await second.login('alice', 'names');
    t.equal(s.login.client_name, 'alice (2)');
    t.same(Object.values(s.login.client_list).sort(), ['alice', 'alice (2)']);
    t.equal((await first.next('login')).client_name, 'alice (2)', 'the room sees the name actually used');
    const third = await connect(t);
    t.equal((await third.login(' alice ', 'names')).login.client_name, 'alice (3)');

    second.send({ type: 'say', content: 'who am I' });
    t.equal((await first.next('say')).from_client_name, 'alice (2)', 'messages carry the name actually used');
    // The same name in another room is no clash.
    const elsewhere = await connect(t);
    t.equal((await elsewhere.login('alice', 'names-2')).login.client_name, 'alice');
  });

  t.test('user text is HTML-escaped before anyone gets it', async (t) => {
    const reader = await connect(t);
    await reader.login('reader', 'html');
    const writer = await connect(t);
    const w = await writer.login(`<b>"x"</b> & 'y'`, 'html');
    const escapedName = '&lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; &#39;y&#39;';
    t.equal(w.login.client_name, escapedName);
    t.equal((await reader.next('login')).client_name, escapedName);
    writer.send({ type: 'say', to_client_id: 'all', content: '<script>alert(1)</script> & "q"' });
    const said = await reader.next('say');
    t.equal(said.content, '&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;');
    t.equal(said.from_client_name, escapedName);
    t.notOk(reader.raw.some((frame) => frame.includes('<')), 'no frame the reader got has a raw <');
  });

  t.test('bad input gets an error, to that client only', async (t) => {
    const good = await connect(t);
    await good.login('good', 'errors');
    const bad = await connect(t);

    bad.send({ type: 'say', to_client_id: 'all', content: 'too early' });
    t.match(await bad.next('error'), { message: 'login first' }, 'say before login');
    bad.sendRaw('{not json');
    t.match(await bad.next('error'), { message: 'invalid JSON' });
    bad.sendRaw('[1,2]');
    t.match(await bad.next('error'), { message: 'expected a JSON object' });
    bad.send({ type: 'pong' });
    bad.send({ type: 'dance' });
    t.same(await bad.until((m) => m.type === 'error'), [], 'pong is accepted silently');
    t.match(bad.raw.at(-1), /unknown message type: dance/);
    bad.send({ type: 'login', client_name: 'bad' });
    t.match(await bad.next('error'), { message: /room_id/ }, 'a login without a room');

    // Still connected and usable after all that; the room saw none of the errors.
    const b = await bad.login('bad', 'errors');
    t.equal(b.login.client_name, 'bad');
    bad.sendRaw('still not json');
    t.match(await bad.next('error'), { message: 'invalid JSON' });
    bad.send({ type: 'say', to_client_id: 'all', content: 'marker' });
    const before = await good.until((m) => m.type === 'say' && m.content === 'marker');
    t.same(before.filter((m) => m.type === 'error'), [], 'the others get no error');
  });

  t.test('history: the last 50 messages of a room on login', async (t) => {
    const writer = await connect(t);
    await writer.login('writer', 'history');
    for (let i = 0; i < 55; i++) writer.send({ type: 'say', to_client_id: 'all', content: `m${i}` });
    writer.send({ type: 'say', to_client_id: writer.id, content: 'a private note' });
    // One client's messages are handled in order: once the note is back, every m<i> is stored.
    await writer.next((m) => m.content === 'a private note');

    const reader = await connect(t);
    const { history } = await reader.login('reader', 'history');
    t.equal(history.messages.length, 50);
    t.same(
      history.messages.map((m: Message) => m.content),
      Array.from({ length: 50 }, (_, i) => `m${i + 5}`),
      'the last 50, oldest first, private messages not kept',
    );
    t.match(history.messages[0], { type: 'say', from_client_id: writer.id, from_client_name: 'writer', to_client_id: 'all', time: TIME });
  });

  t.test('heartbeat: a silent client gets {"type":"ping"}', async (t) => {
    const silent = await connect(t);
    await waitFor(() => silent.raw.includes(PING), 5000, 'a ping');
    t.pass(`got ${PING} as the exact frame`);
  });

  t.test('stop leaves nothing running', (t) => stopAndCheck(t, app, PROCESSES));
});

t.test('after a restart', async (t) => {
  const port = Number(env.GATEWAY_PORT);
  const app = await startApp(t, project, env);

  t.test('the history survived', async (t) => {
    const reader = await chatClient(t, port);
    const { history } = await reader.login('late reader', 'history');
    t.same(
      history.messages.map((m: Message) => m.content),
      Array.from({ length: 50 }, (_, i) => `m${i + 5}`),
    );
    t.ok(existsSync(join(project, 'data/YourApp')), 'kept in the project, data/YourApp/');
  });

  t.test('two Chromium pages', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)` }, (t) => browserChat(t, port));

  t.test('stop leaves nothing running', (t) => stopAndCheck(t, app, PROCESSES));
});

async function browserChat(t: Test, port: number): Promise<void> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  t.teardown(() => browser.close());
  const url = `http://127.0.0.1:${port}/`;
  const errors: string[] = [];

  /** A page of its own (own localStorage, where the page keeps the name) that logs in through the dialog. */
  async function open(name: string, room: string) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (err) => errors.push(`${name}: ${err.message}`));
    page.on('dialog', (dialog) => {
      errors.push(`${name}: a script opened a dialog: ${dialog.message()}`);
      void dialog.dismiss();
    });
    await page.goto(url);
    await page.fill('#login [name=nickname]', name);
    await page.fill('#login [name=room]', room);
    await page.click('#login button');
    await page.locator('#status', { hasText: 'connected' }).waitFor();
    await page.locator('#room-name', { hasText: room }).waitFor();
    return page;
  }

  const ann = await open('Ann', 'web');
  await ann.locator('#online li', { hasText: 'Ann (you)' }).waitFor();
  const evilName = '<script>window.pwned=1</script>';
  const evil = await open(evilName, 'web');

  // Ann sees the newcomer, by the literal name, as text.
  await ann.locator('#online li', { hasText: evilName }).waitFor();
  await ann.locator('#messages li.notice', { hasText: `${evilName} joined` }).waitFor();
  t.pass('the <script> name is shown as text in the list and the join notice');
  t.equal(await evil.locator('#online li', { hasText: 'Ann' }).count(), 1, 'the newcomer sees who was there');

  // A message typed in one page appears in the other.
  await ann.fill('#send [name=content]', 'hello from Ann');
  await ann.press('#send [name=content]', 'Enter');
  await evil.locator('#messages li', { hasText: 'Ann:hello from Ann' }).waitFor();
  t.pass('typed in one page, shown in the other');

  await evil.fill('#send [name=content]', '<img src=x onerror="window.pwned=2">');
  await evil.click('#send button');
  await ann.locator('#messages li', { hasText: `${evilName}:<img src=x onerror="window.pwned=2">` }).waitFor();
  t.pass('markup in a message is shown as text');

  // A private message: chosen in the "send to" list.
  await ann.selectOption('#send select', { label: evilName });
  await ann.fill('#send [name=content]', 'just for you');
  await ann.press('#send [name=content]', 'Enter');
  await evil.locator('#messages li.private', { hasText: 'just for you' }).waitFor();
  t.pass('a private message arrives, marked private');

  for (const page of [ann, evil]) {
    t.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined, 'no injected script ran');
    t.equal(await page.locator('#messages img, #messages script, #online script').count(), 0, 'no injected elements');
  }

  // Closing a page tells the room.
  await evil.context().close();
  await ann.locator('#messages li.notice', { hasText: `${evilName} left` }).waitFor();
  t.equal(await ann.locator('#online li').count(), 1, 'the list shrinks to Ann');
  t.same(errors, [], 'no page errors, no dialogs');
}

t.test('add: a second app starts beside the first', async (t) => {
  const added = await generator(['add', 'Lobby', '--template', 'chat', '--yes'], project);
  t.equal(added.code, 0, added.stderr);
  t.match(added.stdout, 'Added Applications/Lobby');

  const env: Record<string, string> = {
    ...(await appEnv()),
    GATEWAY_COUNT: '1',
    WORKER_COUNT: '1',
    LOBBY_GATEWAY_PORT: String(await freePort()),
    LOBBY_REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    LOBBY_START_PORT: String(await freePort(2)),
    LOBBY_GATEWAY_COUNT: '1',
    LOBBY_WORKER_COUNT: '1',
  };
  const app = await startApp(t, project, env);
  const status = await app.status();
  t.same(
    status.processes.map((p) => p.name).filter((n) => /Gateway|BusinessWorker/.test(n)).sort(),
    ['LobbyBusinessWorker', 'LobbyGateway', 'YourAppBusinessWorker', 'YourAppGateway'],
    'both apps run',
  );

  const chat = async (port: number): Promise<{ history: Message; client: ChatClient }> => {
    const client = await chatClient(t, port);
    const { history } = await client.login('visitor', 'history');
    client.send({ type: 'say', content: `hello on ${port}` });
    t.equal((await client.next('say')).content, `hello on ${port}`);
    return { history, client };
  };
  const mine = await chat(Number(env.GATEWAY_PORT));
  const lobby = await chat(Number(env.LOBBY_GATEWAY_PORT));
  t.equal(mine.history.messages.length, 50, 'the first app kept its history');
  t.same(lobby.history.messages, [], 'the added app has its own store');
  await waitFor(() => existsSync(join(project, 'data/Lobby/history.jsonl')), 2000, 'data/Lobby/history.jsonl').catch(() => {});
  t.ok(existsSync(join(project, 'data/Lobby/history.jsonl')), 'kept in data/Lobby/');

  // master + 2 × (register, gateway, worker)
  await stopAndCheck(t, app, 7);
});

/**
 * The chat template against hostile clients, end to end: generated and installed with
 * `create-gatewayworker-app` (like chat.test.ts), run with `tsx start.ts start` on free ports, then
 * - a client that floods is warned and disconnected while another client's messages still arrive;
 * - a 1 MB message and a 100 000-deep `[[[…` close only their own connection (1009), and
 *   malformed, nested or wrongly typed JSON under the size limit gets an error reply;
 * - names and messages carrying `<img src=x onerror=…>` and `<script>` are shown as text in
 *   Chromium pages: no element is created, no script runs, and the pages keep working.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { chatClient, ensureRuntimeBuilt, freePort, generator, startApp, tempDir, type ChatClient, type Message } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const MAX_MESSAGES_PER_SECOND = 20;
const MAX_MESSAGE_BYTES = 16 * 1024;

// Generating and installing takes about a minute alone, twice that next to other test files.
t.setTimeout(300_000);

let port = 0;
const workDir = tempDir(t, 'gw-e2e-chat-hostile-');

t.before(async () => {
  await ensureRuntimeBuilt();
  const r = await generator(['chat-app', '--template', 'chat', '--yes', '--package-manager', 'npm'], workDir);
  if (r.code !== 0) throw new Error(`generating the chat app failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  port = await freePort();
  await startApp(t, join(workDir, 'chat-app'), {
    GATEWAY_PORT: String(port),
    REGISTER_ADDRESS: `127.0.0.1:${await freePort()}`,
    START_PORT: String(await freePort(2)),
    GATEWAY_COUNT: '1',
    WORKER_COUNT: '2',
    MAX_MESSAGES_PER_SECOND: String(MAX_MESSAGES_PER_SECOND),
    DATA_DIR: join(workDir, 'history'),
  });
});

/** Two clients logged in to `room`; the second one's login was seen by the first. */
async function pair(t: Test, room: string, names: [string, string]): Promise<[ChatClient, ChatClient]> {
  const a = await chatClient(t, port);
  await a.login(names[0], room);
  const b = await chatClient(t, port);
  await b.login(names[1], room);
  await a.next('login');
  return [a, b];
}

/** `from` says `content` to the room; resolves once `to` got it. */
async function roundTrip(from: ChatClient, to: ChatClient, content: string): Promise<Message> {
  from.send({ type: 'say', to_client_id: 'all', content });
  return to.next((m) => m.type === 'say' && m.content === content, 10_000);
}

t.test('the generated app has its limits in config.ts', async (t) => {
  t.ok(existsSync(join(workDir, 'chat-app/Applications/YourApp/config.ts')), 'config.ts is part of the app');
});

t.test('a flooding client is warned, then disconnected; another client keeps chatting', async (t) => {
  const [calm, flooder] = await pair(t, 'flood', ['calm', 'flooder']);
  const sent = MAX_MESSAGES_PER_SECOND * 10;
  for (let i = 0; i < sent; i++) flooder.send({ type: 'say', to_client_id: 'all', content: `spam ${i}` });

  t.match(await flooder.next('warning', 10_000), { code: 'flood', message: /slow down/ }, 'warned first');
  t.match(await flooder.next('error', 10_000), { code: 'flood', message: /disconnected/ }, 'then told why it is disconnected');
  await flooder.closed;
  t.pass('and disconnected');

  const logout = await calm.next('logout', 10_000);
  t.equal(logout.from_client_id, flooder.id, 'the room hears that the flooder left');
  const spam = calm.queue.filter((m) => m.type === 'say' && String(m.content).startsWith('spam '));
  t.ok(spam.length >= 1 && spam.length < sent, `only part of the flood reached the room (${spam.length} of ${sent})`);

  const other = await chatClient(t, port);
  await other.login('other', 'flood');
  await calm.next('login');
  t.ok(await roundTrip(calm, other, 'calm here'), "the calm client's messages still arrive");
  t.ok(await roundTrip(other, calm, 'and back'), 'both ways');
});

t.test('oversized and deeply nested messages close only their own connection', async (t) => {
  const [good, witness] = await pair(t, 'size', ['good', 'witness']);

  const big = await chatClient(t, port);
  await big.login('big', 'size');
  await good.next('login');
  await witness.next('login');
  big.sendRaw(JSON.stringify({ type: 'say', to_client_id: 'all', content: 'x'.repeat(1024 * 1024) }));
  const bigClosed = await big.closed;
  t.equal(bigClosed.code, 1009, `a 1 MB message: closed with 1009 Message Too Big (${JSON.stringify(bigClosed)})`);

  const deep = await chatClient(t, port);
  deep.sendRaw('['.repeat(100_000));
  t.equal((await deep.closed).code, 1009, 'a 100 000-deep [[[… : closed with 1009');

  const deepObject = await chatClient(t, port);
  deepObject.sendRaw(`${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`);
  t.equal((await deepObject.closed).code, 1009, 'a 50 000-deep {"a":{"a":… : closed with 1009');

  // Under the size limit: answered with an error, and the connection stays usable.
  const odd = await chatClient(t, port);
  await odd.login('odd', 'size');
  await good.next('login');
  await witness.next('login');
  const depth = Math.floor((MAX_MESSAGE_BYTES - 100) / 2);
  odd.sendRaw(`${'['.repeat(depth)}${']'.repeat(depth)}`);
  t.match(await odd.next('error'), { message: 'expected a JSON object' }, `${depth}-deep array under the limit: an error reply`);
  odd.sendRaw('['.repeat(MAX_MESSAGE_BYTES - 100));
  t.match(await odd.next('error'), { message: 'invalid JSON' }, 'unclosed nesting under the limit: invalid JSON');
  odd.sendRaw(`{"type":"say","to_client_id":"all","content":${'['.repeat(depth - 100)}${']'.repeat(depth - 100)}}`);
  t.match(await odd.next('error'), { message: /content must be/ }, 'nested content: an error reply');
  odd.sendRaw(JSON.stringify({ type: 'say', content: 'y'.repeat(2001) }));
  t.match(await odd.next('error'), { message: /longer than 2000/ }, 'content over 2000 characters: an error reply');
  odd.sendRaw(JSON.stringify({ type: 'x'.repeat(5000) }));
  const unknown = await odd.next('error');
  t.ok(unknown.message.length < 100, 'an unknown type is not echoed in full');
  odd.sendRaw('\u0000\uffff not json');
  t.match(await odd.next('error'), { message: 'invalid JSON' });
  odd.ws.send(Buffer.from([0xff, 0xfe, 0x00, 0x7b]));
  t.match(await odd.next('error'), { message: 'invalid JSON' }, 'binary junk: invalid JSON');
  t.ok(await roundTrip(odd, good, 'odd is still here'), 'the client that sent all that is still connected and heard');

  // Nobody else noticed any of it (save the logouts of the closed ones).
  t.ok(await roundTrip(good, witness, 'after the storm'), 'the other clients still talk');
  t.ok(await roundTrip(witness, good, 'and answer'));
  for (const c of [good, witness]) {
    t.same(c.queue.filter((m) => m.type === 'error' || m.type === 'warning'), [], 'no error reached another client');
  }
});

const noChromium = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)`;

t.test('Chromium: markup in names and messages is shown as text, runs nothing, and the pages keep working', { skip: noChromium }, async (t) => {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  t.teardown(() => browser.close());
  const url = `http://127.0.0.1:${port}/`;
  const errors: string[] = [];
  const room = 'xss';

  async function open(name: string) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(15_000);
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
  type Page = Awaited<ReturnType<typeof open>>;

  async function clean(page: Page, who: string): Promise<void> {
    t.equal(await page.evaluate(() => (window as unknown as { pwned?: unknown }).pwned), undefined, `${who}: no injected script ran`);
    // Every line of the page is spans of text; the online list and the "send to" list are text only.
    const injected = 'body img, body svg, #messages li > :not(span), #messages span *, #online li *, #send option *, #send script';
    t.equal(await page.locator(injected).count(), 0, `${who}: no injected element`);
  }

  const ann = await open('Ann');
  await ann.locator('#online li', { hasText: 'Ann (you)' }).waitFor();

  const imgName = '<img src=x onerror=pwned=1>';
  const evil = await open(imgName);
  await ann.locator('#online li', { hasText: imgName }).waitFor();
  await ann.locator('#messages li.notice', { hasText: `${imgName} joined` }).waitFor();
  t.pass('an <img onerror> name is shown as text in the list and the join notice');

  // A raw WebSocket client (no page, no maxlength) sends markup too.
  const raw = await chatClient(t, port);
  const scriptName = '<script>pwned=2</script>';
  await raw.login(scriptName, room);
  await ann.locator('#online li', { hasText: scriptName }).waitFor();
  const scriptMessage = '<script>window.pwned=3</script><img src=x onerror="window.pwned=4"><svg onload="window.pwned=5">';
  raw.send({ type: 'say', to_client_id: 'all', content: scriptMessage });
  for (const page of [ann, evil]) await page.locator('#messages li', { hasText: `${scriptName}:${scriptMessage}` }).waitFor();
  t.pass('a message with <script>, <img onerror> and <svg onload> is shown as text in both pages');

  await evil.fill('#send [name=content]', '<img src=x onerror="window.pwned=6">');
  await evil.click('#send button');
  await ann.locator('#messages li', { hasText: `${imgName}:<img src=x onerror="window.pwned=6">` }).waitFor();
  t.pass('markup typed into the page is shown as text');

  // A private message to the <img> name, picked by its text in the "send to" list.
  await ann.selectOption('#send select', { label: imgName });
  await ann.fill('#send [name=content]', 'just for you');
  await ann.press('#send [name=content]', 'Enter');
  await evil.locator('#messages li.private', { hasText: 'just for you' }).waitFor();
  t.pass('the page still works: a private message to the markup name arrives');

  // The page's own error line, with markup the server echoes back (escaped) in the error.
  await evil.evaluate('ws.send(JSON.stringify({ type: "<img src=x onerror=pwned=7>" }))');
  await evil.locator('#messages li.notice', { hasText: 'unknown message type: <img src=x onerror=pwned=7>' }).waitFor();
  t.pass('an error quoting markup is shown as text');

  // Someone arriving later gets it all again from the history.
  const late = await open('Late');
  await late.locator('#messages li', { hasText: `${scriptName}:${scriptMessage}` }).waitFor();
  await late.locator('#online li', { hasText: imgName }).waitFor();
  t.pass('the history shows the markup as text too');

  for (const [page, who] of [[ann, 'Ann'], [evil, 'the <img> page'], [late, 'Late']] as const) await clean(page, who);

  // The pages keep working both ways.
  await ann.selectOption('#send select', 'all');
  await ann.fill('#send [name=content]', 'still fine?');
  await ann.press('#send [name=content]', 'Enter');
  await evil.locator('#messages li', { hasText: 'Ann:still fine?' }).waitFor();
  await late.locator('#messages li', { hasText: 'Ann:still fine?' }).waitFor();
  await late.fill('#send [name=content]', 'yes');
  await late.press('#send [name=content]', 'Enter');
  await ann.locator('#messages li', { hasText: 'Late:yes' }).waitFor();
  t.pass('messages still go both ways between the pages');
  t.equal((await raw.next((m) => m.type === 'say' && m.content === 'yes', 10_000)).from_client_name, 'Late', 'and to the raw client');

  raw.close();
  await ann.locator('#messages li.notice', { hasText: `${scriptName} left` }).waitFor();
  t.pass('the <script> name leaves as text');
  await clean(ann, 'Ann at the end');
  t.same(errors, [], 'no page errors, no dialogs');
});

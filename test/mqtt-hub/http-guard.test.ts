/**
 * The MQTT hub's HTTP API guard (templates/mqtt-hub/app/http-guard.ts): what keeps a web page
 * elsewhere from using the API through the visitor's browser (CSRF, DNS rebinding).
 */
import t from 'tap';
import { HUB_HANDLER_FILES, renderHub } from './render.ts';

type GuardModule = typeof import('../../templates/mqtt-hub/app/http-guard.ts');

const hub = renderHub(t, HUB_HANDLER_FILES);
const { checkRequest, hostnameOf, isLoopback } = await hub.load<GuardModule>('Applications/Hub/http-guard.ts');

const open = { apiHosts: ['hub.lan', '10.0.0.5'] };
const withToken = { adminToken: 's3cret', apiHosts: [] };
const get = (host: string | undefined, headers: Record<string, string> = {}) => ({ method: 'GET', headers: { ...(host === undefined ? {} : { host }), ...headers } });
const post = (host: string, headers: Record<string, string> = {}) => ({ method: 'POST', headers: { host, 'content-type': 'application/json', ...headers } });

t.test('host names', async (t) => {
  t.equal(hostnameOf('localhost:8083'), 'localhost');
  t.equal(hostnameOf('LOCALHOST'), 'localhost');
  t.equal(hostnameOf('[::1]:8083'), '::1');
  t.equal(hostnameOf('127.0.0.1'), '127.0.0.1');
  for (const bad of ['', 'evil@localhost', 'localhost/x', 'a b', 'localhost:8083:1', '[::1']) t.equal(hostnameOf(bad), null, `${JSON.stringify(bad)} is malformed`);
  for (const name of ['localhost', 'app.localhost', '127.0.0.1', '127.1.2.3', '::1']) t.ok(isLoopback(name), `${name} is loopback`);
  for (const name of ['localhost.evil.example', '128.0.0.1', '10.0.0.5', 'example.com', '::2']) t.notOk(isLoopback(name), `${name} is not`);
});

t.test('without ADMIN_TOKEN: loopback or API_HOSTS only (DNS rebinding)', async (t) => {
  for (const host of ['localhost:8083', '127.0.0.1:8083', '[::1]:8083', 'hub.lan:8083', '10.0.0.5']) t.equal(checkRequest(get(host), open), null, `Host ${host}: answered`);
  for (const host of ['evil.example:8083', 'localhost.evil.example', '192.168.1.9:8083', 'evil@localhost:8083']) {
    t.match(checkRequest(get(host), open), { status: 403, message: /localhost or a name in API_HOSTS/ }, `Host ${host}: 403`);
  }
  t.match(checkRequest(get(undefined), open), { status: 403 }, 'no Host header: 403');
  t.equal(checkRequest(get('evil.example'), withToken), null, 'with ADMIN_TOKEN the host is not checked (the token is)');
});

t.test('changes only from the same origin, as JSON (CSRF)', async (t) => {
  for (const options of [open, withToken]) {
    const label = options === open ? 'no token' : 'token';
    t.equal(checkRequest(post('localhost:8083'), options), null, `${label}: a POST without Origin (curl): allowed`);
    t.equal(checkRequest(post('localhost:8083', { origin: 'http://localhost:8083', 'sec-fetch-site': 'same-origin' }), options), null, `${label}: from its own page: allowed`);
    t.equal(checkRequest(post('localhost', { origin: 'http://localhost:80' }), options), null, `${label}: a default port written out is the same origin`);
    t.match(checkRequest(post('localhost:8083', { origin: 'http://evil.example' }), options), { status: 403, message: /another origin/ }, `${label}: another origin: 403`);
    t.match(checkRequest(post('localhost:8083', { origin: 'http://localhost:9999' }), options), { status: 403 }, `${label}: another port is another origin`);
    t.match(checkRequest(post('localhost:8083', { origin: 'null' }), options), { status: 403 }, `${label}: Origin null (sandboxed page, file): 403`);
    t.match(checkRequest(post('localhost:8083', { 'sec-fetch-site': 'cross-site' }), options), { status: 403, message: /cross-site/ }, `${label}: Sec-Fetch-Site cross-site: 403`);
    t.match(checkRequest(post('localhost:8083', { 'sec-fetch-site': 'same-site' }), options), { status: 403 }, `${label}: same-site is not same-origin`);
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      t.match(checkRequest(post('localhost:8083', { 'content-type': type }), options), { status: 415, message: /application\/json/ }, `${label}: ${type}: 415`);
    }
    t.equal(checkRequest(post('localhost:8083', { 'content-type': 'Application/JSON; charset=utf-8' }), options), null, `${label}: JSON with a charset: allowed`);
    t.equal(checkRequest({ method: 'GET', headers: { host: 'localhost', origin: 'http://evil.example' } }, options), null, `${label}: a GET from elsewhere is answered (the browser does not let that page read it)`);
  }
});

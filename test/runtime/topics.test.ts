// MQTT topic helpers: filter matching (spec examples, $-topics, empty levels), the TopicTree trie
// against the standalone matcher, pruning under churn, and topic name / filter validation.
import t from 'tap';
import { TopicTree, isValidTopicFilter, isValidTopicName, topicMatches } from '../../runtime/src/topics/index.js';

/** Every (key, filter) the tree visits for `topic`, sorted, as "key filter" strings. */
function visited<T>(tree: TopicTree<T>, topic: string): string[] {
  const out: string[] = [];
  tree.match(topic, (key, _value, filter) => void out.push(`${key} ${filter}`));
  return out.sort();
}

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

// [filter, topic, matches] — the examples of MQTT §4.7.1.2, §4.7.1.3, §4.7.2 and §4.7.3, plus
// the edge cases around empty levels and the parent rule of `#`.
const cases: Array<[string, string, boolean]> = [
  // §4.7.1.2 multi-level wildcard
  ['sport/tennis/player1/#', 'sport/tennis/player1', true],
  ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
  ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true],
  ['sport/tennis/player1/#', 'sport/tennis/player2', false],
  ['sport/tennis/player1/#', 'sport/tennis', false],
  ['sport/#', 'sport', true],
  ['sport/#', 'sport/', true],
  ['sport/#', 'sports', false],
  ['#', 'sport/tennis/player1', true],
  ['#', '/', true],
  ['#', 'a', true],
  ['sport/tennis/#', 'sport/tennis/player1/ranking', true],
  // §4.7.1.3 single-level wildcard
  ['sport/tennis/+', 'sport/tennis/player1', true],
  ['sport/tennis/+', 'sport/tennis/player2', true],
  ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
  ['sport/tennis/+', 'sport/tennis', false],
  ['sport/+', 'sport', false],
  ['sport/+', 'sport/', true],
  ['+', 'sport', true],
  ['+', '/finance', false],
  ['+/+', '/finance', true],
  ['/+', '/finance', true],
  ['+/tennis/#', 'sport/tennis', true],
  ['+/tennis/#', 'sport/tennis/player1', true],
  ['+/tennis/#', 'sport/golf', false],
  ['sport/+/player1', 'sport/tennis/player1', true],
  ['sport/+/player1', 'sport/tennis/player2', false],
  ['+/#', 'a', true],
  ['+/+/#', 'a', false],
  ['+', '', true],
  // §4.7.2 topics beginning with $
  ['#', '$SYS/monitor/Clients', false],
  ['#', '$SYS', false],
  ['+/monitor/Clients', '$SYS/monitor/Clients', false],
  ['+', '$SYS', false],
  ['+/#', '$SYS/x', false],
  ['$SYS/#', '$SYS/monitor/Clients', true],
  ['$SYS/#', '$SYS', true],
  ['$SYS/monitor/+', '$SYS/monitor/Clients', true],
  ['$SYS/+/Clients', '$SYS/monitor/Clients', true],
  ['a/#', 'a/$b', true], // only the first level is special
  ['+/+', 'a/$b', true],
  ['#', 'a$', true],
  // §4.7.3 semantics: case sensitive, spaces, leading / trailing separators
  ['ACCOUNTS', 'Accounts', false],
  ['Accounts payable', 'Accounts payable', true],
  ['/finance', 'finance', false],
  ['finance', '/finance', false],
  ['finance/', 'finance', false],
  ['/', '/', true],
  ['+/+', '/', true],
  ['+', '/', false],
  // empty levels are ordinary levels
  ['a//b', 'a//b', true],
  ['a/+/b', 'a//b', true],
  ['a/+/b', 'a/b', false],
  ['a//b', 'a/b', false],
  ['a/#', 'a//', true],
  ['', '', true],
  // literal comparison, no hidden special cases
  ['$share/g/t', '$share/g/t', true],
  ['$share/g/t', 't', false],
  ['a/b', 'a/b/c', false],
  ['a/b/c', 'a/b', false],
  ['ab', 'a', false],
  ['a', 'ab', false],
  ['a/b', 'a/c', false],
  ['a+', 'ab', false],
];

t.test('topicMatches: MQTT spec examples', async (t) => {
  for (const [filter, topic, expected] of cases) {
    t.equal(topicMatches(filter, topic), expected, `${JSON.stringify(filter)} ${expected ? 'matches' : 'does not match'} ${JSON.stringify(topic)}`);
  }
  // A `#` that is not last is an invalid filter; it must not match by accident.
  t.equal(topicMatches('a/#/c', 'a/b/c'), false, '# in the middle matches nothing');
  t.equal(topicMatches('a/#/c', 'a'), false, '# in the middle matches nothing (parent)');
});

t.test('TopicTree.match agrees with the spec examples', async (t) => {
  for (const [filter, topic, expected] of cases) {
    const tree = new TopicTree<number>();
    tree.add(filter, 'k', 1);
    t.same(visited(tree, topic), expected ? [`k ${filter}`] : [], `tree: ${JSON.stringify(filter)} vs ${JSON.stringify(topic)}`);
  }
  // All of them in one tree: each topic visits exactly its matching filters.
  const tree = new TopicTree<number>();
  const filters = [...new Set(cases.map(([f]) => f))];
  for (const f of filters) tree.add(f, 'k', 1);
  for (const topic of new Set(cases.map(([, topic]) => topic))) {
    const expected = filters.filter((f) => topicMatches(f, topic)).map((f) => `k ${f}`).sort();
    t.same(visited(tree, topic), expected, `all filters vs ${JSON.stringify(topic)}`);
  }
});

t.test('$-topics are hidden from leading wildcards only', async (t) => {
  const tree = new TopicTree<string>();
  for (const f of ['#', '+/monitor/Clients', '+/#', '$SYS/#', '$SYS/monitor/+', '$SYS/monitor/Clients']) tree.add(f, f, f);
  t.same(visited(tree, '$SYS/monitor/Clients').map((v) => v.split(' ')[1]), ['$SYS/#', '$SYS/monitor/+', '$SYS/monitor/Clients']);
  t.same(visited(tree, 'SYS/monitor/Clients').map((v) => v.split(' ')[1]), ['#', '+/#', '+/monitor/Clients']);
  t.same(visited(tree, '$SYS').map((v) => v.split(' ')[1]), ['$SYS/#'], '$SYS/# matches its parent $SYS');
});

t.test('add / remove / has / size', async (t) => {
  const tree = new TopicTree<{ qos: number }>();
  t.equal(tree.size, 0);
  t.equal(tree.nodeCount, 0);
  tree.add('a/+/c', 'c1', { qos: 0 });
  tree.add('a/+/c', 'c1', { qos: 2 });
  t.equal(tree.size, 1, 'same filter + key replaces');
  const seen: number[] = [];
  tree.match('a/b/c', (_k, v) => void seen.push(v.qos));
  t.same(seen, [2], 'the replacing value is the one visited');
  tree.add('a/+/c', 'c2', { qos: 1 });
  tree.add('a/#', 'c1', { qos: 0 });
  t.equal(tree.size, 3);
  t.ok(tree.has('a/+/c', 'c1'));
  t.ok(tree.has('a/#', 'c1'));
  t.notOk(tree.has('a/+/c', 'c3'));
  t.notOk(tree.has('a/+', 'c1'), 'a prefix of a stored filter is not stored');
  t.notOk(tree.has('a', 'c1'));
  t.notOk(tree.has('a/b/c', 'c1'), 'has() is literal, not matching');

  // The tree visits every matching filter; collapsing per client is the caller's business.
  t.same(visited(tree, 'a/b/c'), ['c1 a/#', 'c1 a/+/c', 'c2 a/+/c']);

  t.equal(tree.remove('a/+/c', 'c3'), false, 'unknown key');
  t.equal(tree.remove('a/+', 'c1'), false, 'unknown filter (prefix)');
  t.equal(tree.remove('x/y', 'c1'), false, 'unknown filter');
  t.equal(tree.size, 3);
  t.equal(tree.remove('a/+/c', 'c1'), true);
  t.equal(tree.remove('a/+/c', 'c1'), false, 'second remove');
  t.same(visited(tree, 'a/b/c'), ['c1 a/#', 'c2 a/+/c']);
  t.equal(tree.remove('a/+/c', 'c2'), true);
  t.equal(tree.nodeCount, 2, 'a/+/c pruned back to a/#');
  t.equal(tree.remove('a/#', 'c1'), true);
  t.equal(tree.size, 0);
  t.equal(tree.nodeCount, 0, 'everything pruned');
  t.same(visited(tree, 'a/b/c'), []);

  // A node that still has children keeps them when its own last entry goes.
  tree.add('a', 'k', { qos: 0 });
  tree.add('a/b', 'k', { qos: 0 });
  t.equal(tree.remove('a', 'k'), true);
  t.same(visited(tree, 'a/b'), ['k a/b']);
  t.same(visited(tree, 'a'), []);
  t.equal(tree.remove('a/b', 'k'), true);
  t.equal(tree.nodeCount, 0);
});

t.test('topic levels spelled + or # are not wildcards in the tree', async (t) => {
  // Invalid topic names, but a gateway must not crash or double-deliver on them.
  const tree = new TopicTree<number>();
  tree.add('a/+', 'plus', 1);
  tree.add('a/x', 'x', 1);
  t.same(visited(tree, 'a/+'), ['plus a/+'], 'visited once, via the wildcard');
  t.same(visited(tree, 'a/#'), ['plus a/+']);
  t.equal(topicMatches('a/+', 'a/+'), true);
  t.equal(topicMatches('a/x', 'a/+'), false);
});

t.test('visit may remove entries while matching', async (t) => {
  const tree = new TopicTree<number>();
  for (let i = 0; i < 10; i++) tree.add('a/#', `k${i}`, i);
  tree.add('a/b', 'k0', 0);
  tree.add('+/b', 'k0', 0);
  const seen: string[] = [];
  tree.match('a/b', (key, _v, filter) => {
    seen.push(`${key} ${filter}`);
    tree.remove(filter, key);
  });
  t.equal(seen.length, 12, 'each pair visited once');
  t.equal(new Set(seen).size, 12);
  t.equal(tree.size, 0);
  t.equal(tree.nodeCount, 0);
});

t.test('no node leak under subscribe / unsubscribe churn', async (t) => {
  const tree = new TopicTree<number>();
  const next = rng(7);
  const word = (): string => ['a', 'b', '', '+', 'dev', '$SYS', 'x'][Math.floor(next() * 7)]!;
  for (let i = 0; i < 10_000; i++) {
    const depth = 1 + Math.floor(next() * 5);
    const levels = Array.from({ length: depth }, word);
    if (next() < 0.3) levels.push('#');
    const filter = `${levels.join('/')}/${i}`; // unique, so every cycle creates fresh nodes
    const key = `client-${i % 50}`;
    tree.add(filter, key, i);
    tree.add(levels.join('/'), key, i);
    if (!tree.remove(filter, key) || !tree.remove(levels.join('/'), key)) t.fail(`cycle ${i}: remove failed`);
  }
  t.equal(tree.size, 0);
  t.equal(tree.nodeCount, 0, '10k add/remove cycles leave no nodes behind');

  // Interleaved: many live at once, removed in a different order than added.
  const live: Array<[string, string]> = [];
  for (let i = 0; i < 2_000; i++) {
    const filter = Array.from({ length: 1 + Math.floor(next() * 4) }, word).join('/');
    const key = `c${Math.floor(next() * 100)}`;
    tree.add(filter, key, i);
    live.push([filter, key]);
  }
  t.ok(tree.nodeCount > 0);
  for (let i = live.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [live[i], live[j]] = [live[j]!, live[i]!];
  }
  for (const [filter, key] of live) tree.remove(filter, key);
  t.equal(tree.size, 0);
  t.equal(tree.nodeCount, 0, 'shuffled removal prunes everything');
});

t.test('randomized: TopicTree.match agrees with topicMatches', async (t) => {
  const next = rng(20240611);
  const pick = <V>(xs: readonly V[]): V => xs[Math.floor(next() * xs.length)]!;
  const literal = ['a', 'b', 'c', '', 'A', 'dev', '$x', 'a$'];
  const first = [...literal, '$SYS', '$share'];
  const topicOf = (): string => {
    const n = 1 + Math.floor(next() * 5);
    const levels = [pick(first)];
    for (let i = 1; i < n; i++) levels.push(pick(literal));
    return levels.join('/');
  };
  const filterOf = (): string => {
    const n = 1 + Math.floor(next() * 5);
    const levels: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = next();
      levels.push(r < 0.3 ? '+' : i === 0 ? pick(first) : pick(literal));
    }
    if (next() < 0.3) levels.push('#');
    else if (next() < 0.05) levels.splice(0, levels.length, '#');
    return levels.join('/');
  };

  const tree = new TopicTree<number>();
  const pairs = new Map<string, number>(); // "key\0filter" → value
  let invalid = 0;
  for (let i = 0; i < 2_000; i++) {
    const filter = filterOf();
    if (!isValidTopicFilter(filter) && filter !== '') invalid++; // '' is invalid but still a literal level
    const key = `c${Math.floor(next() * 40)}`;
    tree.add(filter, key, i);
    pairs.set(`${key}\0${filter}`, i);
  }
  t.equal(invalid, 0, 'the generator makes valid filters');
  t.equal(tree.size, pairs.size, 'size counts distinct (filter, key) pairs');

  const topics = Array.from({ length: 2_000 }, topicOf);
  const check = (label: string): void => {
    let mismatches = 0;
    let firstMismatch = '';
    let visits = 0;
    for (const topic of topics) {
      const got: string[] = [];
      tree.match(topic, (key, value, filter) => {
        got.push(`${key}\0${filter}`);
        if (pairs.get(`${key}\0${filter}`) !== value) mismatches++;
      });
      visits += got.length;
      const expected = [...pairs.keys()].filter((p) => topicMatches(p.slice(p.indexOf('\0') + 1), topic));
      got.sort();
      expected.sort();
      if (got.length !== expected.length || got.some((g, i) => g !== expected[i])) {
        mismatches++;
        firstMismatch ||= `${topic}: got ${got.length}, expected ${expected.length}`;
      }
    }
    t.equal(mismatches, 0, `${label}: tree and topicMatches agree on ${topics.length} topics ${firstMismatch}`);
    t.ok(visits > 0, `${label}: the topics do match something (${visits} visits)`);
  };
  check('full tree');

  // Remove about half, including some the tree never had, and compare again.
  let failedRemoves = 0;
  for (const p of [...pairs.keys()]) {
    if (next() < 0.5) {
      const [key, filter] = p.split('\0') as [string, string];
      if (!tree.remove(filter, key)) failedRemoves++;
      pairs.delete(p);
    }
  }
  t.equal(failedRemoves, 0, 'every stored pair is removable');
  t.equal(tree.remove('never/added', 'c1'), false);
  t.equal(tree.size, pairs.size);
  check('after removing half');

  for (const p of pairs.keys()) {
    const [key, filter] = p.split('\0') as [string, string];
    tree.remove(filter, key);
  }
  t.equal(tree.size, 0);
  t.equal(tree.nodeCount, 0, 'empty again');
});

t.test('a topic visits only its own filter among 50k unrelated ones', async (t) => {
  // Timing belongs in bench/; here only what is visited is checked.
  const tree = new TopicTree<number>();
  for (let i = 0; i < 50_000; i++) tree.add(`devices/${i}/state`, `c${i}`, i);
  tree.add('devices/+/state', 'monitor', -1);
  let hits = 0;
  for (let i = 0; i < 20_000; i++) tree.match(`devices/${i}/state`, () => void hits++);
  t.equal(hits, 40_000, 'each topic: its own filter and the wildcard one');
});

t.test('deep topics and filters do not overflow the stack', async (t) => {
  const tree = new TopicTree<number>();
  const deepFilter = Array.from({ length: 30_000 }, () => '+').join('/');
  const deepTopic = Array.from({ length: 30_000 }, () => 'a').join('/');
  t.ok(isValidTopicFilter(deepFilter));
  tree.add(deepFilter, 'k', 1);
  t.same(visited(tree, deepTopic), [`k ${deepFilter}`]);
  t.equal(topicMatches(deepFilter, deepTopic), true);
  t.equal(tree.remove(deepFilter, 'k'), true);
  t.equal(tree.nodeCount, 0);
});

t.test('isValidTopicName', async (t) => {
  const table: Array<[string, boolean, string]> = [
    ['sport/tennis/player1', true, 'plain'],
    ['a', true, 'one level'],
    ['/', true, 'two empty levels'],
    ['/finance', true, 'leading separator'],
    ['finance/', true, 'trailing separator'],
    ['a//b', true, 'empty level'],
    ['Accounts payable', true, 'space'],
    ['$SYS/monitor', true, '$ topic (ACL decides who may publish)'],
    ['$share/g/t', true, 'shared-looking name is literal'],
    ['température/°C/日本', true, 'non-ASCII'],
    ['emoji/\u{1F600}', true, 'astral plane (surrogate pair)'],
    ['', false, 'empty'],
    ['sport/+', false, 'single-level wildcard'],
    ['sport/#', false, 'multi-level wildcard'],
    ['sport+', false, '+ inside a level'],
    ['a#b', false, '# inside a level'],
    ['a\u0000b', false, 'U+0000'],
    ['a/\uD800', false, 'lone high surrogate'],
    ['a/\uDC00b', false, 'lone low surrogate'],
    ['x'.repeat(65535), true, '65535 ASCII bytes'],
    ['x'.repeat(65536), false, '65536 ASCII bytes'],
    ['é'.repeat(32767) + 'x', true, '65535 bytes of 2-byte chars'],
    ['é'.repeat(32768), false, '65536 bytes of 2-byte chars'],
    ['日'.repeat(21845), true, '65535 bytes of 3-byte chars'],
    ['日'.repeat(21845) + 'x', false, '65536 bytes, only 21846 code units'],
    ['\u{1F600}'.repeat(16383) + 'xxx', true, '65535 bytes with 4-byte chars'],
    ['\u{1F600}'.repeat(16384), false, '65536 bytes of 4-byte chars'],
  ];
  for (const [name, expected, why] of table) t.equal(isValidTopicName(name), expected, `${why}: ${expected ? 'valid' : 'invalid'}`);
});

t.test('isValidTopicFilter', async (t) => {
  const table: Array<[string, boolean, string]> = [
    // §4.7.1.2
    ['sport/tennis/player1/#', true, 'trailing #'],
    ['sport/#', true, '# after one level'],
    ['#', true, '# alone'],
    ['sport/tennis/#', true, 'trailing #'],
    ['sport/tennis#', false, '# inside a level'],
    ['sport/tennis/#/ranking', false, '# not last'],
    // §4.7.1.3
    ['+', true, '+ alone'],
    ['+/tennis/#', true, '+ and #'],
    ['sport+', false, '+ inside a level'],
    ['sport/+/player1', true, '+ in the middle'],
    ['+/+', true, 'two +'],
    ['/+', true, '+ after an empty level'],
    ['+/', true, '+ before an empty level'],
    ['++', false, 'double +'],
    ['a/+b', false, '+ at the start of a level'],
    ['a/b+', false, '+ at the end of a level'],
    ['#/', false, '# followed by an empty level'],
    ['a/#/', false, '# not last (trailing empty level)'],
    ['##', false, 'double #'],
    ['a/b#', false, '# glued to a level'],
    ['+#', false, '+ glued to #'],
    ['/#', true, '# after an empty level'],
    // plain filters and literal treatment
    ['a//b', true, 'empty level'],
    ['/', true, 'two empty levels'],
    ['$SYS/#', true, '$SYS'],
    ['$share/group/sensors/+', true, 'shared subscription is just a filter'],
    ['$share/gr+oup/t', false, 'no special parsing of $share: literal rules apply'],
    ['', false, 'empty'],
    ['a\u0000', false, 'U+0000'],
    ['a/\uD83D', false, 'lone surrogate'],
    ['x'.repeat(65535), true, '65535 bytes'],
    ['x'.repeat(65534) + '日', false, '65537 bytes'],
    [Array.from({ length: 32768 }, () => '+').join('/'), true, '65535 bytes of +/ levels'],
  ];
  for (const [filter, expected, why] of table) {
    t.equal(isValidTopicFilter(filter), expected, `${why}: ${expected ? 'valid' : 'invalid'}${filter.length < 40 ? ` (${JSON.stringify(filter)})` : ''}`);
  }
  // Every valid topic name is also a valid filter (it matches just itself).
  for (const name of ['a', '/', 'a//b', '$SYS/x', 'température']) {
    t.ok(isValidTopicFilter(name), `name ${JSON.stringify(name)} is a valid filter`);
    t.ok(topicMatches(name, name), `and matches itself`);
  }
});

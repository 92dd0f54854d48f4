/**
 * Topic filter matching (MQTT 3.1.1 / 5.0 §4.7): a standalone matcher and a trie of filters.
 *
 * Shared rules of both:
 * - levels are separated by `/`; empty levels are ordinary levels (`/a` has two, `a//b` three);
 * - a filter level that is exactly `+` matches any one topic level (including an empty one);
 * - a filter level that is exactly `#` (the last one) matches the rest of the topic, including
 *   none of it: `a/#` matches `a`;
 * - a topic starting with `$` is not matched by a filter whose first level is a wildcard, so `#`
 *   does not deliver `$SYS/...` (§4.7.2);
 * - anything else is compared literally: `$share/g/t` is just a three-level filter, and `a+` is
 *   a plain level. Filters are not validated here (see {@link isValidTopicFilter}); a `#` that is
 *   not last makes a filter that matches nothing.
 */

const SLASH = 0x2f;
const PLUS = 0x2b;
const HASH = 0x23;
const DOLLAR = 0x24;

/**
 * Whether `filter` matches `topic` under the MQTT rules above.
 *
 * Walks both strings with indexes instead of splitting them, so a one-off check allocates
 * nothing. To match one topic against many filters use a {@link TopicTree}.
 */
export function topicMatches(filter: string, topic: string): boolean {
  const fl = filter.length;
  const tl = topic.length;
  // $-topics are hidden from leading wildcards (§4.7.2).
  if (tl > 0 && topic.charCodeAt(0) === DOLLAR && fl > 0) {
    const c = filter.charCodeAt(0);
    if ((c === PLUS || c === HASH) && (fl === 1 || filter.charCodeAt(1) === SLASH)) return false;
  }
  let f = 0;
  let t = 0;
  let topicDone = false;
  for (;;) {
    let fEnd = filter.indexOf('/', f);
    if (fEnd < 0) fEnd = fl;
    const fLen = fEnd - f;
    if (fLen === 1 && filter.charCodeAt(f) === HASH) return fEnd === fl; // `#` covers what is left, even nothing
    if (topicDone) return false; // the filter has a level the topic lacks
    let tEnd = topic.indexOf('/', t);
    if (tEnd < 0) tEnd = tl;
    if (!(fLen === 1 && filter.charCodeAt(f) === PLUS)) {
      if (fLen !== tEnd - t) return false;
      for (let i = 0; i < fLen; i++) if (filter.charCodeAt(f + i) !== topic.charCodeAt(t + i)) return false;
    }
    topicDone = tEnd === tl;
    if (fEnd === fl) return topicDone;
    f = fEnd + 1;
    t = tEnd + 1;
  }
}

/** One topic level of the trie. Wildcard children are kept apart from literal ones so a topic
 *  level that happens to be `+` or `#` can never be mistaken for a wildcard. */
class TopicNode<T> {
  /** Literal child levels; created on first use, dropped when empty. */
  children: Map<string, TopicNode<T>> | undefined = undefined;
  plus: TopicNode<T> | undefined = undefined;
  hash: TopicNode<T> | undefined = undefined;
  /** Subscribers whose filter ends at this node, by key. */
  entries: Map<string, T> | undefined = undefined;
  /** The filter that ends here (meaningful while `entries` is set). */
  filter = '';

  isEmpty(): boolean {
    return this.entries === undefined && this.children === undefined && this.plus === undefined && this.hash === undefined;
  }

  child(level: string): TopicNode<T> | undefined {
    if (level === '+') return this.plus;
    if (level === '#') return this.hash;
    return this.children?.get(level);
  }

  detach(level: string): void {
    if (level === '+') this.plus = undefined;
    else if (level === '#') this.hash = undefined;
    else if (this.children !== undefined) {
      this.children.delete(level);
      if (this.children.size === 0) this.children = undefined;
    }
  }
}

/**
 * A set of `(filter, key) → value` subscriptions, organised as a trie by topic level so that
 * {@link TopicTree.match} costs O(topic levels × wildcard branching), independent of how many
 * filters are stored.
 *
 * Typical use: key = client id, value = that client's subscription options. A key may hold any
 * number of filters; the tree does not merge them: when several of a client's filters match
 * one topic, the client is visited once per filter, and collapsing those visits (e.g. keeping
 * the highest QoS) is the caller's job.
 *
 * Nodes are created on {@link TopicTree.add} and removed again as soon as they hold nothing,
 * so memory follows the current subscriptions, not their history.
 *
 * @typeParam T - the value stored with each subscription.
 */
export class TopicTree<T> {
  private readonly root = new TopicNode<T>();
  private pairs = 0;
  private nodes = 0;

  /** Number of `(filter, key)` pairs stored. */
  get size(): number {
    return this.pairs;
  }

  /**
   * Number of trie nodes below the root, for leak tests: it returns to 0 once every
   * subscription has been removed.
   * @internal
   */
  get nodeCount(): number {
    return this.nodes;
  }

  /**
   * Stores `value` for `key` under `filter`; an existing `(filter, key)` pair gets the new
   * value (a re-SUBSCRIBE replaces the options, §3.8.4). The filter is not validated: check it
   * with {@link isValidTopicFilter} first.
   */
  add(filter: string, key: string, value: T): void {
    let node = this.root;
    let start = 0;
    for (;;) {
      let end = filter.indexOf('/', start);
      if (end < 0) end = filter.length;
      const level = filter.slice(start, end);
      let next = node.child(level);
      if (next === undefined) {
        next = new TopicNode<T>();
        if (level === '+') node.plus = next;
        else if (level === '#') node.hash = next;
        else (node.children ??= new Map()).set(level, next);
        this.nodes++;
      }
      node = next;
      if (end === filter.length) break;
      start = end + 1;
    }
    if (node.entries === undefined) {
      node.entries = new Map();
      node.filter = filter;
    }
    if (!node.entries.has(key)) this.pairs++;
    node.entries.set(key, value);
  }

  /**
   * Removes the `(filter, key)` pair and prunes the nodes it leaves empty.
   * @returns whether the pair was present.
   */
  remove(filter: string, key: string): boolean {
    const path: TopicNode<T>[] = [];
    const levels = filter.split('/');
    let node = this.root;
    for (const level of levels) {
      const next = node.child(level);
      if (next === undefined) return false;
      path.push(node);
      node = next;
    }
    if (node.entries === undefined || !node.entries.delete(key)) return false;
    this.pairs--;
    if (node.entries.size > 0) return true;
    node.entries = undefined;
    node.filter = '';
    // Walk back up, unlinking every node that no longer leads to a subscription.
    for (let i = levels.length - 1; i >= 0 && node.isEmpty(); i--) {
      const parent = path[i]!;
      parent.detach(levels[i]!);
      this.nodes--;
      node = parent;
    }
    return true;
  }

  /** Whether the `(filter, key)` pair is stored. */
  has(filter: string, key: string): boolean {
    let node = this.root;
    let start = 0;
    for (;;) {
      let end = filter.indexOf('/', start);
      if (end < 0) end = filter.length;
      const next = node.child(filter.slice(start, end));
      if (next === undefined) return false;
      node = next;
      if (end === filter.length) break;
      start = end + 1;
    }
    return node.entries?.has(key) ?? false;
  }

  /**
   * Calls `visit(key, value, filter)` once for every stored pair whose filter matches `topic`
   * (same rules as {@link topicMatches}); the order is unspecified. A key subscribed with
   * several matching filters is visited once per filter.
   *
   * `visit` may remove pairs (including the one being visited); pairs added during the walk
   * may or may not be visited.
   */
  match(topic: string, visit: (key: string, value: T, filter: string) => void): void {
    if (this.pairs === 0) return;
    const levels = topic.split('/');
    const depth = levels.length;
    // $-topics skip the root's wildcard children (§4.7.2).
    const hideWildcards = topic.charCodeAt(0) === DOLLAR;
    // An explicit stack rather than recursion: a topic may have ~32k levels and a filter as many
    // `+`, which would overflow the call stack.
    const stack: TopicNode<T>[] = [this.root];
    const at: number[] = [0];
    while (stack.length > 0) {
      const node = stack.pop()!;
      const i = at.pop()!;
      if (i === depth) {
        emit(node, visit);
        // `x/#` also matches `x` itself.
        if (node.hash !== undefined) emit(node.hash, visit);
        continue;
      }
      if (!(hideWildcards && i === 0)) {
        if (node.hash !== undefined) emit(node.hash, visit);
        if (node.plus !== undefined) {
          stack.push(node.plus);
          at.push(i + 1);
        }
      }
      const next = node.children?.get(levels[i]!);
      if (next !== undefined) {
        stack.push(next);
        at.push(i + 1);
      }
    }
  }
}

function emit<T>(node: TopicNode<T>, visit: (key: string, value: T, filter: string) => void): void {
  if (node.entries === undefined) return;
  const filter = node.filter;
  for (const [key, value] of node.entries) visit(key, value, filter);
}

/**
 * MQTT topic name / topic filter rules (MQTT 3.1.1 and 5.0, §4.7 and §1.5.3/§1.5.4).
 *
 * Both checks are a single pass over the UTF-16 code units, with no allocation: they run for
 * every PUBLISH and every SUBSCRIBE a gateway receives.
 */

/** MQTT strings carry a 16-bit length prefix, so a topic is at most this many UTF-8 bytes. */
export const MAX_TOPIC_BYTES = 65535;

const SLASH = 0x2f;
const PLUS = 0x2b;
const HASH = 0x23;

/**
 * Shared scan. Returns false on U+0000, on a lone surrogate (not encodable as UTF-8, which MQTT
 * forbids, §1.5.4), on more than {@link MAX_TOPIC_BYTES} UTF-8 bytes, or on a wildcard that the
 * mode does not allow.
 */
function scan(s: string, filter: boolean): boolean {
  const n = s.length;
  if (n === 0 || n > MAX_TOPIC_BYTES) return false; // each code unit is at least one byte
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (c === 0) return false;
      if (c === PLUS) {
        // A filter's `+` must be a whole level: `/+/`, `+/…`, `…/+`, or just `+`.
        if (!filter) return false;
        if ((i > 0 && s.charCodeAt(i - 1) !== SLASH) || (i + 1 < n && s.charCodeAt(i + 1) !== SLASH)) return false;
      } else if (c === HASH) {
        // A filter's `#` must be a whole level and the last one.
        if (!filter || i !== n - 1 || (i > 0 && s.charCodeAt(i - 1) !== SLASH)) return false;
      }
      bytes += 1;
    } else if (c < 0x800) {
      bytes += 2;
    } else if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (next < 0xdc00 || next > 0xdfff) return false;
      bytes += 4;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return false; // low surrogate without its high half
    } else {
      bytes += 3;
    }
    if (bytes > MAX_TOPIC_BYTES) return false;
  }
  return true;
}

/**
 * Whether `topic` may be used as the topic name of a PUBLISH: non-empty, at most 65535 UTF-8
 * bytes, no wildcard characters (`+`, `#`), no U+0000 and no lone surrogate.
 *
 * Empty levels are fine (`/a`, `a//b`, `/`). `$`-topics are valid names; whether a client may
 * publish to them is an access-control question, not a syntax one.
 */
export function isValidTopicName(topic: string): boolean {
  return scan(topic, false);
}

/**
 * Whether `filter` may be used in a SUBSCRIBE / UNSUBSCRIBE: non-empty, at most 65535 UTF-8
 * bytes, no U+0000 and no lone surrogate, `+` only as a whole level, `#` only as a whole level
 * and only as the last one.
 *
 * Shared-subscription filters (`$share/group/…`) get no special treatment: they are checked as
 * the literal filter they are.
 */
export function isValidTopicFilter(filter: string): boolean {
  return scan(filter, true);
}

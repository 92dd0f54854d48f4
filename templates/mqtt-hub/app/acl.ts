/**
 * Who may publish and subscribe where. A device owns `devices/<its id>` and everything under it;
 * every device (and an anonymous client, when allowed) may also use `config.sharedTopics`.
 * Anything else is refused, and so is every `$`-topic (`$SYS/…`, `$share/…`): they belong to the
 * hub.
 */
import { isValidTopicFilter, isValidTopicName, log, topicMatches } from 'gatewayworker';
import { config } from './config.ts';
import { isValidDeviceId } from './credentials.ts';

/** Access checks for one set of shared filters (see {@link createAcl}). */
export interface Acl {
  /** Whether `deviceId` (null: an anonymous client) may publish to `topic`. */
  canPublish(deviceId: string | null, topic: string): boolean;
  /**
   * Whether `deviceId` (null: anonymous) may subscribe to `filter`: only when every topic the
   * filter can match is one the client may use, so `devices/+/telemetry` and `#` are refused.
   */
  canSubscribe(deviceId: string | null, filter: string): boolean;
}

/** The filters `deviceId` may use: its own subtree (`devices/<id>/#` matches `devices/<id>` too) and the shared ones. */
function allowedFilters(shared: readonly string[], deviceId: string | null): readonly string[] {
  return deviceId !== null && isValidDeviceId(deviceId) ? [`devices/${deviceId}/#`, ...shared] : shared;
}

/**
 * Whether every topic `filter` matches is also matched by `allowed` (both valid filters).
 * Level by level: a `#` in `allowed` covers whatever follows; a `+` covers any single level but
 * not a `#`; a literal covers only itself. Checked against one allowed filter at a time, which may
 * refuse a filter that only several allowed ones cover together (it errs on the side of no).
 */
export function filterIncludes(allowed: string, filter: string): boolean {
  // Neither side starts with `$` here (checked by the callers), so the rule that a leading
  // wildcard does not match `$`-topics cannot make the two differ.
  const a = allowed.split('/');
  const f = filter.split('/');
  for (let i = 0; ; i++) {
    if (a[i] === '#') return true; // `x/#` matches `x` itself and all below
    if (i === f.length || i === a.length) return i === f.length && i === a.length;
    if (f[i] === '#') return false; // covers levels `allowed` cannot
    if (a[i] === '+') continue;
    if (f[i] === '+' || f[i] !== a[i]) return false;
  }
}

/** Access checks with `shared` as the filters everyone may use; invalid or `$` filters in it are ignored with a warning. */
export function createAcl(shared: readonly string[]): Acl {
  const usable = shared.filter((filter) => {
    const ok = isValidTopicFilter(filter) && !filter.startsWith('$');
    if (!ok) log.warn(`shared topic filter ${JSON.stringify(filter)} ignored: not a valid filter, or a $-topic`);
    return ok;
  });
  return {
    canPublish(deviceId, topic) {
      if (!isValidTopicName(topic) || topic.startsWith('$')) return false;
      // Presence (`devices/<id>/online`) is the hub's word, not a device's: nobody fakes it.
      if (/^devices\/[^/]+\/online$/.test(topic)) return false;
      return allowedFilters(usable, deviceId).some((allowed) => topicMatches(allowed, topic));
    },
    canSubscribe(deviceId, filter) {
      if (!isValidTopicFilter(filter) || filter.startsWith('$')) return false;
      return allowedFilters(usable, deviceId).some((allowed) => filterIncludes(allowed, filter));
    },
  };
}

const acl = createAcl(config.sharedTopics);

/** Whether `deviceId` (null: an anonymous client) may publish to `topic`; see {@link Acl.canPublish}. */
export const canPublish = (deviceId: string | null, topic: string): boolean => acl.canPublish(deviceId, topic);

/** Whether `deviceId` (null: anonymous) may subscribe to `filter`; see {@link Acl.canSubscribe}. */
export const canSubscribe = (deviceId: string | null, filter: string): boolean => acl.canSubscribe(deviceId, filter);

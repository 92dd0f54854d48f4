import { makeClientId } from '../internal/clientId.js';
import type { Client, ClientTable } from './clients.js';

type Args = Record<string, unknown>;

/**
 * Answers the Gateway API's queries about this gateway process's clients. Each answer covers
 * only this process; the caller merges the answers of all gateways.
 */
export class GatewayQueries {
  constructor(
    private readonly table: ClientTable,
    private readonly prefix: () => string,
  ) {}

  /** @throws Error for an unknown query */
  run(op: string, args: Args, epoch: number): unknown {
    const table = this.table;
    switch (op) {
      case 'count':
        return table.byCounter.size;
      case 'clientIds':
        return [...table.byCounter.values()].map((c) => c.id);
      case 'groupClientIds':
        return this.members(table.groups, args).map((c) => c.id);
      case 'groupCounts': {
        const out: Record<string, number> = {};
        for (const group of strings(args.groups)) out[group] = table.groups.get(group)?.size ?? 0;
        return out;
      }
      case 'groupUids':
        return unique(this.members(table.groups, args).map((c) => c.uid));
      case 'uids':
        return [...table.uids.keys()];
      case 'groups':
        return [...table.groups.keys()];
      case 'groupUidMap':
        return this.groupMap((c) => c.uid);
      case 'groupClientIdMap':
        return this.groupMap((c) => c.id);
      case 'sessions': {
        const clients = args.group === undefined ? [...table.byCounter.values()] : this.members(table.groups, args);
        const out: Record<string, unknown> = {};
        for (const client of clients) out[client.id] = client.session;
        return out;
      }
      case 'clientIdsByUid': {
        const out: Record<string, string[]> = {};
        for (const uid of strings(args.uids)) out[uid] = [...(table.uids.get(uid) ?? [])].map((c) => c.id);
        return out;
      }
      case 'client': {
        if (args.epoch !== epoch) return null;
        const client = table.get(Number(args.counter));
        return client ? { session: client.session, uid: client.uid, groups: [...(client.groups ?? [])] } : null;
      }
      default:
        throw new Error(`unknown query "${op}"`);
    }
  }

  private members(index: Map<string, Set<Client>>, args: Args): Client[] {
    return [...(index.get(String(args.group)) ?? [])];
  }

  private groupMap(pick: (client: Client) => string | null): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const [group, members] of this.table.groups) out[group] = unique([...members].map(pick));
    return out;
  }

  /** The id prefix of this process (for tests and diagnostics). */
  idFor(counter: number): string {
    return makeClientId(this.prefix(), counter);
  }
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

function unique(values: Array<string | null>): string[] {
  return [...new Set(values.filter((v): v is string => v !== null))];
}

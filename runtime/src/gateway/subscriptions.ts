import { TopicTree } from '../topics/index.js';

/** How a client subscribed to a filter. */
export interface SubscriptionOptions {
  qos: 0 | 1 | 2;
  /** MQTT 5: do not send the client its own publishes. */
  noLocal: boolean;
  /** MQTT 5: keep the publish's retain flag on delivery. */
  retainAsPublished: boolean;
  /** MQTT 5 subscription identifier, echoed in deliveries. */
  subscriptionId?: number;
}

/** A client as the subscription index needs it. */
export interface Subscriber {
  readonly counter: number;
  /** Its filters; null until it subscribes to one (most clients of non-MQTT gateways never do). */
  subscriptions: Map<string, SubscriptionOptions> | null;
}

/** One client's share of a publish: several matching filters merge into one delivery. */
export interface Match {
  qos: 0 | 1 | 2;
  retainAsPublished: boolean;
  subscriptionIds: number[] | null;
}

/**
 * The subscriptions of one gateway's clients, indexed by topic level, so a publish costs a walk
 * down the matching branches, not a look at every subscriber.
 */
export class Subscriptions<C extends Subscriber> {
  private readonly tree = new TopicTree<{ client: C; options: SubscriptionOptions }>();

  get size(): number {
    return this.tree.size;
  }

  add(client: C, filter: string, options: SubscriptionOptions): void {
    this.tree.add(filter, String(client.counter), { client, options });
    (client.subscriptions ??= new Map()).set(filter, options);
  }

  remove(client: C, filter: string): void {
    if (!client.subscriptions?.delete(filter)) return;
    this.tree.remove(filter, String(client.counter));
  }

  /** Drops every subscription of a client that left. */
  removeAll(client: C): void {
    if (!client.subscriptions) return;
    const key = String(client.counter);
    for (const filter of client.subscriptions.keys()) this.tree.remove(filter, key);
    client.subscriptions = null;
  }

  /**
   * Calls `visit` once per (client, filter) pair matching `topic`, with no allocation per
   * subscriber. A client with several matching filters is visited once per filter: callers that
   * need one delivery per client check `client.subscriptions.size > 1` and use {@link match}.
   */
  forEach(topic: string, visit: (client: C, options: SubscriptionOptions) => void): void {
    this.tree.match(topic, (_key, entry) => visit(entry.client, entry.options));
  }

  /**
   * The clients a message on `topic` goes to, each once, at the highest QoS any of its matching
   * filters granted. `from` (the publisher's counter) skips its `noLocal` subscriptions.
   */
  match(topic: string, from: number | null): Map<C, Match> {
    const out = new Map<C, Match>();
    this.tree.match(topic, (_key, { client, options }) => {
      if (options.noLocal && client.counter === from) return;
      const seen = out.get(client);
      if (!seen) {
        out.set(client, {
          qos: options.qos,
          retainAsPublished: options.retainAsPublished,
          subscriptionIds: options.subscriptionId ? [options.subscriptionId] : null,
        });
        return;
      }
      if (options.qos > seen.qos) seen.qos = options.qos;
      seen.retainAsPublished ||= options.retainAsPublished;
      if (options.subscriptionId) (seen.subscriptionIds ??= []).push(options.subscriptionId);
    });
    return out;
  }
}

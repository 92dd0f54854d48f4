/**
 * The store client of this process: one per process (BusinessWorker or gateway), created on first
 * use so that merely importing the handlers (the master process does) connects nowhere.
 */
import { config } from '../config.ts';
import { StoreClient } from '../store/client.ts';

export { pickProperties, sizeOf } from '../store/client.ts';
export type { OpenedSession, StoredInflight, StoredMessage, StoredSubscription, WillOutcome } from '../store/client.ts';

let client: StoreClient | null = null;

/** This process's {@link StoreClient} (reconnects by itself; calls reject while the store is unreachable). */
export function store(): StoreClient {
  client ??= new StoreClient(config.storeAddress);
  return client;
}

/** Closes the client, if one was made (the worker stops). */
export function closeStore(): void {
  client?.close();
  client = null;
}

import { Gateway as GatewayRole } from '../gateway/Gateway.js';
import { GatewayApi } from './GatewayApi.js';
import { currentApi } from './current.js';

/** Every public method of the Gateway API, for the static facade. */
const API_METHODS = [
  'sendToAll',
  'sendToClient',
  'sendToUid',
  'sendToGroup',
  'closeClient',
  'destroyClient',
  'joinGroup',
  'leaveGroup',
  'ungroup',
  'bindUid',
  'unbindUid',
  'setSession',
  'updateSession',
  'getSession',
  'isOnline',
  'getUidByClientId',
  'isUidOnline',
  'getClientIdByUid',
  'isUidsOnline',
  'batchGetClientIdByUid',
  'getAllClientIdCount',
  'getAllClientIdList',
  'getClientIdCountByGroup',
  'batchGetClientIdCountByGroup',
  'getClientIdListByGroup',
  'getUidListByGroup',
  'getUidCountByGroup',
  'getAllUidList',
  'getAllUidCount',
  'getAllGroupIdList',
  'getAllGroupUidList',
  'getAllGroupClientIdList',
  'getAllClientSessions',
  'getClientSessionsByGroup',
  'subscribe',
  'unsubscribe',
  'publish',
  'restoreMqttSession',
] as const satisfies ReadonlyArray<keyof GatewayApi>;

type ApiStatics = Pick<GatewayApi, (typeof API_METHODS)[number]>;

for (const method of API_METHODS) {
  Object.defineProperty(GatewayRole, method, {
    value: (...args: unknown[]) => (currentApi()[method] as (...a: unknown[]) => unknown)(...args),
    writable: false,
    enumerable: false,
  });
}

/**
 * `new Gateway(address, options)` defines gateway processes (in `start_gateway.ts`);
 * `Gateway.sendToAll(…)` and the other static methods are the Gateway API inside a BusinessWorker
 * (in `Events.ts`), as in PHP GatewayWorker. In other processes use `GatewayClient`.
 */
export const Gateway = GatewayRole as typeof GatewayRole & ApiStatics;
export type Gateway = GatewayRole;

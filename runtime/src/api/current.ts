import type { GatewayApi } from './GatewayApi.js';

let current: GatewayApi | null = null;

/** Makes `api` the one behind the static `Gateway.*` methods (done by BusinessWorker). @internal */
export function setCurrentApi(api: GatewayApi | null): void {
  current = api;
}

/** The API of this BusinessWorker process. @throws Error outside a BusinessWorker */
export function currentApi(): GatewayApi {
  if (!current) {
    throw new Error('Gateway.* API methods work inside a BusinessWorker; in other processes create a GatewayClient({ registerAddress, secretKey })');
  }
  return current;
}

export { parseClientId, makeClientId, clientIdPrefix, InvalidClientIdError, gatewayKey, splitHostPort } from './clientId.js';
export type { ClientIdParts } from './clientId.js';

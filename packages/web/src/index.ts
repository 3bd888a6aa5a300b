export { createGatehouseAuth, type GatehouseAuth, type GatehouseAuthOptions, type AuthSnapshot } from './auth.ts';
export { livekitTokenSource, ConnectionDetailsError, type ConnectionDetails, type LiveKitTokenSourceOptions, type TokenSourceFetchOptions } from './livekit.ts';

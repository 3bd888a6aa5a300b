export { createTokenVerifier, scopesOf, type TokenVerifier, type TokenVerifierOptions, type AccessTokenClaims, type VerifyOptions } from './verifier.ts';
export { TokenRejectedError, type RejectionCode } from './errors.ts';
export { authenticate, rejectionResponse, toAuthInfo, bearerAuth, koaBearerAuth, type AuthInfo, type Authenticated, type AuthenticateOptions, type BearerAuthOptions, type RequestLike, type Rejection } from './http.ts';
export { protectedResourceMetadata, type ProtectedResourceOptions, type ProtectedResourceMetadata } from './metadata.ts';
export { mcpTokenVerifier, type McpTokenVerifier } from './mcp.ts';
export type { DpopRequest } from './dpop.ts';

// Adapter for the MCP TypeScript SDK: `requireBearerAuth({ verifier: mcpTokenVerifier(v) })` puts the
// verified token on `req.auth` as the SDK's AuthInfo, and the SDK's tools see it as `extra.authInfo`.
// The SDK decides the HTTP answer by the error's class, so refusals are thrown as its own
// InvalidTokenError / InsufficientScopeError / ServerError. The SDK is loaded only when this adapter
// is used: it is an optional peer dependency, not a dependency of this package.
import { TokenRejectedError } from './errors.ts';
import { toAuthInfo, type Authenticated } from './http.ts';
import type { TokenVerifier } from './verifier.ts';

/** The SDK's OAuthTokenVerifier interface. */
export interface McpTokenVerifier {
  verifyAccessToken(token: string): Promise<Authenticated>;
}

export function mcpTokenVerifier(verifier: TokenVerifier, opts: { requiredScopes?: string[] } = {}): McpTokenVerifier {
  return {
    async verifyAccessToken(token) {
      try {
        return toAuthInfo(token, await verifier.verify(token, { requiredScopes: opts.requiredScopes }));
      } catch (err) {
        const sdk = await import('@modelcontextprotocol/sdk/server/auth/errors.js');
        if (!(err instanceof TokenRejectedError) || err.status === 503) {
          // The SDK answers ServerError with 500; it has no 503. Still refused: fail closed.
          throw new sdk.ServerError(err instanceof Error ? err.message : 'token cannot be checked');
        }
        if (err.error === 'insufficient_scope') throw new sdk.InsufficientScopeError(err.message);
        throw new sdk.InvalidTokenError(err.message);
      }
    },
  };
}

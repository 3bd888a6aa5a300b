// For resource servers (MCP tool servers, APIs): verify a Gatehouse access token and ask whether it
// has been revoked. The JWT is checked locally against /jwks (RFC 9068: typ at+jwt, iss, aud, exp);
// revocation is asked of /token/introspection (RFC 7662) with the resource server's own client
// credentials, and the answer cached briefly (a revoked token stops working within `cacheSeconds`).
// Fails closed: when introspection cannot answer, verify() throws with status 503.
//
//   const verify = createTokenVerifier({ issuer, audience: 'https://mcp.example.com/mcp', clientId, clientSecret });
//   const claims = await verify(bearerToken);   // throws TokenRejectedError (401) / 503
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';

export interface TokenVerifierOptions {
  /** Gatehouse's issuer URL, exactly as in its discovery document. */
  issuer: string;
  /** This resource server's URI, exactly as registered (`gatehouse resource create --uri`). */
  audience: string;
  /** Client credentials the resource server introspects with. Without them only the JWT is checked (no revocation). */
  clientId?: string;
  clientSecret?: string;
  /** How long an introspection answer is reused. Default 10 s; 0 asks every time. */
  cacheSeconds?: number;
  fetch?: typeof fetch;
}

export class TokenRejectedError extends Error {
  constructor(message: string, public readonly status: 401 | 503 = 401) {
    super(message);
    this.name = 'TokenRejectedError';
  }
}

export function createTokenVerifier(opts: TokenVerifierOptions): (token: string) => Promise<JWTPayload> {
  const issuer = opts.issuer.replace(/\/+$/, '');
  const jwks = createRemoteJWKSet(new URL(`${issuer}/jwks`));
  const doFetch = opts.fetch ?? fetch;
  const cacheMs = (opts.cacheSeconds ?? 10) * 1000;
  const cache = new Map<string, { active: boolean; until: number }>();

  async function introspect(token: string, key: string, exp: number | undefined): Promise<boolean> {
    const hit = cache.get(key);
    if (hit && hit.until > Date.now()) return hit.active;
    let res: Response;
    try {
      res = await doFetch(`${issuer}/token/introspection`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${encodeURIComponent(opts.clientId!)}:${encodeURIComponent(opts.clientSecret ?? '')}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
        signal: AbortSignal.timeout(5000),
      });
    } catch {
      throw new TokenRejectedError('revocation status cannot be checked right now', 503);
    }
    if (!res.ok) throw new TokenRejectedError('revocation status cannot be checked right now', 503);
    const active = (await res.json() as { active?: unknown }).active === true;
    const until = Math.min(Date.now() + cacheMs, (exp ?? Infinity) * 1000);
    if (cacheMs > 0) {
      if (cache.size > 10_000) cache.clear();
      cache.set(key, { active, until });
    }
    return active;
  }

  return async function verifyAccessToken(token: string): Promise<JWTPayload> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, { issuer, audience: opts.audience, typ: 'at+jwt', algorithms: ['ES256', 'RS256'] }));
    } catch (err) {
      throw new TokenRejectedError(`invalid token: ${(err as Error).message}`);
    }
    if (opts.clientId && !(await introspect(token, String(payload.jti ?? token), payload.exp))) {
      throw new TokenRejectedError('token has been revoked');
    }
    return payload;
  };
}

// Revocation through Gatehouse's introspection endpoint (RFC 7662), asked with the resource server's
// own client credentials. Answers are reused for `cacheSeconds` (never past the token's exp), so a
// revocation is noticed at most that long after it happens while Gatehouse is not asked per request.
// Fails closed: when introspection cannot answer, the token is refused with 503, never let through.
import { TokenRejectedError } from './errors.ts';

export interface Introspection {
  isActive(token: string, claims: { jti?: string; exp?: number }): Promise<boolean>;
}

const MAX_ENTRIES = 10_000;

export function createIntrospection(o: { issuer: string; clientId: string; clientSecret: string; cacheSeconds: number; fetch: typeof fetch }): Introspection {
  const endpoint = `${o.issuer.replace(/\/+$/, '')}/token/introspection`;
  const cacheMs = o.cacheSeconds * 1000;
  const cache = new Map<string, { active: boolean; until: number }>();
  // RFC 6749 §2.3.1: client_secret_basic form-encodes id and secret before base64.
  const basic = `Basic ${btoa(`${formEncode(o.clientId)}:${formEncode(o.clientSecret)}`)}`;

  async function ask(token: string): Promise<boolean> {
    let res: Response;
    try {
      res = await o.fetch(endpoint, {
        method: 'POST',
        headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
        signal: AbortSignal.timeout(5000),
      });
    } catch {
      throw unavailable();
    }
    if (!res.ok) throw unavailable();
    const body = (await res.json().catch(() => undefined)) as { active?: unknown } | undefined;
    if (!body || typeof body !== 'object') throw unavailable();
    return body.active === true;
  }

  return {
    async isActive(token, claims) {
      // The jti names the token (RFC 9068 §2.2); without one the token itself is the key.
      const key = claims.jti ?? token;
      const hit = cache.get(key);
      if (hit && hit.until > Date.now()) return hit.active;
      const active = await ask(token);
      if (cacheMs > 0) {
        if (cache.size >= MAX_ENTRIES) dropExpired(cache);
        if (cache.size >= MAX_ENTRIES) cache.clear();
        cache.set(key, { active, until: Math.min(Date.now() + cacheMs, (claims.exp ?? Infinity) * 1000) });
      }
      return active;
    },
  };
}

function unavailable() {
  return new TokenRejectedError('revocation status cannot be checked right now', 'temporarily_unavailable');
}

function dropExpired(cache: Map<string, { until: number }>) {
  const now = Date.now();
  for (const [k, v] of cache) if (v.until <= now) cache.delete(k);
}

function formEncode(s: string) {
  return encodeURIComponent(s).replace(/%20/g, '+');
}

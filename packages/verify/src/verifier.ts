// Verify a Gatehouse access token where it is used: the JWT is checked locally against Gatehouse's
// signing keys (RFC 9068 JWT access tokens), its scopes against what the caller needs, an optional
// DPoP proof against the key the token is bound to (RFC 9449), and, when the resource server has
// client credentials, Gatehouse's introspection endpoint (RFC 7662) says whether it was revoked.
// Each check is one named step; verify() runs them top-down.
import { createRemoteJWKSet, customFetch, errors, jwtVerify, type JWTPayload } from 'jose';
import { TokenRejectedError } from './errors.ts';
import { createIntrospection, type Introspection } from './introspection.ts';
import { checkDpopProof, type DpopRequest } from './dpop.ts';

export interface TokenVerifierOptions {
  /** Gatehouse's issuer URL, exactly as in its discovery document (`iss` must equal it). */
  issuer: string;
  /** This resource server's URI exactly as registered in Gatehouse (`aud` must contain it); several are accepted. */
  audience: string | string[];
  /** Scopes every token must carry; verify() can ask for more per call. */
  requiredScopes?: string[];
  /** Leeway for `exp`, `nbf` and `iat` against this machine's clock. Default 5 s. */
  clockToleranceSeconds?: number;
  /** Signature algorithms accepted (asymmetric only). Default ES256, RS256, PS256, EdDSA. */
  algorithms?: string[];
  /** Where the signing keys are published. Default `<issuer>/jwks`. */
  jwksUri?: string;
  /**
   * After a fetch of the keys, how long a token with an unknown `kid` is refused without fetching
   * again (so forged kids cannot make this server flood Gatehouse). Default 30 s.
   */
  jwksCooldownSeconds?: number;
  /**
   * Client credentials of this resource server at Gatehouse, to ask introspection whether a token was
   * revoked. Without them only the JWT is checked, and a revoked token works until it expires.
   */
  clientId?: string;
  clientSecret?: string;
  /** How long an introspection answer is reused (the longest a revocation can go unnoticed). Default 10 s; 0 asks every time. */
  cacheSeconds?: number;
  /** DPoP (RFC 9449): bound tokens always need a valid proof; `required` also refuses unbound ones. */
  dpop?: { required?: boolean; maxAgeSeconds?: number };
  /** For tests and other runtimes. */
  fetch?: typeof fetch;
}

/** The claims of a verified token (RFC 9068 §2.2, RFC 8693 §4.1 `act`, Gatehouse's `roles`/`permissions`). */
export interface AccessTokenClaims extends JWTPayload {
  iss: string;
  sub: string;
  aud: string | string[];
  exp: number;
  iat: number;
  client_id: string;
  jti?: string;
  scope?: string;
  /** Who acts for the subject (delegation); nested when an actor was itself delegated to. */
  act?: { sub: string; act?: unknown };
  cnf?: { jkt?: string };
  roles?: string[];
  permissions?: string[];
}

export interface VerifyOptions {
  /** Scopes this call needs on top of the verifier's `requiredScopes`. */
  requiredScopes?: string[];
  /**
   * The HTTP request, for DPoP: the `DPoP` header's proof, the method and the full URL, and the
   * Authorization scheme the token came with (a DPoP-bound token must not arrive as Bearer).
   */
  request?: DpopRequest & { scheme?: string };
}

export interface TokenVerifier {
  /** Resolves to the token's claims, or throws TokenRejectedError (401/403/503, with the OAuth error code). */
  verify(token: string, options?: VerifyOptions): Promise<AccessTokenClaims>;
  readonly issuer: string;
  readonly audience: string[];
  /** The DPoP settings, so HTTP adapters can offer the DPoP challenge (RFC 9449 §7.1). */
  readonly dpop?: TokenVerifierOptions['dpop'];
}

const DEFAULT_ALGORITHMS = ['ES256', 'RS256', 'PS256', 'EdDSA'];

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  // The issuer is compared exactly (RFC 9068 §4); only the keys' URL is built from it.
  const issuer = opts.issuer;
  const audience = Array.isArray(opts.audience) ? opts.audience : [opts.audience];
  if (!issuer || audience.length === 0 || audience.some((a) => !a)) throw new TypeError('createTokenVerifier needs issuer and audience');
  const doFetch = opts.fetch ?? fetch;
  const skew = opts.clockToleranceSeconds ?? 5;
  // createRemoteJWKSet caches the key set and fetches it again when a token names a kid it does not
  // hold (Gatehouse rotated its keys), at most once per cooldown, so unknown kids cannot flood Gatehouse.
  const jwks = createRemoteJWKSet(new URL(opts.jwksUri ?? `${issuer.replace(/\/+$/, '')}/jwks`), {
    cooldownDuration: (opts.jwksCooldownSeconds ?? 30) * 1000,
    cacheMaxAge: 10 * 60_000,
    [customFetch]: doFetch,
  });
  const introspection: Introspection | undefined = opts.clientId
    ? createIntrospection({ issuer, clientId: opts.clientId, clientSecret: opts.clientSecret ?? '', cacheSeconds: opts.cacheSeconds ?? 10, fetch: doFetch })
    : undefined;
  const seenProofs = new Map<string, number>();

  async function checkJwt(token: string): Promise<AccessTokenClaims> {
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer,
        audience,
        // RFC 9068 §4: the header's typ must be at+jwt, so an ID token or another JWT is not taken for an access token.
        typ: 'at+jwt',
        algorithms: opts.algorithms ?? DEFAULT_ALGORITHMS,
        clockTolerance: skew,
        requiredClaims: ['iss', 'aud', 'exp', 'iat', 'sub', 'client_id'],
      });
      return payload as AccessTokenClaims;
    } catch (err) {
      throw jwtFailure(err);
    }
  }

  function checkIssuedAt(claims: AccessTokenClaims) {
    // jose checks that iat is a number; a token issued in the future (beyond the skew) is refused too.
    if (claims.iat > Date.now() / 1000 + skew) throw new TokenRejectedError('token was issued in the future (check clocks)');
    if (typeof claims.client_id !== 'string' || typeof claims.sub !== 'string') throw new TokenRejectedError('token lacks sub or client_id');
  }

  async function checkProof(token: string, claims: AccessTokenClaims, request: VerifyOptions['request']) {
    const jkt = claims.cnf?.jkt;
    const scheme = request?.scheme?.toLowerCase();
    if (!jkt) {
      if (opts.dpop?.required) throw new TokenRejectedError('this resource accepts only DPoP-bound tokens', 'invalid_token');
      return;
    }
    // RFC 9449 §7.1: a bound token presented as a Bearer token is refused (it may have been stolen).
    if (scheme !== undefined && scheme !== 'dpop') throw new TokenRejectedError('DPoP-bound token sent with the Bearer scheme', 'invalid_token');
    if (!request?.proof) throw new TokenRejectedError('DPoP proof missing', 'invalid_dpop_proof');
    await checkDpopProof({ token, jkt, request, maxAgeSeconds: opts.dpop?.maxAgeSeconds ?? 300, skew, seen: seenProofs });
  }

  function checkScopes(claims: AccessTokenClaims, extra: string[] = []) {
    const needed = [...(opts.requiredScopes ?? []), ...extra];
    const held = new Set(scopesOf(claims));
    const missing = needed.filter((s) => !held.has(s));
    // RFC 6750 §3.1: insufficient_scope names the scope needed, so the client can step up.
    if (missing.length) throw new TokenRejectedError(`token lacks scope ${missing.join(' ')}`, 'insufficient_scope', [...new Set(needed)]);
  }

  async function checkNotRevoked(token: string, claims: AccessTokenClaims) {
    if (introspection && !(await introspection.isActive(token, claims))) throw new TokenRejectedError('token has been revoked');
  }

  return {
    issuer,
    audience,
    dpop: opts.dpop,
    async verify(token, options = {}) {
      if (!token) throw new TokenRejectedError('no token', null);
      const claims = await checkJwt(token);
      checkIssuedAt(claims);
      await checkProof(token, claims, options.request);
      checkScopes(claims, options.requiredScopes);
      await checkNotRevoked(token, claims);
      return claims;
    },
  };
}

/** The token's scopes (the space-separated `scope` claim, RFC 9068 §2.2.3). */
export function scopesOf(claims: Pick<AccessTokenClaims, 'scope'>): string[] {
  return typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [];
}

/** A bad token is 401; not reaching Gatehouse's keys is an outage (503), not the caller's fault. */
function jwtFailure(err: unknown): TokenRejectedError {
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || !(err instanceof errors.JOSEError)) {
    return new TokenRejectedError("Gatehouse's signing keys cannot be fetched right now", 'temporarily_unavailable');
  }
  if (err instanceof errors.JWTExpired) return new TokenRejectedError('token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) return new TokenRejectedError(`token ${err.claim === 'aud' ? 'is for another audience (aud)' : `claim ${err.claim} is not acceptable`}: ${err.reason}`);
  return new TokenRejectedError(`invalid token: ${(err as Error).message}`);
}

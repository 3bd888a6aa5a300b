// Tokens in and out of the exchange: verifying a subject/actor token Gatehouse issued (an RFC 9068
// JWT signed with our keys, or an opaque token oidc-provider stores), and minting resource tokens.
import crypto from 'node:crypto';
import { decodeProtectedHeader, errors as joseErrors, SignJWT, type JWK, type JWTPayload } from 'jose';
import { signingKey, signJwt, verificationKeys, verifyJwt, type JwsKey } from '../crypto/jws.ts';
import type Provider from 'oidc-provider';
import type { RevocationStore } from '../revocation/store.ts';
import { jtiDigest, RevocationUnavailableError } from '../revocation/store.ts';
import { invalidRequest, unavailable } from './errors.ts';
import { splitScope } from './policy.ts';

/** What the exchange needs to know about a presented token, whatever its format. */
export interface VerifiedToken {
  format: 'jwt' | 'opaque';
  /** The user, for tokens issued to a user; undefined for a client's own (client-credentials) token. */
  user?: string;
  clientId: string;
  scope: string[];
  jti?: string;
  gid?: string;
  sid?: string;
  iat?: number;
  exp?: number;
  act?: Record<string, unknown>;
  mayAct?: Record<string, unknown>;
  acr?: string;
  amr?: string[];
  /** JWT access tokens: the audience (the resource it was issued for). */
  aud?: string[];
  /** Exchanged tokens: digests of the tokens they came from (the `ojti` claim). */
  ojti?: string[];
}

/**
 * Our keys, as oidc-provider was built with them: verify with the public halves, sign with ES256.
 * node:crypto key objects (src/crypto/jws.ts): made once per key set, not per token.
 */
export interface KeyRing {
  verifyKeys: Map<string, JwsKey>;
  es256: JwsKey;
}

export async function buildKeyRing(privateJwks: { keys: JWK[] }): Promise<KeyRing> {
  // privateJwks() lists active signers first.
  const signer = privateJwks.keys.find((k) => k.alg === 'ES256');
  if (!signer?.kid) throw new Error('no ES256 signing key');
  return { verifyKeys: verificationKeys(privateJwks.keys), es256: signingKey(signer) };
}

const isJwt = (s: string) => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(s);
const AT_JWT = new Set(['at+jwt', 'application/at+jwt']);

/**
 * Verify a token Gatehouse issued. `what` names it in error messages ("subject_token"). Refuses ID
 * tokens, refresh tokens, foreign, expired and tampered tokens with invalid_request (RFC 8693 §2.2.2).
 */
export async function verifyIssuedToken(
  value: string,
  what: string,
  ctx: { provider: Provider; issuer: string; keys: KeyRing },
): Promise<VerifiedToken> {
  if (isJwt(value)) return verifyJwtAccessToken(value, what, ctx);
  return verifyOpaqueToken(value, what, ctx.provider);
}

async function verifyJwtAccessToken(value: string, what: string, ctx: { issuer: string; keys: KeyRing }): Promise<VerifiedToken> {
  let typ: string | undefined;
  try {
    typ = decodeProtectedHeader(value).typ?.toLowerCase();
  } catch {
    throw invalidRequest(`${what} is malformed`);
  }
  // RFC 9068 §2.1: access tokens are typed at+jwt; an ID token (typ JWT or none) is not one.
  if (!typ || !AT_JWT.has(typ)) throw invalidRequest(`${what} is not an access token`);
  let payload: JWTPayload;
  try {
    ({ payload } = verifyJwt(value, ctx.keys.verifyKeys, {
      issuer: ctx.issuer,
      typ: 'at+jwt',
      algorithms: ['ES256', 'RS256'],
      requiredClaims: ['exp', 'iat', 'client_id'],
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw invalidRequest(`${what} is expired`);
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'iss') throw invalidRequest(`${what} was not issued by this server`);
    throw invalidRequest(`${what} is not a valid access token from this server`);
  }
  const clientId = String(payload.client_id);
  const sub = typeof payload.sub === 'string' ? payload.sub : undefined;
  // A client-credentials JWT has sub = client_id and no origin grant; a user's token has both.
  const user = sub && (sub !== clientId || typeof payload.gid === 'string') ? sub : undefined;
  return {
    format: 'jwt',
    user,
    clientId,
    scope: splitScope(payload.scope as string | undefined),
    jti: payload.jti,
    gid: str(payload.gid),
    sid: str(payload.sid),
    iat: payload.iat,
    exp: payload.exp,
    act: obj(payload.act),
    mayAct: obj(payload.may_act),
    ojti: strings(payload.ojti),
    acr: str(payload.acr),
    amr: strings(payload.amr),
    aud: typeof payload.aud === 'string' ? [payload.aud] : strings(payload.aud),
  };
}

/**
 * An OpenID Connect ID token Gatehouse issued to `clientId` (OIDC Core §3.1.3.7: iss, aud naming the
 * client, azp when there are several audiences, exp). ID-JAG's subject token (docs/id-jag.md).
 */
export async function verifyIdToken(value: string, what: string, ctx: { issuer: string; keys: KeyRing; clientId: string }): Promise<VerifiedToken & { authTime?: number }> {
  if (!isJwt(value)) throw invalidRequest(`${what} is not an ID token`);
  let typ: string | undefined;
  try {
    typ = decodeProtectedHeader(value).typ?.toLowerCase();
  } catch {
    throw invalidRequest(`${what} is malformed`);
  }
  // An access token or an ID-JAG (typed JWTs, RFC 8725 §3.11) is not an ID token.
  if (typ && typ !== 'jwt') throw invalidRequest(`${what} is not an ID token`);
  let payload: JWTPayload;
  try {
    ({ payload } = verifyJwt(value, ctx.keys.verifyKeys, { issuer: ctx.issuer, algorithms: ['ES256', 'RS256'], requiredClaims: ['exp', 'iat', 'sub', 'aud'] }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw invalidRequest(`${what} is expired`);
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'iss') throw invalidRequest(`${what} was not issued by this server`);
    throw invalidRequest(`${what} is not a valid ID token from this server`);
  }
  const aud = typeof payload.aud === 'string' ? [payload.aud] : strings(payload.aud) ?? [];
  // The ID-JAG draft (§ Token Exchange, processing rules): the assertion's audience is the client making the request.
  if (!aud.includes(ctx.clientId) || (aud.length > 1 && payload.azp !== ctx.clientId)) throw invalidRequest(`${what} was issued to another client`);
  return {
    format: 'jwt', user: payload.sub, clientId: ctx.clientId, scope: [], sid: str(payload.sid), iat: payload.iat, exp: payload.exp,
    acr: str(payload.acr), amr: strings(payload.amr), authTime: typeof payload.auth_time === 'number' ? payload.auth_time : undefined,
  };
}

/**
 * A refresh token Gatehouse issued to `clientId`, checked as the refresh_token grant would: its own,
 * unexpired, not yet rotated, its grant still there. ID-JAG's other subject token (draft § Token Exchange).
 */
export async function verifyRefreshToken(value: string, what: string, ctx: { provider: Provider; clientId: string }): Promise<VerifiedToken & { authTime?: number }> {
  const rt = await ctx.provider.RefreshToken.find(value);
  const t = rt as unknown as { accountId?: string; clientId: string; scope?: string; jti: string; grantId?: string; sessionUid?: string; iat?: number; exp?: number; acr?: string; amr?: string[]; authTime?: number; consumed?: unknown; isValid?: boolean } | undefined;
  if (!t || !t.isValid) throw invalidRequest(`${what} is not an active refresh token from this server`);
  if (t.clientId !== ctx.clientId) throw invalidRequest(`${what} was issued to another client`);
  if (!t.grantId || !(await ctx.provider.Grant.find(t.grantId))) throw invalidRequest('the grant behind the refresh token has ended');
  return {
    format: 'opaque', user: t.accountId, clientId: t.clientId, scope: splitScope(t.scope), jti: t.jti, gid: t.grantId, sid: t.sessionUid,
    iat: t.iat, exp: t.exp, acr: t.acr, amr: t.amr, authTime: t.authTime,
  };
}

async function verifyOpaqueToken(value: string, what: string, provider: Provider): Promise<VerifiedToken> {
  // Only the two access-token models: a refresh token, code or anything else is not found here.
  const at = await provider.AccessToken.find(value);
  if (at) {
    const t = at as unknown as { accountId?: string; clientId: string; scope?: string; jti: string; grantId?: string; sessionUid?: string; iat?: number; exp?: number; aud?: string | string[]; extra?: Record<string, unknown> };
    // extra holds what extraTokenClaims (src/oidc/provider.ts) gave the token: gid, sid, and the
    // acr/amr of the sign-in behind it, so an MFA requirement holds for opaque tokens too.
    return {
      format: 'opaque', user: t.accountId, clientId: t.clientId, scope: splitScope(t.scope), jti: t.jti, gid: t.grantId,
      sid: t.sessionUid, iat: t.iat, exp: t.exp, act: obj(t.extra?.act), mayAct: obj(t.extra?.may_act),
      acr: str(t.extra?.acr), amr: strings(t.extra?.amr), aud: t.aud === undefined ? undefined : [t.aud].flat(),
    };
  }
  const cc = await provider.ClientCredentials.find(value);
  if (cc) {
    const t = cc as unknown as { clientId: string; scope?: string; jti: string; iat?: number; exp?: number; aud?: string | string[] };
    return { format: 'opaque', clientId: t.clientId, scope: splitScope(t.scope), jti: t.jti, iat: t.iat, exp: t.exp, aud: t.aud === undefined ? undefined : [t.aud].flat() };
  }
  throw invalidRequest(`${what} is not an active access token from this server`);
}

/**
 * Audience binding (docs/authorization.md): Gatehouse's own endpoints take only tokens bound to
 * Gatehouse — no audience (oidc-provider's opaque tokens without a resource) or the issuer. A token
 * issued for a registered resource server belongs to that server; refusing it here means the server
 * cannot replay it to reach the user's rooms, more tokens or the user's data.
 */
export function boundToGatehouse(t: VerifiedToken, issuer: string): boolean {
  return !t.aud?.length || t.aud.every((a) => a === issuer);
}

export function assertBoundToGatehouse(t: VerifiedToken, what: string, issuer: string): void {
  if (!boundToGatehouse(t, issuer)) throw invalidRequest(`${what} was issued for another audience (${t.aud!.join(' ')}); present a token issued for this server`);
}

/** The oidc-provider Grant behind a user's token (its gid), when it still exists and is that user's. */
export async function originGrant(provider: Provider, t: VerifiedToken) {
  const grant = t.gid ? await provider.Grant.find(t.gid) : undefined;
  return grant && grant.accountId === t.user ? grant : undefined;
}

/** Seconds left before the token, or the grant behind it, ends: a derived token never outlives either. */
export async function originLifetimeLeft(provider: Provider, t: VerifiedToken): Promise<number> {
  const now = Math.floor(Date.now() / 1000);
  const ends = [t.exp];
  if (t.gid) {
    const grant = await originGrant(provider, t);
    if (!grant) throw invalidRequest('the grant behind the token has ended');
    ends.push(grant.exp);
  }
  const left = Math.min(...ends.filter((e): e is number => typeof e === 'number').map((e) => e - now));
  if (!(left > 0)) throw invalidRequest('the token is expired');
  return left;
}

/** Fails closed: a revoked token is refused, and an unreachable revocation store is a 503. */
export async function assertNotRevoked(t: VerifiedToken, what: string, revocations: RevocationStore): Promise<void> {
  let kind;
  try {
    kind = await revocations.check({ jti: t.jti, gid: t.gid, sid: t.sid, sub: t.user ?? t.clientId, iat: t.iat, ojti: t.ojti });
  } catch (err) {
    if (err instanceof RevocationUnavailableError) throw unavailable('revocation status cannot be checked right now; try again');
    throw err;
  }
  if (kind) throw invalidRequest(`${what} has been revoked`);
}

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const strings = (v: unknown) => (Array.isArray(v) ? v.map(String) : undefined);
const obj = (v: unknown) => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);

// ---- Minting ----------------------------------------------------------------------------------

export interface ResourceTokenInput {
  issuer: string;
  audience: string;
  sub: string;
  clientId: string;
  scope: string[];
  ttl: number;
  /** origin grant / session, so revoking the origin reaches this token */
  gid?: string;
  sid?: string;
  acr?: string;
  amr?: string[];
  act?: Record<string, unknown>;
  mayAct?: Record<string, unknown>;
  /** HS256 shared secret for resources that cannot fetch JWKS; otherwise our ES256 key signs. */
  hs256Secret?: string;
  /** User claims the resource asked for (roles, permissions: src/authz/scope-rule.ts claimsForResource). */
  claims?: Record<string, unknown>;
  /** lineageOf() the subject and actor tokens. */
  ojti?: string[];
}

/** How many tokens an exchanged token may descend from (subject and actor tokens, through re-exchanges). */
export const MAX_LINEAGE = 8;

/**
 * The `ojti` of a token exchanged from `from`: each one's own jti and lineage, as digests (an opaque
 * token's jti is its value, which must never travel). Revoking any of them by jti reaches the new
 * token (docs/revocation.md). Longer than MAX_LINEAGE is refused rather than cut, so no revocation
 * is silently lost.
 */
export function lineageOf(...from: (VerifiedToken | undefined)[]): string[] {
  const ids = new Set<string>();
  for (const t of from) {
    for (const o of t?.ojti ?? []) ids.add(jtiDigest(o));
    if (t?.jti) ids.add(jtiDigest(t.jti));
  }
  if (ids.size > MAX_LINEAGE) throw invalidRequest(`the token descends from more than ${MAX_LINEAGE} exchanged tokens; start again from a token issued by sign-in or client credentials`);
  return [...ids];
}

export interface IdJagInput {
  issuer: string;
  sub: string;
  /** The target authorization server's issuer. */
  audience: string;
  /** The client's identifier at the target server. */
  clientId: string;
  resource: string;
  scope: string[];
  ttl: number;
  authTime?: number;
  acr?: string;
  amr?: string[];
  email?: string;
  emailVerified?: boolean;
}

/** An Identity Assertion JWT Authorization Grant (docs/id-jag.md: claims of the ID-JAG draft § 3.1). */
export async function mintIdJag(keys: KeyRing, t: IdJagInput): Promise<{ token: string; jti: string; exp: number }> {
  const now = Math.floor(Date.now() / 1000);
  const jti = crypto.randomBytes(16).toString('base64url');
  const exp = now + t.ttl;
  const token = signJwt(keys.es256, { typ: 'oauth-id-jag+jwt' }, {
    iss: t.issuer,
    sub: t.sub,
    aud: t.audience,
    jti,
    iat: now,
    exp,
    client_id: t.clientId,
    resource: t.resource,
    ...(t.scope.length ? { scope: t.scope.join(' ') } : {}),
    ...(t.authTime ? { auth_time: t.authTime } : {}),
    ...(t.acr ? { acr: t.acr } : {}),
    ...(t.amr?.length ? { amr: t.amr } : {}),
    // RECOMMENDED by the draft, for the target server's subject resolution (linking, JIT provisioning).
    ...(t.email ? { email: t.email, email_verified: t.emailVerified === true } : {}),
  });
  return { token, jti, exp };
}

/** An RFC 9068 JWT access token. */
export async function mintAccessToken(keys: KeyRing, t: ResourceTokenInput): Promise<{ token: string; jti: string; exp: number }> {
  const now = Math.floor(Date.now() / 1000);
  const jti = crypto.randomBytes(16).toString('base64url');
  const exp = now + t.ttl;
  // Assigned one by one, not `{ ...t.claims, client_id, … }`: on Node 20 a literal adding properties
  // after a non-empty spread gets a hidden class of its own each time (docs/performance.md).
  const claims: Record<string, unknown> = Object.assign({}, t.claims);
  claims.client_id = t.clientId;
  claims.scope = t.scope.join(' ');
  if (t.gid) claims.gid = t.gid;
  if (t.sid) claims.sid = t.sid;
  if (t.acr) claims.acr = t.acr;
  if (t.amr) claims.amr = t.amr;
  if (t.act) claims.act = t.act;
  if (t.mayAct) claims.may_act = t.mayAct;
  if (t.ojti?.length) claims.ojti = t.ojti;
  claims.iss = t.issuer;
  claims.aud = t.audience;
  claims.sub = t.sub;
  claims.jti = jti;
  claims.iat = now;
  claims.exp = exp;
  const token = t.hs256Secret
    // Same key bytes oidc-provider uses for HS256 resources (provider.ts: Buffer.from(secret)).
    ? await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(Buffer.from(t.hs256Secret))
    : signJwt(keys.es256, { typ: 'at+jwt' }, claims);
  return { token, jti, exp };
}

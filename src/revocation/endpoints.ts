// RFC 7009 revocation and RFC 7662 introspection of JWT access tokens (RFC 9068), which
// oidc-provider refuses with unsupported_token_type (it cannot look them up). oidc-provider still
// authenticates the client: this middleware hands it the request with the JWT replaced by a
// placeholder it will not find (oidc-provider reads a pre-parsed body from ctx.req.body), and once
// it has authenticated the caller and answered, Gatehouse answers for the JWT itself.
import type { Context, Next } from 'koa';
import { decodeJwt, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import { verificationKeys, verifyJwt, type JwsKey } from '../crypto/jws.ts';
import type { Config } from '../config/index.ts';
import type { Resources } from '../oidc/resources.ts';
import type { SigningKeys } from '../oidc/keys.ts';
import type { Audit } from '../audit/index.ts';
import { InvalidRequest, TemporarilyUnavailable } from '../http/errors.ts';
import { RevocationUnavailableError, type RevocationService } from './store.ts';
import { remainingTtl } from './ttl.ts';
import { readRawBody } from '../http/body.ts';
import { NO_SUCH_TOKEN } from '../oidc/adapter.ts';
import { Cached, noChanges, type Changes } from '../store/changes.ts';

export interface StructuredTokenDeps {
  config: Config;
  revocations: RevocationService;
  resources: Resources;
  keys: SigningKeys;
  audit: Audit;
  /** Keeps the key set's version current without a statement per request (src/store/changes.ts). */
  changes?: Changes;
}

const ROUTES = new Set(['/token/introspection', '/token/revocation']);
// Not a JWT and not a token oidc-provider could ever find: it answers inactive / 200-no-op for it.
const PLACEHOLDER = NO_SUCH_TOKEN;
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;


function parseLimit(s: string): number {
  const m = /^(\d+)(b|kb|mb)$/i.exec(s)!;
  return Number(m[1]) * ({ b: 1, kb: 1024, mb: 1024 * 1024 } as Record<string, number>)[m[2].toLowerCase()];
}

export function structuredTokenEndpoints(deps: StructuredTokenDeps) {
  const limit = parseLimit(deps.config.BODY_LIMIT);
  let ring: { version: string; keys: Map<string, JwsKey> } | undefined;
  // Dropped on every node when a key is added, retired or removed; a retired key reaching its end
  // changes the version too, which the cache's expiry (a minute) picks up: everything it signed has
  // expired by then.
  const keysVersion = new Cached('keys.version', deps.changes ?? noChanges, () => deps.keys.version()).dropOn('signing_keys', 'everything');

  async function verifyKeys() {
    const version = String(await keysVersion.get(''));
    if (ring?.version !== version) {
      ring = { version, keys: verificationKeys((await deps.keys.privateJwks()).keys) };
    }
    return ring.keys;
  }

  /** A JWT access token this issuer signed (our keys, or a resource's HS256 secret), unexpired; else undefined. */
  async function verifyAccessJwt(token: string): Promise<JWTPayload | undefined> {
    try {
      const header = decodeProtectedHeader(token);
      const options = { issuer: deps.config.ISSUER, typ: 'at+jwt', requiredClaims: ['exp', 'iat', 'client_id'] };
      if (header.alg === 'HS256') {
        const aud = decodeJwt(token).aud;
        const resource = typeof aud === 'string' ? await deps.resources.findResource(aud) : undefined;
        if (!resource?.hs256Secret) return undefined;
        return (await jwtVerify(token, Buffer.from(resource.hs256Secret), { ...options, algorithms: ['HS256'] })).payload;
      }
      // Our own keys (ES256, RS256), through node:crypto (src/crypto/jws.ts).
      return verifyJwt(token, await verifyKeys(), options).payload;
    } catch {
      return undefined;
    }
  }

  async function checkOrUnavailable(p: JWTPayload) {
    try {
      return await deps.revocations.check({ jti: p.jti, gid: str(p.gid), sid: str(p.sid), sub: p.sub, iat: p.iat, ojti: strs(p.ojti) });
    } catch (err) {
      if (err instanceof RevocationUnavailableError) throw new TemporarilyUnavailable('revocation status cannot be checked right now; try again', { 'Retry-After': '1' });
      throw err;
    }
  }

  /** RFC 7662 §2.2 for a JWT; public clients see only their own tokens (oidc-provider's default policy). */
  async function introspectJwt(token: string, client: { clientId: string; clientAuthMethod: string }) {
    const p = await verifyAccessJwt(token);
    if (!p) return { active: false };
    if (client.clientAuthMethod === 'none' && p.client_id !== client.clientId) return { active: false };
    if (await checkOrUnavailable(p)) return { active: false };
    return {
      active: true,
      iss: p.iss,
      sub: p.sub,
      client_id: p.client_id,
      aud: p.aud,
      scope: p.scope || undefined,
      exp: p.exp,
      iat: p.iat,
      jti: p.jti,
      sid: str(p.sid),
      act: p.act,
      may_act: p.may_act,
      token_type: 'Bearer',
    };
  }

  /** RFC 7009 §2.2: invalid or expired tokens are a 200 no-op; only the client it was issued to may revoke it. */
  async function revokeJwt(ctx: Context, token: string, client: { clientId: string; clientAuthMethod: string }) {
    const p = await verifyAccessJwt(token);
    if (!p?.jti) return;
    if (p.client_id !== client.clientId) {
      if (client.clientAuthMethod === 'none') return;
      throw new InvalidRequest('client is not authorized to revoke the presented token');
    }
    // By jti only: revoking one access token leaves its grant alone (as oidc-provider does for opaque ones).
    await deps.revocations.revoke('jti', p.jti, remainingTtl(p.exp, deps.config), { subject: p.sub, reason: 'token_revocation' });
    void deps.audit.record({
      type: 'token.revoke', subject: p.sub ?? null, clientId: client.clientId, ip: ctx.ip, requestId: ctx.state.requestId,
      details: { format: 'jwt', jti: p.jti, aud: p.aud },
    });
  }

  return async function structuredTokens(ctx: Context, next: Next) {
    if (ctx.method !== 'POST' || !ROUTES.has(ctx.path) || !ctx.is('application/x-www-form-urlencoded')) return next();
    const raw = await readRawBody(ctx, limit);
    const form = new URLSearchParams(raw);
    const token = form.get('token') ?? '';
    const structured = form.getAll('token').length === 1 && JWT_SHAPE.test(token) ? token : undefined;
    if (structured) form.set('token', PLACEHOLDER);
    // oidc-provider's selective_body reads a string from req.body once the stream is consumed.
    (ctx.req as unknown as { body: string }).body = structured ? form.toString() : raw;
    await next();
    const client = (ctx as unknown as { oidc?: { client?: { clientId: string; clientAuthMethod: string } } }).oidc?.client;
    if (!structured || ctx.status !== 200 || !client) return;
    if (ctx.path === '/token/introspection') {
      ctx.body = await introspectJwt(structured, client);
    } else {
      await revokeJwt(ctx, structured, client);
    }
  };
}

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const strs = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : undefined);

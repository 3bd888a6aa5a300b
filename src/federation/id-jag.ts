// Gatehouse as the MCP server's authorization server in the Identity Assertion JWT Authorization
// Grant (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant; docs/id-jag.md): a client presents
// an ID-JAG from an enterprise IdP this server trusts (an enterprise connection with --id-jag on) as
// an RFC 7523 jwt-bearer assertion and gets an access token for the MCP server it names. The steps,
// read top-down: readAssertion → findTrustedIssuer → verifyAssertion → checkClient → decideResource
// → resolveUser → rate limit → decideScopes → checkAuthenticationStrength → redeemOnce → mintToken. Each refusal
// is an RFC 6749 §5.2 error with its own description, audited as `token.id_jag`.
import crypto from 'node:crypto';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import {
  createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify,
  type JSONWebKeySet, type JWTPayload, type JWTVerifyGetKey,
} from 'jose';
import type { Config } from '../config/index.ts';
import type { Audit } from '../audit/index.ts';
import type { Accounts } from '../accounts/users.ts';
import type { Kv } from '../store/kv.ts';
import type { Resources } from '../oidc/resources.ts';
import { uriVariants } from '../oidc/resources.ts';
import { claimsForResource, decideScope, ScopeRefused, splitScope } from '../authz/scope-rule.ts';
import { ACR_MFA } from '../mfa/policy.ts';
import {
  assertThat, ExchangeError, insufficientUserAuthentication, invalidGrant, invalidRequest, invalidScope, invalidTarget,
  toOidcError, unauthorizedClient, unavailable,
} from '../exchange/errors.ts';
import type { PolicyStore, UserFacts } from '../exchange/policy.ts';
import { mintAccessToken, type KeyRing } from '../exchange/tokens.ts';
import type { ExchangeRateLimit } from '../exchange/grant.ts';
import type { Connection, Connections } from './connections.ts';
import { federatedAuthentication, resolveAccount } from './accounts.ts';

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** The draft § Authorization Server Metadata: what a Resource Authorization Server advertises. */
export const ID_JAG_GRANT_PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag';
const ID_JAG_TYP = 'oauth-id-jag+jwt';
/** Asymmetric only: an IdP never shares a secret with the servers that redeem its grants. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
/** iat/exp leeway for clocks a little apart. */
const CLOCK_TOLERANCE = 30;
/** An ID-JAG is a short-lived grant (the draft's examples: 5 minutes); one that claims longer is refused. */
const MAX_ASSERTION_LIFETIME = 3600;
/** Exchanged tokens' cap elsewhere too (DESIGN.md). */
const MAX_TOKEN_TTL = 900;
/** Discovery documents are read again after this long (the keys themselves: jose's cache and cooldown). */
const DISCOVERY_TTL_MS = 10 * 60_000;

export interface IdJagGrantDeps {
  config: Pick<Config, 'ISSUER' | 'ACCESS_TOKEN_TTL'>;
  audit: Audit;
  kv: Pick<Kv, 'setIfAbsent'>;
  accounts: Accounts;
  connections: Connections;
  resources: Resources;
  policy: Pick<PolicyStore, 'user'>;
  keyRing(): Promise<KeyRing>;
  /** The exchange's limits (per client, per user): an ID-JAG is an exchange made at another server. */
  rateLimit: ExchangeRateLimit;
}

interface Redemption {
  clientId: string;
  connection?: Connection;
  claims?: JWTPayload;
  resource?: NonNullable<Awaited<ReturnType<Resources['findResource']>>>;
  user?: UserFacts;
  how?: string;
  scopes?: string[];
}

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
const sameIssuer = (a: string, b: string) => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
/** The replay key: issuer and jti together (jti is unique only per issuer, RFC 7519 §4.1.7). */
const replayKey = (iss: string, jti: string) => `id-jag:jti:${crypto.createHash('sha256').update(`${iss}\u0000${jti}`).digest('base64url')}`;

/** The issuer's verification keys: inline, at its JWKS URI, or at the jwks_uri its discovery names. Cached. */
function createIssuerKeys() {
  const remote = new Map<string, JWTVerifyGetKey>();
  const discovered = new Map<string, { jwksUri: string; at: number }>();
  const remoteSet = (uri: string) => {
    let set = remote.get(uri);
    if (!set) remote.set(uri, (set = createRemoteJWKSet(new URL(uri), { timeoutDuration: 5000 })));
    return set;
  };
  async function discoverJwksUri(issuer: string): Promise<string> {
    const hit = discovered.get(issuer);
    if (hit && Date.now() - hit.at < DISCOVERY_TTL_MS) return hit.jwksUri;
    let jwksUri: unknown;
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const res = await fetch(`${issuer.replace(/\/+$/, '')}${path}`, { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
      if (!res?.ok) continue;
      jwksUri = ((await res.json().catch(() => ({}))) as { jwks_uri?: unknown }).jwks_uri;
      if (typeof jwksUri === 'string') break;
    }
    if (typeof jwksUri !== 'string') throw unavailable("the ID-JAG issuer's metadata (jwks_uri) cannot be read right now; try again");
    discovered.set(issuer, { jwksUri, at: Date.now() });
    return jwksUri;
  }
  return async function keysOf(c: Connection): Promise<JWTVerifyGetKey> {
    if (c.idJag.jwks) return createLocalJWKSet(c.idJag.jwks as unknown as JSONWebKeySet);
    return remoteSet(c.idJag.jwksUri ?? await discoverJwksUri(c.issuer));
  };
}

export function registerIdJagGrant(provider: Provider, deps: IdJagGrantDeps): void {
  const issuer = deps.config.ISSUER;
  const keysOf = createIssuerKeys();

  function readAssertion(ctx: KoaContextWithOIDC): string {
    const assertion = str((ctx.oidc.params as Record<string, unknown>).assertion);
    assertThat(assertion, () => invalidRequest('missing required parameter assertion'));
    return assertion;
  }

  /** Before any key is fetched: a typed ID-JAG from an issuer a connection trusts. */
  async function findTrustedIssuer(x: Redemption, assertion: string) {
    let typ: string | undefined;
    let iss: string | undefined;
    try {
      typ = decodeProtectedHeader(assertion).typ;
      iss = decodeJwt(assertion).iss;
    } catch {
      throw invalidGrant('assertion is not a JWT');
    }
    // RFC 8725 §3.11: explicit typing keeps an ID token or access token from passing for an ID-JAG.
    assertThat(typ?.toLowerCase() === ID_JAG_TYP, () => invalidGrant(`assertion is not an ID-JAG (its typ must be ${ID_JAG_TYP})`));
    assertThat(iss, () => invalidGrant('the ID-JAG has no iss'));
    // The draft § Cross-Domain Use: an IdP never issues access tokens for an ID-JAG it issued itself.
    assertThat(!sameIssuer(iss, issuer), () => invalidGrant('this server does not redeem ID-JAGs it issued itself'));
    x.connection = await deps.connections.findIdJagIssuer(iss);
    assertThat(x.connection, () => invalidGrant('the ID-JAG issuer is not trusted by this server'));
  }

  async function verifyAssertion(x: Redemption, assertion: string) {
    const c = x.connection!;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(assertion, await keysOf(c), {
        issuer: [c.issuer, `${c.issuer}/`],
        typ: ID_JAG_TYP,
        algorithms: ALGORITHMS,
        clockTolerance: CLOCK_TOLERANCE,
        requiredClaims: ['sub', 'aud', 'client_id', 'jti', 'exp', 'iat'],
      }));
    } catch (err) {
      if (err instanceof ExchangeError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw invalidGrant('the ID-JAG has expired');
      if (err instanceof joseErrors.JWTClaimValidationFailed) throw invalidGrant(`the ID-JAG's ${err.claim} claim is missing or not acceptable`);
      if (err instanceof joseErrors.JWKSTimeout || (err instanceof TypeError && /fetch/i.test(err.message))) {
        throw unavailable("the ID-JAG issuer's keys cannot be fetched right now; try again");
      }
      if (err instanceof joseErrors.JOSEError) throw invalidGrant("the ID-JAG's signature does not verify with the issuer's keys");
      throw err;
    }
    // The draft § Access Token Request, processing rules: aud is this server's issuer, as a string
    // or an array of exactly that one value (audience injection).
    const aud = Array.isArray(payload.aud) ? payload.aud : [payload.aud];
    assertThat(aud.length === 1 && typeof aud[0] === 'string' && sameIssuer(aud[0], issuer), () => invalidGrant("the ID-JAG's aud is not this server's issuer"));
    const now = Math.floor(Date.now() / 1000);
    assertThat(payload.iat! <= now + CLOCK_TOLERANCE, () => invalidGrant('the ID-JAG is issued in the future (iat)'));
    assertThat(payload.exp! - payload.iat! <= MAX_ASSERTION_LIFETIME, () => invalidGrant(`the ID-JAG lives longer than ${MAX_ASSERTION_LIFETIME} seconds`));
    x.claims = payload;
  }

  function checkClient(x: Redemption, ctx: KoaContextWithOIDC) {
    // The draft § Security Considerations: only confidential clients.
    assertThat(ctx.oidc.client!.clientAuthMethod !== 'none', () => unauthorizedClient('ID-JAGs are redeemed only by confidential clients'));
    // The draft: client continuity; the ID-JAG names the client that may redeem it.
    assertThat(x.claims!.client_id === x.clientId, () => invalidGrant("the ID-JAG's client_id is not the authenticated client"));
    assertThat(x.connection!.idJag.clients.includes(x.clientId), () => unauthorizedClient(`this client may not redeem ID-JAGs from ${x.connection!.name}`));
  }

  async function decideResource(x: Redemption, ctx: KoaContextWithOIDC) {
    const claimed = [x.claims!.resource].flat().filter((r): r is string => typeof r === 'string');
    // The MCP extension: the ID-JAG names the MCP server.
    assertThat(claimed.length, () => invalidGrant('the ID-JAG names no resource'));
    const asked = str((ctx.oidc.params as Record<string, unknown>).resource);
    if (asked) assertThat(claimed.includes(asked), () => invalidTarget('resource is not one the ID-JAG names'));
    assertThat(asked || claimed.length === 1, () => invalidTarget('the ID-JAG names several resources; name one with resource'));
    const rs = await deps.resources.findResource(asked ?? claimed[0]);
    assertThat(rs, () => invalidTarget('the ID-JAG\'s resource is not registered with this server'));
    const allowed = new Set(x.connection!.idJag.resources.flatMap(uriVariants));
    assertThat(allowed.has(rs.uri), () => invalidTarget(`ID-JAGs from ${x.connection!.name} may not be used for this resource`));
    x.resource = rs;
  }

  /** The ID-JAG's subject as a local account: linked, linked by e-mail, or provisioned, as the connection says. */
  async function resolveUser(x: Redemption) {
    const c = x.connection!;
    const resolution = await resolveAccount({ accounts: deps.accounts, connections: deps.connections }, c,
      { subject: String(x.claims!.sub), claims: x.claims as Record<string, unknown>, idToken: undefined });
    if ('refused' in resolution) throw invalidGrant(`the ID-JAG's user cannot be signed in here: ${resolution.message}`);
    x.how = resolution.how;
    x.user = await deps.policy.user(resolution.user.id);
    assertThat(x.user?.active, () => invalidGrant("the ID-JAG's user is disabled here"));
  }

  /**
   * The one scope rule: asked (the request's scope, else the ID-JAG's) ∩ the resource ∩ the user's
   * permissions ∩ the ID-JAG's scope. The IdP's grant is the delegation (the draft: no consent step
   * at this server), so consent counts as given; the ID-JAG only narrows.
   */
  function decideScopes(x: Redemption, ctx: KoaContextWithOIDC) {
    const granted = str(x.claims!.scope) === undefined ? null : splitScope(str(x.claims!.scope));
    const asked = str((ctx.oidc.params as Record<string, unknown>).scope);
    try {
      x.scopes = decideScope({
        resource: x.resource!,
        requested: asked ? splitScope(asked) : granted ?? undefined,
        principal: { kind: 'user', permissions: x.user!.permissions },
        consent: 'pre-consented',
        limits: [{ name: 'the ID-JAG', scopes: granted }],
      });
    } catch (err) {
      if (err instanceof ScopeRefused) throw invalidScope(err.message);
      throw err;
    }
  }

  function checkAuthenticationStrength(x: Redemption) {
    if (!x.resource!.requireMfa) return;
    const { acr } = federatedAuthentication(x.connection!, x.claims as Record<string, unknown>);
    assertThat(acr === ACR_MFA, () => insufficientUserAuthentication('this resource requires multi-factor authentication at the IdP (and a connection trusted for it: --trust-mfa on)'));
  }

  /** RFC 7523 §3 (7): each ID-JAG once, across every node (Kv SET NX); the key lives as long as the ID-JAG. */
  async function redeemOnce(x: Redemption) {
    const c = x.claims!;
    const ttlMs = (c.exp! - Math.floor(Date.now() / 1000) + CLOCK_TOLERANCE) * 1000;
    let first: boolean;
    try {
      first = await deps.kv.setIfAbsent(replayKey(c.iss!, String(c.jti)), '1', Math.max(ttlMs, 1000));
    } catch {
      throw unavailable('replay protection cannot be checked right now; try again');
    }
    assertThat(first, () => invalidGrant('this ID-JAG has already been used (jti); ask the IdP for a new one'));
  }

  async function mintToken(x: Redemption) {
    const rs = x.resource!;
    const ttl = Math.min(rs.accessTokenTtl, deps.config.ACCESS_TOKEN_TTL, MAX_TOKEN_TTL);
    const { acr, amr } = federatedAuthentication(x.connection!, x.claims as Record<string, unknown>);
    const { token } = await mintAccessToken(await deps.keyRing(), {
      issuer, audience: rs.uri, sub: x.user!.id, clientId: x.clientId, scope: x.scopes!, ttl, acr, amr,
      hs256Secret: rs.signing === 'hs256' ? rs.hs256Secret ?? undefined : undefined,
      claims: rs.claims.length ? claimsForResource(rs, x.user!) : undefined,
    });
    // The draft § Refresh Token: none; the client asks the IdP for a new ID-JAG instead.
    return { access_token: token, token_type: 'Bearer', expires_in: ttl, scope: x.scopes!.join(' ') };
  }

  function audit(ctx: KoaContextWithOIDC, x: Redemption, err?: ExchangeError) {
    void deps.audit.record({
      type: 'token.id_jag',
      outcome: err ? 'failure' : 'success',
      subject: x.user?.id ?? null,
      clientId: x.clientId,
      ip: ctx.ip,
      requestId: ctx.state.requestId ?? null,
      details: {
        connection: x.connection?.name ?? null,
        issuer: str(x.claims?.iss) ?? null,
        upstream_subject: str(x.claims?.sub) ?? null,
        jti: str(x.claims?.jti) ?? null,
        resource: x.resource?.uri ?? null,
        scopes: x.scopes ?? null,
        ...(x.how ? { account: x.how } : {}),
        ...(err ? { error: err.code, reason: err.message } : {}),
      },
    });
  }

  provider.registerGrantType(JWT_BEARER_GRANT, async function idJagGrant(ctx: KoaContextWithOIDC) {
    const x: Redemption = { clientId: ctx.oidc.client!.clientId };
    try {
      const assertion = readAssertion(ctx);
      await findTrustedIssuer(x, assertion);
      await verifyAssertion(x, assertion);
      checkClient(x, ctx);
      await decideResource(x, ctx);
      await resolveUser(x);
      await deps.rateLimit.consume({ clientId: x.clientId, subject: x.user!.id, ip: ctx.ip });
      decideScopes(x, ctx);
      checkAuthenticationStrength(x);
      await redeemOnce(x);
      ctx.body = await mintToken(x);
      audit(ctx, x);
    } catch (err) {
      if (!(err instanceof ExchangeError)) throw err;
      audit(ctx, x, err);
      throw toOidcError(err);
    }
  } as never, ['assertion', 'scope', 'resource']);
}

/** provider configuration `extend` hook: the draft's metadata for the grant profile. */
export function idJagDiscovery(configuration: { discovery?: Record<string, unknown> }) {
  configuration.discovery = {
    ...configuration.discovery,
    authorization_grant_profiles_supported: [ID_JAG_GRANT_PROFILE],
    // The IdP role (src/exchange/id-jag.ts); the draft points to identity chaining's metadata name.
    identity_chaining_requested_token_types_supported: ['urn:ietf:params:oauth:token-type:id-jag'],
  };
}

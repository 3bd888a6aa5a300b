// oidc-provider configuration. oidc-provider does the protocol; this file only says how Gatehouse
// wants it: storage, accounts, keys, lifetimes, features, pages. Anything it can do, we configure
// rather than re-implement.
import { EXTERNAL_SIGNING_ACK, providerSigningKeys } from './signing.ts';
import { pug } from '../http/pug.ts';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Provider, { errors, interactionPolicy, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { JWK } from 'jose';
import type { Config } from '../config/index.ts';
import type { Db } from '../store/db.ts';
import type { Logger } from '../http/log.ts';
import type { Audit } from '../audit/index.ts';
import type { Accounts } from '../accounts/users.ts';
import { CLAIMS } from '../accounts/users.ts';
import { createAdapterFactory, replayDetectionOnce } from './adapter.ts';
import type { Clients } from './clients.ts';
import { uriVariants, type Resources } from './resources.ts';
import { accountClient } from '../account/client.ts';
import { allowPrivateBackchannel } from './backchannel.ts';
import { ADMIN_READ_SCOPE, ADMIN_SCOPE, ADMIN_TOKEN_TTL, adminApiUri, adminScopesForClient, adminScopesForPermissions, isAdminApi } from '../admin/api-scopes.ts';
import { ACR_MFA, ACR_PASSWORD, mfaRequirement, STEP_UP_REASON, type MfaPolicyDeps } from '../mfa/policy.ts';
import type { PolicyStore } from '../exchange/policy.ts';
import { claimsForResource, decideScope, OIDC_SCOPES, ScopeRefused, splitScope, type ScopeFacts } from '../authz/scope-rule.ts';

export interface ProviderDeps {
  config: Config;
  db: Db;
  log: Logger;
  audit: Audit;
  accounts: Accounts;
  clients: Clients;
  resources: Resources;
  /** Exchange policies (a client's allowed scopes for its own tokens). */
  policy: Pick<PolicyStore, 'clientPolicy'>;
  cookieKeys: string[];
  jwks: { keys: JWK[] };
  /** Extra configuration from feature modules (e.g. token exchange registers itself afterwards). */
  extend?: (configuration: Configuration) => void;
  /** Issue 4: the upstream IdP this browser signed in through, when it supports RP-initiated logout. */
  upstreamLogoutOffer?: (ctx: KoaContextWithOIDC) => Promise<{ name: string } | undefined>;
}

const VIEWS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../views');
const renderView = (name: string, locals: Record<string, unknown>) =>
  pug().renderFile(path.join(VIEWS, `${name}.pug`), { cache: true, ...locals });

/** acr values Gatehouse issues (defined with the MFA policy, issue 7). */
export { ACR_MFA, ACR_PASSWORD };

/**
 * oidc-provider's default prompts plus one login check (issue 7): a signed-in session without a
 * second factor is sent back to the login prompt when this request needs one (acr_values step-up,
 * the client's require_mfa, a resource's require_mfa, MFA_REQUIRED, the user's role). The interaction pages then ask only for
 * the missing factor. They decide with the same mfaRequirement, so a finished login passes this check.
 */
function interactionPolicyWithMfa(deps: MfaPolicyDeps) {
  const policy = interactionPolicy.base();
  policy.get('login')!.checks.add(new interactionPolicy.Check(STEP_UP_REASON, 'a second authentication factor is required', async (ctx) => {
    const { oidc } = ctx;
    const accountId = oidc.session?.accountId;
    if (!accountId || oidc.session?.acr === ACR_MFA) return interactionPolicy.Check.NO_NEED_TO_PROMPT;
    const reason = await mfaRequirement(deps, {
      accountId,
      clientRequiresMfa: oidc.client?.metadata().require_mfa,
      acrValues: oidc.params?.acr_values,
      resource: oidc.params?.resource,
    });
    return reason ? interactionPolicy.Check.REQUEST_PROMPT : interactionPolicy.Check.NO_NEED_TO_PROMPT;
  }));
  return policy;
}

/**
 * The admin API (src/admin/api.ts) as a resource server. Client credentials only for a client made a
 * service account (`gatehouse client admin-api`); a user's token gets the admin scopes their role's
 * permissions allow at the time it is issued (the API checks again on every call).
 */
function adminApiResource(config: Config, accounts: Accounts) {
  return async function adminApiServerInfo(ctx: KoaContextWithOIDC, client: { metadata(): Record<string, unknown> }) {
    const info = (scopes: string[]) => ({
      scope: scopes.join(' '),
      audience: adminApiUri(config.ISSUER),
      accessTokenTTL: Math.min(ADMIN_TOKEN_TTL, config.ACCESS_TOKEN_TTL),
      accessTokenFormat: 'jwt' as const,
      jwt: { sign: { alg: 'ES256' as const } },
    });
    const params = ctx.oidc.params as { grant_type?: string } | undefined;
    if (ctx.oidc.route === 'token' && params?.grant_type === 'client_credentials') {
      const scopes = adminScopesForClient(client.metadata());
      if (!scopes.length) throw new errors.InvalidTarget('this client is not an admin API service account (gatehouse client admin-api)');
      return info(scopes);
    }
    const entities = ctx.oidc.entities as { AuthorizationCode?: { accountId?: string }; RefreshToken?: { accountId?: string }; DeviceCode?: { accountId?: string } };
    const accountId = ctx.oidc.route === 'token' ? (entities.AuthorizationCode ?? entities.RefreshToken ?? entities.DeviceCode)?.accountId : undefined;
    // While authorizing, both scopes can be asked for (and consented to); the token carries only what
    // the user's roles allow now, possibly none.
    if (!accountId) return info([ADMIN_SCOPE, ADMIN_READ_SCOPE]);
    return info(adminScopesForPermissions((await accounts.rolesAndPermissions(accountId)).permissions));
  };
}

type TokenSource = { accountId?: string; scope?: string };
type TokenEntities = {
  AuthorizationCode?: TokenSource; RefreshToken?: TokenSource; DeviceCode?: TokenSource; BackchannelAuthenticationRequest?: TokenSource;
  Grant?: { getResourceScope(r: string): string };
};

/**
 * The one scope rule (src/authz/scope-rule.ts) at the token endpoint, for a registered resource:
 * the scope oidc-provider may put in the token (it intersects further with the request and the
 * grant, which the rule already holds). While authorizing, no principal is known yet: the resource's
 * scopes are offered and consent asks for them.
 */
function resourceScopeAtTokenEndpoint(accounts: Accounts, policy: Pick<PolicyStore, 'clientPolicy'>) {
  return async function decideResourceScope(ctx: KoaContextWithOIDC, rs: ScopeFacts['resource'], client: { clientId: string }): Promise<string[]> {
    if (ctx.oidc.route !== 'token') return rs.scopes;
    const params = ctx.oidc.params as { grant_type?: string; scope?: string } | undefined;
    let facts: ScopeFacts;
    if (params?.grant_type === 'client_credentials') {
      // A client's allowed scopes: its policy's `--scope` (policy client set), the same cap its exchanges have.
      // client.clientId, not metadata(): that builds a snake_cased copy of every property per call.
      const allowed = (await policy.clientPolicy(client.clientId))?.scopes ?? null;
      facts = { resource: rs, requested: splitScope(params.scope), principal: { kind: 'client', allowed } };
    } else {
      const entities = ctx.oidc.entities as TokenEntities;
      // CIBA (BackchannelAuthenticationRequest) decides the same way once it is enabled.
      const source = entities.AuthorizationCode ?? entities.RefreshToken ?? entities.DeviceCode ?? entities.BackchannelAuthenticationRequest;
      // Fail closed: a grant this function does not know has no principal, so no resource scope.
      if (!source?.accountId) throw new errors.InvalidScope(`no scope of ${rs.uri} can be granted for this grant type`, params?.scope ?? '');
      const { permissions } = await accounts.rolesAndPermissions(source.accountId);
      facts = {
        resource: rs,
        requested: splitScope(params?.scope ?? source.scope),
        principal: { kind: 'user', permissions },
        // oidc-provider's Grant holds what the user consented to (first-party clients: all that was asked).
        // The grant keeps the indicator as the client sent it (a trailing slash or not): read every spelling.
        consent: { scopes: [...new Set(uriVariants(rs.uri).flatMap((uri) => splitScope(entities.Grant?.getResourceScope(uri))))] },
      };
    }
    try {
      const scopes = decideScope(facts);
      // Client credentials: oidc-provider issues what the request names ∩ the returned scope, so a
      // request naming none of the resource's scopes is given the defaults the rule chose.
      const named = new Set(facts.requested);
      if (params?.grant_type === 'client_credentials' && !rs.scopes.some((s) => named.has(s))) {
        (ctx.oidc.params as { scope?: string }).scope = [...named, ...scopes].join(' ');
      }
      return scopes;
    } catch (err) {
      if (err instanceof ScopeRefused) throw new errors.InvalidScope(err.message, (facts.requested ?? []).join(' '));
      throw err;
    }
  };
}

export function buildProvider(deps: ProviderDeps): Provider {
  const { config, accounts, resources, clients, audit } = deps;
  const adminApiServerInfo = adminApiResource(config, accounts);
  const decideResourceScope = resourceScopeAtTokenEndpoint(accounts, deps.policy);
  const secureCookies = config.ISSUER.startsWith('https://');

  /** The claims Gatehouse adds to an access token (an opaque token's `extra`, a JWT's payload). */
  async function tokenClaims(ctx: KoaContextWithOIDC, token: unknown): Promise<Record<string, unknown> | undefined> {
    const t = token as { grantId?: string; sessionUid?: string; kind: string; clientId?: string; accountId?: string; resourceServer?: { audience?: string } };
    // RFC 9068 §2.2 / RFC 7662 §2.2: a client's own token has sub = its client id (oidc-provider's
    // JWT format sets it; this gives opaque client-credentials tokens the same at introspection).
    if (t.kind === 'ClientCredentials') return t.clientId ? { sub: t.clientId } : undefined;
    if (t.kind !== 'AccessToken') return undefined;
    type Origin = { acr?: string; amr?: string[]; clientId?: string };
    const entities = ctx.oidc.entities as Partial<Record<'AuthorizationCode' | 'RefreshToken' | 'DeviceCode' | 'BackchannelAuthenticationRequest', Origin>>;
    const ciba = entities.BackchannelAuthenticationRequest;
    const origin = entities.AuthorizationCode ?? entities.RefreshToken ?? entities.DeviceCode ?? ciba;
    // Issue 14: roles/permissions for resources that asked for them (resource create --claims).
    const audience = t.resourceServer?.audience;
    const rs = audience && t.accountId && !isAdminApi(config.ISSUER, audience) ? await resources.findResource(audience) : undefined;
    const claims: Record<string, unknown> = {};
    // Issue 19: a token from an in-call approval acts for the user on the agent's behalf (RFC 8693 §4.1).
    if (ciba?.clientId) claims.act = { sub: ciba.clientId };
    if (t.grantId) claims.gid = t.grantId;
    if (t.sessionUid) claims.sid = t.sessionUid;
    if (origin?.acr) claims.acr = origin.acr;
    if (origin?.amr?.length) claims.amr = origin.amr;
    if (rs?.claims.length) Object.assign(claims, claimsForResource(rs, await accounts.rolesAndPermissions(t.accountId!)));
    return claims;
  }

  const configuration: Configuration = {
    adapter: createAdapterFactory(deps.db, { clientFinder: (id: string) => clients.findMetadata(id), clientStore: clients }) as never,
    // Signed through node:crypto key objects (src/oidc/signing.ts), not WebCrypto.
    jwks: providerSigningKeys(deps.jwks) as never,
    // Gatehouse's own account pages sign in through the same flow as any app (src/account/router.ts).
    clients: [accountClient(config)] as never,
    cookies: {
      keys: deps.cookieKeys,
      long: { signed: true, httpOnly: true, sameSite: 'lax', secure: secureCookies } as never,
      short: { signed: true, httpOnly: true, sameSite: 'lax', secure: secureCookies } as never,
    },
    async findAccount(_ctx, sub) {
      const user = await accounts.findUserById(sub);
      if (!user || !user.active) return undefined;
      return {
        accountId: user.id,
        async claims(_use, scope) {
          return accounts.claimsFor(user.id, new Set(String(scope ?? '').split(' ').filter(Boolean))) as never;
        },
      };
    },
    // Standard ID token claims oidc-provider only emits when listed, plus the scope → claims map.
    claims: { acr: null, amr: null, auth_time: null, sid: null, iss: null, ...CLAIMS, openid: ['sub', 'acr', 'amr', 'auth_time', 'sid'] } as never,
    scopes: [...OIDC_SCOPES],
    // Authorization code only (with PKCE): OAuth 2.1 and the Security BCP (RFC 9700 §2.1.2) drop the
    // implicit and hybrid flows, which put tokens in the front channel; `none` issues nothing a
    // Gatehouse client wants. Discovery then lists exactly `code` and no `implicit` grant, and
    // registration refuses other response types (registration.ts). docs/clients.md says so.
    responseTypes: ['code'],
    acrValues: [ACR_PASSWORD, ACR_MFA],
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    extraClientMetadata: {
      // first_party: consent is implied (the interaction router skips the consent page).
      // require_mfa: every login for this client needs a second factor (issue 7).
      // admin_api: a service account of the admin API, 'read' or 'full' (src/admin/api.ts).
      properties: ['first_party', 'require_mfa', 'admin_api'],
      validator(_ctx, key, value) {
        if (key === 'admin_api' && value !== undefined && value !== 'read' && value !== 'full') {
          throw new errors.InvalidClientMetadata('admin_api must be read or full');
        }
        if (key === 'first_party' && value !== undefined && typeof value !== 'boolean') {
          throw new errors.InvalidClientMetadata('first_party must be a boolean');
        }
        if (key === 'require_mfa' && value !== undefined && typeof value !== 'boolean') {
          throw new errors.InvalidClientMetadata('require_mfa must be a boolean');
        }
      },
    },
    // PKCE: required for public clients (oidc-provider's default), S256 only.
    pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}`, policy: interactionPolicyWithMfa({ config, accounts, resources }) },
    features: {
      devInteractions: { enabled: false },
      externalSigningSupport: { enabled: true, ack: EXTERNAL_SIGNING_ACK },
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      clientCredentials: { enabled: true },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      deviceFlow: { enabled: true },
      // OIDC Back-Channel Logout 1.0: clients with backchannel_logout_uri hear of ended sessions.
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          const client = ctx.oidc.client;
          ctx.type = 'html';
          // Issue 4: a federated session is also offered the upstream's logout (views/federation-logout.pug).
          const upstream = await deps.upstreamLogoutOffer?.(ctx);
          ctx.body = upstream
            ? renderView('federation-logout', { form, clientName: client?.clientName ?? client?.clientId, title: 'Sign out', upstreamName: upstream.name })
            : renderView('logout', { form, clientName: client?.clientName ?? client?.clientId, title: 'Sign out' });
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = renderView('logged-out', { clientName: ctx.oidc.client?.clientName, title: 'Signed out' });
        },
      },
      resourceIndicators: {
        enabled: true,
        // No implicit resource: without `resource=` the access token is opaque and only good for userinfo.
        defaultResource: (_ctx, _client, oneOf) => (oneOf ? oneOf : undefined) as never,
        // Audience binding (docs/authorization.md): a token request without `resource=` after an OpenID
        // sign-in gets a token bound to Gatehouse (userinfo, token exchange, connection-details); the
        // resource's token is asked for by naming it (RFC 8707 §2.2), as MCP clients do. A plain
        // OAuth request (no openid) still gets the one resource it was granted (oidc-provider's rule).
        // CIBA: the agent that asked (for the user) at /backchannel wants the resource it named.
        useGrantedResource: (ctx) => (ctx.oidc.params as { grant_type?: string } | undefined)?.grant_type === 'urn:openid:params:grant-type:ciba',
        async getResourceServerInfo(ctx, indicator, client) {
          if (isAdminApi(config.ISSUER, indicator)) return adminApiServerInfo(ctx, client);
          const rs = await resources.findResource(indicator);
          if (!rs) throw new errors.InvalidTarget('resource is not registered with this server');
          return {
            scope: (await decideResourceScope(ctx, rs, client)).join(' '),
            audience: rs.uri,
            accessTokenTTL: Math.min(rs.accessTokenTtl, config.ACCESS_TOKEN_TTL),
            accessTokenFormat: 'jwt',
            jwt: rs.signing === 'hs256' && rs.hs256Secret
              ? { sign: { alg: 'HS256', key: Buffer.from(rs.hs256Secret) } as never }
              : { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    // offline_access per client (docs/authorization.md): a first-party client with the refresh_token
    // grant gets a refresh token on every login; a third-party client only where the user consented
    // to offline_access (oidc-provider keeps that scope only with prompt=consent, OIDC Core §11).
    async issueRefreshToken(_ctx, client, source) {
      if (!client.grantTypeAllowed('refresh_token')) return false;
      return client.metadata().first_party === true || source.scopes.has('offline_access');
    },
    // Refresh tokens: rotated on every use; oidc-provider revokes the whole grant when a rotated
    // (consumed) token is presented again — reuse detection.
    rotateRefreshToken: true,
    ttl: {
      // A resource's own lifetime (resource create --ttl; the admin API's 5 minutes) when shorter:
      // getResourceServerInfo caps it at ACCESS_TOKEN_TTL.
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || config.ACCESS_TOKEN_TTL,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || config.ACCESS_TOKEN_TTL,
      AuthorizationCode: config.AUTHORIZATION_CODE_TTL,
      IdToken: config.ID_TOKEN_TTL,
      DeviceCode: config.DEVICE_CODE_TTL,
      Interaction: config.INTERACTION_TTL,
      Session: config.SESSION_TTL,
      Grant: config.REFRESH_TOKEN_ABSOLUTE_TTL,
      // Sliding window, capped by the absolute lifetime counted from the first refresh token (iiat).
      RefreshToken(_ctx, token) {
        const now = Math.floor(Date.now() / 1000);
        const first = (token as unknown as { iiat?: number }).iiat ?? token.iat ?? now;
        const absoluteLeft = first + config.REFRESH_TOKEN_ABSOLUTE_TTL - now;
        return Math.max(1, Math.min(config.REFRESH_TOKEN_TTL, absoluteLeft));
      },
    },
    // Origin grant and session travel in JWT access tokens so revocation of either reaches them.
    // RFC 9068 §2.2.1: acr and amr of the authentication behind the token (issue 7), taken from the
    // code / refresh token / device code it was issued for, so token exchange can carry them on.
    // An opaque token keeps them as its stored `extra`; a JWT gets them from the customizer below.
    // oidc-provider builds a JWT's payload as `{ ...extra, jti, sub, … }`, and on Node 20 every object
    // literal that adds properties after a spread gets a hidden class of its own (about 20 µs of CPU
    // per token here, docs/performance.md): handing it no `extra` and adding the claims after avoids that.
    async extraTokenClaims(ctx, token) {
      return isJwtFormat(token) ? undefined : tokenClaims(ctx, token);
    },
    formats: {
      customizers: {
        async jwt(ctx, token, jwt) {
          const claims = await tokenClaims(ctx, token);
          // As the spread did: the standard claims oidc-provider set win over ours.
          if (claims) for (const k of Object.keys(claims)) if (!(k in jwt.payload)) jwt.payload[k] = claims[k];
        },
      },
    },
    clientBasedCORS(_ctx, origin, client) {
      if (config.CORS_ORIGINS.includes(origin)) return true;
      // A browser client may call token/userinfo from the origin of its own redirect URIs.
      return (client.redirectUris ?? []).some((u: string) => {
        try {
          return new URL(u).origin === origin;
        } catch {
          return false;
        }
      });
    },
    async renderError(ctx, out, error) {
      ctx.type = 'html';
      const status = (error as { status?: number }).status ?? 500;
      // A dependency outage (503, src/store/errors.ts) tells people to come back; other 5xx say nothing.
      ctx.body = status === 503
        ? renderView('error', { title: 'Try again shortly', error: 'temporarily_unavailable', description: 'Sign-in is unavailable for a moment. Please try again in a few seconds.' })
        : renderView('error', {
          title: 'Something went wrong',
          error: status >= 500 ? 'server_error' : out.error,
          description: status >= 500 ? 'The server could not complete the request.' : out.error_description,
        });
    },
    // Scope-requested claims (email, name, roles) also go into the ID token, as Keycloak and Auth0 do.
    conformIdTokenClaims: false,
    // Issue 4: `connection=<name>` names the upstream connection to sign in with (skips home-realm discovery).
    extraParams: ['connection'],
  };

  deps.extend?.(configuration);
  allowPrivateBackchannel(configuration, config);
  const provider = new Provider(config.ISSUER, configuration);
  provider.proxy = config.TRUST_PROXY;
  // client_assertion and DPoP proof jti: used once, also under parallel requests (adapter.ts).
  (provider.ReplayDetection as unknown as { unique: ReturnType<typeof replayDetectionOnce> }).unique = replayDetectionOnce(deps.db);
  attachAuditListeners(provider, audit, deps.log);
  return provider;
}

function ip(ctx: KoaContextWithOIDC | undefined) {
  return ctx?.ip ?? null;
}

/** The id src/http/middleware.ts gave this request (echoed in X-Request-Id), so an audit row meets its log line. */
function requestIdOf(ctx: KoaContextWithOIDC | undefined): string | null {
  return (ctx?.state as { requestId?: string } | undefined)?.requestId ?? null;
}

/** Token issue, refresh, revoke and errors go to the audit log — identifiers only, never tokens. */
function attachAuditListeners(provider: Provider, audit: Audit, log: Logger) {
  provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
    const params = ctx.oidc.params as Record<string, unknown> | undefined;
    void audit.record({
      type: params?.grant_type === 'refresh_token' ? 'token.refresh' : 'token.issue',
      subject: ctx.oidc.account?.accountId ?? null,
      clientId: ctx.oidc.client?.clientId ?? null,
      ip: ip(ctx),
      requestId: requestIdOf(ctx),
      details: { grant_type: params?.grant_type },
    });
  });
  provider.on('grant.error', (ctx: KoaContextWithOIDC, err: Error & { error?: string }) => {
    const params = ctx.oidc?.params as Record<string, unknown> | undefined;
    void audit.record({
      type: 'token.issue',
      outcome: 'failure',
      clientId: ctx.oidc?.client?.clientId ?? null,
      ip: ip(ctx),
      requestId: requestIdOf(ctx),
      details: { grant_type: params?.grant_type, error: err.error ?? err.name },
    });
  });
  provider.on('grant.revoked', (ctx: KoaContextWithOIDC, grantId: string) => {
    void audit.record({
      type: 'grant.revoke',
      clientId: ctx?.oidc?.client?.clientId ?? null,
      ip: ip(ctx),
      requestId: requestIdOf(ctx),
      details: { grant_id: grantId },
    });
  });
  provider.on('revocation.error', (ctx: KoaContextWithOIDC, err: Error & { error?: string }) => {
    void audit.record({ type: 'token.revoke', outcome: 'failure', clientId: ctx.oidc?.client?.clientId ?? null, ip: ip(ctx), requestId: requestIdOf(ctx), details: { error: err.error ?? err.name } });
  });
  provider.on('end_session.success', (ctx: KoaContextWithOIDC) => {
    void audit.record({ type: 'logout', subject: ctx.oidc.session?.accountId ?? null, clientId: ctx.oidc.client?.clientId ?? null, ip: ip(ctx), requestId: requestIdOf(ctx) });
  });
  provider.on('server_error', (_ctx: unknown, err: Error) => {
    log.error({ err }, 'oidc-provider server_error');
  });
}

/** oidc-provider's own test (lib/models/formats/index.js): the resource server's format, opaque by default. */
function isJwtFormat(token: unknown): boolean {
  return (token as { resourceServer?: { accessTokenFormat?: string } }).resourceServer?.accessTokenFormat === 'jwt';
}

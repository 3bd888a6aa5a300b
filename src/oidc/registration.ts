// Dynamic client registration (RFC 7591) and its management API (RFC 7592), for MCP hosts that
// arrive with no prior arrangement. oidc-provider runs /reg; Gatehouse decides three things:
//   - whether it is on: REGISTRATION=open|token|off (config/index.ts has the default and why);
//   - what a registering client may ask for (registrationPolicy, in front of oidc-provider): nothing
//     that would make it trusted, and redirect URIs as RFC 8252 allows them;
//   - where the client lives: the `clients` table (adapter.ts → clients.saveRegistered), with
//     origin `registration`, so `gatehouse client list` shows it beside the CLI's clients.
// The per-IP limit is RATE_LIMIT_REGISTER_IP (http/rate-limit.ts, wired in app.ts).
import crypto from 'node:crypto';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { z } from 'zod';
import type { Config } from '../config/index.ts';
import type { Audit } from '../audit/index.ts';
import { HttpError } from '../http/errors.ts';
import { AUTH_METHODS, publicJwks, redirectUri } from './clients.ts';
import { handBodyToProvider, readRawBody } from '../http/body.ts';
import { CLAIMS } from '../accounts/users.ts';

/** RFC 7591 §3.2.2 error codes, answered as JSON with status 400. */
export class InvalidClientMetadata extends HttpError {
  constructor(description: string) {
    super(400, 'invalid_client_metadata', description);
  }
}
export class InvalidRedirectUri extends HttpError {
  constructor(description: string) {
    super(400, 'invalid_redirect_uri', description);
  }
}

/** Grants a self-registered client may use. Client credentials and token exchange need an operator. */
export const REGISTRABLE_GRANTS = ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'] as const;
const REGISTRATION_BODY_LIMIT = 16 * 1024;
/** The OpenID scopes oidc-provider knows (provider.ts `scopes`); a client's `scope` may only name these. */
const OIDC_SCOPES = new Set(['openid', 'offline_access', ...Object.keys(CLAIMS)]);

/**
 * RFC 7591 §2: the server may register different metadata than requested. MCP hosts put their
 * resource's scopes (e.g. `tools:read`, from RFC 9728 metadata) into `scope`; oidc-provider only
 * accepts OpenID scopes there, and resource scopes are governed by the resource anyway. Keep the
 * OpenID ones; drop `scope` when none remain (the client may then ask for any scope at /auth).
 */
export function registrableScope(metadata: Record<string, unknown>): Record<string, unknown> {
  if (typeof metadata.scope !== 'string') return metadata;
  const { scope, ...rest } = metadata;
  const kept = scope.split(' ').filter((s) => OIDC_SCOPES.has(s));
  return kept.length ? { ...rest, scope: kept.join(' ') } : rest;
}

const httpsUrl = z.string().max(2000).refine((s) => URL.parse(s)?.protocol === 'https:', 'must be an https URL');

/**
 * What a registration request may contain. Unknown members pass through to oidc-provider (RFC 7591
 * §2: the server ignores what it does not understand); members that would grant trust are refused.
 */
const registrationMetadata = z.looseObject({
  redirect_uris: z.array(z.string()).max(20).optional(),
  post_logout_redirect_uris: z.array(z.string()).max(20).optional(),
  grant_types: z.array(z.enum(REGISTRABLE_GRANTS, { error: `grant_types may only contain ${REGISTRABLE_GRANTS.join(', ')}` })).min(1).optional(),
  // Code flow only: OAuth 2.1 and the Security BCP (RFC 9700 §2.1.2) drop the implicit and hybrid
  // flows (tokens in the front channel), and discovery does not offer them (provider.ts).
  response_types: z.array(z.literal('code', { error: 'response_types may only contain code (implicit and hybrid flows are not offered)' })).optional(),
  token_endpoint_auth_method: z.enum(['none', ...AUTH_METHODS], { error: `token_endpoint_auth_method must be one of none, ${AUTH_METHODS.join(', ')}` }).optional(),
  // private_key_jwt: the client's public keys. A jwks_uri is fetched by the outbound guard (no
  // private addresses, size and time bounds: cimd.ts) when an assertion is checked.
  jwks: publicJwks.optional(),
  jwks_uri: httpsUrl.optional(),
  application_type: z.enum(['web', 'native']).optional(),
  client_name: z.string().min(1).max(200).optional(),
  client_uri: httpsUrl.optional(),
  logo_uri: httpsUrl.optional(),
  tos_uri: httpsUrl.optional(),
  policy_uri: httpsUrl.optional(),
  scope: z.string().max(1000).regex(/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/, 'scope must be space-separated scope tokens').optional(),
  contacts: z.array(z.string().max(254)).max(10).optional(),
  software_id: z.string().max(200).optional(),
  software_version: z.string().max(100).optional(),
});

/** Members only an operator may set (consent skipping, URLs Gatehouse would fetch or post to, etc.). */
const OPERATOR_ONLY = ['first_party', 'require_mfa', 'admin_api', 'client_secret', 'sector_identifier_uri', 'request_uris', 'backchannel_logout_uri', 'frontchannel_logout_uri'];

/** Validate registration metadata; throws the RFC 7591 error for the first problem found. */
export function checkRegistrationMetadata(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new InvalidClientMetadata('the request body must be a JSON object');
  const metadata = body as Record<string, unknown>;
  for (const key of OPERATOR_ONLY) {
    if (key in metadata) throw new InvalidClientMetadata(`${key} cannot be set through dynamic registration`);
  }
  const parsed = registrationMetadata.safeParse(metadata);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InvalidClientMetadata(`${issue.path.join('.') || 'metadata'}: ${issue.message}`);
  }
  // RFC 8252 §7: https anywhere; http only on a loopback address; a private-use (reverse-DNS) scheme
  // for native apps. Never javascript:, data: or a fragment.
  for (const field of ['redirect_uris', 'post_logout_redirect_uris'] as const) {
    for (const uri of parsed.data[field] ?? []) {
      if (!redirectUri.safeParse(uri).success) {
        throw new InvalidRedirectUri(`${field}: ${uri.slice(0, 200)} is not allowed: use https, http on a loopback address (127.0.0.1, [::1], localhost), or a reverse-DNS private-use scheme; no fragment`);
      }
    }
  }
  const grants = parsed.data.grant_types ?? ['authorization_code'];
  if (grants.includes('authorization_code') && !parsed.data.redirect_uris?.length) {
    throw new InvalidRedirectUri('redirect_uris is required for the authorization_code grant');
  }
  return metadata;
}


/**
 * In front of oidc-provider on POST /reg and PUT /reg/:id: read the JSON body once, check it against
 * the registration policy, and hand the same text on (oidc-provider reads a pre-read body from
 * ctx.req.body). Refusals are audited.
 */
export function registrationPolicy(deps: { config: Config; audit: Audit }) {
  const enabled = deps.config.REGISTRATION !== 'off';
  return async function enforceRegistrationPolicy(ctx: Context, next: Next) {
    const create = ctx.method === 'POST' && ctx.path === '/reg';
    const update = ctx.method === 'PUT' && ctx.path.startsWith('/reg/');
    if (!enabled || !(create || update) || !ctx.is('application/json')) return next();
    let raw = await readRawBody(ctx, REGISTRATION_BODY_LIMIT);
    try {
      let body: unknown;
      try {
        body = JSON.parse(raw);
      } catch {
        throw new InvalidClientMetadata('the request body is not valid JSON');
      }
      raw = JSON.stringify(registrableScope(checkRegistrationMetadata(body)));
    } catch (err) {
      if (err instanceof HttpError) {
        await deps.audit.record({
          type: create ? 'client.register' : 'client.register.update',
          outcome: 'failure',
          ip: ctx.ip,
          requestId: ctx.state.requestId ?? null,
          details: { error: err.error, reason: err.description },
        });
      }
      throw err;
    }
    handBodyToProvider(ctx, raw);
    await next();
  };
}

/** oidc-provider's registration features for this configuration. */
export function registrationFeatures(config: Config): Pick<NonNullable<Configuration['features']>, 'registration' | 'registrationManagement'> {
  const enabled = config.REGISTRATION !== 'off';
  return {
    registration: {
      enabled,
      // A fixed initial access token (RFC 7591 §3): shared by every node, no database row to mint.
      initialAccessToken: config.REGISTRATION === 'token' ? config.REGISTRATION_INITIAL_ACCESS_TOKEN! : false,
      // Same shape as CLI-created clients.
      idFactory: () => `gh_${crypto.randomBytes(12).toString('base64url')}`,
      secretFactory: () => crypto.randomBytes(32).toString('base64url'),
      issueRegistrationAccessToken: true,
    },
    // RFC 7592: read, update and delete with the registration access token, rotated on update.
    registrationManagement: { enabled, rotateRegistrationAccessToken: true },
  };
}

type ClientLike = { clientId: string; clientName?: string; clientAuthMethod?: string; redirectUris?: string[]; grantTypes?: string[] };

/** Every registration, update and deletion (and oidc-provider's own refusals) goes to the audit log. */
export function attachRegistrationAudit(oidcProvider: Provider, audit: Audit) {
  // The registration events are emitted by oidc-provider but missing from its type definitions.
  const provider = oidcProvider as unknown as { on(event: string, listener: (...args: never[]) => void): unknown };
  const record = (type: string, ctx: KoaContextWithOIDC, client: ClientLike | undefined, outcome: 'success' | 'failure' = 'success', extra: Record<string, unknown> = {}) => {
    void audit.record({
      type,
      outcome,
      clientId: client?.clientId ?? null,
      ip: ctx?.ip ?? null,
      requestId: ctx?.get?.('x-request-id') || null,
      details: client
        ? { origin: 'registration', client_name: client.clientName, auth_method: client.clientAuthMethod, grant_types: client.grantTypes, redirect_uris: client.redirectUris, ...extra }
        : extra,
    });
  };
  provider.on('registration_create.success', (ctx: KoaContextWithOIDC, client: ClientLike) => record('client.register', ctx, client));
  provider.on('registration_update.success', (ctx: KoaContextWithOIDC, client: ClientLike) => record('client.register.update', ctx, client));
  provider.on('registration_delete.success', (ctx: KoaContextWithOIDC, client: ClientLike) => record('client.register.delete', ctx, client));
  for (const [event, type] of [['registration_create.error', 'client.register'], ['registration_update.error', 'client.register.update'], ['registration_delete.error', 'client.register.delete']]) {
    provider.on(event, (ctx: KoaContextWithOIDC, err: Error & { error?: string; error_description?: string }) =>
      record(type, ctx, undefined, 'failure', { error: err.error ?? err.name, reason: err.error_description ?? err.message }));
  }
}

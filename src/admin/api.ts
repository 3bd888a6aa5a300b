// The admin REST API (DESIGN.md: "an admin REST API for users, clients, resource servers,
// connections, roles, sessions and the audit log"), at /admin/api. It is the remote door to the
// same commands the CLI runs (src/admin/commands.ts): one implementation of every rule — the last
// active admin cannot be removed, secrets are shown once, every change is audited — now with the
// caller as the audit actor. Bodies and answers are JSON; an answer is what the CLI prints.
//
// Who may call it: a bearer JWT access token issued for <ISSUER>/admin/api (RFC 8707 resource,
// five-minute lifetime), not revoked, carrying `gatehouse:admin` (every call) or
// `gatehouse:admin:read` (GET only). For a user's token the user must be active and hold the
// permission now, and must have signed in with MFA when policy requires MFA of them. For a client's
// own token (client credentials) the client must be a service account now (`client admin-api`).
import Router from '@koa/router';
import type { Context, Middleware, Next } from 'koa';
import type Provider from 'oidc-provider';
import { z, ZodError } from 'zod';
import type { Deps } from '../app.ts';
import { readJson } from '../http/body.ts';
import { isUnavailable } from '../store/errors.ts';
import { HttpError } from '../http/errors.ts';
import { ExchangeError } from '../exchange/errors.ts';
import { lazyKeyRing } from '../exchange/index.ts';
import { assertNotRevoked, verifyIssuedToken, type KeyRing } from '../exchange/tokens.ts';
import { ACR_MFA, mfaRequirement } from '../mfa/policy.ts';
import { listUserApps } from '../account/data.ts';
import { ADMIN_API_PATH, ADMIN_READ_SCOPE, ADMIN_SCOPE, adminApiUri, adminScopesForClient, adminScopesForPermissions } from './api-scopes.ts';
import { CommandError, runCommand } from './commands.ts';
import { importFromRequest, USER_IMPORT_PATH } from './import-command.ts';
import { toWire } from './wire.ts';
import { adminOpenApi } from './openapi.ts';
import {
  adminAccess, clientCreate, clientPatch, clientPolicy, connection, password, resourceCreate, resourcePatch, revocation, roleCreate, rolePatch,
  idJagPolicy, livekitOptions, rolePolicy, toggle, userCreate, userPatch,
} from './api-schemas.ts';

/** The admin API's version in its OpenAPI document: changes when a route or field changes meaning. */
export const ADMIN_API_VERSION = '1.1';

export type AdminApiDeps = Pick<Deps, 'accounts' | 'clients' | 'resources' | 'keys' | 'audit' | 'config' | 'revocations' | 'db' | 'log'> & {
  provider: () => Provider;
  /** After `keys rotate`: reload the provider here at once (other processes follow within KEYS_REFRESH_SECONDS). */
  afterKeysChange: () => Promise<unknown>;
};

type Need = 'read' | 'write';

/**
 * What a user may do in the admin API and console right now: the admin scopes their roles grant, and
 * whether the sign-in behind the request (its acr) lacks a second factor that policy requires of them.
 * Both doors ask this one question, so a policy change reaches both.
 */
export async function userAdminAccess(deps: Pick<AdminApiDeps, 'accounts' | 'config'>, userId: string, acr: string | undefined) {
  const scopes = adminScopesForPermissions((await deps.accounts.rolesAndPermissions(userId)).permissions);
  const needsMfa = scopes.length > 0 && acr !== ACR_MFA && (await mfaRequirement({ config: deps.config, accounts: deps.accounts }, { accountId: userId })) !== null;
  return { scopes, needsMfa };
}

/** RFC 6750 §3 challenge for the admin API's errors. */
function challenge(status: number, error: string, description: string, extra: Record<string, string> = {}) {
  const params = Object.entries({ error, error_description: description, ...extra }).map(([k, v]) => `${k}="${v.replace(/["\\]/g, '')}"`).join(', ');
  return new HttpError(status, error, description, { 'WWW-Authenticate': `Bearer realm="gatehouse-admin", ${params}` });
}

/** `--key=value` flags for a command (the = form keeps values that start with "-" as values). */
function flags(values: Record<string, string | string[] | boolean | number | null | undefined>): string[] {
  return Object.entries(values).flatMap(([k, v]) => {
    if (v === undefined || v === null || v === false) return [];
    if (v === true) return [`--${k}`];
    return (Array.isArray(v) ? v : [v]).map((x) => `--${k}=${x}`);
  });
}
const onOff = (v: boolean | undefined) => (v === undefined ? undefined : v ? 'on' : 'off');

function connectionFlags(b: z.infer<typeof connection>, update: boolean) {
  return flags({
    'display-name': b.display_name, issuer: b.issuer, 'client-id': b.client_id,
    'client-secret': b.client_secret ?? undefined, 'clear-client-secret': update && b.client_secret === null,
    scope: b.scopes, domain: b.domains, 'clear-domains': update && b.domains !== undefined,
    jit: onOff(b.jit), 'link-by-email': onOff(b.link_by_email), 'password-login': onOff(b.password_login),
    'trust-mfa': onOff(b.trust_mfa), enabled: onOff(b.enabled),
    'email-claim': b.email_claim, 'email-verified-claim': b.email_verified_claim, 'name-claim': b.name_claim, 'groups-claim': b.groups_claim,
    'map-role': b.role_map ? Object.entries(b.role_map).map(([group, roles]) => `${group}=${roles.join('+')}`) : undefined,
    'clear-role-map': update && b.role_map !== undefined,
    'default-role': b.default_roles,
    'id-jag': onOff(b.id_jag),
    'id-jag-jwks-uri': b.id_jag_jwks_uri === null ? 'none' : b.id_jag_jwks_uri,
    'id-jag-jwks': b.id_jag_jwks === null ? 'none' : b.id_jag_jwks && JSON.stringify(b.id_jag_jwks),
    // An empty list clears it (the CLI's `none`).
    'id-jag-client': b.id_jag_clients && (b.id_jag_clients.length ? b.id_jag_clients : ['none']),
    'id-jag-resource': b.id_jag_resources && (b.id_jag_resources.length ? b.id_jag_resources : ['none']),
  });
}

export function createAdminApi(deps: AdminApiDeps): Middleware & { router: Router } {
  const router = new Router({ prefix: ADMIN_API_PATH });
  const audience = adminApiUri(deps.config.ISSUER);

  let keysFor: { provider: Provider; ring: () => Promise<KeyRing> } | undefined;
  const keyRing = (provider: Provider) => {
    if (keysFor?.provider !== provider) keysFor = { provider, ring: lazyKeyRing(deps) };
    return keysFor.ring();
  };

  /** The caller, as an audit actor (`user:<id>` or `client:<id>`), once the token and its holder pass. */
  async function authenticate(ctx: Context, need: Need): Promise<string> {
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(ctx.get('authorization'));
    if (!m) throw challenge(401, 'invalid_token', `a bearer access token for ${audience} is required`);
    const provider = deps.provider();
    let token;
    try {
      token = await verifyIssuedToken(m[1], 'access token', { provider, issuer: deps.config.ISSUER, keys: await keyRing(provider) });
      await assertNotRevoked(token, 'access token', deps.revocations);
    } catch (err) {
      if (err instanceof ExchangeError && err.code === 'invalid_request') throw challenge(401, 'invalid_token', err.message);
      throw err;
    }
    if (token.format !== 'jwt' || !token.aud?.includes(audience)) throw challenge(401, 'invalid_token', `the token was not issued for ${audience} (request it with resource=${audience})`);
    if (token.act || token.mayAct) throw challenge(401, 'invalid_token', 'a delegated token cannot administer Gatehouse');
    const wanted = need === 'read' ? [ADMIN_SCOPE, ADMIN_READ_SCOPE] : [ADMIN_SCOPE];
    const required = need === 'read' ? `${ADMIN_SCOPE} or ${ADMIN_READ_SCOPE}` : ADMIN_SCOPE;
    if (!token.scope.some((s) => wanted.includes(s))) throw challenge(403, 'insufficient_scope', `this call needs ${required}`, { scope: wanted[0] });

    if (token.user) {
      const user = await deps.accounts.findUserById(token.user);
      if (!user?.active) throw challenge(401, 'invalid_token', 'the user is unknown or disabled');
      // Roles can change after the token was issued: what counts is what the user may do now.
      const access = await userAdminAccess(deps, user.id, token.acr);
      if (!access.scopes.some((s) => wanted.includes(s) && token.scope.includes(s))) throw challenge(403, 'insufficient_scope', `your roles do not grant ${required}`, { scope: wanted[0] });
      if (access.needsMfa) {
        throw challenge(401, 'insufficient_user_authentication', 'your account must sign in with a second factor to administer Gatehouse', { acr_values: ACR_MFA });
      }
      return `user:${user.id}`;
    }
    // An unreadable client is no service account, but a database that cannot answer is a 503, not a 403.
    const metadata = await deps.clients.findMetadata(token.clientId).catch((err) => {
      if (isUnavailable(err)) throw err;
      return undefined;
    });
    const allowed = adminScopesForClient(metadata as Record<string, unknown> | undefined);
    if (!allowed.some((s) => wanted.includes(s) && token.scope.includes(s))) throw challenge(403, 'insufficient_scope', `this client is not allowed ${required} (gatehouse client admin-api)`, { scope: wanted[0] });
    return `client:${token.clientId}`;
  }

  /** Every answer is JSON and never cached; errors are { error, error_description }. */
  router.use(async function adminJson(ctx: Context, next: Next) {
    ctx.set('Cache-Control', 'no-store');
    try {
      await next();
    } catch (err) {
      let e = err;
      if (err instanceof ZodError) e = new HttpError(400, 'invalid_request', err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
      if (err instanceof CommandError) e = new HttpError(err.status, err.status === 404 ? 'not_found' : err.status === 409 ? 'conflict' : 'invalid_request', err.message.split('\n')[0]);
      if (!(e instanceof HttpError)) throw err;
      ctx.status = e.status;
      for (const [k, v] of Object.entries(e.headers)) ctx.set(k, v);
      ctx.body = { error: e.error, error_description: e.description };
    }
  });

  // The OpenAPI 3.1 description of everything below (src/admin/openapi.ts). Public: it says what
  // the API takes, nothing about the data behind it; built once, on first request.
  let openApi: unknown;
  router.get('/openapi.json', async function describeAdminApi(ctx: Context) {
    openApi ??= adminOpenApi(deps.config.ISSUER, ADMIN_API_VERSION);
    ctx.body = openApi;
  });

  type Handler = (ctx: Context, run: (argv: string[]) => Promise<unknown>, actor: string) => Promise<unknown>;
  function route(method: 'get' | 'post' | 'patch' | 'put' | 'delete', path: string, handler: Handler, status = 200) {
    router[method](path, async (ctx: Context) => {
      const actor = await authenticate(ctx, method === 'get' ? 'read' : 'write');
      const run = (argv: string[]) => runCommand({ ...deps, actor }, argv);
      const body = await handler(ctx, run, actor);
      ctx.status = body === undefined ? 204 : status;
      if (body !== undefined) ctx.body = body;
    });
  }
  const body = async <T extends z.ZodType>(ctx: Context, schema: T): Promise<z.infer<T>> => schema.parse((await readJson(ctx)) ?? {});
  const param = (ctx: Context, name: string) => String(ctx.params[name]);
  const limitOffset = (ctx: Context) => flags({ limit: ctx.query.limit as string | undefined, offset: ctx.query.offset as string | undefined });

  // --- users ---
  route('get', '/users', (ctx, run) => run(['user', 'list', ...limitOffset(ctx)]));
  route('post', '/users', async (ctx, run) => {
    const b = await body(ctx, userCreate);
    return run(['user', 'create', ...flags({ email: b.email, password: b.password, name: b.name, role: b.roles, verified: b.email_verified })]);
  }, 201);
  // Issue 18: the import file is the body (application/x-ndjson or text/csv), read as it arrives.
  route('post', USER_IMPORT_PATH.slice(ADMIN_API_PATH.length), (ctx, _run, actor) => importFromRequest({ ...deps, actor }, ctx));
  route('get', '/users/:id', (ctx, run) => run(['user', 'get', `--id=${param(ctx, 'id')}`]));
  route('patch', '/users/:id', async (ctx, run) => {
    const b = await body(ctx, userPatch);
    return run(['user', 'update', `--id=${param(ctx, 'id')}`, ...flags({
      role: b.roles, enabled: onOff(b.active), name: b.name ?? undefined, 'clear-name': b.name === null, 'new-email': b.email, verified: onOff(b.email_verified),
    })]);
  });
  route('delete', '/users/:id', async (ctx, run) => { await run(['user', 'delete', `--id=${param(ctx, 'id')}`]); });
  route('post', '/users/:id/password', async (ctx, run) => run(['user', 'set-password', `--id=${param(ctx, 'id')}`, ...flags({ password: (await body(ctx, password)).password })]));
  route('post', '/users/:id/reset-mfa', (ctx, run) => run(['user', 'reset-mfa', `--id=${param(ctx, 'id')}`]));
  route('post', '/users/:id/sign-out', (ctx, run) => run(['revoke', `--user=${param(ctx, 'id')}`]));
  route('get', '/users/:id/passkeys', (ctx, run) => run(['user', 'passkeys', `--id=${param(ctx, 'id')}`]));
  route('delete', '/users/:id/passkeys/:passkey', async (ctx, run) => {
    await run(['user', 'remove-passkey', `--id=${param(ctx, 'id')}`, `--passkey=${param(ctx, 'passkey')}`]);
  });
  route('get', '/users/:id/apps', async (ctx, run) => {
    await run(['user', 'get', `--id=${param(ctx, 'id')}`]); // 404 for an unknown user
    return { apps: toWire(await listUserApps(deps, param(ctx, 'id'))) };
  });

  // --- roles ---
  route('get', '/roles', (_ctx, run) => run(['role', 'list']));
  route('post', '/roles', async (ctx, run) => {
    const b = await body(ctx, roleCreate);
    return run(['role', 'create', `--name=${b.name}`, ...flags({ permission: b.permissions, description: b.description })]);
  }, 201);
  route('get', '/roles/:name', (ctx, run) => run(['role', 'get', `--name=${param(ctx, 'name')}`]));
  route('patch', '/roles/:name', async (ctx, run) => {
    const b = await body(ctx, rolePatch);
    return run(['role', 'update', `--name=${param(ctx, 'name')}`, ...flags({ permission: b.permissions, add: b.add, remove: b.remove, description: b.description })]);
  });
  route('delete', '/roles/:name', async (ctx, run) => { await run(['role', 'delete', `--name=${param(ctx, 'name')}`, ...flags({ force: ctx.query.force === 'true' })]); });

  // --- clients ---
  route('get', '/clients', (_ctx, run) => run(['client', 'list']));
  route('post', '/clients', async (ctx, run) => {
    const b = await body(ctx, clientCreate);
    return run(['client', 'create', ...flags({
      name: b.name, type: b.type, 'redirect-uri': b.redirect_uris, 'post-logout-redirect-uri': b.post_logout_redirect_uris,
      grant: b.grant_types, 'auth-method': b.token_endpoint_auth_method, 'first-party': b.first_party, scope: b.scope,
      'backchannel-logout-uri': b.backchannel_logout_uri, 'jwks-uri': b.jwks_uri, jwks: b.jwks && JSON.stringify(b.jwks),
      preset: b.preset, 'application-type': b.application_type, resource: b.resources, 'agent-name': b.agent_name,
    })]);
  }, 201);
  route('get', '/clients/:id', (ctx, run) => run(['client', 'get', `--id=${param(ctx, 'id')}`]));
  route('patch', '/clients/:id', async (ctx, run) => {
    const b = await body(ctx, clientPatch);
    return run(['client', 'update', `--id=${param(ctx, 'id')}`, ...flags({
      name: b.name, 'redirect-uri': b.redirect_uris, 'clear-redirect-uris': b.redirect_uris?.length === 0,
      'post-logout-redirect-uri': b.post_logout_redirect_uris, 'clear-post-logout-redirect-uris': b.post_logout_redirect_uris?.length === 0,
      grant: b.grant_types, 'first-party': onOff(b.first_party), scope: b.scope, 'clear-scope': b.scope === null,
      'backchannel-logout-uri': b.backchannel_logout_uri, 'clear-backchannel-logout-uri': b.backchannel_logout_uri === null,
    })]);
  });
  route('delete', '/clients/:id', async (ctx, run) => { await run(['client', 'delete', `--id=${param(ctx, 'id')}`]); });
  route('put', '/clients/:id/require-mfa', async (ctx, run) => run(['client', 'require-mfa', `--id=${param(ctx, 'id')}`, ...flags({ off: !(await body(ctx, toggle)).require_mfa })]));
  route('put', '/clients/:id/admin-api', async (ctx, run) => run(['client', 'admin-api', `--id=${param(ctx, 'id')}`, `--${(await body(ctx, adminAccess)).access ?? 'off'}`]));

  // --- resource servers (by URI, in the query: it is a URL itself) ---
  // ?uri=U: that resource only (a list of one, or 404).
  route('get', '/resources', async (ctx, run) => (ctx.query.uri === undefined ? run(['resource', 'list']) : [await run(['resource', 'get', `--uri=${String(ctx.query.uri)}`])]));
  route('patch', '/resources', async (ctx, run) => {
    const b = await body(ctx, resourcePatch);
    return run(['resource', 'update', `--uri=${String(ctx.query.uri ?? '')}`, ...flags({
      name: b.name, scope: b.scopes, ttl: b.access_token_ttl, 'require-mfa': onOff(b.require_mfa),
      'default-scope': b.default_scopes ?? undefined, 'all-scopes-default': b.default_scopes === null,
      claims: b.claims && (b.claims.length ? b.claims : ['none']),
    })]);
  });
  route('post', '/resources', async (ctx, run) => {
    const b = await body(ctx, resourceCreate);
    return run(['resource', 'create', ...flags({
      uri: b.uri, name: b.name, scope: b.scopes, ttl: b.access_token_ttl, signing: b.signing, 'require-mfa': b.require_mfa,
      'default-scope': b.default_scopes, claims: b.claims,
    })]);
  }, 201);
  route('delete', '/resources', async (ctx, run) => { await run(['resource', 'delete', `--uri=${String(ctx.query.uri ?? '')}`]); });
  route('put', '/resources/require-mfa', async (ctx, run) => run(['resource', 'require-mfa', `--uri=${String(ctx.query.uri ?? '')}`, ...flags({ off: !(await body(ctx, toggle)).require_mfa })]));

  // --- token-exchange policy ---
  route('get', '/policies/clients', (_ctx, run) => run(['policy', 'client', 'list']));
  route('get', '/policies/clients/:id', (ctx, run) => run(['policy', 'client', 'get', param(ctx, 'id')]));
  route('put', '/policies/clients/:id', async (ctx, run) => {
    const b = await body(ctx, clientPolicy);
    return run(['policy', 'client', 'set', ...flags({ livekit: b.livekit, resource: b.resources, scope: b.scopes, act: b.act, 'agent-name': b.agent_name }), '--', param(ctx, 'id')]);
  });
  route('delete', '/policies/clients/:id', async (ctx, run) => { await run(['policy', 'client', 'delete', '--', param(ctx, 'id')]); });
  route('get', '/policies/roles', (_ctx, run) => run(['policy', 'role', 'list']));
  route('get', '/policies/roles/:role', (ctx, run) => run(['policy', 'role', 'get', '--', param(ctx, 'role')]));
  route('put', '/policies/roles/:role', async (ctx, run) => {
    const b = await body(ctx, rolePolicy);
    return run(['policy', 'role', 'set', ...flags({ room: b.rooms, publish: b.publish, subscribe: b.subscribe, data: b.data, 'room-admin': b.room_admin, 'require-mfa': b.require_mfa }), '--', param(ctx, 'role')]);
  });
  route('delete', '/policies/roles/:role', async (ctx, run) => { await run(['policy', 'role', 'delete', '--', param(ctx, 'role')]); });
  // ID-JAG targets per client (docs/id-jag.md); one per audience, so the audience is in the body or the query.
  route('get', '/policies/id-jag', (ctx, run) => run(['policy', 'id-jag', 'list', ...(ctx.query.client_id ? ['--', String(ctx.query.client_id)] : [])]));
  route('put', '/policies/id-jag/:id', async (ctx, run) => {
    const b = await body(ctx, idJagPolicy);
    return run(['policy', 'id-jag', 'set', ...flags({ audience: b.audience, 'target-client-id': b.target_client_id, resource: b.resources, scope: b.scopes }), '--', param(ctx, 'id')]);
  });
  route('delete', '/policies/id-jag/:id', async (ctx, run) => { await run(['policy', 'id-jag', 'delete', `--audience=${String(ctx.query.audience ?? '')}`, '--', param(ctx, 'id')]); });

  // --- LiveKit options per client or role (src/admin/livekit-commands.ts) ---
  route('get', '/livekit/options', (_ctx, run) => run(['livekit', 'options', 'list']));
  for (const scope of ['client', 'role'] as const) {
    const at = `/livekit/options/${scope}s/:name`;
    route('get', at, (ctx, run) => run(['livekit', 'options', 'get', `--${scope}=${param(ctx, 'name')}`]));
    route('put', at, async (ctx, run) => {
      const b = await body(ctx, livekitOptions);
      return run(['livekit', 'options', 'set', `--${scope}=${param(ctx, 'name')}`, ...flags({
        'room-prefix': b.room_prefix, 'max-participants': b.max_participants, 'empty-timeout': b.empty_timeout, 'departure-timeout': b.departure_timeout,
      })]);
    });
    route('delete', at, async (ctx, run) => { await run(['livekit', 'options', 'delete', `--${scope}=${param(ctx, 'name')}`]); });
  }

  // --- enterprise SSO connections (the client secret is write-only: never in an answer) ---
  route('get', '/connections', (_ctx, run) => run(['connection', 'list']));
  route('get', '/connections/:name', (ctx, run) => run(['connection', 'get', `--name=${param(ctx, 'name')}`]));
  route('post', '/connections', async (ctx, run) => {
    const b = await body(ctx, connection);
    return run(['connection', 'create', `--name=${b.name ?? ''}`, ...connectionFlags(b, false)]);
  }, 201);
  route('patch', '/connections/:name', async (ctx, run) => run(['connection', 'update', `--name=${param(ctx, 'name')}`, ...connectionFlags(await body(ctx, connection), true)]));
  route('delete', '/connections/:name', async (ctx, run) => { await run(['connection', 'delete', `--name=${param(ctx, 'name')}`]); });

  // --- revocation and keys ---
  route('post', '/revocations', async (ctx, run) => {
    const b = await body(ctx, revocation);
    return run(['revoke', ...flags({ user: b.user, grant: b.grant, session: b.session, jti: b.jti, ttl: b.ttl })]);
  });
  route('get', '/keys', (_ctx, run) => run(['keys', 'list']));
  route('post', '/keys/rotate', async (_ctx, run) => {
    const rotated = await run(['keys', 'rotate']);
    await deps.afterKeysChange();
    return rotated;
  });

  // --- the audit log, newest first, paged by id ---
  const auditQuery = z.object({
    type: z.string().max(100).optional(), outcome: z.enum(['success', 'failure']).optional(), subject: z.string().max(300).optional(),
    actor: z.string().max(300).optional(), client_id: z.string().max(300).optional(),
    since: z.iso.datetime({ offset: true }).optional(), until: z.iso.datetime({ offset: true }).optional(),
    before_id: z.coerce.number().int().positive().optional(), limit: z.coerce.number().int().min(1).max(1000).default(100),
  });
  route('get', '/audit', async (ctx) => {
    const q = auditQuery.parse(ctx.query);
    const { rows } = await deps.db.query<{ id: string | number }>(
      `SELECT id, at, type, outcome, actor, subject, client_id, ip, request_id, details FROM audit_events
        WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR outcome = $2) AND ($3::text IS NULL OR subject = $3)
          AND ($4::text IS NULL OR actor = $4) AND ($5::text IS NULL OR client_id = $5)
          AND ($6::timestamptz IS NULL OR at >= $6) AND ($7::timestamptz IS NULL OR at < $7) AND ($8::bigint IS NULL OR id < $8)
        ORDER BY id DESC LIMIT $9`,
      [q.type ?? null, q.outcome ?? null, q.subject ?? null, q.actor ?? null, q.client_id ?? null, q.since ?? null, q.until ?? null, q.before_id ?? null, q.limit],
    );
    const events = rows.map((r) => ({ ...r, id: Number(r.id) }));
    return { events, next_before_id: events.length === q.limit ? events[events.length - 1].id : null };
  });

  const routes = router.routes();
  return Object.assign(async function adminApi(ctx: Context, next: Next) {
    if (ctx.path !== ADMIN_API_PATH && !ctx.path.startsWith(`${ADMIN_API_PATH}/`)) return next();
    await routes(ctx as never, async () => {
      // Nothing here answers this method and path: a JSON 404, not oidc-provider's text one.
      ctx.status = 404;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { error: 'not_found', error_description: `no ${ctx.method} ${ctx.path} in the admin API` };
    });
  }, { router });
}

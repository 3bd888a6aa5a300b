// In-call approvals (issue 19): OpenID Connect Client-Initiated Backchannel Authentication (CIBA
// Core 1.0), poll and ping modes, through oidc-provider's `features.ciba`. A voice agent that needs a
// stronger right mid-call starts a backchannel request for the user it serves (`login_hint` = the
// user's id or e-mail, or `login_hint_token` = the delegation token from the room), with a
// `binding_message` the user sees. Gatehouse tells the user (the account page's pending approvals,
// live through server-sent events; e-mail when SMTP is set; a webhook an app can turn into a push),
// the user approves or denies with the message in view, and the agent's poll then gets a token that
// carries `act` for the agent and the approval's `acr`/`amr` (provider.ts extraTokenClaims).
//
// Steps, in the order oidc-provider calls them: resolveLoginHint / resolveLoginHintToken →
// checkBindingMessage → notifyUser; then, from the user's side, the approvals router:
// listPending → approve (decideScopes → recordGrant → answerRequest) or deny (answerRequest); for a
// ping client, answerRequest also tells the client's notification endpoint (pingClient, retried).
import crypto from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import { createLocalJWKSet, jwtVerify, type JWK } from 'jose';
import type { Config } from '../config/index.ts';
import type { Queryable } from '../store/db.ts';
import type { Kv } from '../store/kv.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from '../http/log.ts';
import type { Accounts } from '../accounts/users.ts';
import type { RevocationStore } from '../revocation/store.ts';
import { decideScope, OIDC_SCOPES, ScopeRefused, type ScopeResource } from '../authz/scope-rule.ts';
import { readForm } from '../http/body.ts';
import { InvalidRequest, NotFound } from '../http/errors.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { renderView } from '../interaction/router.ts';

export const CIBA_GRANT = 'urn:openid:params:grant-type:ciba';
/** What a binding message may hold: printable text a person can compare with what the agent said. */
const BINDING_MESSAGE = /^[^\p{C}]{1,120}$/u;
const OIDC_SCOPE_SET = new Set(OIDC_SCOPES);

const channelOf = (userId: string) => `ciba:${userId}`;
/** The id an approval has in pages and URLs: a hash, so the auth_req_id itself never leaves the server. */
export const approvalId = (authReqId: string) => crypto.createHash('sha256').update(authReqId).digest('base64url').slice(0, 32);

export interface Mailer {
  send(mail: { to: string; subject: string; text: string }): Promise<void>;
}

export interface CibaDeps {
  config: Pick<Config, 'ISSUER' | 'CIBA_WEBHOOK_URL'>;
  db: Queryable;
  kv: Pick<Kv, 'publish' | 'subscribe'>;
  audit: Audit;
  log: Logger;
  accounts: Pick<Accounts, 'findUserByEmail' | 'findUserById'>;
  revocations: Pick<RevocationStore, 'check'>;
  keys: { privateJwks(): Promise<{ keys: JWK[] }> };
  resources: { findResource(uri: string): Promise<(ScopeResource & { requireMfa: boolean }) | undefined> };
  /** The user's permissions, for the resource scopes an approval can grant. */
  permissionsOf(userId: string): Promise<string[]>;
  mailer?: Mailer;
}

// --- the backchannel request (oidc-provider's features.ciba hooks) -------------------------------

async function resolveLoginHint(deps: CibaDeps, hint: string): Promise<string | undefined> {
  const user = hint.includes('@') ? await deps.accounts.findUserByEmail(hint) : await deps.accounts.findUserById(hint);
  return user?.active ? user.id : undefined;
}

/** login_hint_token: a Gatehouse-issued token for the requesting agent (the room's delegation token). */
async function resolveLoginHintToken(deps: CibaDeps, ctx: KoaContextWithOIDC, token: string): Promise<string | undefined> {
  const publicKeys = (await deps.keys.privateJwks()).keys.map(({ d, p, q, dp, dq, qi, ...pub }) => pub);
  let claims;
  try {
    ({ payload: claims } = await jwtVerify(token, createLocalJWKSet({ keys: publicKeys }), { issuer: deps.config.ISSUER, audience: ctx.oidc.client!.clientId }));
  } catch {
    throw new errors.InvalidRequest('login_hint_token is not a valid token for this client');
  }
  const facts = { jti: claims.jti, gid: claims.gid as string | undefined, sid: claims.sid as string | undefined, sub: claims.sub, iat: claims.iat };
  if (await deps.revocations.check(facts)) throw new errors.InvalidRequest('login_hint_token has been revoked');
  return claims.sub && (await resolveLoginHint(deps, claims.sub));
}

function checkBindingMessage(message: string | undefined) {
  if (message !== undefined && !BINDING_MESSAGE.test(message)) {
    throw new errors.InvalidBindingMessage('binding_message must be 1 to 120 printable characters');
  }
}

interface PendingRequest {
  jti: string;
  accountId: string;
  clientId: string;
  scope?: string;
  resource?: string | string[];
  params?: Record<string, unknown>;
  expiresAt?: number;
}

async function notifyUser(deps: CibaDeps, ctx: KoaContextWithOIDC, request: PendingRequest) {
  const client = ctx.oidc.client!;
  const clientName = client.clientName ?? client.clientId;
  const bindingMessage = request.params?.binding_message as string | undefined;
  const id = approvalId(request.jti);
  await deps.audit.record({
    type: 'ciba.request', subject: request.accountId, clientId: client.clientId, ip: ctx.ip,
    requestId: (ctx.state as { requestId?: string }).requestId ?? null,
    details: { approval: id, scope: request.scope, resource: request.resource, binding_message: bindingMessage },
  });
  await deps.kv.publish(channelOf(request.accountId), JSON.stringify({ type: 'pending', approval: id })).catch(() => 0);
  const link = new URL('/account/approvals', deps.config.ISSUER).href;
  // Mail and webhook are told after the answer, without holding it up; a failure is logged.
  const user = await deps.accounts.findUserById(request.accountId);
  void (async () => {
    if (deps.mailer && user?.email) {
      await deps.mailer.send({
        to: user.email,
        subject: `${clientName} asks for your approval`,
        text: `${clientName} asks for your approval${bindingMessage ? `: "${bindingMessage}"` : ''}.\n\nApprove or deny it at ${link}\n\nIf you did not expect this, deny it.`,
      });
    }
    if (deps.config.CIBA_WEBHOOK_URL) {
      const res = await fetch(deps.config.CIBA_WEBHOOK_URL, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'ciba.pending', user_id: request.accountId, client_id: client.clientId, client_name: clientName, binding_message: bindingMessage ?? null, scope: request.scope ?? null, approval_id: id, approval_url: link }),
        signal: AbortSignal.timeout(5000),
      });
      if (!res.ok) throw new Error(`webhook answered ${res.status}`);
    }
  })().catch((err) => deps.log.warn({ err: { message: (err as Error).message } }, 'approval notification failed'));
}

/** provider configuration `extend` hook: enables CIBA with Gatehouse's hooks. */
export function configureCiba(deps: CibaDeps) {
  return function configureCibaFeature(configuration: Configuration) {
    const features = (configuration.features ??= {});
    features.ciba = {
      enabled: true,
      // Ping (CIBA Core §10.2): for clients an operator registered with --ciba-notification-endpoint.
      deliveryModes: ['poll', 'ping'],
      async processLoginHint(_ctx: unknown, hint: string) {
        return resolveLoginHint(deps, hint);
      },
      async processLoginHintToken(ctx: KoaContextWithOIDC, token: string) {
        return resolveLoginHintToken(deps, ctx, token);
      },
      async validateBindingMessage(_ctx: unknown, message?: string) {
        checkBindingMessage(message);
      },
      // request_context is free-form context for the authorization server; Gatehouse does not use it.
      async validateRequestContext() {},
      async verifyUserCode(_ctx: unknown, _account: unknown, userCode?: string) {
        if (userCode) throw new errors.InvalidRequest('user_code is not supported');
      },
      async triggerAuthenticationDevice(ctx: KoaContextWithOIDC, request: unknown) {
        await notifyUser(deps, ctx, request as unknown as PendingRequest);
      },
    } as never;
  };
}

/**
 * oidc-provider always advertises backchannel_user_code_parameter_supported: true; Gatehouse has no
 * user codes and refuses the parameter (verifyUserCode above), so discovery says so.
 */
export function cibaDiscovery() {
  return async function cibaDiscoveryTruth(ctx: Context, next: Next) {
    await next();
    if (ctx.path === '/.well-known/openid-configuration' && ctx.body && typeof ctx.body === 'object') {
      (ctx.body as Record<string, unknown>).backchannel_user_code_parameter_supported = false;
    }
  };
}

// --- the user's side: /account/approvals ---------------------------------------------------------

interface Row {
  id: string;
  payload: PendingRequest & { clientId: string };
  expires: number;
}

async function listPending(db: Queryable, userId: string): Promise<Row[]> {
  const r = await db.query<Row>(
    `SELECT id, payload, extract(epoch FROM expires_at)::float8 AS expires FROM oidc_payloads
      WHERE model = 'BackchannelAuthenticationRequest' AND payload->>'accountId' = $1 AND expires_at > now()
        AND NOT (payload ? 'grantId') AND NOT (payload ? 'error') AND consumed_at IS NULL
      ORDER BY expires_at`,
    [userId],
  );
  return r.rows;
}

const resourcesOf = (p: PendingRequest) => (Array.isArray(p.resource) ? p.resource : p.resource ? [p.resource] : []);

export interface ApprovalsDeps extends CibaDeps {
  provider: () => Provider;
  clients: { findMetadata(id: string): Promise<Record<string, unknown> | undefined> };
  /** The signed-in user of the browser session, if any. */
  sessionUser(ctx: Context): Promise<{ id: string; acr?: string; amr?: string[]; authTime?: number } | undefined>;
  secureCookies: boolean;
}

/** Pauses between the retries of a failed ping (CIBA Core §10.2 leaves retrying to the server): brief, the agent also polls. */
export const PING_RETRY_DELAYS_MS = [500, 1000, 2000];

/**
 * Record the user's answer (oidc-provider's backchannelResult). For a ping client oidc-provider then
 * POSTs {auth_req_id} to its notification endpoint with the client_notification_token as bearer
 * token (CIBA Core §10.2), once; the answer stands whatever the ping does, so a failed ping is
 * retried in the background, without holding up the user's page, and the outcome is audited.
 */
async function answerRequest(deps: ApprovalsDeps, ctx: Context, row: Row, result: Parameters<Provider['backchannelResult']>[1], extra?: Parameters<Provider['backchannelResult']>[2]) {
  const client = await deps.clients.findMetadata(row.payload.clientId);
  const ping = client?.backchannel_token_delivery_mode === 'ping';
  const audit = (outcome: 'success' | 'failure', attempts: number, error?: string) => deps.audit.record({
    type: 'ciba.ping', outcome, subject: row.payload.accountId, clientId: row.payload.clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null,
    details: { approval: approvalId(row.id), attempts, ...(error ? { error } : {}) },
  });
  try {
    await deps.provider().backchannelResult(row.id, result, extra);
  } catch (err) {
    const saved = await deps.provider().BackchannelAuthenticationRequest.find(row.id) as unknown as { grantId?: string; error?: string } | undefined;
    if (!ping || !(saved?.grantId || saved?.error)) throw err;
    deps.log.warn({ err: { message: (err as Error).message }, clientId: row.payload.clientId }, 'CIBA ping failed; retrying');
    void retryPing(deps, row, (err as Error).message).then(({ attempts, error }) => audit(error ? 'failure' : 'success', attempts, error));
    return;
  }
  if (ping) await audit('success', 1);
}

async function retryPing(deps: ApprovalsDeps, row: Row, firstError: string): Promise<{ attempts: number; error?: string }> {
  let error = firstError;
  let attempts = 1;
  for (const delay of PING_RETRY_DELAYS_MS) {
    await new Promise((resolve) => setTimeout(resolve, delay).unref());
    attempts++;
    try {
      const provider = deps.provider();
      const [client, request] = await Promise.all([provider.Client.find(row.payload.clientId), provider.BackchannelAuthenticationRequest.find(row.id)]);
      if (!client || !request) return { attempts, error: 'the client or the request is gone' };
      await (client as unknown as { backchannelPing(r: unknown): Promise<void> }).backchannelPing(request);
      return { attempts };
    } catch (err) {
      error = (err as Error).message;
    }
  }
  deps.log.warn({ clientId: row.payload.clientId, attempts }, 'CIBA ping failed; the client can still poll');
  return { attempts, error };
}

export function createApprovalsRouter(deps: ApprovalsDeps): Router {
  const router = new Router({ prefix: '/account/approvals' });

  async function signedIn(ctx: Context) {
    const user = await deps.sessionUser(ctx);
    if (!user) ctx.redirect(`/account/sign-in?return_to=${encodeURIComponent('/account/approvals')}`);
    return user;
  }

  async function describe(row: Row) {
    const client = await deps.clients.findMetadata(row.payload.clientId);
    return {
      id: approvalId(row.id),
      clientName: String(client?.client_name ?? row.payload.clientId),
      bindingMessage: row.payload.params?.binding_message as string | undefined,
      scopes: (row.payload.scope ?? '').split(' ').filter(Boolean),
      resources: resourcesOf(row.payload),
      expiresIn: Math.max(0, Math.round(row.expires - Date.now() / 1000)),
    };
  }

  async function findOwn(userId: string, id: string) {
    const row = (await listPending(deps.db, userId)).find((r) => approvalId(r.id) === id);
    if (!row) throw new NotFound('This request is no longer waiting for you: it was answered or it expired.');
    return row;
  }

  router.use(async function approvalPages(ctx: Context, next: Next) {
    ctx.set('Cache-Control', 'no-store');
    ctx.state.html = true;
    await next();
  });

  router.get('/', async function showApprovals(ctx: Context) {
    const user = await signedIn(ctx);
    if (!user) return;
    const pending = await Promise.all((await listPending(deps.db, user.id)).map(describe));
    ctx.type = 'html';
    ctx.body = renderView('account-approvals', { title: 'Approvals', pending, csrf: issueCsrf(ctx, { secure: deps.secureCookies }), csrfField: CSRF_FIELD });
  });

  // Server-sent events: the page refreshes its list when a request arrives, without a reload.
  router.get('/events', async function streamApprovals(ctx: Context) {
    const user = await deps.sessionUser(ctx);
    if (!user) throw new NotFound('Sign in to see your approvals.');
    ctx.state.html = false;
    ctx.req.socket.setTimeout(0);
    ctx.type = 'text/event-stream';
    ctx.status = 200;
    ctx.respond = false;
    ctx.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    ctx.res.write(': connected\n\n');
    const unsubscribe = await deps.kv.subscribe(channelOf(user.id), () => ctx.res.write('event: pending\ndata: {}\n\n'));
    const ping = setInterval(() => ctx.res.write(': ping\n\n'), 25_000);
    ctx.req.on('close', () => {
      clearInterval(ping);
      void unsubscribe();
    });
  });

  /** The preamble of approve and deny: the form's CSRF token, the signed-in user, their pending request. */
  async function answering(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const user = await signedIn(ctx);
    if (!user) return undefined;
    return { user, row: await findOwn(user.id, String(ctx.params.id)) };
  }

  router.post('/:id/approve', async function approve(ctx: Context) {
    const pending = await answering(ctx);
    if (!pending) return;
    const { user, row } = pending;
    const provider = deps.provider();
    const request = row.payload;
    // decideScopes: OIDC scopes as asked; each resource's by the one scope rule (src/authz/scope-rule.ts).
    // The approval is the user's consent to exactly the scopes the page showed (the request's), so a
    // request naming none of a resource's scopes grants none of them. The token endpoint applies the
    // same rule again when the agent polls.
    const grant = new provider.Grant({ accountId: user.id, clientId: request.clientId });
    const asked = (request.scope ?? '').split(' ').filter(Boolean);
    grant.addOIDCScope(asked.filter((s) => OIDC_SCOPE_SET.has(s)).join(' '));
    const permissions = await deps.permissionsOf(user.id);
    for (const uri of resourcesOf(request)) {
      const rs = await deps.resources.findResource(uri);
      if (!rs) throw new InvalidRequest('The requested resource is no longer registered.');
      if (rs.requireMfa && !(user.amr ?? []).includes('mfa')) {
        throw new InvalidRequest('This request needs your second factor. Sign in again with it, then approve.');
      }
      let scopes: string[];
      try {
        scopes = decideScope({ resource: rs, requested: asked, principal: { kind: 'user', permissions }, consent: { scopes: asked } });
      } catch (err) {
        if (!(err instanceof ScopeRefused)) throw err;
        throw new InvalidRequest(`This request cannot be approved (${err.message}). Deny it instead.`);
      }
      grant.addResourceScope(rs.uri, scopes.join(' '));
    }
    await grant.save();
    await answerRequest(deps, ctx, row, grant, { acr: user.acr, amr: user.amr, authTime: user.authTime });
    await deps.audit.record({ type: 'ciba.approve', subject: user.id, clientId: request.clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { approval: approvalId(row.id), grant_id: grant.jti } });
    ctx.redirect('/account/approvals');
  });

  router.post('/:id/deny', async function deny(ctx: Context) {
    const pending = await answering(ctx);
    if (!pending) return;
    const { user, row } = pending;
    await answerRequest(deps, ctx, row, new errors.AccessDenied('the user denied the request'));
    await deps.audit.record({ type: 'ciba.deny', subject: user.id, clientId: row.payload.clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { approval: approvalId(row.id) } });
    ctx.redirect('/account/approvals');
  });

  return router;
}

// Enterprise SSO routes (issue 4). The login page hands a browser over here when its email domain
// belongs to a connection (home-realm discovery) or the authorization request names one
// (`connection=<name>`); we send it to the upstream IdP and take it back on one fixed redirect URI:
//
//   /interaction/:uid ─► 303 upstream /authorize (code, PKCE S256, state, nonce)
//   upstream ─► GET /federation/callback?code&state ─► 303 /interaction/:uid/federation/callback
//   (the interaction cookie is scoped to /interaction/:uid, so the response is checked there)
//   ─► openid-client validates ─► link / JIT ─► interactionResult(login) ─► back to the client
//
// The pending request lives in the Kv under its state (every node sees it) and in a cookie of the
// browser that started it, so a response delivered to another browser, or twice, is refused.
import crypto from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Accounts } from '../accounts/users.ts';
import type { Audit } from '../audit/index.ts';
import type { Kv } from '../store/kv.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import type { Logger } from '../http/log.ts';
import { assertThat, InvalidRequest } from '../http/errors.ts';
import { readForm } from '../http/body.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { renderView } from '../interaction/router.ts';
import type { Connection, Connections } from './connections.ts';
import { createRelyingParty, UpstreamError, type RelyingParty } from './rp.ts';
import { federatedAuthentication, resolveAccount } from './accounts.ts';
import { callbackPath, loggedOutPath } from './paths.ts';

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

export interface FederationDeps {
  provider: Provider;
  config: Config;
  accounts: Accounts;
  audit: Audit;
  kv: Kv;
  box: SecretBox;
  log: Logger;
  connections: Connections;
  /** Shared across provider rebuilds, so discovery stays cached when signing keys rotate. */
  rp?: RelyingParty;
}

interface Pending {
  uid: string;
  connection: string;
  nonce: string;
  codeVerifier: string;
  clientId: string;
  maxAge?: number;
}

export { callbackPath, loggedOutPath };

export const STATE_COOKIE = 'gh_fed_state';
export const SESSION_COOKIE = 'gh_fed';
const stateKey = (state: string) => `fed:state:${state}`;
const usedKey = (state: string) => `fed:used:${state}`;
const errorKey = (uid: string) => `fed:error:${uid}`;
const sessionKey = (id: string) => `fed:session:${id}`;
const logoutKey = (id: string) => `fed:logout:${id}`;
/** An upstream sign-in must come back within ten minutes (and within the interaction's lifetime). */
const PENDING_TTL = 600;

export function createFederation(deps: FederationDeps) {
  const { provider, config, accounts, audit, kv, box, connections } = deps;
  const secure = config.ISSUER.startsWith('https://');
  const redirectUri = `${config.ISSUER}${callbackPath}`;
  const rp = deps.rp ?? createRelyingParty(connections, { redirectUri });
  const router = new Router();
  const signed = (ctx: Context) => Boolean(ctx.app.keys);

  async function auditEvent(ctx: Context, type: string, outcome: 'success' | 'failure', clientId: string | null, subject: string | null, details: Record<string, unknown>) {
    await audit.record({ type, outcome, subject, clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details });
  }

  async function load(ctx: Context, uid: string) {
    const interaction = await provider.interactionDetails(ctx.req, ctx.res);
    assertThat(interaction.uid === uid, new InvalidRequest('This sign-in link does not match the current sign-in. Start again from the application.'));
    const clientId = String(interaction.params.client_id ?? '');
    const client = clientId ? await provider.Client.find(clientId) : undefined;
    assertThat(client, new InvalidRequest('The application for this sign-in is no longer registered.'));
    return { interaction, clientId, clientName: client.clientName ?? client.clientId };
  }

  /** A readable page; with a uid, the page offers to return the error to the application. */
  async function errorPage(ctx: Context, status: number, message: string, opts: { uid?: string; clientName?: string; error?: string } = {}) {
    if (opts.uid) await kv.set(errorKey(opts.uid), JSON.stringify({ error: opts.error ?? 'access_denied', error_description: message }), config.INTERACTION_TTL);
    ctx.status = status;
    ctx.type = 'html';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = renderView('federation-error', {
      title: 'Sign-in was not completed',
      message,
      uid: opts.uid,
      clientName: opts.clientName,
      csrf: issueCsrf(ctx, { secure }),
    });
  }

  /** Send the browser to the connection's IdP. */
  async function beginUpstream(ctx: Context, interaction: Interaction, connection: Connection, loginHint?: string) {
    const clientId = String(interaction.params.client_id ?? '');
    if (!connection.enabled) {
      await auditEvent(ctx, 'federation.login', 'failure', clientId, null, { connection: connection.name, reason: 'connection_disabled' });
      const client = await provider.Client.find(clientId);
      return errorPage(ctx, 403, `Sign-in through ${connection.displayName} is currently disabled. Contact your administrator.`, { uid: interaction.uid, clientName: client?.clientName ?? clientId });
    }
    const maxAge = typeof interaction.params.max_age === 'number' || typeof interaction.params.max_age === 'string' ? Number(interaction.params.max_age) : undefined;
    let start;
    try {
      start = await rp.start(connection, {
        loginHint,
        // prompt=login at Gatehouse means a fresh authentication, which only the upstream can do.
        prompt: String(interaction.params.prompt ?? '').split(' ').includes('login') ? 'login' : undefined,
        maxAge: Number.isFinite(maxAge) ? maxAge : undefined,
      });
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      await auditEvent(ctx, 'federation.error', 'failure', clientId, null, { connection: connection.name, reason: err.reason });
      const client = await provider.Client.find(clientId);
      return errorPage(ctx, 502, err.description, { uid: interaction.uid, clientName: client?.clientName ?? clientId, error: 'temporarily_unavailable' });
    }
    const pending: Pending = { uid: interaction.uid, connection: connection.name, nonce: start.nonce, codeVerifier: start.codeVerifier, clientId, maxAge: Number.isFinite(maxAge) ? maxAge : undefined };
    // The Kv is not encrypted at rest: the PKCE verifier is sealed.
    await kv.set(stateKey(start.state), box.seal(JSON.stringify(pending)), Math.min(PENDING_TTL, config.INTERACTION_TTL));
    ctx.cookies.set(STATE_COOKIE, start.state, { httpOnly: true, sameSite: 'lax', secure, signed: signed(ctx), path: '/', maxAge: PENDING_TTL * 1000, overwrite: true });
    ctx.redirect(start.url.href);
    ctx.status = 303;
  }

  /**
   * Home-realm discovery on the login form. Returns true when the request was answered here: the
   * email's domain belongs to a connection and either no password was typed or password sign-in
   * is off for that domain.
   */
  async function routeLogin(ctx: Context, interaction: Interaction, email: string, password: string): Promise<boolean> {
    const connection = await connections.findByEmail(email);
    if (!connection) return false;
    if (password && connection.passwordLogin) return false;
    await beginUpstream(ctx, interaction, connection, email.trim());
    return true;
  }

  /**
   * The login prompt is about to be shown: `connection=<name>` skips the question, and so does a
   * `login_hint` whose domain allows no password sign-in. Returns true when answered here.
   */
  async function routeAuthorization(ctx: Context, interaction: Interaction): Promise<boolean> {
    const { params } = interaction;
    if (typeof params.connection === 'string' && params.connection) {
      const connection = await connections.find(params.connection);
      if (!connection) {
        await auditEvent(ctx, 'federation.login', 'failure', String(params.client_id ?? ''), null, { reason: 'unknown_connection' });
        await errorPage(ctx, 400, 'The sign-in connection this application asked for does not exist.', { uid: interaction.uid, error: 'invalid_request' });
        return true;
      }
      await beginUpstream(ctx, interaction, connection, typeof params.login_hint === 'string' ? params.login_hint : undefined);
      return true;
    }
    if (typeof params.login_hint === 'string' && params.login_hint.includes('@')) {
      const connection = await connections.findByEmail(params.login_hint);
      if (connection && connection.enabled && !connection.passwordLogin) {
        await beginUpstream(ctx, interaction, connection, params.login_hint);
        return true;
      }
    }
    return false;
  }

  router.post('/interaction/:uid/federation', async function startFromEmail(ctx: Context) {
    // The "Continue with single sign-on" button of the login form.
    ctx.state.html = true;
    ctx.set('Cache-Control', 'no-store');
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction, clientName } = await load(ctx, ctx.params.uid);
    assertThat(interaction.prompt.name === 'login', new InvalidRequest('This sign-in step is already complete.'));
    const email = (form.get('email') ?? '').trim().slice(0, 254);
    if (!(await routeLogin(ctx, interaction, email, ''))) {
      return errorPage(ctx, 400, 'Single sign-on is not set up for this email address. Go back and sign in with your password.', { uid: interaction.uid, clientName, error: 'login_required' });
    }
  });

  router.get(callbackPath, async function receiveUpstreamResponse(ctx: Context) {
    // Only routing happens here: the checks need the interaction cookie, scoped to /interaction/:uid.
    const state = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    const sealed = state ? await kv.get(stateKey(state)) : null;
    if (!sealed) {
      await auditEvent(ctx, 'federation.error', 'failure', null, null, { reason: 'unknown_state', upstream_error: typeof ctx.query.error === 'string' ? ctx.query.error.slice(0, 64) : undefined });
      return errorPage(ctx, 400, 'This sign-in response is not valid, has expired or was already used. Start again from the application.');
    }
    const pending = JSON.parse(box.open(sealed)) as Pending;
    ctx.redirect(`/interaction/${encodeURIComponent(pending.uid)}/federation/callback?${ctx.querystring}`);
  });

  router.get('/interaction/:uid/federation/callback', async function completeUpstreamLogin(ctx: Context) {
    ctx.state.html = true;
    ctx.set('Cache-Control', 'no-store');
    const { interaction, clientId, clientName } = await load(ctx, ctx.params.uid);
    const state = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    const fail = async (status: number, reason: string, message: string, extra: Record<string, unknown> = {}) => {
      await auditEvent(ctx, 'federation.error', 'failure', clientId, (extra.subject as string) ?? null, { reason, ...extra, subject: undefined });
      return errorPage(ctx, status, message, { uid: interaction.uid, clientName });
    };
    // The response must come back to the browser that was sent out (state cookie, RFC 6749 §10.12).
    const cookieState = ctx.cookies.get(STATE_COOKIE, { signed: signed(ctx) });
    if (!state || cookieState !== state) return fail(400, 'state_mismatch', 'This sign-in response does not belong to this browser. Start again from the application.');
    // One use only: the first request to count the state wins; a replayed response is refused.
    if ((await kv.incr(usedKey(state), PENDING_TTL)) !== 1) return fail(400, 'replayed_response', 'This sign-in response was already used. Start again from the application.');
    const sealed = await kv.take(stateKey(state));
    ctx.cookies.set(STATE_COOKIE, null, { path: '/' });
    if (!sealed) return fail(400, 'unknown_state', 'This sign-in response has expired. Start again from the application.');
    const pending = JSON.parse(box.open(sealed)) as Pending;
    if (pending.uid !== interaction.uid) return fail(400, 'state_mismatch', 'This sign-in response belongs to another sign-in. Start again from the application.');
    assertThat(interaction.prompt.name === 'login', new InvalidRequest('This sign-in step is already complete.'));

    const connection = await connections.find(pending.connection);
    if (!connection || !connection.enabled) {
      return fail(403, 'connection_disabled', 'Sign-in through this connection is currently disabled. Contact your administrator.', { connection: pending.connection });
    }
    let identity;
    try {
      identity = await rp.complete(connection, new URL(`${redirectUri}?${ctx.querystring}`), { state, nonce: pending.nonce, codeVerifier: pending.codeVerifier, maxAge: pending.maxAge });
    } catch (err) {
      if (!(err instanceof UpstreamError)) throw err;
      deps.log.info({ connection: connection.name, reason: err.reason }, 'upstream sign-in failed');
      return fail(err.error === 'temporarily_unavailable' ? 502 : 400, err.reason, err.description, { connection: connection.name });
    }

    const resolution = await resolveAccount({ accounts, connections }, connection, identity);
    if ('refused' in resolution) {
      await auditEvent(ctx, resolution.refused === 'link_refused' ? 'federation.link' : 'federation.login', 'failure', clientId, resolution.userId ?? null, {
        connection: connection.name, reason: resolution.refused, upstream_sub: identity.subject,
      });
      return errorPage(ctx, 403, resolution.message, { uid: interaction.uid, clientName });
    }
    const { user, how, roles } = resolution;
    if (how === 'jit') await auditEvent(ctx, 'federation.jit', 'success', clientId, user.id, { connection: connection.name, upstream_sub: identity.subject, roles: roles.roles });
    if (how === 'link') await auditEvent(ctx, 'federation.link', 'success', clientId, user.id, { connection: connection.name, upstream_sub: identity.subject });
    if (roles.added.length || roles.removed.length) {
      await auditEvent(ctx, 'federation.roles', 'success', clientId, user.id, { connection: connection.name, added: roles.added, removed: roles.removed });
    }
    const { amr, acr, upstreamMfa } = federatedAuthentication(connection, identity.claims);
    await auditEvent(ctx, 'login', 'success', clientId, user.id, { method: 'federated', connection: connection.name, how, amr, upstream_mfa: upstreamMfa });
    await rememberUpstreamSession(ctx, connection, identity.idToken);
    const to = await provider.interactionResult(ctx.req, ctx.res, { login: { accountId: user.id, amr, acr, remember: true } }, { mergeWithLastSubmission: false });
    ctx.redirect(to);
  });

  router.post('/interaction/:uid/federation/return', async function returnUpstreamError(ctx: Context) {
    // OIDC Core §3.1.2.6: the client learns of the failure as an authorization error response.
    ctx.state.html = true;
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction } = await load(ctx, ctx.params.uid);
    const raw = await kv.take(errorKey(interaction.uid));
    const stored = raw ? (JSON.parse(raw) as { error: string; error_description: string }) : { error: 'access_denied', error_description: 'The sign-in was not completed.' };
    const to = await provider.interactionResult(ctx.req, ctx.res, stored, { mergeWithLastSubmission: false });
    ctx.redirect(to);
    ctx.status = 303;
  });

  // --- logout (RP-Initiated Logout 1.0 towards the upstream) ---

  /** Remember which connection signed this browser in (and its ID token, sealed) for upstream logout. */
  async function rememberUpstreamSession(ctx: Context, connection: Connection, idToken: string | undefined) {
    const id = crypto.randomBytes(24).toString('base64url');
    await kv.set(sessionKey(id), box.seal(JSON.stringify({ connection: connection.name, idToken })), config.SESSION_TTL);
    ctx.cookies.set(SESSION_COOKIE, id, { httpOnly: true, sameSite: 'lax', secure, signed: signed(ctx), path: '/', maxAge: config.SESSION_TTL * 1000, overwrite: true });
  }

  async function upstreamSessionOf(ctx: Context): Promise<{ connection: Connection; idToken?: string; id: string } | undefined> {
    const id = ctx.cookies.get(SESSION_COOKIE, { signed: signed(ctx) });
    if (!id || !/^[A-Za-z0-9_-]{32}$/.test(id)) return undefined;
    const sealed = await kv.get(sessionKey(id));
    if (!sealed) return undefined;
    const { connection: name, idToken } = JSON.parse(box.open(sealed)) as { connection: string; idToken?: string };
    const connection = await connections.find(name);
    return connection ? { connection, idToken, id } : undefined;
  }

  /** For the logout page: the upstream to offer signing out of, when it supports RP-initiated logout. */
  async function upstreamLogoutOffer(ctx: Context): Promise<{ name: string } | undefined> {
    const session = await upstreamSessionOf(ctx).catch(() => undefined);
    if (!session) return undefined;
    const url = await rp.endSessionUrl(session.connection, {}).catch(() => undefined);
    return url ? { name: session.connection.displayName } : undefined;
  }

  /**
   * In front of oidc-provider's /session/end/confirm: after it ends the Gatehouse session, send the
   * browser through the upstream's end_session_endpoint when the user chose to (`?upstream=1`),
   * and on to where oidc-provider was sending it.
   */
  async function upstreamLogout(ctx: Context, next: Next) {
    if (ctx.path !== '/session/end/confirm' || ctx.method !== 'POST') return next();
    const session = await upstreamSessionOf(ctx).catch(() => undefined);
    await next();
    if (!session) return;
    await kv.del(sessionKey(session.id));
    ctx.cookies.set(SESSION_COOKIE, null, { path: '/' });
    const location = ctx.response.get('location');
    if (ctx.query.upstream !== '1' || !location || ctx.status < 300 || ctx.status >= 400) return;
    const key = crypto.randomBytes(24).toString('base64url');
    const url = await rp.endSessionUrl(session.connection, { idTokenHint: session.idToken, postLogoutRedirectUri: `${config.ISSUER}${loggedOutPath}`, state: key }).catch(() => undefined);
    if (!url) return;
    await kv.set(logoutKey(key), location, PENDING_TTL);
    await audit.record({ type: 'federation.logout', subject: null, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { connection: session.connection.name } });
    ctx.redirect(url.href);
  }

  router.get(loggedOutPath, async function returnFromUpstreamLogout(ctx: Context) {
    const key = typeof ctx.query.state === 'string' ? ctx.query.state : '';
    const location = key ? await kv.take(logoutKey(key)) : null;
    // Only where oidc-provider itself was sending the browser (a registered post-logout URI or our page).
    ctx.redirect(location ?? `${config.ISSUER}/session/end/success`);
  });

  return { router, rp, routeLogin, routeAuthorization, ssoAvailable: connections.anyEnabled, upstreamLogout, upstreamLogoutOffer };
}

export type Federation = ReturnType<typeof createFederation>;

// The account pages a signed-in person uses on their own: /account (who am I, links to the rest),
// /account/password (change it), and the sign-in that gets them there. Gatehouse is its own client
// for this: `gatehouse-account`, a static first-party public client (provider.ts), so "sign in to
// your account" is the same authorization-code flow, login page, MFA and lockout as any app's, and
// the browser session it leaves behind is what every /account page reads.
import crypto from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { Config } from '../config/index.ts';
import { WeakPasswordError, type Accounts, type User } from '../accounts/users.ts';
import type { Audit } from '../audit/index.ts';
import { RateLimited, type RateLimits } from '../http/rate-limit.ts';
import { readForm } from '../http/body.ts';
import { InvalidRequest } from '../http/errors.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { renderView } from '../interaction/router.ts';
import { checkPassword } from '../mfa/lockout.ts';
import type { Mfa } from '../mfa/factors.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import type { RoomSessions } from '../livekit/rooms.ts';
import { ACCOUNT_CLIENT_ID, accountClient } from './client.ts';
import { addSecurityPages } from './security.ts';
import { addDataPages } from './data.ts';
import { addProfilePages } from './profile.ts';
import { ACR_MFA } from '../mfa/policy.ts';
import type { Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';
import type { Clients } from '../oidc/clients.ts';
import type { RevocationService } from '../revocation/store.ts';
import type { Passkeys } from '../passkeys/store.ts';
import type { Kv } from '../store/kv.ts';

const STATE_COOKIE = 'gh_account_state';

/** Why Gatehouse took a participant out of a room (room_sessions.removal_reason), in plain words. */
const REMOVAL_TEXT: Record<string, string> = {
  revoked_user: 'removed: your sign-ins were ended',
  revoked_session: 'removed: that sign-in was ended',
  revoked_grant: "removed: the app's access was removed",
  revocation_unavailable: 'removed: could not be checked at the time',
  not_issued: 'removed: not joined through this server',
};

/** The user of the browser's Gatehouse session, or undefined when it has none. */
export async function sessionAccountId(provider: Provider, ctx: Context): Promise<string | undefined> {
  const session = await provider.Session.get(ctx as never);
  return session?.accountId ?? undefined;
}

/** Only our own account and admin pages are places to come back to after signing in. */
function safeReturnTo(value: unknown): string {
  return typeof value === 'string' && /^\/(account|admin)(\/[A-Za-z0-9/_-]*)?$/.test(value) ? value : '/account';
}

export interface AccountDeps {
  provider: () => Provider;
  config: Config;
  db: Queryable;
  log: Logger;
  clients: Pick<Clients, 'findMetadata'>;
  revocations: RevocationService;
  /** With outgoing mail: an unconfirmed address can ask for a confirmation link (src/account/recovery.ts). */
  mailer?: unknown;
  accounts: Accounts;
  audit: Audit;
  limits: RateLimits;
  mfa: Mfa;
  box: SecretBox;
  rooms: RoomSessions;
  /** Issue 19: the account's passkeys, and the Kv that holds their one-time challenges. */
  passkeys: Passkeys;
  kv: Pick<Kv, 'set' | 'take'>;
}

export function createAccountRouter(deps: AccountDeps): Router {
  const router = new Router({ prefix: '/account' });
  const secure = deps.config.ISSUER.startsWith('https://');

  function page(ctx: Context, view: string, locals: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = renderView(view, locals);
  }

  router.use(async function accountPages(ctx: Context, next: Next) {
    ctx.set('Cache-Control', 'no-store');
    ctx.state.html = true;
    await next();
  });

  router.get('/sign-in', async function startSignIn(ctx: Context) {
    const state = crypto.randomBytes(24).toString('base64url');
    ctx.cookies.set(STATE_COOKIE, `${state}.${safeReturnTo(ctx.query.return_to)}`, { httpOnly: true, sameSite: 'lax', secure, path: '/account', maxAge: 10 * 60_000, overwrite: true });
    const client = accountClient(deps.config);
    // The session cookie is what the account pages need, not the code: it is left to expire unused.
    // PKCE is still sent because every public client must.
    const challenge = crypto.createHash('sha256').update(crypto.randomBytes(32)).digest('base64url');
    const auth = new URL('/auth', deps.config.ISSUER);
    auth.search = new URLSearchParams({
      client_id: client.client_id, response_type: 'code', scope: 'openid', redirect_uri: client.redirect_uris[0],
      state, code_challenge: challenge, code_challenge_method: 'S256',
      // Step-up for pages that need a second factor (the admin console): only the missing factor is asked for.
      ...(ctx.query.mfa === '1' ? { acr_values: ACR_MFA } : {}),
    }).toString();
    ctx.redirect(auth.href);
  });

  router.get('/callback', async function finishSignIn(ctx: Context) {
    const [state, returnTo] = (ctx.cookies.get(STATE_COOKIE) ?? '').split('.');
    ctx.cookies.set(STATE_COOKIE, null, { path: '/account' });
    if (!state || ctx.query.state !== state) throw new InvalidRequest('This sign-in link is stale or was not started here. Open your account page again.');
    if (typeof ctx.query.error === 'string') {
      return page(ctx, 'error', { title: 'Not signed in', error: ctx.query.error, description: String(ctx.query.error_description ?? 'Sign-in did not complete.') }, 400);
    }
    ctx.status = 303;
    ctx.redirect(safeReturnTo(returnTo));
  });

  /**
   * The current password, asked again before a change: a guess like any other, under the sign-in
   * page's lockout and counted before it is checked. Null when it is right; otherwise the status
   * and, while locked, the message (429 + Retry-After). An unreachable lockout store is a 503 page.
   */
  async function refusePassword(ctx: Context, user: User, password: string): Promise<{ status: number; error?: string } | null> {
    try {
      const { result } = await checkPassword(deps, user.email, password, { ip: ctx.ip, subject: user.id, requestId: ctx.state.requestId });
      return 'error' in result ? { status: 400 } : null;
    } catch (err) {
      if (!(err instanceof RateLimited)) throw err;
      ctx.set('Retry-After', String(err.retryAfter));
      return { status: 429, error: `Too many wrong passwords. Try again in ${Math.ceil(err.retryAfter / 60)} minute(s).` };
    }
  }

  /** The signed-in user, or a redirect to sign in (returning here afterwards). */
  async function signedIn(ctx: Context) {
    const id = await sessionAccountId(deps.provider(), ctx);
    const user = id ? await deps.accounts.findUserById(id) : undefined;
    if (user?.active) return user;
    ctx.redirect(`/account/sign-in?return_to=${encodeURIComponent(ctx.path)}`);
    return undefined;
  }

  async function showAccount(ctx: Context, nameError?: string, status = 200) {
    const user = await signedIn(ctx);
    if (!user) return;
    const { roles } = await deps.accounts.rolesAndPermissions(user.id);
    page(ctx, 'account', {
      title: 'Your account', user, roles, hasPassword: await deps.accounts.hasPassword(user.id), signOut: `/session/end?client_id=${ACCOUNT_CLIENT_ID}`,
      canVerify: Boolean(deps.mailer) && !user.emailVerified, csrf: issueCsrf(ctx, { secure }), nameError,
    }, status);
  }
  router.get('/', (ctx: Context) => showAccount(ctx));

  router.get('/password', async function showPasswordForm(ctx: Context) {
    const user = await signedIn(ctx);
    if (!user) return;
    page(ctx, 'account-password', { title: 'Change password', csrf: issueCsrf(ctx, { secure }), hasPassword: await deps.accounts.hasPassword(user.id) });
  });

  router.post('/password', async function changePassword(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const user = await signedIn(ctx);
    if (!user) return;
    const again = (error: string, status: number) => page(ctx, 'account-password', { title: 'Change password', csrf: issueCsrf(ctx, { secure }), hasPassword: true, error }, status);
    const next = form.get('new_password') ?? '';
    if (next !== (form.get('confirm_password') ?? '')) return again('The new passwords do not match.', 400);
    const refused = await refusePassword(ctx, user, form.get('current_password') ?? '');
    if (refused) {
      if (refused.status === 400) await deps.audit.record({ type: 'account.password_change', outcome: 'failure', actor: user.id, subject: user.id, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { reason: 'wrong_current_password' } });
      return again(refused.error ?? 'The current password is not right.', refused.status);
    }
    try {
      // Ends every session and revokes every token of the user (src/revocation/accounts.ts), this browser's too.
      await deps.accounts.setPassword(user.id, next);
    } catch (err) {
      if (err instanceof WeakPasswordError) return again(err.message, 400);
      throw err;
    }
    await deps.audit.record({ type: 'account.password_change', outcome: 'success', actor: user.id, subject: user.id, ip: ctx.ip, requestId: ctx.state.requestId ?? null });
    page(ctx, 'account-password-changed', { title: 'Password changed' });
  });

  router.get('/rooms', async function showRoomSessions(ctx: Context) {
    const user = await signedIn(ctx);
    if (!user) return;
    page(ctx, 'account-rooms', { title: 'Voice rooms you joined', sessions: await deps.rooms.listForUser(user.id, { limit: 100 }), removalText: REMOVAL_TEXT });
  });

  addSecurityPages(router, deps, { page, signedIn, refusePassword });
  addProfilePages(router, deps, { signedIn, showAccount });
  addDataPages(router, deps, { page, signedIn, refusePassword });

  return router;
}

// Self-service password reset and email verification by mail (needs SMTP_URL):
//   GET/POST /password/forgot          ask for a reset link (same answer whether or not the address has an account)
//   GET/POST /password/reset?token=    choose a new password with the link's single-use token
//   GET      /account/verify-email?token=   confirm an address; POST /account/verify-email sends a new link
//
// A link's token is 32 random bytes; only its SHA-256 is stored, with the user, the address it was
// sent to, an expiry and a used-at mark, and it is consumed in one conditional UPDATE (single use even
// under racing posts). Asking again replaces the previous link. A reset sets the password through the
// accounts module, so it ends every session and token of the user and clears a login lockout.
// Only an account that already has a password can reset one: an SSO-only account must not gain a
// password (and with it a way around its IdP) from a mailbox.
import crypto from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type { Config } from '../config/index.ts';
import type { Accounts, User } from '../accounts/users.ts';
import { passwordPolicyViolation } from '../accounts/passwords.ts';
import type { Audit } from '../audit/index.ts';
import { readForm } from '../http/body.ts';
import { hashKey, type RateLimits } from '../http/rate-limit.ts';
import { emailKey, sameAddress } from '../accounts/email.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { renderView } from '../interaction/router.ts';
import type { Db } from '../store/db.ts';
import { createPasskeys } from '../passkeys/store.ts';
import type { Mailer } from './mail.ts';

export type AccountTokenPurpose = 'password_reset' | 'verify_email';

const hashToken = (raw: string) => crypto.createHash('sha256').update(raw).digest('base64url');
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

/** Single-use, expiring tokens for links sent by mail (migrations/009_account_tokens.sql). */
export function createAccountTokens(db: Pick<Db, 'query' | 'transaction'>) {
  return {
    /**
     * A new link token for the user; earlier unused ones for the same purpose stop working. Issues
     * for one user are serialised on the user's row, so of any number of parallel requests ("forgot
     * password" twice at once) exactly the last link stays live.
     */
    async issue(userId: string, purpose: AccountTokenPurpose, email: string, ttlSeconds: number): Promise<string> {
      const raw = crypto.randomBytes(32).toString('base64url');
      await db.transaction(async (tx) => {
        await tx.query('SELECT 1 FROM users WHERE id = $1 FOR UPDATE', [userId]);
        // A new statement, so it sees a link a racer committed while this one waited for the lock.
        await tx.query(`DELETE FROM account_tokens WHERE (user_id = $1 AND purpose = $2) OR expires_at < now() - interval '1 day'`, [userId, purpose]);
        await tx.query(
          `INSERT INTO account_tokens (token_hash, user_id, purpose, email, expires_at) VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5::int))`,
          [hashToken(raw), userId, purpose, email, ttlSeconds],
        );
      });
      return raw;
    },
    /** Whether the token is live (for showing a form), without using it. */
    async peek(raw: string, purpose: AccountTokenPurpose): Promise<{ userId: string; email: string } | undefined> {
      if (!TOKEN_SHAPE.test(raw)) return undefined;
      const { rows } = await db.query<{ user_id: string; email: string }>(
        'SELECT user_id, email FROM account_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()',
        [hashToken(raw), purpose],
      );
      return rows[0] ? { userId: rows[0].user_id, email: rows[0].email } : undefined;
    },
    /** Use the token: only the first of any number of racing calls gets the user. */
    async consume(raw: string, purpose: AccountTokenPurpose): Promise<{ userId: string; email: string } | undefined> {
      if (!TOKEN_SHAPE.test(raw)) return undefined;
      const { rows } = await db.query<{ user_id: string; email: string }>(
        `UPDATE account_tokens SET used_at = now() WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id, email`,
        [hashToken(raw), purpose],
      );
      return rows[0] ? { userId: rows[0].user_id, email: rows[0].email } : undefined;
    },
  };
}
export type AccountTokens = ReturnType<typeof createAccountTokens>;

export interface RecoveryDeps {
  config: Config;
  db: Db;
  accounts: Accounts;
  audit: Audit;
  limits: RateLimits;
  mailer: Mailer;
  /** The browser's signed-in user, for /account/verify-email (POST). */
  signedInUser(ctx: Context): Promise<User | undefined>;
}

/** A verification link for the user's current address (registration, or asked for on /account). */
export async function sendVerificationMail(deps: Pick<RecoveryDeps, 'config' | 'mailer'> & { tokens: AccountTokens }, user: User) {
  const raw = await deps.tokens.issue(user.id, 'verify_email', user.email, deps.config.EMAIL_VERIFICATION_TTL);
  await deps.mailer.send({
    to: user.email,
    subject: 'Confirm your email address',
    text: [
      `Hello${user.name ? ` ${user.name}` : ''},`,
      '',
      'Confirm that this address belongs to your account by opening this link:',
      '',
      `${deps.config.ISSUER}/account/verify-email?token=${raw}`,
      '',
      `The link works for ${Math.round(deps.config.EMAIL_VERIFICATION_TTL / 3600)} hours. If you did not create an account, ignore this message.`,
    ].join('\n'),
  });
}

export function createRecoveryRouter(deps: RecoveryDeps): Router {
  const { config, accounts, audit, limits, mailer } = deps;
  const tokens = createAccountTokens(deps.db);
  const secure = config.ISSUER.startsWith('https://');
  const router = new Router();

  function page(ctx: Context, view: string, locals: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = renderView(view, locals);
  }
  const record = (ctx: Context, type: string, outcome: 'success' | 'failure', subject: string | null, details: Record<string, unknown> = {}) =>
    audit.record({ type, outcome, actor: subject, subject, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details });

  router.use(async function recoveryPages(ctx: Context, next: Next) {
    ctx.set('Cache-Control', 'no-store');
    // The token is in the URL: never hand it to another site as a Referer.
    ctx.set('Referrer-Policy', 'no-referrer');
    ctx.state.html = true;
    await next();
  });

  const forgotLocals = (ctx: Context, extra: Record<string, unknown> = {}) => ({ title: 'Reset your password', csrf: issueCsrf(ctx, { secure }), email: '', error: undefined, ...extra });

  router.get('/password/forgot', async function showForgot(ctx: Context) {
    page(ctx, 'password-forgot', forgotLocals(ctx));
  });

  router.post('/password/forgot', async function requestReset(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const email = (form.get('email') ?? '').trim();
    if (!email.includes('@') || email.length > 254) return page(ctx, 'password-forgot', forgotLocals(ctx, { error: 'Enter the email address of your account.' }), 400);
    await limits.consume('resetIp', ctx.ip, { ip: ctx.ip, requestId: ctx.state.requestId });
    // Counted per address whether or not it has an account, so the answer tells nothing.
    await limits.consume('resetAccount', hashKey(emailKey(email)), { ip: ctx.ip, requestId: ctx.state.requestId });
    const user = await accounts.findUserByEmail(email);
    if (user?.active && (await accounts.hasPassword(user.id))) {
      const raw = await tokens.issue(user.id, 'password_reset', user.email, config.PASSWORD_RESET_TTL);
      await mailer.send({
        to: user.email,
        subject: 'Reset your password',
        text: [
          'Someone (hopefully you) asked to reset the password of your account.',
          '',
          'Choose a new password here:',
          '',
          `${config.ISSUER}/password/reset?token=${raw}`,
          '',
          `The link works once, for ${Math.round(config.PASSWORD_RESET_TTL / 60)} minutes. If you did not ask, ignore this message: your password stays as it is.`,
        ].join('\n'),
      });
      await record(ctx, 'account.password_reset_request', 'success', user.id);
    } else {
      await record(ctx, 'account.password_reset_request', 'failure', user?.id ?? null, { reason: user ? (user.active ? 'no_password' : 'inactive') : 'unknown_email' });
    }
    page(ctx, 'account-message', {
      title: 'Check your email',
      message: `If ${email} belongs to an account with a password, a link to reset it is on its way. It works for ${Math.round(config.PASSWORD_RESET_TTL / 60)} minutes.`,
    });
  });

  const expired = (ctx: Context) => page(ctx, 'account-message', {
    title: 'This link does not work',
    message: 'The link has expired or was already used. Ask for a new one.',
    link: { href: '/password/forgot', text: 'Reset your password' },
  }, 400);
  const resetLocals = (ctx: Context, token: string, extra: Record<string, unknown> = {}) => ({ title: 'Choose a new password', csrf: issueCsrf(ctx, { secure }), token, error: undefined, ...extra });

  router.get('/password/reset', async function showReset(ctx: Context) {
    const token = String(ctx.query.token ?? '');
    if (!(await tokens.peek(token, 'password_reset'))) return expired(ctx);
    page(ctx, 'password-reset', resetLocals(ctx, token));
  });

  router.post('/password/reset', async function resetPassword(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const token = form.get('token') ?? '';
    const next = form.get('new_password') ?? '';
    const pending = await tokens.peek(token, 'password_reset');
    if (!pending) return expired(ctx);
    if (next !== (form.get('confirm_password') ?? '')) return page(ctx, 'password-reset', resetLocals(ctx, token, { error: 'The new passwords do not match.' }), 400);
    // Checked before the link is used up, so a too-short password can simply be tried again.
    const problem = passwordPolicyViolation(next, { email: pending.email });
    if (problem) return page(ctx, 'password-reset', resetLocals(ctx, token, { error: problem }), 400);
    const used = await tokens.consume(token, 'password_reset');
    if (!used) return expired(ctx);
    const user = await accounts.findUserById(used.userId);
    // The address may have changed, or the account been disabled, since the link was sent.
    if (!user?.active || !sameAddress(user.email, used.email)) {
      await record(ctx, 'account.password_reset', 'failure', used.userId, { reason: user ? 'account_changed' : 'unknown_user' });
      return expired(ctx);
    }
    // Ends every session and token of the user, and clears a login lockout (withLockoutReset).
    await accounts.setPassword(user.id, next);
    // Whoever could read the mailbox could also confirm the address: the link proves it.
    await accounts.markEmailVerified(user.id, used.email);
    // Passkeys stay (issue 19, docs/passkeys.md): removing them silently would take away the
    // strongest sign-in, keeping them silently would hide one an attacker may have added. So the
    // page says how many still sign in, and where to remove them.
    const passkeys = (await createPasskeys(deps.db).list(user.id)).length;
    await record(ctx, 'account.password_reset', 'success', user.id, { webauthn_kept: passkeys });
    page(ctx, 'account-message', {
      title: 'Password changed',
      message: 'Your new password works now. You were signed out everywhere; sign in again with it.' + (passkeys
        ? ` Your ${passkeys === 1 ? 'passkey still signs' : `${passkeys} passkeys still sign`} in to this account: after signing in, remove any you have lost or do not recognise under "Two-step sign-in and passkeys".`
        : ''),
      link: { href: passkeys ? '/account/security' : '/account', text: 'Sign in' },
    });
  });

  router.get('/account/verify-email', async function verifyEmail(ctx: Context) {
    const used = await tokens.consume(String(ctx.query.token ?? ''), 'verify_email');
    const user = used ? await accounts.findUserById(used.userId) : undefined;
    if (!used || !user || !sameAddress(user.email, used.email)) {
      return page(ctx, 'account-message', { title: 'This link does not work', message: 'The link has expired, was already used, or is for an address the account no longer has. Ask for a new one on your account page.', link: { href: '/account', text: 'Your account' } }, 400);
    }
    await accounts.markEmailVerified(user.id, used.email);
    await record(ctx, 'account.email_verified', 'success', user.id);
    page(ctx, 'account-message', { title: 'Email address confirmed', message: `${user.email} is confirmed.`, link: { href: '/account', text: 'Your account' } });
  });

  router.post('/account/verify-email', async function resendVerification(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const user = await deps.signedInUser(ctx);
    if (!user) {
      ctx.status = 303;
      return ctx.redirect('/account/sign-in?return_to=%2Faccount');
    }
    if (!user.emailVerified) {
      await limits.consume('resetAccount', hashKey(`verify:${user.id}`), { ip: ctx.ip, subject: user.id, requestId: ctx.state.requestId });
      await sendVerificationMail({ config, mailer, tokens }, user);
      await record(ctx, 'account.email_verification_sent', 'success', user.id);
    }
    page(ctx, 'account-message', { title: 'Check your email', message: `A link to confirm ${user.email} is on its way.`, link: { href: '/account', text: 'Your account' } });
  });

  return router;
}

// /account/security: a signed-in user manages their own second factors (issue 7): add named
// authenticator apps, rename or remove them, and regenerate recovery codes.
//
// Changing factors is what an attacker holding a stolen session would do first, so removing an
// authenticator and regenerating recovery codes ask for a current code (TOTP or recovery code),
// counted by the same MFA lockout as the sign-in challenge. The last authenticator cannot be removed
// while policy (MFA_REQUIRED, the user's role) requires a second factor.
//
// An enrolment in progress carries its new seed in the form, sealed with the data-encryption key
// (AES-GCM: the browser can neither read nor alter it) together with the user id and an expiry, so
// no server-side state is needed between showing the QR code and confirming the first code.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { User } from '../accounts/users.ts';
import { readForm } from '../http/body.ts';
import { NotFound } from '../http/errors.ts';
import { RateLimited } from '../http/rate-limit.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { normalizeTotp, RECOVERY_CODE_COUNT } from '../mfa/factors.ts';
import { mfaRequirement } from '../mfa/policy.ts';
import type { AccountDeps } from './router.ts';
import { createCeremonies } from '../passkeys/ceremonies.ts';
import { addPasskeyPages } from '../passkeys/account.ts';

export type SecurityPageDeps = Pick<AccountDeps, 'config' | 'accounts' | 'audit' | 'limits' | 'mfa' | 'box' | 'passkeys' | 'kv'>;

/** What the account router lends: its renderer and its signed-in check. */
export interface AccountKit {
  page(ctx: Context, view: string, locals: Record<string, unknown>, status?: number): void;
  signedIn(ctx: Context): Promise<User | undefined>;
  /** The current password asked again before a change (src/account/router.ts): null when right. */
  refusePassword(ctx: Context, user: User, password: string): Promise<{ status: number; error?: string } | null>;
}

const ENROLMENT_TTL_MS = 15 * 60_000;
const INVALID_CODE = 'That code is not valid. Enter a current code from your authenticator app, or an unused recovery code.';

export function addSecurityPages(router: Router, deps: SecurityPageDeps, kit: AccountKit) {
  const { config, accounts, audit, limits, mfa, box } = deps;
  const secure = config.ISSUER.startsWith('https://');
  const ceremonies = createCeremonies({ config, kv: deps.kv, passkeys: deps.passkeys });

  const record = (ctx: Context, user: User, type: string, outcome: 'success' | 'failure', details: Record<string, unknown> = {}) =>
    audit.record({ type, outcome, actor: user.id, subject: user.id, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { via: 'account', ...details } });

  async function overview(ctx: Context, user: User, extra: Record<string, unknown> = {}, status = 200) {
    const factors = await mfa.listFactors(user.id);
    const required = (await mfaRequirement({ config, accounts }, { accountId: user.id })) !== null;
    kit.page(ctx, 'account-security', {
      title: 'Two-step sign-in and passkeys',
      factors,
      // Issue 19: passkeys, where the issuer has a host name (browsers refuse IP addresses as RP IDs).
      passkeysAvailable: ceremonies.available,
      passkeys: ceremonies.available ? await deps.passkeys.list(user.id) : [],
      askPassword: await accounts.hasPassword(user.id),
      required,
      remaining: factors.length > 0 ? await mfa.remainingRecoveryCodes(user.id) : 0,
      total: RECOVERY_CODE_COUNT,
      csrf: issueCsrf(ctx, { secure }),
      error: undefined,
      ...extra,
    }, status);
  }

  /** A sealed enrolment: the new seed, bound to this user, valid for a while. */
  const sealEnrolment = (userId: string, secret: string) => box.seal(JSON.stringify({ u: userId, s: secret, e: Date.now() + ENROLMENT_TTL_MS }));
  function openEnrolment(userId: string, sealed: string | undefined): string | undefined {
    try {
      const e = JSON.parse(box.open(sealed ?? '')) as { u: string; s: string; e: number };
      return e.u === userId && e.e > Date.now() ? e.s : undefined;
    } catch {
      return undefined;
    }
  }

  async function enrolPage(ctx: Context, user: User, secret: string, sealed: string, extra: Record<string, unknown> = {}, status = 200) {
    const { uri, qr } = await mfa.enrolmentQr(secret, user.email);
    kit.page(ctx, 'mfa-enrol', {
      title: 'Add an authenticator app',
      action: '/account/security/totp',
      cancelHref: '/account/security',
      enrolment: sealed,
      csrf: issueCsrf(ctx, { secure }),
      qr,
      uri,
      secret: secret.match(/.{1,4}/g)!.join(' '),
      required: false,
      name: 'Authenticator app',
      error: undefined,
      ...extra,
    }, status);
  }

  function showCodes(ctx: Context, codes: string[], enrolled: boolean) {
    kit.page(ctx, 'mfa-recovery-codes', { title: 'Save your recovery codes', codes, enrolled, continueHref: '/account/security' });
  }

  /**
   * A current second factor, for the changes a stolen session must not make. 429 while the account's
   * MFA is locked; a wrong code counts toward that lock.
   */
  async function confirmWithCode(ctx: Context, user: User, input: string | null | undefined, action: string): Promise<boolean> {
    let guess;
    try {
      // Counted before the code is checked (issue 20): parallel guesses cannot outrun the lock.
      guess = await limits.attempt('mfaAccount', user.id, { ip: ctx.ip, subject: user.id, requestId: ctx.state.requestId });
    } catch (err) {
      if (err instanceof RateLimited) await record(ctx, user, action, 'failure', { reason: 'locked' });
      throw err;
    }
    const code = (input ?? '').trim();
    const ok = normalizeTotp(code) ? await mfa.verifyTotp(user.id, code) : code ? await mfa.useRecoveryCode(user.id, code) : null;
    if (ok) {
      await limits.clear('mfaAccount', user.id);
      return true;
    }
    await record(ctx, user, action, 'failure', { reason: 'invalid_code', guesses: guess.count });
    return false;
  }

  async function ownFactor(user: User, id: string) {
    const factor = (await mfa.listFactors(user.id)).find((f) => f.id === id);
    if (!factor) throw new NotFound('No such authenticator.');
    return factor;
  }

  /** A posted form of the signed-in user: CSRF checked first (a forged post learns nothing). */
  async function signedInForm(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    return { form, user: await kit.signedIn(ctx) };
  }

  addPasskeyPages(router, { accounts, audit, passkeys: deps.passkeys, ceremonies }, { signedIn: kit.signedIn, refusePassword: kit.refusePassword, overview });

  router.get('/security', async function showSecurity(ctx: Context) {
    const user = await kit.signedIn(ctx);
    if (user) await overview(ctx, user);
  });

  router.get('/security/totp', async function startEnrolment(ctx: Context) {
    const user = await kit.signedIn(ctx);
    if (!user) return;
    const secret = mfa.newSecret();
    await enrolPage(ctx, user, secret, sealEnrolment(user.id, secret));
  });

  router.post('/security/totp', async function confirmEnrolment(ctx: Context) {
    const { form, user } = await signedInForm(ctx);
    if (!user) return;
    const sealed = form.get('enrolment') ?? '';
    const secret = openEnrolment(user.id, sealed);
    if (!secret) return overview(ctx, user, { error: 'That set-up expired. Start again with "Add an authenticator app".' }, 400);
    const guess = await limits.attempt('mfaAccount', user.id, { ip: ctx.ip, subject: user.id, requestId: ctx.state.requestId });
    const name = (form.get('name') ?? '').trim();
    const hadFactor = await mfa.hasFactor(user.id);
    const factor = await mfa.confirmFactor(user.id, { name, secret, code: form.get('code') ?? '' });
    if (!factor) {
      await record(ctx, user, 'mfa.enrol', 'failure', { reason: 'invalid_code' });
      return enrolPage(ctx, user, secret, sealed, { error: 'That code is not valid. Check your authenticator app and try again.', name: name.slice(0, 64) }, 401);
    }
    await guess.passed();
    await record(ctx, user, 'mfa.enrol', 'success', { factor: factor.id, type: 'totp' });
    // The first authenticator comes with recovery codes; later ones keep the set the user has.
    if (!hadFactor) return showCodes(ctx, await mfa.regenerateRecoveryCodes(user.id), true);
    ctx.status = 303;
    ctx.redirect('/account/security');
  });

  router.post('/security/totp/:id/rename', async function renameFactor(ctx: Context) {
    const { form, user } = await signedInForm(ctx);
    if (!user) return;
    const factor = await ownFactor(user, String(ctx.params.id));
    if (!(await mfa.renameFactor(user.id, factor.id, form.get('name') ?? ''))) return overview(ctx, user, { error: 'Give the authenticator a name.' }, 400);
    await record(ctx, user, 'mfa.rename', 'success', { factor: factor.id });
    ctx.status = 303;
    ctx.redirect('/account/security');
  });

  router.post('/security/totp/:id/remove', async function removeFactor(ctx: Context) {
    const { form, user } = await signedInForm(ctx);
    if (!user) return;
    const factor = await ownFactor(user, String(ctx.params.id));
    const factors = await mfa.listFactors(user.id);
    if (factors.length === 1 && (await mfaRequirement({ config, accounts }, { accountId: user.id })) !== null) {
      return overview(ctx, user, { error: 'Your account must keep two-step sign-in. Add another authenticator before removing this one.' }, 400);
    }
    if (!(await confirmWithCode(ctx, user, form.get('code'), 'mfa.remove'))) return overview(ctx, user, { error: INVALID_CODE }, 401);
    await mfa.deleteFactor(user.id, factor.id);
    // Without an authenticator there is no second step, and recovery codes would recover nothing.
    if (factors.length === 1) await mfa.deleteRecoveryCodes(user.id);
    await record(ctx, user, 'mfa.remove', 'success', { factor: factor.id, last: factors.length === 1 });
    ctx.status = 303;
    ctx.redirect('/account/security');
  });

  router.post('/security/recovery-codes', async function regenerateRecoveryCodes(ctx: Context) {
    const { form, user } = await signedInForm(ctx);
    if (!user) return;
    if (!(await mfa.hasFactor(user.id))) return overview(ctx, user, { error: 'Add an authenticator app first.' }, 400);
    if (!(await confirmWithCode(ctx, user, form.get('code'), 'mfa.recovery_codes'))) return overview(ctx, user, { error: INVALID_CODE }, 401);
    const codes = await mfa.regenerateRecoveryCodes(user.id);
    await record(ctx, user, 'mfa.recovery_codes', 'success', { regenerated: true });
    showCodes(ctx, codes, false);
  });
}

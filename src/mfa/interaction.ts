// The second-factor steps of a sign-in (issue 7), mounted on the interaction router:
//
//   password ok ─┬─ no factor, none required ────────────────────────────────► login (pwd)
//                ├─ has a factor ─► GET /mfa (challenge) ─► POST /mfa ───────► login (pwd otp mfa)
//                └─ required, none ─► GET /mfa (enrol: QR) ─► POST /mfa/enrol ─► recovery codes
//                                                            ─► POST /mfa/continue ─► login
//   step-up (a logged-in session, acr_values / client / role asks for MFA) ─► GET /mfa, no password
//   a passkey as the second factor (issue 19): the challenge page's "Use a passkey" ─►
//     POST /mfa/passkey/options ─► navigator.credentials.get() ─► POST /mfa/passkey ─► login (pwd hwk mfa)
//
// Between steps the state lives in the Kv under the interaction uid (shared by every process in
// Redis mode), and only this browser can reach it: the uid must match its interaction cookie.
import crypto from 'node:crypto';
import type Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { InteractionResults } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Accounts, User } from '../accounts/users.ts';
import type { Audit } from '../audit/index.ts';
import type { Kv } from '../store/kv.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import { assertThat, InvalidRequest, SignInUnavailable } from '../http/errors.ts';
import { readForm } from '../http/body.ts';
import { RateLimited, type RateLimits } from '../http/rate-limit.ts';
import { assertCsrf, CSRF_FIELD } from '../interaction/csrf.ts';
import type { Mfa } from './factors.ts';
import { accountLockKey } from './lockout.ts';
import { ACR_MFA, ACR_PASSWORD, AMR_FEDERATED, AMR_MFA, AMR_PASSWORD, mfaRequirement, passkeyAmr, STEP_UP_REASON, type MfaPolicyDeps, type MfaReason } from './policy.ts';
import type { Passkeys } from '../passkeys/store.ts';
import { PasskeyRefused, type Ceremonies } from '../passkeys/ceremonies.ts';
import { answerWithLocation, readCeremonyBody, refusalError } from '../passkeys/http.ts';

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

export interface MfaInteractionDeps {
  provider: Provider;
  config: Config;
  accounts: Accounts;
  audit: Audit;
  kv: Kv;
  box: SecretBox;
  mfa: Mfa;
  limits: RateLimits;
  resources?: MfaPolicyDeps['resources'];
  /** Issue 19: a registered passkey serves as the second factor. */
  passkeys?: { store: Pick<Passkeys, 'hasPasskey'>; ceremonies: Ceremonies };
}

/** What the interaction router lends: its page loader, renderer and finisher. */
export interface InteractionKit {
  load(ctx: Context): Promise<{ interaction: Interaction; client: { metadata(): Record<string, unknown> }; clientName: string }>;
  page(ctx: Context, view: string, locals: Record<string, unknown>, status?: number): void;
  finish(ctx: Context, result: InteractionResults, merge: boolean): Promise<void>;
  csrf(ctx: Context): string;
}

interface Pending {
  accountId: string;
  email: string;
  stage: 'challenge' | 'enrol' | 'done';
  reason: MfaReason | 'enrolled' | 'step_up';
  /** RFC 8176 value of the factor already proven: `pwd`, or `fed` for a step-up after single sign-on. */
  firstFactor?: string;
  /** Enrolment in progress: the new seed, sealed (the Kv is not encrypted at rest). */
  secret?: string;
}

export const DEVICE_COOKIE = 'gh_device';
const DEVICE_MAX_AGE_MS = 400 * 24 * 3600 * 1000; // RFC 6265bis caps cookie lifetimes at 400 days
const pendingKey = (uid: string) => `mfa:pending:${uid}`;

const INVALID_CODE = 'That code is not valid. Check your authenticator app and try again.';

/** The browser's device id: a random value in a long-lived signed cookie, set at the first sign-in. */
export function deviceId(ctx: Context, secure: boolean): string {
  const existing = ctx.cookies.get(DEVICE_COOKIE, { signed: Boolean(ctx.app.keys) });
  if (existing && /^[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
  const id = crypto.randomBytes(32).toString('base64url');
  ctx.cookies.set(DEVICE_COOKIE, id, { httpOnly: true, sameSite: 'lax', secure, signed: Boolean(ctx.app.keys), maxAge: DEVICE_MAX_AGE_MS, path: '/', overwrite: true });
  return id;
}

export function createMfaInteraction(router: Router, deps: MfaInteractionDeps, kit: InteractionKit) {
  const { provider, config, accounts, audit, kv, box, mfa, limits } = deps;
  const secure = config.ISSUER.startsWith('https://');
  const ttl = config.INTERACTION_TTL;
  const hasPasskey = async (userId: string) => Boolean(deps.passkeys?.ceremonies.available && await deps.passkeys.store.hasPasskey(userId));

  // The step's state is in Redis in production: while it is unreachable the step cannot go on
  // (503 with a page saying so), like the lockout it is guarded by.
  const unavailable = () => {
    throw new SignInUnavailable();
  };
  async function savePending(uid: string, p: Pending) {
    await kv.set(pendingKey(uid), JSON.stringify(p), ttl).catch(unavailable);
  }
  async function loadPending(uid: string): Promise<Pending | undefined> {
    const raw = await kv.get(pendingKey(uid)).catch(unavailable);
    return raw ? (JSON.parse(raw) as Pending) : undefined;
  }

  async function auditMfa(ctx: Context, interaction: Interaction, type: string, outcome: 'success' | 'failure', subject: string, details: Record<string, unknown>) {
    await audit.record({ type, outcome, subject, clientId: String(interaction.params.client_id ?? ''), ip: ctx.ip, requestId: ctx.state.requestId ?? null, details });
  }

  /** Called by the login form once the password is right: finish, or go on to the second factor. */
  async function afterPassword(ctx: Context, interaction: Interaction, client: { metadata(): Record<string, unknown> }, user: User) {
    const reason = await mfaRequirement({ config, accounts, resources: deps.resources }, {
      accountId: user.id,
      clientRequiresMfa: client.metadata().require_mfa,
      acrValues: interaction.params.acr_values,
      resource: interaction.params.resource,
    });
    // A user who enrolled is always asked: an optional factor that is never checked protects nothing.
    // A passkey is not such an enrolment: it is another way to sign in (docs/passkeys.md), and the
    // second factor only where one is required.
    const enrolled = await mfa.hasFactor(user.id);
    if (!enrolled && !reason) {
      await completeLogin(ctx, user.id, user.email, { login: { accountId: user.id, amr: AMR_PASSWORD, acr: ACR_PASSWORD, remember: true } });
      return;
    }
    const challenge = enrolled || await hasPasskey(user.id);
    await savePending(interaction.uid, { accountId: user.id, email: user.email, stage: challenge ? 'challenge' : 'enrol', reason: enrolled ? 'enrolled' : reason! });
    ctx.redirect(`/interaction/${interaction.uid}/mfa`);
    ctx.status = 303; // a POST answered with 303 is followed with GET
  }

  /**
   * The session is signed in but lacks the second factor this request needs (our login-prompt check
   * said so): ask only for the missing factor. Returns false when a full sign-in is needed instead.
   */
  async function startStepUp(ctx: Context, interaction: Interaction): Promise<boolean> {
    const accountId = interaction.session?.accountId;
    const reasons = interaction.prompt.reasons ?? [];
    if (!accountId || !reasons.includes(STEP_UP_REASON) || reasons.some((r) => r !== STEP_UP_REASON)) return false;
    const user = await accounts.findUserById(accountId);
    if (!user || !user.active) return false;
    const enrolled = await mfa.hasFactor(user.id) || await hasPasskey(user.id);
    // After single sign-on the first factor was the upstream IdP's, not a Gatehouse password.
    const firstFactor = interaction.session?.amr?.includes(AMR_FEDERATED) ? AMR_FEDERATED : 'pwd';
    await savePending(interaction.uid, { accountId, email: user.email, stage: enrolled ? 'challenge' : 'enrol', reason: 'step_up', firstFactor });
    ctx.redirect(`/interaction/${interaction.uid}/mfa`);
    return true;
  }

  /** Remember this device for the user, clear the account's failure count, finish the interaction. */
  async function completeLogin(ctx: Context, accountId: string, email: string, result: InteractionResults, opts: { secondFactor?: boolean } = {}) {
    if (opts.secondFactor) {
      // The pending step is spent in one step (Kv.take): of parallel requests finishing it (two
      // different valid codes, a double-clicked "continue"), exactly one goes on.
      assertThat(await kv.take(pendingKey(String(ctx.params.uid))).catch(unavailable), new InvalidRequest('This sign-in step has expired. Start again from the application.'));
    } else {
      await kv.del(pendingKey(String(ctx.params.uid)));
    }
    await mfa.rememberDevice(accountId, deviceId(ctx, secure));
    await limits.clear('loginAccount', accountLockKey(email));
    await kit.finish(ctx, result, false);
  }

  /** The sign-in result once the second factor is in: amr names both factors (AMR_MFA after a password). */
  const mfaResult = (pending: Pending): InteractionResults => ({
    login: { accountId: pending.accountId, amr: pending.firstFactor && pending.firstFactor !== 'pwd' ? [pending.firstFactor, 'otp', 'mfa'] : AMR_MFA, acr: ACR_MFA, remember: true },
  });

  async function loadStep(ctx: Context, stages: Pending['stage'][]) {
    const loaded = await kit.load(ctx);
    assertThat(loaded.interaction.prompt.name === 'login', new InvalidRequest('This sign-in step is already complete.'));
    const pending = await loadPending(loaded.interaction.uid);
    assertThat(pending && stages.includes(pending.stage), new InvalidRequest('This sign-in step has expired. Start again from the application.'));
    return { ...loaded, pending };
  }

  async function enrolLocals(ctx: Context, uid: string, clientName: string, pending: Pending, extra: Record<string, unknown> = {}) {
    let sealed = pending.secret;
    if (!sealed) {
      sealed = box.seal(mfa.newSecret());
      await savePending(uid, { ...pending, secret: sealed });
    }
    const secret = box.open(sealed);
    const { uri, qr } = await mfa.enrolmentQr(secret, pending.email);
    return {
      title: 'Set up two-step verification',
      uid,
      clientName,
      csrf: kit.csrf(ctx),
      qr,
      uri,
      // Grouped in fours for typing into an app by hand.
      secret: secret.match(/.{1,4}/g)!.join(' '),
      required: pending.reason !== 'enrolled',
      name: 'Authenticator app',
      error: undefined,
      ...extra,
    };
  }

  /** The challenge page offers what the account has: an authenticator app's code, a passkey, or both. */
  async function challengeLocals(ctx: Context, uid: string, clientName: string, pending: Pending, extra: Record<string, unknown> = {}) {
    const [totp, passkey] = await Promise.all([mfa.hasFactor(pending.accountId), hasPasskey(pending.accountId)]);
    return { title: 'Two-step verification', uid, clientName, csrf: kit.csrf(ctx), error: undefined, totp, passkey, ...extra };
  }

  /**
   * One second-factor guess, counted against the account's MFA lockout before the code is checked
   * (issue 20). Throws RateLimited (429 + Retry-After) while locked, SignInUnavailable (503) when
   * the lockout's store is away; the error handler renders both as pages.
   */
  async function takeGuess(ctx: Context, interaction: Interaction, pending: Pending) {
    try {
      return await limits.attempt('mfaAccount', pending.accountId, { ip: ctx.ip, subject: pending.accountId, requestId: ctx.state.requestId });
    } catch (err) {
      if (err instanceof RateLimited || err instanceof SignInUnavailable) {
        await auditMfa(ctx, interaction, 'mfa', 'failure', pending.accountId, { reason: err instanceof RateLimited ? 'locked' : 'limits_unavailable' });
      }
      throw err;
    }
  }

  router.get('/interaction/:uid/mfa', async function showSecondFactor(ctx: Context) {
    const { interaction, clientName, pending } = await loadStep(ctx, ['challenge', 'enrol']);
    if (pending.stage === 'enrol') return kit.page(ctx, 'mfa-enrol', await enrolLocals(ctx, interaction.uid, clientName, pending));
    kit.page(ctx, 'mfa-challenge', await challengeLocals(ctx, interaction.uid, clientName, pending));
  });

  router.post('/interaction/:uid/mfa', async function submitSecondFactor(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction, clientName, pending } = await loadStep(ctx, ['challenge']);
    const code = form.get('code')?.trim();
    const recovery = form.get('recovery_code')?.trim();
    // Only a code is a guess; an empty form is answered below without counting.
    if (code || recovery) await takeGuess(ctx, interaction, pending);
    if (code) {
      const factor = await mfa.verifyTotp(pending.accountId, code);
      if (!factor) {
        await auditMfa(ctx, interaction, 'mfa', 'failure', pending.accountId, { method: 'otp' });
        return kit.page(ctx, 'mfa-challenge', await challengeLocals(ctx, interaction.uid, clientName, pending, { error: INVALID_CODE }), 401);
      }
      await limits.clear('mfaAccount', pending.accountId);
      await auditMfa(ctx, interaction, 'mfa', 'success', pending.accountId, { method: 'otp', factor: factor.id, step_up: pending.reason === 'step_up' });
      return completeLogin(ctx, pending.accountId, pending.email, mfaResult(pending), { secondFactor: true });
    }
    if (recovery) {
      const used = await mfa.useRecoveryCode(pending.accountId, recovery);
      if (!used) {
        await auditMfa(ctx, interaction, 'mfa.recovery_code', 'failure', pending.accountId, { method: 'recovery_code' });
        return kit.page(ctx, 'mfa-challenge', await challengeLocals(ctx, interaction.uid, clientName, pending, { error: 'That recovery code is not valid or was already used.', showRecovery: true }), 401);
      }
      await limits.clear('mfaAccount', pending.accountId);
      await auditMfa(ctx, interaction, 'mfa.recovery_code', 'success', pending.accountId, { method: 'recovery_code', remaining: used.remaining });
      if (used.remaining <= config.MFA_RECOVERY_LOW) {
        // Nudge: few codes left. Offer a new set before going on.
        await savePending(interaction.uid, { ...pending, stage: 'done' });
        return kit.page(ctx, 'mfa-recovery-low', { title: 'Recovery codes running out', uid: interaction.uid, clientName, csrf: kit.csrf(ctx), remaining: used.remaining });
      }
      return completeLogin(ctx, pending.accountId, pending.email, mfaResult(pending), { secondFactor: true });
    }
    kit.page(ctx, 'mfa-challenge', await challengeLocals(ctx, interaction.uid, clientName, pending, { error: 'Enter the code from your authenticator app.' }), 400);
  });

  router.post('/interaction/:uid/mfa/enrol', async function confirmEnrolment(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction, clientName, pending } = await loadStep(ctx, ['enrol']);
    assertThat(pending.secret, new InvalidRequest('Reload the page to get a new QR code.'));
    const guess = await takeGuess(ctx, interaction, pending);
    const name = (form.get('name') ?? '').trim();
    const factor = await mfa.confirmFactor(pending.accountId, { name, secret: box.open(pending.secret), code: form.get('code') ?? '' });
    if (!factor) {
      await auditMfa(ctx, interaction, 'mfa.enrol', 'failure', pending.accountId, { method: 'otp' });
      return kit.page(ctx, 'mfa-enrol', await enrolLocals(ctx, interaction.uid, clientName, pending, { error: INVALID_CODE, name: name.slice(0, 64) }), 401);
    }
    await guess.passed();
    await auditMfa(ctx, interaction, 'mfa.enrol', 'success', pending.accountId, { factor: factor.id, type: 'totp' });
    const codes = await mfa.regenerateRecoveryCodes(pending.accountId);
    await savePending(interaction.uid, { ...pending, stage: 'done', secret: undefined });
    kit.page(ctx, 'mfa-recovery-codes', { title: 'Save your recovery codes', uid: interaction.uid, clientName, csrf: kit.csrf(ctx), codes, enrolled: true });
  });

  router.post('/interaction/:uid/mfa/recovery-codes', async function regenerateRecoveryCodes(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction, clientName, pending } = await loadStep(ctx, ['done']);
    const codes = await mfa.regenerateRecoveryCodes(pending.accountId);
    await auditMfa(ctx, interaction, 'mfa.recovery_codes', 'success', pending.accountId, { regenerated: true });
    kit.page(ctx, 'mfa-recovery-codes', { title: 'Save your recovery codes', uid: interaction.uid, clientName, csrf: kit.csrf(ctx), codes, enrolled: false });
  });

  router.post('/interaction/:uid/mfa/continue', async function continueAfterSecondFactor(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { pending } = await loadStep(ctx, ['done']);
    await completeLogin(ctx, pending.accountId, pending.email, mfaResult(pending), { secondFactor: true });
  });

  if (deps.passkeys) {
    const { ceremonies } = deps.passkeys;
    router.post('/interaction/:uid/mfa/passkey/options', async function secondFactorPasskeyOptions(ctx: Context) {
      await readCeremonyBody(ctx);
      const { interaction, pending } = await loadStep(ctx, ['challenge']);
      ctx.body = await ceremonies.authenticationOptions('second_factor', interaction.uid, pending.accountId);
    });

    router.post('/interaction/:uid/mfa/passkey', async function submitPasskeySecondFactor(ctx: Context) {
      const body = await readCeremonyBody(ctx);
      const { interaction, pending } = await loadStep(ctx, ['challenge']);
      // A passkey attempt is a second-factor guess like a code: counted before it is checked.
      await takeGuess(ctx, interaction, pending);
      let verified;
      try {
        verified = await ceremonies.authenticate('second_factor', { uid: interaction.uid, userId: pending.accountId }, body.response);
      } catch (err) {
        if (!(err instanceof PasskeyRefused)) throw err;
        await auditMfa(ctx, interaction, 'mfa', 'failure', pending.accountId, { method: 'passkey', reason: err.reason, ...(err.passkey ? { factor: err.passkey.id } : {}) });
        throw refusalError(err);
      }
      await limits.clear('mfaAccount', pending.accountId);
      await auditMfa(ctx, interaction, 'mfa', 'success', pending.accountId, { method: 'passkey', factor: verified.passkey.id, user_verified: verified.userVerified, step_up: pending.reason === 'step_up' });
      await completeLogin(ctx, pending.accountId, pending.email, {
        login: { accountId: pending.accountId, amr: passkeyAmr(verified.userVerified, pending.firstFactor ?? 'pwd'), acr: ACR_MFA, remember: true },
      }, { secondFactor: true });
      answerWithLocation(ctx);
    });
  }

  return { afterPassword, startStepUp, completeLogin };
}

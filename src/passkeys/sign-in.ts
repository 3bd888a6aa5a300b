// Sign-in with a passkey alone (issue 19), mounted on the interaction router beside the password form:
//
//   GET /interaction/:uid ─► login page (conditional UI on the email field, "Sign in with a passkey")
//   POST /interaction/:uid/passkey/options ─► challenge (one-time, bound to this interaction)
//   navigator.credentials.get() ─► POST /interaction/:uid/passkey ─► { location } ─► the client
//
// The assertion is checked under the same limits as a password: the sign-in IP limit, and the
// owner's account lockout (counted before the signature is checked; a device that signed in to the
// account before is not held back). A user-verified passkey is two factors: acr is the MFA value,
// so any MFA policy and step-up (src/mfa/policy.ts) is satisfied without a further step.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { InteractionResults } from 'oidc-provider';
import type { Accounts, User } from '../accounts/users.ts';
import type { Audit } from '../audit/index.ts';
import { assertThat, HttpError, InvalidRequest, SignInUnavailable } from '../http/errors.ts';
import { RateLimited, type Attempt, type RateLimits } from '../http/rate-limit.ts';
import type { Mfa } from '../mfa/factors.ts';
import { accountLockKey } from '../mfa/lockout.ts';
import { ACR_MFA, passkeyAmr } from '../mfa/policy.ts';
import type { Connections } from '../federation/connections.ts';
import { PasskeyRefused, type Ceremonies } from './ceremonies.ts';
import { answerWithLocation, assertPasskeysAvailable, readCeremonyBody, refusalError } from './http.ts';

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

export interface PasskeySignInDeps {
  accounts: Pick<Accounts, 'findUserById'>;
  audit: Audit;
  limits: RateLimits;
  mfa: Pick<Mfa, 'isKnownDevice'>;
  ceremonies: Ceremonies;
  /** Enterprise SSO connections: a domain whose connection has password sign-in off signs in there only. */
  connections?: Pick<Connections, 'findByEmail'>;
}

export interface PasskeySignInKit {
  load(ctx: Context): Promise<{ interaction: Interaction }>;
  deviceId(ctx: Context): string;
  completeLogin(ctx: Context, accountId: string, email: string, result: InteractionResults): Promise<void>;
}

export function addPasskeySignIn(router: Router, deps: PasskeySignInDeps, kit: PasskeySignInKit) {
  const { accounts, audit, limits, mfa, ceremonies } = deps;

  /**
   * Password sign-in is off for the owner's domain (its SSO connection says so): the organisation's
   * IdP decides who signs in, and a passkey must not go around it (a user removed there would keep
   * signing in here). The passkey still answers a second step after single sign-on.
   */
  async function ssoOnly(email: string): Promise<boolean> {
    const connection = await deps.connections?.findByEmail(email);
    return Boolean(connection?.enabled && !connection.passwordLogin);
  }

  async function loginStep(ctx: Context) {
    const body = await readCeremonyBody(ctx);
    assertPasskeysAvailable(ceremonies.available);
    const { interaction } = await kit.load(ctx);
    assertThat(interaction.prompt.name === 'login', new InvalidRequest('This sign-in step is already complete.'));
    return { body, interaction, clientId: String(interaction.params.client_id ?? '') };
  }

  const auditLogin = (ctx: Context, outcome: 'success' | 'failure', clientId: string, subject: string | null, details: Record<string, unknown>) =>
    audit.record({ type: 'login', outcome, subject, clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { method: 'passkey', ...details } });

  router.post('/interaction/:uid/passkey/options', async function passkeySignInOptions(ctx: Context) {
    const { interaction } = await loginStep(ctx);
    // A store outage here (Redis in production) is a 503 with Retry-After from the error handler.
    ctx.body = await ceremonies.authenticationOptions('login', interaction.uid);
  });

  router.post('/interaction/:uid/passkey', async function signInWithPasskey(ctx: Context) {
    const { body, interaction, clientId } = await loginStep(ctx);
    await limits.consume('loginIp', ctx.ip, { ip: ctx.ip, clientId, requestId: ctx.state.requestId });
    let owner: User | undefined;
    let guess: Attempt | undefined;
    let verified;
    try {
      verified = await ceremonies.authenticate('login', { uid: interaction.uid }, body.response, async function countAgainstLockout(passkey) {
        owner = await accounts.findUserById(passkey.userId);
        if (!owner) throw new PasskeyRefused('unknown_credential', 'That passkey was not accepted.');
        if (await ssoOnly(owner.email)) throw new PasskeyRefused('sso_only', 'Your organisation signs you in with single sign-on: use "Use single sign-on (SSO)" with your work email.', passkey);
        guess = await limits.attempt('loginAccount', accountLockKey(owner.email), {
          ip: ctx.ip, clientId, requestId: ctx.state.requestId,
          exempt: () => mfa.isKnownDevice(owner!.id, kit.deviceId(ctx)),
        });
      });
    } catch (err) {
      if (err instanceof PasskeyRefused) {
        await auditLogin(ctx, 'failure', clientId, err.passkey?.userId ?? null, { reason: err.reason, ...(err.passkey ? { factor: err.passkey.id } : {}) });
        throw refusalError(err);
      }
      if (err instanceof RateLimited || err instanceof SignInUnavailable) {
        await auditLogin(ctx, 'failure', clientId, owner?.id ?? null, { reason: err instanceof RateLimited ? 'locked' : 'limits_unavailable' });
      }
      throw err;
    }
    // As for a password, `inactive` comes only after a passkey that proved itself: not a failed guess.
    await guess?.passed();
    assertThat(owner!.active, new HttpError(403, 'access_denied', 'This account has been disabled. Contact your administrator.'));
    await auditLogin(ctx, 'success', clientId, owner!.id, { factor: verified.passkey.id, user_verified: verified.userVerified });
    await kit.completeLogin(ctx, owner!.id, owner!.email, {
      login: { accountId: owner!.id, amr: passkeyAmr(verified.userVerified), acr: ACR_MFA, remember: true },
    });
    answerWithLocation(ctx);
  });
}

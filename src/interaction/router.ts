// The pages oidc-provider sends a browser to when it needs a person: sign in, consent, registration.
// oidc-provider keeps the interaction state; this router only shows pages and reports the outcome
// back with interactionResult. Each step is a named function so a stack trace reads like the flow.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Pug from 'pug';
import { pug } from '../http/pug.ts';
import type Provider from 'oidc-provider';
import type { InteractionResults } from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Accounts, User } from '../accounts/users.ts';
import { EmailTakenError, InvalidEmailError, WeakPasswordError } from '../accounts/users.ts';
import { PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH } from '../accounts/passwords.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from '../http/log.ts';
import { assertThat, InvalidRequest, NotFound, SignInUnavailable } from '../http/errors.ts';
import { readForm } from '../http/body.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from './csrf.ts';
// --- login security (issue 7) ---
import type { Kv } from '../store/kv.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import { noRateLimits, RateLimited, type RateLimits } from '../http/rate-limit.ts';
import { createMemoryKv } from '../store/kv.ts';
import { createSecretBox } from '../crypto/secretbox.ts';
import { noMfa, type Mfa } from '../mfa/factors.ts';
import crypto from 'node:crypto';
import { createMfaInteraction, deviceId } from '../mfa/interaction.ts';
import { checkPassword } from '../mfa/lockout.ts';
// --- end login security ---
import type { Federation } from '../federation/router.ts';
import type { Resources } from '../oidc/resources.ts';
import type { Passkeys } from '../passkeys/store.ts';
import type { Connections } from '../federation/connections.ts';
import { createCeremonies } from '../passkeys/ceremonies.ts';
import { addPasskeySignIn } from '../passkeys/sign-in.ts';

export interface InteractionDeps {
  provider: Provider;
  config: Config;
  accounts: Accounts;
  audit: Audit;
  log: Logger;
  // Issue 7: second factors and login limits. app.ts passes them all; without them (unit tests of
  // the pages) nobody has a factor, pending steps live in process memory, and nothing is limited.
  kv?: Kv;
  box?: SecretBox;
  mfa?: Mfa;
  limits?: RateLimits;
  /** Issue 4: home-realm discovery (email domain, `connection=`, `login_hint`) hands off to upstream IdPs. */
  federation?: Pick<Federation, 'routeLogin' | 'routeAuthorization' | 'ssoAvailable'>;
  /** Resource servers, for the MFA policy of a request that names one (`resource=`). */
  resources?: Pick<Resources, 'findResource'>;
  /** With outgoing mail (SMTP_URL): a "Forgot your password?" link, and a verification mail on sign-up. */
  mail?: { onRegistered(user: User): Promise<void> };
  /** Issue 19: passkeys sign in alone or serve as the second factor; without them neither is offered. */
  passkeys?: Passkeys;
  /** Issue 19: SSO connections, so a passkey does not sign in where password sign-in is off. */
  connections?: Pick<Connections, 'findByEmail'>;
}

const INVALID_CREDENTIALS = 'Invalid email or password.';
const ACCOUNT_DISABLED = 'This account has been disabled. Contact your administrator.';
const LOCKED = (seconds: number) => `Too many failed sign-in attempts. Try again in ${Math.ceil(seconds / 60)} minute${seconds > 60 ? 's' : ''}.`;
/** The longest a failed sign-in is held back (progressive delay), whatever LOGIN_DELAY_MS says. */
const MAX_LOGIN_DELAY_MS = 5000;

export const VIEWS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../views');

const compiled = new Map<string, Pug.compileTemplate>();
/** Render views/<name>.pug; each template is compiled once per process. */
export function renderView(name: string, locals: Record<string, unknown>): string {
  let template = compiled.get(name);
  if (!template) {
    template = pug().compileFile(path.join(VIEWS_DIR, `${name}.pug`));
    compiled.set(name, template);
  }
  return template(locals);
}

// What each OIDC scope means to the person being asked (consent page).
const SCOPE_DESCRIPTIONS: Record<string, string> = {
  openid: 'Know who you are',
  email: 'See your email address',
  profile: 'See your name',
  roles: 'See your roles and permissions',
  offline_access: 'Stay connected when you are not using it',
};

type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;

interface PromptDetails {
  missingOIDCScope?: string[];
  missingOIDCClaims?: string[];
  missingResourceScopes?: Record<string, string[]>;
}

export function createInteractionRouter(deps: InteractionDeps): Router {
  const { provider, config, accounts, audit } = deps;
  const secureCookies = config.ISSUER.startsWith('https://');
  const router = new Router();
  const limits = deps.limits ?? noRateLimits;
  const mfa = deps.mfa ?? noMfa;
  const kv = deps.kv ?? createMemoryKv();
  const ceremonies = deps.passkeys ? createCeremonies({ config, kv, passkeys: deps.passkeys }) : undefined;

  async function load(ctx: Context) {
    const interaction = await provider.interactionDetails(ctx.req, ctx.res);
    // The uid in the path must be the interaction this browser's cookie is bound to.
    assertThat(interaction.uid === ctx.params.uid, new InvalidRequest('This sign-in link does not match the current sign-in. Start again from the application.'));
    const clientId = String(interaction.params.client_id ?? '');
    const client = clientId ? await provider.Client.find(clientId) : undefined;
    assertThat(client, new InvalidRequest('The application for this sign-in is no longer registered.'));
    return { interaction, client, clientName: client.clientName ?? client.clientId };
  }

  function page(ctx: Context, view: string, locals: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = renderView(view, locals);
  }

  async function finish(ctx: Context, result: InteractionResults, mergeWithLastSubmission: boolean) {
    const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission });
    ctx.redirect(to);
    // A POST answered with 303 is followed with GET by every client.
    ctx.status = 303;
  }

  async function loginLocals(ctx: Context, uid: string, clientName: string, extra: Record<string, unknown> = {}) {
    return {
      title: 'Sign in',
      uid,
      clientName,
      csrf: issueCsrf(ctx, { secure: secureCookies }),
      registrationEnabled: config.ALLOW_REGISTRATION,
      passwordReset: Boolean(deps.mail),
      // Issue 4: the single sign-on button only when some connection can take the sign-in.
      sso: (await deps.federation?.ssoAvailable()) ?? false,
      email: '',
      error: undefined,
      // Issue 19: conditional UI on the email field and a "Sign in with a passkey" button.
      passkeys: ceremonies?.available ?? false,
      ...extra,
    };
  }

  async function auditLogin(ctx: Context, outcome: 'success' | 'failure', clientId: string, subject: string | null, details: Record<string, unknown>) {
    await audit.record({ type: 'login', outcome, subject, clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details });
  }

  /** Grant what the prompt says is missing, and finish the consent prompt with that grant. */
  async function grantConsent(ctx: Context, interaction: Interaction) {
    const accountId = interaction.session?.accountId;
    assertThat(accountId, new InvalidRequest('Sign in first.'));
    const clientId = String(interaction.params.client_id);
    const details = interaction.prompt.details as PromptDetails;
    const grant = interaction.grantId
      ? await provider.Grant.find(interaction.grantId)
      : new provider.Grant({ accountId, clientId });
    assertThat(grant, new InvalidRequest('This authorization is no longer valid. Start again from the application.'));
    if (details.missingOIDCScope?.length) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims?.length) grant.addOIDCClaims(details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    // Merge with the login result of the same interaction (mergeWithLastSubmission).
    await finish(ctx, { consent: { grantId } }, true);
  }

  // Second factor (issue 7): its routes share this router's loader, renderer and finisher.
  const secondFactor = createMfaInteraction(router, {
    ...deps,
    limits,
    mfa,
    kv,
    box: deps.box ?? createSecretBox(crypto.randomBytes(32)),
    passkeys: deps.passkeys && ceremonies ? { store: deps.passkeys, ceremonies } : undefined,
  }, {
    load,
    page,
    finish,
    csrf: (ctx) => issueCsrf(ctx, { secure: secureCookies }),
  });

  /** Progressive delay after a failed sign-in: base · 2^(failures−1), capped. Same for unknown emails. */
  async function holdBack(failures: number) {
    if (!config.LOGIN_DELAY_MS || failures < 1 || config.RATE_LIMITS === 'off') return;
    const ms = Math.min(config.LOGIN_DELAY_MS * 2 ** Math.min(failures - 1, 10), MAX_LOGIN_DELAY_MS);
    await new Promise((r) => setTimeout(r, ms));
  }

  router.use('/interaction', async function noStoreHtmlPages(ctx: Context, next: Next) {
    // Errors thrown below render as pages, not JSON, and nothing here may be cached.
    ctx.state.html = true;
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    await next();
  });

  if (ceremonies) {
    addPasskeySignIn(router, { accounts, audit, limits, mfa, ceremonies, connections: deps.connections }, {
      load,
      deviceId: (ctx) => deviceId(ctx, secureCookies),
      completeLogin: (ctx, accountId, email, result) => secondFactor.completeLogin(ctx, accountId, email, result),
    });
  }

  router.get('/interaction/:uid', async function showInteraction(ctx: Context) {
    const { interaction, client, clientName } = await load(ctx);
    const { uid, prompt, params } = interaction;
    if (prompt.name === 'login') {
      // Signed in, but this request needs a second factor the session lacks: ask only for that.
      if (await secondFactor.startStepUp(ctx, interaction)) return;
      if (await deps.federation?.routeAuthorization(ctx, interaction)) return;
      const hint = typeof params.login_hint === 'string' ? params.login_hint.slice(0, 254) : '';
      return page(ctx, 'login', await loginLocals(ctx, uid, clientName, { email: hint }));
    }
    if (prompt.name === 'consent') {
      // First-party clients are part of this deployment: consent is implied.
      if (client.metadata().first_party === true) return grantConsent(ctx, interaction);
      const details = prompt.details as PromptDetails;
      const user = interaction.session?.accountId ? await accounts.findUserById(interaction.session.accountId) : undefined;
      return page(ctx, 'consent', {
        title: 'Allow access',
        uid,
        clientName,
        accountEmail: user?.email,
        csrf: issueCsrf(ctx, { secure: secureCookies }),
        scopes: (details.missingOIDCScope ?? []).map((s) => SCOPE_DESCRIPTIONS[s] ?? s),
        claims: details.missingOIDCClaims ?? [],
        resources: Object.entries(details.missingResourceScopes ?? {}).map(([indicator, scopes]) => ({ indicator, scopes })),
      });
    }
    throw new InvalidRequest(`Unsupported interaction prompt: ${prompt.name}`);
  });

  router.post('/interaction/:uid/login', async function submitLogin(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction, client, clientName } = await load(ctx);
    assertThat(interaction.prompt.name === 'login', new InvalidRequest('This sign-in step is already complete.'));
    const clientId = String(interaction.params.client_id);
    const email = form.get('email') ?? '';
    // Issue 4: an email whose domain has a connection goes to that IdP (no password typed, or password sign-in off there).
    if (await deps.federation?.routeLogin(ctx, interaction, email, form.get('password') ?? '')) return;
    // The attempted email is recorded for investigations, stripped of control characters; never the password.
    const attempted = email.replace(/\p{Cc}/gu, '').slice(0, 254);
    await limits.consume('loginIp', ctx.ip, { ip: ctx.ip, clientId, requestId: ctx.state.requestId });
    const again = async (status: number, error: string) =>
      page(ctx, 'login', await loginLocals(ctx, interaction.uid, clientName, { email: attempted, error }), status);
    // Lockout (issues 7, 20): counted per email whether or not an account has it, so it reveals
    // nothing, and before the password is checked. A device that completed a sign-in for this
    // account before is not held back, so an attacker cannot lock the owner out.
    let checked: Awaited<ReturnType<typeof checkPassword>>;
    try {
      checked = await checkPassword({ accounts, limits }, email, form.get('password') ?? '', {
        ip: ctx.ip, clientId, requestId: ctx.state.requestId,
        exempt: async () => {
          const owner = await accounts.findUserByEmail(email);
          return Boolean(owner && await mfa.isKnownDevice(owner.id, deviceId(ctx, secureCookies)));
        },
      });
    } catch (err) {
      if (!(err instanceof RateLimited || err instanceof SignInUnavailable)) throw err;
      const locked = err instanceof RateLimited;
      await auditLogin(ctx, 'failure', clientId, null, { reason: locked ? 'locked' : 'limits_unavailable', email: attempted, method: 'pwd' });
      for (const [k, v] of Object.entries(err.headers)) ctx.set(k, v);
      return again(err.status, locked ? LOCKED(err.retryAfter) : err.message);
    }
    const { result } = checked;
    if ('error' in result) {
      await auditLogin(ctx, 'failure', clientId, null, { reason: result.error, email: attempted, method: 'pwd' });
      if (result.error === 'invalid_credentials') await holdBack(checked.guesses);
      const inactive = result.error === 'inactive';
      return again(inactive ? 403 : 401, inactive ? ACCOUNT_DISABLED : INVALID_CREDENTIALS);
    }
    await auditLogin(ctx, 'success', clientId, result.user.id, { method: 'pwd' });
    await secondFactor.afterPassword(ctx, interaction, client, result.user);
  });

  router.post('/interaction/:uid/confirm', async function submitConsent(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction } = await load(ctx);
    assertThat(interaction.prompt.name === 'consent', new InvalidRequest('There is nothing to confirm in this step.'));
    await audit.record({
      type: 'consent',
      subject: interaction.session?.accountId ?? null,
      clientId: String(interaction.params.client_id),
      ip: ctx.ip,
      requestId: ctx.state.requestId ?? null,
      details: { scopes: (interaction.prompt.details as PromptDetails).missingOIDCScope ?? [] },
    });
    await grantConsent(ctx, interaction);
  });

  router.post('/interaction/:uid/abort', async function abortInteraction(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const { interaction } = await load(ctx);
    await audit.record({
      type: interaction.prompt.name === 'consent' ? 'consent' : 'login',
      outcome: 'failure',
      subject: interaction.session?.accountId ?? null,
      clientId: String(interaction.params.client_id),
      ip: ctx.ip,
      requestId: ctx.state.requestId ?? null,
      details: { reason: 'aborted' },
    });
    await finish(ctx, { error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
  });

  if (config.ALLOW_REGISTRATION) {
    const registerLocals = (ctx: Context, uid: string, clientName: string, extra: Record<string, unknown> = {}) => ({
      title: 'Create an account',
      uid,
      clientName,
      csrf: issueCsrf(ctx, { secure: secureCookies }),
      minLength: PASSWORD_MIN_LENGTH,
      maxLength: PASSWORD_MAX_LENGTH,
      email: '',
      name: '',
      error: undefined,
      ...extra,
    });

    router.get('/interaction/:uid/register', async function showRegistration(ctx: Context) {
      const { interaction, clientName } = await load(ctx);
      assertThat(interaction.prompt.name === 'login', new InvalidRequest('You are already signed in.'));
      page(ctx, 'register', registerLocals(ctx, interaction.uid, clientName));
    });

    router.post('/interaction/:uid/register', async function submitRegistration(ctx: Context) {
      const form = await readForm(ctx);
      assertCsrf(ctx, form.get(CSRF_FIELD));
      const { interaction, client, clientName } = await load(ctx);
      assertThat(interaction.prompt.name === 'login', new InvalidRequest('You are already signed in.'));
      const clientId = String(interaction.params.client_id);
      await limits.consume('registerIp', ctx.ip, { ip: ctx.ip, clientId, requestId: ctx.state.requestId });
      const email = (form.get('email') ?? '').trim();
      const name = (form.get('name') ?? '').trim().slice(0, 200);
      try {
        const user = await accounts.createUser({ email, password: form.get('password') ?? '', name: name || undefined, roles: ['user'] });
        await audit.record({ type: 'register', subject: user.id, clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null });
        await auditLogin(ctx, 'success', clientId, user.id, { method: 'pwd', registered: true });
        await deps.mail?.onRegistered(user);
        // A new account under an MFA policy (everyone, client, acr_values) enrols before it goes on.
        await secondFactor.afterPassword(ctx, interaction, client, user);
      } catch (err) {
        if (!(err instanceof EmailTakenError || err instanceof WeakPasswordError || err instanceof InvalidEmailError)) throw err;
        await audit.record({ type: 'register', outcome: 'failure', clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { reason: err.name } });
        const message = err instanceof EmailTakenError ? `${err.message} Sign in instead.` : err.message;
        page(ctx, 'register', registerLocals(ctx, interaction.uid, clientName, {
          email: email.replace(/\p{Cc}/gu, '').slice(0, 254),
          name,
          error: message,
        }), err.status);
      }
    });
  } else {
    router.all('/interaction/:uid/register', async function registrationDisabled() {
      throw new NotFound('Registration is not enabled on this server.');
    });
  }

  return router;
}

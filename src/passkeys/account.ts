// The account page's passkeys (issue 19): register several (each named), rename, remove. Mounted on
// the account router (prefix /account) beside the authenticator apps of /account/security.
//
// Registering asks for the current password first (when the account has one): a passkey keeps
// signing in after a password change, so a borrowed or stolen session must not be able to add one.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Accounts, User } from '../accounts/users.ts';
import type { Audit } from '../audit/index.ts';
import { readForm } from '../http/body.ts';
import { HttpError, NotFound } from '../http/errors.ts';
import { assertCsrf, CSRF_FIELD } from '../interaction/csrf.ts';
import { PasskeyRefused, type Ceremonies } from './ceremonies.ts';
import { assertPasskeysAvailable, readCeremonyBody, refusalError } from './http.ts';
import type { Passkeys } from './store.ts';

export interface PasskeyPageDeps {
  accounts: Pick<Accounts, 'hasPassword'>;
  audit: Audit;
  passkeys: Passkeys;
  ceremonies: Ceremonies;
}

export interface PasskeyPageKit {
  signedIn(ctx: Context): Promise<User | undefined>;
  refusePassword(ctx: Context, user: User, password: string): Promise<{ status: number; error?: string } | null>;
  /** The security overview again, with an error. */
  overview(ctx: Context, user: User, extra: Record<string, unknown>, status: number): Promise<void>;
}

export function addPasskeyPages(router: Router, deps: PasskeyPageDeps, kit: PasskeyPageKit) {
  const { accounts, audit, passkeys, ceremonies } = deps;

  const record = (ctx: Context, user: User, type: string, outcome: 'success' | 'failure', details: Record<string, unknown> = {}) =>
    audit.record({ type, outcome, actor: user.id, subject: user.id, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { via: 'account', ...details } });

  /** The signed-in user of a JSON ceremony request; 401 (not a redirect: a script is asking). */
  async function ceremonyUser(ctx: Context) {
    const body = await readCeremonyBody(ctx);
    assertPasskeysAvailable(ceremonies.available);
    const user = await kit.signedIn(ctx);
    if (!user) throw new HttpError(401, 'login_required', 'Sign in again to manage your passkeys.');
    return { body, user };
  }

  async function signedInForm(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    return { form, user: await kit.signedIn(ctx) };
  }

  async function ownPasskey(user: User, id: string) {
    const passkey = (await passkeys.list(user.id)).find((p) => p.id === id);
    if (!passkey) throw new NotFound('No such passkey.');
    return passkey;
  }

  router.post('/security/passkeys/options', async function passkeyRegistrationOptions(ctx: Context) {
    const { body, user } = await ceremonyUser(ctx);
    if (await accounts.hasPassword(user.id)) {
      const refused = await kit.refusePassword(ctx, user, typeof (body as { password?: unknown }).password === 'string' ? (body as { password: string }).password : '');
      if (refused) {
        if (refused.status === 400) await record(ctx, user, 'passkey.register', 'failure', { reason: 'wrong_current_password' });
        // While locked, refusePassword has set Retry-After on the response already.
        throw new HttpError(refused.status === 400 ? 401 : refused.status, refused.status === 429 ? 'slow_down' : 'access_denied', refused.error ?? 'Your current password is not right.');
      }
    }
    ctx.body = await ceremonies.registrationOptions(user);
  });

  router.post('/security/passkeys', async function registerPasskey(ctx: Context) {
    const { body, user } = await ceremonyUser(ctx);
    let passkey;
    try {
      passkey = await ceremonies.register(user.id, body.response, typeof body.name === 'string' ? body.name : '');
    } catch (err) {
      if (!(err instanceof PasskeyRefused)) throw err;
      await record(ctx, user, 'passkey.register', 'failure', { reason: err.reason });
      throw refusalError(err);
    }
    await record(ctx, user, 'passkey.register', 'success', { factor: passkey.id, name: passkey.name, device_type: passkey.deviceType, backed_up: passkey.backedUp });
    ctx.body = { location: '/account/security', passkey: { id: passkey.id, name: passkey.name } };
  });

  router.post('/security/passkeys/:id/rename', async function renamePasskey(ctx: Context) {
    const { form, user } = await signedInForm(ctx);
    if (!user) return;
    const passkey = await ownPasskey(user, String(ctx.params.id));
    if (!(await passkeys.rename(user.id, passkey.id, form.get('name') ?? ''))) return kit.overview(ctx, user, { error: 'Give the passkey a name.' }, 400);
    await record(ctx, user, 'passkey.rename', 'success', { factor: passkey.id });
    ctx.status = 303;
    ctx.redirect('/account/security');
  });

  router.post('/security/passkeys/:id/remove', async function removePasskey(ctx: Context) {
    const { user } = await signedInForm(ctx);
    if (!user) return;
    const passkey = await ownPasskey(user, String(ctx.params.id));
    await passkeys.remove(user.id, passkey.id);
    await record(ctx, user, 'passkey.remove', 'success', { factor: passkey.id, name: passkey.name });
    ctx.status = 303;
    ctx.redirect('/account/security');
  });
}

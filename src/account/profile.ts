// /account/name: a signed-in user sets the name others see — the `name` claim apps read, and the
// participant name in LiveKit rooms (connection-details and the token exchange use it first).
import type Router from '@koa/router';
import type { Context } from 'koa';
import { readForm } from '../http/body.ts';
import { assertCsrf, CSRF_FIELD } from '../interaction/csrf.ts';
import type { AccountDeps } from './router.ts';
import type { AccountKit } from './security.ts';

/** One line of text, as LiveKit shows it: at most 128 characters, no control characters. */
const DISPLAY_NAME = /^[^\p{Cc}]{0,128}$/u;

export function addProfilePages(router: Router, deps: Pick<AccountDeps, 'accounts' | 'audit'>, kit: Pick<AccountKit, 'signedIn'> & { showAccount(ctx: Context, error?: string, status?: number): Promise<void> }) {
  router.post('/name', async function changeDisplayName(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const user = await kit.signedIn(ctx);
    if (!user) return;
    const name = (form.get('name') ?? '').trim();
    if (!DISPLAY_NAME.test(name)) return kit.showAccount(ctx, 'A name is one line of at most 128 characters.', 400);
    await deps.accounts.setDisplayName(user.id, name);
    await deps.audit.record({ type: 'account.name_change', actor: user.id, subject: user.id, ip: ctx.ip, requestId: ctx.state.requestId ?? null });
    ctx.redirect('/account');
  });
}

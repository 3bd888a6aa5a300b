// The admin console (DESIGN.md: "an admin REST API (and pages)"): server-rendered pages at /admin
// for the everyday work — find a user, change their roles, disable them, reset their password or
// second factor, sign them out everywhere, delete them; list and delete clients; read the audit log.
// Everything else (resources, exchange policy, SSO connections, keys) is in the CLI and the API.
//
// Who may use it: the browser's Gatehouse session (the account pages' sign-in), of a user whose roles
// hold `gatehouse:admin` (changes) or `gatehouse:admin:read` (pages only, no forms). When policy
// requires MFA of the user, the session must have it; otherwise the console sends the browser to a
// step-up that asks only for the second factor. Every change runs the CLI's command (one set of
// rules: the last active admin stays, secrets shown once) with `user:<id>` as the audit actor.
import crypto from 'node:crypto';
import Router from '@koa/router';
import type { Context, Next } from 'koa';
import type Provider from 'oidc-provider';
import type { User } from '../accounts/users.ts';
import { sameAddress } from '../accounts/email.ts';
import { createRoles } from '../accounts/roles.ts';
import { listUserApps } from '../account/data.ts';
import { readForm } from '../http/body.ts';
import { Forbidden } from '../http/errors.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { renderView } from '../interaction/router.ts';
import { userAdminAccess, type AdminApiDeps } from './api.ts';
import { ADMIN_READ_SCOPE, ADMIN_SCOPE } from './api-scopes.ts';
import { CommandError, runCommand } from './commands.ts';
import { createPasskeys } from '../passkeys/store.ts';

const PAGE_SIZE = 50;

/** Messages shown after a change, by key (never text from the request). */
const DONE: Record<string, string> = {
  roles: 'Roles saved. Tokens issued from now on carry them.',
  enabled: 'The account is enabled.',
  disabled: 'The account is disabled: every session and token of it has ended.',
  'reset-mfa': 'Authenticators and recovery codes removed; the user was signed out everywhere.',
  'signed-out': 'The user was signed out everywhere.',
  'passkey-removed': 'The passkey was removed: it no longer signs in. The user\'s sessions go on; sign them out everywhere if it may be in someone else\'s hands.',
  deleted: 'The account was deleted.',
  'client-deleted': 'The client was deleted.',
};

interface Admin {
  user: User;
  canWrite: boolean;
  actor: string;
}

export function createAdminConsole(deps: Omit<AdminApiDeps, 'afterKeysChange'>): Router {
  const router = new Router({ prefix: '/admin' });
  const secure = deps.config.ISSUER.startsWith('https://');
  const roles = createRoles(deps.db);

  function page(ctx: Context, view: string, locals: Record<string, unknown>, status = 200) {
    ctx.status = status;
    ctx.type = 'html';
    ctx.body = renderView(view, { wide: true, csrf: issueCsrf(ctx, { secure }), ...locals });
  }

  /** The signed-in administrator, or undefined after answering (a redirect to sign in, or 403). */
  async function admin(ctx: Context): Promise<Admin | undefined> {
    const provider: Provider = deps.provider();
    const session = await provider.Session.get(ctx as never);
    const user = session?.accountId ? await deps.accounts.findUserById(session.accountId) : undefined;
    if (!user?.active) {
      ctx.redirect(`/account/sign-in?return_to=${encodeURIComponent(ctx.path)}`);
      return undefined;
    }
    const { scopes, needsMfa } = await userAdminAccess(deps, user.id, (session as unknown as { acr?: string }).acr);
    if (!scopes.length) {
      page(ctx, 'error', { wide: false, title: 'Not an administrator', error: 'access_denied', description: 'Your roles do not include administering Gatehouse.' }, 403);
      return undefined;
    }
    if (needsMfa) {
      ctx.redirect(`/account/sign-in?mfa=1&return_to=${encodeURIComponent(ctx.path)}`);
      return undefined;
    }
    return { user, canWrite: scopes.includes(ADMIN_SCOPE), actor: `user:${user.id}` };
  }

  /** A posted change: CSRF first, then an administrator allowed to change things. */
  async function writer(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    const who = await admin(ctx);
    if (who && !who.canWrite) throw new Forbidden(`Your roles allow reading the console (${ADMIN_READ_SCOPE}), not changing anything.`);
    return { form, who };
  }
  const run = (who: Admin, argv: string[]) => runCommand({ ...deps, actor: who.actor }, argv);

  router.use(async function consolePages(ctx: Context, next: Next) {
    ctx.set('Cache-Control', 'no-store');
    ctx.state.html = true;
    await next();
  });

  router.get('/', async (ctx: Context) => {
    ctx.redirect('/admin/users');
  });

  // --- users ---
  router.get('/users', async function listUsers(ctx: Context) {
    const who = await admin(ctx);
    if (!who) return;
    const q = String(ctx.query.q ?? '').trim().slice(0, 200);
    const pageNo = Math.max(0, Math.trunc(Number(ctx.query.page ?? 0)) || 0);
    const { rows } = await deps.db.query<{ id: string; email: string; name: string | null; active: boolean; email_verified: boolean; last_login_at: Date | null; roles: string[] }>(
      `SELECT u.id, u.email, u.name, u.active, u.email_verified, u.last_login_at,
              coalesce(array_agg(ur.role ORDER BY ur.role) FILTER (WHERE ur.role IS NOT NULL), '{}') AS roles
         FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id
        WHERE $1 = '' OR u.email ILIKE '%' || $1 || '%' OR u.name ILIKE '%' || $1 || '%'
        GROUP BY u.id ORDER BY u.email LIMIT $2 OFFSET $3`,
      [q.replace(/[\\%_]/g, (c) => `\\${c}`), PAGE_SIZE + 1, pageNo * PAGE_SIZE],
    );
    page(ctx, 'admin-users', {
      title: 'Users', nav: 'users', admin: who, q, pageNo, users: rows.slice(0, PAGE_SIZE), more: rows.length > PAGE_SIZE,
      roles: await roles.listRoles(), done: DONE[String(ctx.query.done)] ,
    });
  });

  router.post('/users/new', async function createUser(ctx: Context) {
    const { form, who } = await writer(ctx);
    if (!who) return;
    // A first password, generated and shown once; the user changes it (or resets it by mail).
    const password = crypto.randomBytes(18).toString('base64url');
    try {
      const created = await run(who, ['user', 'create', `--email=${form.get('email') ?? ''}`, `--password=${password}`, ...(form.get('name') ? [`--name=${form.get('name')}`] : []), ...form.getAll('role').map((r) => `--role=${r}`)]) as User;
      page(ctx, 'admin-password', { title: 'Account created', nav: 'users', admin: who, target: created, password, created: true });
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      ctx.status = err.status;
      page(ctx, 'account-message', { wide: false, title: 'Not created', message: err.message.split('\n')[0], link: { href: '/admin/users', text: 'Back to users' } }, err.status);
    }
  });

  async function userPage(ctx: Context, who: Admin, id: string, extra: Record<string, unknown> = {}, status = 200) {
    const target = await deps.accounts.findUserById(id);
    if (!target) return page(ctx, 'error', { wide: false, title: 'No such user', error: 'not_found', description: 'No user has that id.' }, 404);
    const [{ roles: held, permissions }, allRoles, apps, factors, events, passkeys] = await Promise.all([
      deps.accounts.rolesAndPermissions(id),
      roles.listRoles(),
      listUserApps(deps, id),
      deps.db.query<{ name: string; created_at: Date; last_used_at: Date | null }>('SELECT name, created_at, last_used_at FROM mfa_factors WHERE user_id = $1 ORDER BY created_at', [id]),
      deps.db.query('SELECT id, at, type, outcome, actor, client_id, ip FROM audit_events WHERE subject = $1 OR actor = $1 OR actor = $2 ORDER BY id DESC LIMIT 20', [id, `user:${id}`]),
      createPasskeys(deps.db).list(id),
    ]);
    page(ctx, 'admin-user', {
      title: target.email, nav: 'users', admin: who, target, held, permissions, allRoles, apps, factors: factors.rows, events: events.rows, passkeys,
      hasPassword: await deps.accounts.hasPassword(id), done: DONE[String(ctx.query.done)], error: undefined, ...extra,
    }, status);
  }

  router.get('/users/:id', async function showUser(ctx: Context) {
    const who = await admin(ctx);
    if (who) await userPage(ctx, who, String(ctx.params.id));
  });

  /** A change to one user: the command, then back to the user's page with what happened (or why not). */
  function userAction(path: string, argv: (id: string, form: URLSearchParams) => string[], done: (form: URLSearchParams) => string) {
    router.post(`/users/:id/${path}`, async (ctx: Context) => {
      const { form, who } = await writer(ctx);
      if (!who) return;
      const id = String(ctx.params.id);
      try {
        await run(who, argv(id, form));
      } catch (err) {
        if (!(err instanceof CommandError)) throw err;
        return userPage(ctx, who, id, { error: err.message.split('\n')[0] }, err.status);
      }
      ctx.status = 303;
      ctx.redirect(`/admin/users/${encodeURIComponent(id)}?done=${done(form)}`);
    });
  }
  userAction('roles', (id, form) => ['user', 'set-roles', `--id=${id}`, ...form.getAll('role').map((r) => `--role=${r}`)], () => 'roles');
  userAction('active', (id, form) => ['user', form.get('active') === 'on' ? 'enable' : 'disable', `--id=${id}`], (form) => (form.get('active') === 'on' ? 'enabled' : 'disabled'));
  userAction('reset-mfa', (id) => ['user', 'reset-mfa', `--id=${id}`], () => 'reset-mfa');
  router.post('/users/:id/passkeys/:passkey/remove', async function removePasskey(ctx: Context) {
    const { who } = await writer(ctx);
    if (!who) return;
    const id = String(ctx.params.id);
    try {
      await run(who, ['user', 'remove-passkey', `--id=${id}`, `--passkey=${String(ctx.params.passkey)}`]);
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      return userPage(ctx, who, id, { error: err.message.split('\n')[0] }, err.status);
    }
    ctx.status = 303;
    ctx.redirect(`/admin/users/${encodeURIComponent(id)}?done=passkey-removed`);
  });
  userAction('sign-out', (id) => ['revoke', `--user=${id}`], () => 'signed-out');

  router.post('/users/:id/password', async function setPassword(ctx: Context) {
    const { who } = await writer(ctx);
    if (!who) return;
    const id = String(ctx.params.id);
    try {
      const r = await run(who, ['user', 'set-password', `--id=${id}`]) as { password: string; email: string };
      page(ctx, 'admin-password', { title: 'New password', nav: 'users', admin: who, target: { id, email: r.email }, password: r.password, created: false });
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      return userPage(ctx, who, id, { error: err.message.split('\n')[0] }, err.status);
    }
  });

  router.post('/users/:id/delete', async function deleteUser(ctx: Context) {
    const { form, who } = await writer(ctx);
    if (!who) return;
    const id = String(ctx.params.id);
    const target = await deps.accounts.findUserById(id);
    // Typing the address guards against deleting the wrong row of a long list.
    if (target && !sameAddress(form.get('confirm_email') ?? '', target.email)) {
      return userPage(ctx, who, id, { error: 'Type the email address of the account to delete it.' }, 400);
    }
    try {
      await run(who, ['user', 'delete', `--id=${id}`]);
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      return userPage(ctx, who, id, { error: err.message.split('\n')[0] }, err.status);
    }
    ctx.status = 303;
    ctx.redirect('/admin/users?done=deleted');
  });

  // --- clients ---
  router.get('/clients', async function listClients(ctx: Context) {
    const who = await admin(ctx);
    if (!who) return;
    page(ctx, 'admin-clients', { title: 'Clients', nav: 'clients', admin: who, clients: await deps.clients.listClients(), done: DONE[String(ctx.query.done)], error: undefined });
  });

  router.post('/clients/:id/delete', async function deleteClient(ctx: Context) {
    const { who } = await writer(ctx);
    if (!who) return;
    try {
      await run(who, ['client', 'delete', `--id=${String(ctx.params.id)}`]);
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      return page(ctx, 'admin-clients', { title: 'Clients', nav: 'clients', admin: who, clients: await deps.clients.listClients(), error: err.message.split('\n')[0] }, err.status);
    }
    ctx.status = 303;
    ctx.redirect('/admin/clients?done=client-deleted');
  });

  // --- the audit log ---
  router.get('/audit', async function showAudit(ctx: Context) {
    const who = await admin(ctx);
    if (!who) return;
    const filter = (name: string) => String(ctx.query[name] ?? '').trim().slice(0, 300) || null;
    const before = Math.trunc(Number(ctx.query.before_id ?? 0)) || null;
    const { rows } = await deps.db.query<{ id: string | number }>(
      `SELECT id, at, type, outcome, actor, subject, client_id, ip, details FROM audit_events
        WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR subject = $2 OR actor = $2) AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT 101`,
      [filter('type'), filter('who'), before],
    );
    const events = rows.slice(0, 100).map((r) => ({ ...r, id: Number(r.id) }));
    page(ctx, 'admin-audit', {
      title: 'Audit log', nav: 'audit', admin: who, events, type: filter('type') ?? '', whoFilter: filter('who') ?? '',
      next: rows.length > 100 ? events[events.length - 1].id : null,
    });
  });

  return router;
}

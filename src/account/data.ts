// The account pages about a person's data and where they are signed in (DESIGN.md: "a self-service
// account page (password, MFA, sessions, data export, delete)"):
//   GET  /account/apps                       the applications holding a grant, each revocable
//   POST /account/apps/:grant/revoke         revoke one application's grant (tokens and everything exchanged from them)
//   POST /account/sign-out-everywhere        user-level revocation: every session and token, this browser's too
//   GET  /account/export                     everything Gatehouse keeps about the user, as a JSON download
//   GET  /account/delete, POST               delete the account (current password, or the email for SSO-only accounts)
// Every form carries the CSRF field; every change is audited with the user as actor and subject.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { User } from '../accounts/users.ts';
import { sameAddress } from '../accounts/email.ts';
import { readForm } from '../http/body.ts';
import { NotFound } from '../http/errors.ts';
import { assertCsrf, CSRF_FIELD, issueCsrf } from '../interaction/csrf.ts';
import { revokeAsOperator } from '../revocation/admin.ts';
import { revokeUser } from '../revocation/accounts.ts';
import { ACCOUNT_CLIENT_ID } from './client.ts';
import type { AccountDeps } from './router.ts';
import type { AccountKit } from './security.ts';

/** How many of the user's own audit events an export carries (newest first). */
const EXPORT_AUDIT_LIMIT = 1000;

interface GrantRow {
  id: string;
  client_id: string;
  iat: string | null;
  openid_scope: string | null;
  resources: Record<string, string> | null;
  device_name: string | null;
}

/** A user's live grants (oidc-provider's Grant model), with the client's name and any device. */
export async function listUserApps(deps: Pick<AccountDeps, 'db' | 'clients'>, userId: string) {
  const { rows } = await deps.db.query<GrantRow>(
    `SELECT g.id, g.payload->>'clientId' AS client_id, g.payload->>'iat' AS iat,
            g.payload->'openid'->>'scope' AS openid_scope, g.payload->'resources' AS resources, d.name AS device_name
       FROM oidc_payloads g
       LEFT JOIN devices d ON d.grant_id = g.id AND d.revoked_at IS NULL
      WHERE g.model = 'Grant' AND g.payload->>'accountId' = $1 AND g.payload->>'clientId' <> $2
        AND (g.expires_at IS NULL OR g.expires_at > now())
      ORDER BY (g.payload->>'iat')::bigint DESC NULLS LAST, g.id`,
    [userId, ACCOUNT_CLIENT_ID],
  );
  return Promise.all(rows.map(async (r) => {
    const metadata = await deps.clients.findMetadata(r.client_id).catch(() => undefined);
    return {
      grantId: r.id,
      clientId: r.client_id,
      clientName: (metadata?.client_name as string | undefined) ?? r.client_id,
      grantedAt: r.iat ? new Date(Number(r.iat) * 1000) : null,
      scopes: (r.openid_scope ?? '').split(' ').filter(Boolean),
      resources: Object.entries(r.resources ?? {}).map(([uri, scope]) => ({ uri, scopes: String(scope).split(' ').filter(Boolean) })),
      device: r.device_name,
    };
  }));
}

export function addDataPages(router: Router, deps: AccountDeps, kit: AccountKit) {
  const { config, db, accounts, audit } = deps;
  const secure = config.ISSUER.startsWith('https://');

  const record = (ctx: Context, user: User, type: string, outcome: 'success' | 'failure', details: Record<string, unknown> = {}, clientId: string | null = null) =>
    audit.record({ type, outcome, actor: user.id, subject: user.id, clientId, ip: ctx.ip, requestId: ctx.state.requestId ?? null, details: { via: 'account', ...details } });

  async function signedInForm(ctx: Context) {
    const form = await readForm(ctx);
    assertCsrf(ctx, form.get(CSRF_FIELD));
    return { form, user: await kit.signedIn(ctx) };
  }

  const appsOf = (userId: string) => listUserApps(deps, userId);

  router.get('/apps', async function showApps(ctx: Context) {
    const user = await kit.signedIn(ctx);
    if (!user) return;
    kit.page(ctx, 'account-apps', { title: 'Apps and sessions', apps: await appsOf(user.id), csrf: issueCsrf(ctx, { secure }) });
  });

  router.post('/apps/:grant/revoke', async function revokeApp(ctx: Context) {
    const { user } = await signedInForm(ctx);
    if (!user) return;
    const app = (await appsOf(user.id)).find((a) => a.grantId === ctx.params.grant);
    if (!app) throw new NotFound('No such application access.');
    // The grant's refresh tokens and codes go at once; its access tokens and every token exchanged
    // from them are on the revocation list. A device signed in with this grant is revoked with it.
    await revokeAsOperator(deps, { kind: 'grant', id: app.grantId });
    await db.query('UPDATE devices SET revoked_at = now() WHERE grant_id = $1 AND revoked_at IS NULL', [app.grantId]);
    await record(ctx, user, 'account.app_revoke', 'success', { grant_id: app.grantId }, app.clientId);
    ctx.status = 303;
    ctx.redirect('/account/apps');
  });

  router.post('/sign-out-everywhere', async function signOutEverywhere(ctx: Context) {
    const { user } = await signedInForm(ctx);
    if (!user) return;
    await revokeUser(user.id, 'user_request', deps);
    await record(ctx, user, 'account.sign_out_everywhere', 'success');
    kit.page(ctx, 'account-message', {
      title: 'Signed out everywhere',
      message: 'Every session and every token of your account has ended, on this browser and all others. Applications will ask you to sign in again.',
      link: { href: '/account', text: 'Sign in again' },
    });
  });

  router.get('/export', async function exportData(ctx: Context) {
    const user = await kit.signedIn(ctx);
    if (!user) return;
    const [{ roles, permissions }, factors, recovery, devices, apps, links, rooms, events, passkeys] = await Promise.all([
      accounts.rolesAndPermissions(user.id),
      deps.mfa.listFactors(user.id),
      deps.mfa.remainingRecoveryCodes(user.id),
      db.query('SELECT id, name, client_id, created_at, revoked_at FROM devices WHERE user_id = $1 ORDER BY created_at', [user.id]),
      appsOf(user.id),
      db.query('SELECT connection, subject AS upstream_subject, email, created_at, last_login_at FROM federated_identities WHERE user_id = $1 ORDER BY created_at', [user.id]),
      deps.rooms.listForUser(user.id, { limit: 500 }),
      db.query(
        `SELECT at, type, outcome, client_id, ip, details FROM audit_events WHERE subject = $1 OR actor = $1 ORDER BY at DESC, id DESC LIMIT $2`,
        [user.id, EXPORT_AUDIT_LIMIT],
      ),
      deps.passkeys.list(user.id),
    ]);
    await record(ctx, user, 'account.export', 'success');
    ctx.set('Content-Disposition', `attachment; filename="gatehouse-account-${new Date().toISOString().slice(0, 10)}.json"`);
    ctx.type = 'application/json';
    ctx.body = JSON.stringify({
      exported_at: new Date().toISOString(),
      issuer: config.ISSUER,
      user: { id: user.id, email: user.email, name: user.name, email_verified: user.emailVerified, active: user.active, created_at: user.createdAt, last_login_at: user.lastLoginAt },
      has_password: await accounts.hasPassword(user.id),
      roles,
      permissions,
      // Names and dates only: seeds and recovery codes never leave the server.
      authenticators: factors.map((f) => ({ id: f.id, type: f.type, name: f.name, created_at: f.createdAt, last_used_at: f.lastUsedAt })),
      recovery_codes_remaining: recovery,
      // Names and dates only, as for authenticators: no credential id, no public key.
      passkeys: passkeys.map((p) => ({ id: p.id, name: p.name, synced: p.backedUp, created_at: p.createdAt, last_used_at: p.lastUsedAt })),
      devices: devices.rows,
      apps,
      linked_identities: links.rows,
      room_sessions: rooms,
      audit_events: events.rows,
    }, null, 2);
  });

  async function deleteForm(ctx: Context, user: User, extra: Record<string, unknown> = {}, status = 200) {
    const lastAdmin = await isLastAdmin(user);
    kit.page(ctx, 'account-delete', {
      title: 'Delete your account', email: user.email, hasPassword: await accounts.hasPassword(user.id), lastAdmin,
      csrf: issueCsrf(ctx, { secure }), error: undefined, ...extra,
    }, status);
  }

  async function isLastAdmin(user: User) {
    const admins = await accounts.activeAdminIds();
    return admins.length === 1 && admins[0] === user.id;
  }

  router.get('/delete', async function showDelete(ctx: Context) {
    const user = await kit.signedIn(ctx);
    if (user) await deleteForm(ctx, user);
  });

  router.post('/delete', async function deleteAccount(ctx: Context) {
    const { form, user } = await signedInForm(ctx);
    if (!user) return;
    if (await isLastAdmin(user)) return deleteForm(ctx, user, { error: 'You are the only administrator. Make someone else an administrator first.' }, 400);
    if (await accounts.hasPassword(user.id)) {
      const refused = await kit.refusePassword(ctx, user, form.get('password') ?? '');
      if (refused) {
        if (refused.status === 400) await record(ctx, user, 'account.delete', 'failure', { reason: 'wrong_password' });
        return deleteForm(ctx, user, { error: refused.error ?? 'That password is not right.' }, refused.status);
      }
    } else if (!sameAddress(form.get('email') ?? '', user.email)) {
      // An account created through single sign-on has no password: typing the address confirms.
      return deleteForm(ctx, user, { error: 'Type your email address exactly to confirm.' }, 400);
    }
    // Revokes every session and token of the user first (withUserRevocation); factors, devices,
    // links and roles go with the row. Room history is personal data too: ended sessions go now; one
    // still open stays until participant removal (possibly on another node) has taken the user out
    // and LiveKit reports the leave. Audit events stay: they are the security record (who did what,
    // when), and name the user only by id.
    await accounts.deleteUser(user.id);
    await deps.rooms.deleteEndedSessionsOfUser(user.id);
    await record(ctx, user, 'account.delete', 'success');
    kit.page(ctx, 'account-message', {
      title: 'Account deleted',
      message: `The account ${user.email} and its sign-ins, authenticators, devices and application access have been deleted.`,
    });
  });
}

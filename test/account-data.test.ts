// The account pages about a person's data (DESIGN.md: sessions, data export, delete), driven as a
// browser would (cookie jar, every hop followed): list and remove an application's access, sign out
// everywhere, download everything Gatehouse keeps, delete the account. Each change is checked where
// a user would feel it: the app's refresh token and access token stop working, the row is gone.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { ADMIN, Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const ERIN = { email: 'erin@example.com', password: 'erin has a long password' };
const FRED = { email: 'fred@example.com', password: 'fred has a long password' };
const RESOURCE = 'https://notes.example.com/mcp';

describe('account data pages', () => {
  let gh: TestGatehouse;
  let app: { client_id: string; client_secret: string };
  let config: oidc.Configuration;

  async function open(browser: Browser, path: string, creds: { email: string; password: string }) {
    let step = await browser.follow(`${gh.url}${path}`, gh.url);
    if (step.html && /name="password"/.test(step.html) && /\/interaction\//.test(step.html)) {
      const { action, fields } = formOf(step.html, '/login');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: creds.email, password: creds.password } });
    }
    return step;
  }
  async function post(browser: Browser, html: string, action: string, fields: Record<string, string> = {}) {
    const f = formOf(html, action);
    return browser.follow(new URL(f.action, gh.url).href, gh.url, { form: { ...f.fields, ...fields } });
  }
  async function introspect(token: string) {
    const res = await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    return (await res.json()) as { active: boolean };
  }
  const userId = async (email: string) => (await gh.deps.db.query<{ id: string }>('SELECT id FROM users WHERE email = $1', [email])).rows[0]?.id;
  const auditRows = async (type: string, subject: string) => (await gh.deps.db.query<{ outcome: string; client_id: string | null }>(
    'SELECT outcome, client_id FROM audit_events WHERE type = $1 AND subject = $2 ORDER BY id', [type, subject])).rows;

  beforeAll(async () => {
    // Signs in as ADMIN to test the data pages, not the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none' } });
    await gh.cli('user', 'create', '--email', ERIN.email, '--password', ERIN.password, '--name', 'Erin Example');
    await gh.cli('user', 'create', '--email', FRED.email, '--password', FRED.password);
    await gh.cli('resource', 'create', '--uri', RESOURCE, '--scope', 'notes:read');
    await gh.cli('role', 'update', 'user', '--add', 'notes:read');
    app = await gh.cli('client', 'create', '--name', 'Notes app', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token');
    config = await rpConfig(gh, app.client_id, app.client_secret);
  });
  afterAll(async () => gh?.close());

  it("lists an app's access and removes it: its refresh and access tokens stop working", async () => {
    const { tokens } = await codeFlow(gh, config, { creds: ERIN, scope: 'openid offline_access notes:read', resource: RESOURCE });
    expect((await introspect(tokens.access_token)).active).toBe(true);

    const browser = new Browser();
    const page = await open(browser, '/account/apps', ERIN);
    expect(page.res.status).toBe(200);
    expect(page.html).toContain('Notes app');
    expect(page.html).toContain(`${RESOURCE}: notes:read`);
    // Gatehouse's own account client is not an "app" to remove.
    expect(page.html).not.toContain('gatehouse-account');

    const after = await post(browser, page.html!, '/revoke');
    expect(after.url).toBe(`${gh.url}/account/apps`);
    expect(after.html).toContain('No application has access to your account.');
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await introspect(tokens.access_token)).active).toBe(false);
    expect(await auditRows('account.app_revoke', (await userId(ERIN.email))!)).toEqual([{ outcome: 'success', client_id: app.client_id }]);
  });

  it('exports everything kept about the user as a JSON download, without a secret in it', async () => {
    const browser = new Browser();
    await open(browser, '/account', ERIN);
    const erin = (await gh.deps.accounts.findUserByEmail(ERIN.email))!;
    await gh.deps.passkeys.add({ userId: erin.id, name: 'Erin phone', credentialId: 'cred-erin', publicKey: new Uint8Array([7, 7, 7]), signCount: 0, transports: [], deviceType: 'multiDevice', backedUp: true });
    const res = await browser.request(`${gh.url}/account/export`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="gatehouse-account-\d{4}-\d{2}-\d{2}\.json"$/);
    const text = await res.text();
    const data = JSON.parse(text);
    expect(data.user).toMatchObject({ email: ERIN.email, name: 'Erin Example', active: true });
    expect(data).toMatchObject({ has_password: true, roles: ['user'], authenticators: [], linked_identities: [], room_sessions: [] });
    expect(data.permissions).toContain('notes:read');
    expect(data.passkeys).toEqual([expect.objectContaining({ name: 'Erin phone', synced: true })]);
    expect(text).not.toContain('cred-erin');
    // Her own history: the sign-ins and the access she removed.
    const types = data.audit_events.map((e: { type: string }) => e.type);
    expect(types).toEqual(expect.arrayContaining(['login', 'account.app_revoke']));
    expect(text).not.toMatch(/\$argon2|password_hash|secret_enc/);
    expect(await auditRows('account.export', data.user.id)).toHaveLength(1);
  });

  it('signs out everywhere: every session and token of the user ends, this browser too', async () => {
    // Tokens an app holds before the sign-out.
    const { tokens } = await codeFlow(gh, config, { creds: ERIN, scope: 'openid offline_access' });
    const browser = new Browser();
    const page = await open(browser, '/account/apps', ERIN);
    const done = await post(browser, page.html!, '/account/sign-out-everywhere');
    expect(done.res.status).toBe(200);
    expect(done.html).toContain('Signed out everywhere');
    expect((await introspect(tokens.access_token)).active).toBe(false);
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const again = await browser.request(`${gh.url}/account`);
    expect(again.status).toBe(302);
    expect(again.headers.get('location')).toMatch(/^\/account\/sign-in/);
  });

  it('deletes the account after the password: tokens and ended room history go; the last admin cannot', async () => {
    const { tokens } = await codeFlow(gh, config, { creds: FRED, scope: 'openid' });
    const fredId = (await userId(FRED.email))!;
    await gh.deps.db.query(
      `INSERT INTO room_sessions (participant_sid, room_name, participant_identity, user_id, joined_at, left_at, duration_seconds, end_reason)
       VALUES ('PA_fred1', 'user_fred_chat', $1, $2, now() - interval '1 hour', now() - interval '50 minutes', 600, 'participant_left')`,
      [`user_${fredId}`, fredId],
    );
    const browser = new Browser();
    const page = await open(browser, '/account/delete', FRED);
    expect(page.html).toContain('Delete your account');
    expect(page.html).toContain('name="password"');

    const wrong = await post(browser, page.html!, '/account/delete', { password: 'not fred at all, sorry' });
    expect(wrong.res.status).toBe(400);
    expect(wrong.html).toContain('That password is not right.');
    expect(await userId(FRED.email)).toBe(fredId);
    const noCsrf = await browser.request(`${gh.url}/account/delete`, { form: { password: FRED.password } });
    expect(noCsrf.status).toBe(403);

    const done = await post(browser, wrong.html!, '/account/delete', { password: FRED.password });
    expect(done.res.status).toBe(200);
    expect(done.html).toContain('Account deleted');
    expect(await userId(FRED.email)).toBeUndefined();
    expect((await gh.deps.db.query('SELECT 1 FROM room_sessions WHERE user_id = $1', [fredId])).rows).toHaveLength(0);
    expect((await introspect(tokens.access_token)).active).toBe(false);
    expect((await auditRows('account.delete', fredId)).map((r) => r.outcome)).toEqual(['failure', 'success']);
    // The address can no longer sign in.
    const login = await open(new Browser(), '/account', FRED);
    expect(login.res.status).toBe(401);

    // The only administrator is told to hand over first, and the account stays.
    const admin = new Browser();
    const adminPage = await open(admin, '/account/delete', ADMIN);
    expect(adminPage.html).toContain('You are the only administrator');
    expect(adminPage.html).not.toContain('name="password"');
    const csrf = /name="_csrf" value="([^"]+)"/.exec((await open(admin, '/account/apps', ADMIN)).html!)![1];
    const forced = await admin.request(`${gh.url}/account/delete`, { form: { _csrf: csrf, password: ADMIN.password } });
    expect(forced.status).toBe(400);
    expect(await userId(ADMIN.email)).toBeDefined();
  });
});

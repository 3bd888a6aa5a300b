// The admin console (/admin) as an administrator uses it in a browser (cookie jar, every hop
// followed): signs in through the account pages, finds and changes users, reads the audit log. A
// plain user is refused, a read-only role sees no forms and cannot post, and a user whom policy
// requires to use MFA is sent through a step-up first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, Browser, formOf, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const IVY = { email: 'ivy@example.com', password: 'ivy has a long password' };
const JO = { email: 'jo@example.com', password: 'jo has a long password' };

async function open(gh: TestGatehouse, browser: Browser, path: string, creds: { email: string; password: string }) {
  let step = await browser.follow(`${gh.url}${path}`, gh.url);
  if (step.html && /name="password"/.test(step.html) && /\/interaction\//.test(step.html)) {
    const { action, fields } = formOf(step.html, '/login');
    step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: creds.email, password: creds.password } });
  }
  return step;
}
async function post(gh: TestGatehouse, browser: Browser, html: string, action: string, fields: Record<string, string | string[]> = {}) {
  const f = formOf(html, action);
  const body = new URLSearchParams(f.fields);
  for (const [k, v] of Object.entries(fields)) {
    body.delete(k);
    for (const x of Array.isArray(v) ? v : [v]) body.append(k, x);
  }
  return browser.follow(new URL(f.action, gh.url).href, gh.url, { form: body });
}

describe('admin console', () => {
  let gh: TestGatehouse;
  let admin: Browser;
  let ivyId: string;

  beforeAll(async () => {
    // Signs in as ADMIN to test the console, not the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none' } });
    ivyId = (await gh.cli('user', 'create', '--email', IVY.email, '--password', IVY.password, '--name', 'Ivy')).id;
    await gh.cli('user', 'create', '--email', JO.email, '--password', JO.password);
    await gh.cli('role', 'create', 'auditor', '--permission', 'gatehouse:admin:read');
    admin = new Browser();
  });
  afterAll(async () => gh?.close());

  it('signs an administrator in and lists and finds users', async () => {
    const list = await open(gh, admin, '/admin', ADMIN);
    expect(list.url).toBe(`${gh.url}/admin/users`);
    expect(list.res.status).toBe(200);
    expect(list.res.headers.get('cache-control')).toBe('no-store');
    expect(list.html).toContain(IVY.email);
    expect(list.html).toContain(JO.email);
    const found = await admin.follow(`${gh.url}/admin/users?q=ivy`, gh.url);
    expect(found.html).toContain(IVY.email);
    expect(found.html).not.toContain(JO.email);
    // LIKE wildcards in the search are literal.
    expect((await admin.follow(`${gh.url}/admin/users?q=%25`, gh.url)).html).toContain('No user matches.');
  });

  it("changes a user's roles, disables and enables them, and sets a generated password shown once", async () => {
    const detail = await admin.follow(`${gh.url}/admin/users/${ivyId}`, gh.url);
    expect(detail.html).toContain('Ivy');
    const saved = await post(gh, admin, detail.html!, `/admin/users/${ivyId}/roles`, { role: ['user', 'auditor'] });
    expect(saved.url).toBe(`${gh.url}/admin/users/${ivyId}?done=roles`);
    expect(saved.html).toContain('Roles saved');
    expect((await gh.cli('user', 'get', '--id', ivyId)).roles).toEqual(['auditor', 'user']);

    const disabled = await post(gh, admin, saved.html!, `/admin/users/${ivyId}/active`);
    expect(disabled.html).toContain('The account is disabled');
    expect(await gh.deps.accounts.authenticate(IVY.email, IVY.password)).toEqual({ error: 'inactive' });
    const enabled = await post(gh, admin, disabled.html!, `/admin/users/${ivyId}/active`);
    expect(enabled.html).toContain('The account is enabled');

    const fresh = await post(gh, admin, enabled.html!, `/admin/users/${ivyId}/password`);
    const password = /id="generated-password">([^<]+)</.exec(fresh.html!)![1];
    expect(await gh.deps.accounts.authenticate(IVY.email, password)).toHaveProperty('user');
    await gh.cli('user', 'set-password', '--id', ivyId, '--password', IVY.password);

    const { rows } = await gh.deps.db.query<{ type: string; actor: string }>(
      "SELECT type, actor FROM audit_events WHERE subject = $1 AND type LIKE 'admin.%' AND actor LIKE 'user:%' ORDER BY id", [ivyId]);
    const adminId = (await gh.cli('user', 'get', '--email', ADMIN.email)).id;
    expect(rows.map((r) => r.type)).toEqual(['admin.user.set_roles', 'admin.user.disable', 'admin.user.enable', 'admin.user.set_password']);
    expect(rows.every((r) => r.actor === `user:${adminId}`)).toBe(true);
    expect(JSON.stringify(rows)).not.toContain(password);
  });

  it('adds a user with a generated first password, and deletes one only with its address typed', async () => {
    const list = await admin.follow(`${gh.url}/admin/users`, gh.url);
    const created = await post(gh, admin, list.html!, '/admin/users/new', { email: 'kim@example.com', name: 'Kim', role: ['user'] });
    expect(created.html, created.html).toContain('Account created');
    const password = /id="generated-password">([^<]+)</.exec(created.html!)![1];
    expect(await gh.deps.accounts.authenticate('kim@example.com', password)).toHaveProperty('user');
    const kimId = (await gh.cli('user', 'get', '--email', 'kim@example.com')).id;

    const detail = await admin.follow(`${gh.url}/admin/users/${kimId}`, gh.url);
    const wrong = await post(gh, admin, detail.html!, `/admin/users/${kimId}/delete`, { confirm_email: 'someone@example.com' });
    expect(wrong.res.status).toBe(400);
    expect(wrong.html).toContain('Type the email address');
    const done = await post(gh, admin, wrong.html!, `/admin/users/${kimId}/delete`, { confirm_email: 'kim@example.com' });
    expect(done.url).toBe(`${gh.url}/admin/users?done=deleted`);
    await expect(gh.cli('user', 'get', '--id', kimId)).rejects.toThrow(/no user/);

    // The only administrator cannot delete themselves.
    const adminId = (await gh.cli('user', 'get', '--email', ADMIN.email)).id;
    const self = await admin.follow(`${gh.url}/admin/users/${adminId}`, gh.url);
    const refused = await post(gh, admin, self.html!, `/admin/users/${adminId}/delete`, { confirm_email: ADMIN.email });
    expect(refused.res.status).toBe(409);
    expect(refused.html).toContain('only active administrator');
  });

  it("lists a user's passkeys and removes one (audited, no key material shown)", async () => {
    // Registered through the store (test/passkeys-browser.test.ts registers real ones in Chromium).
    const add = (name: string, credentialId: string) => gh.deps.passkeys.add({
      userId: ivyId, name, credentialId, publicKey: new Uint8Array([165, 1, 2]), signCount: 0, transports: ['internal'], deviceType: 'multiDevice', backedUp: true,
    });
    const phone = await add('Ivy phone', 'cred-ivy-phone');
    await add('Ivy key', 'cred-ivy-key');
    const detail = await admin.follow(`${gh.url}/admin/users/${ivyId}`, gh.url);
    expect([...detail.html!.matchAll(/class="passkey-name">([^<]+)</g)].map((m) => m[1])).toEqual(['Ivy phone', 'Ivy key']);
    expect(detail.html).not.toContain('cred-ivy');
    const removed = await post(gh, admin, detail.html!, `/admin/users/${ivyId}/passkeys/${phone.id}/remove`);
    expect(removed.url).toBe(`${gh.url}/admin/users/${ivyId}?done=passkey-removed`);
    expect(removed.html).toContain('The passkey was removed');
    expect((await gh.deps.passkeys.list(ivyId)).map((p) => p.name)).toEqual(['Ivy key']);
    const { rows } = await gh.deps.db.query<{ actor: string; details: Record<string, unknown> }>("SELECT actor, details FROM audit_events WHERE type = 'admin.user.remove_passkey'");
    expect(rows).toEqual([{ actor: expect.stringMatching(/^user:/), details: { factor: phone.id, name: 'Ivy phone' } }]);
    // The same one again: already gone, a clear 404 and nothing else removed.
    const csrf = /name="_csrf" value="([^"]+)"/.exec(removed.html!)![1];
    const again = await admin.follow(`${gh.url}/admin/users/${ivyId}/passkeys/${phone.id}/remove`, gh.url, { form: { _csrf: csrf } });
    expect(again.res.status).toBe(404);
    expect(again.html).toContain('has no passkey');
    expect((await gh.deps.passkeys.list(ivyId)).map((p) => p.name)).toEqual(['Ivy key']);
  });

  it('shows the audit log, filtered by type and by who', async () => {
    const page = await admin.follow(`${gh.url}/admin/audit?type=admin.user.delete`, gh.url);
    expect(page.res.status).toBe(200);
    expect(page.html).toContain('admin.user.delete');
    expect(page.html).not.toContain('admin.user.set_roles');
    const ivy = await admin.follow(`${gh.url}/admin/audit?who=${ivyId}`, gh.url);
    expect(ivy.html).toContain('admin.user.set_roles');
  });

  it('refuses a post without the CSRF field, and a user who is not an administrator', async () => {
    const forged = await admin.request(`${gh.url}/admin/users/${ivyId}/sign-out`, { form: { confirm: 'yes' } });
    expect(forged.status).toBe(403);

    const jo = new Browser();
    const page = await open(gh, jo, '/admin/users', JO);
    expect(page.res.status).toBe(403);
    expect(page.html).toContain('Not an administrator');
  });

  it('a read-only role sees the pages without forms, and cannot post', async () => {
    const ivy = new Browser();
    const page = await open(gh, ivy, `/admin/users/${ivyId}`, IVY);
    expect(page.res.status).toBe(200);
    expect(page.html).toContain('Read-only');
    expect(page.html).not.toContain('Save roles');
    const csrf = /name="_csrf" value="([^"]+)"/.exec((await ivy.follow(`${gh.url}/account/apps`, gh.url)).html!)![1];
    const refused = await ivy.request(`${gh.url}/admin/users/${ivyId}/roles`, { form: { _csrf: csrf, role: 'user' } });
    expect(refused.status).toBe(403);
    expect((await gh.cli('user', 'get', '--id', ivyId)).roles).toEqual(['auditor', 'user']);
  });
});

describe('admin console and MFA policy', () => {
  it('sends a password-only session of a user who must use MFA through a step-up first', async () => {
    const gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'auditor' } });
    try {
      await gh.cli('role', 'create', 'reader', '--permission', 'gatehouse:admin:read');
      await gh.cli('role', 'create', 'auditor', '--permission', 'gatehouse:admin:read');
      await gh.cli('user', 'create', '--email', JO.email, '--password', JO.password, '--role', 'user', '--role', 'reader');
      const jo = new Browser();
      expect((await open(gh, jo, '/admin/users', JO)).res.status).toBe(200);
      await gh.cli('user', 'set-roles', '--email', JO.email, '--role', 'user', '--role', 'reader', '--role', 'auditor');
      const step = await jo.follow(`${gh.url}/admin/users`, gh.url);
      // Only the missing factor: no password form, straight to setting up an authenticator.
      expect(step.html).toContain('Set up two-step verification');
      expect(step.html).not.toContain('name="password"');
    } finally {
      await gh.close();
    }
  });
});

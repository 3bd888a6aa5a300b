// Accounts against a real (in-memory) PostgreSQL: PGlite with the same migrations as production.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import argon2 from 'argon2';
import { createPgliteDb, type Db } from '../src/store/db.ts';
import { migrate } from '../src/store/migrate.ts';
import { createAudit } from '../src/audit/index.ts';
import { createLogger } from '../src/http/log.ts';
import {
  CLAIMS, createAccounts, EmailTakenError, InvalidEmailError, UnknownRoleError, WeakPasswordError, type Accounts,
} from '../src/accounts/users.ts';
import { emailKey } from '../src/accounts/email.ts';
import { ARGON2_PARAMS, DUMMY_HASH, hashPassword, passwordPolicyViolation, verifyAgainstDummy, verifyPassword } from '../src/accounts/passwords.ts';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import compose from 'koa-compose';
import Provider from 'oidc-provider';
import { loadConfig } from '../src/config/index.ts';
import { errorHandler } from '../src/http/errors.ts';
import { createInteractionRouter, renderView } from '../src/interaction/router.ts';

let db: Db;
let accounts: Accounts;
const PASSWORD = 'correct horse battery staple';

beforeAll(async () => {
  db = await createPgliteDb();
  await migrate(db);
  accounts = createAccounts(db, createAudit(db, createLogger('silent')));
});
afterAll(async () => db?.close());

const storedHash = async (id: string) =>
  (await db.query<{ password_hash: string }>('SELECT password_hash FROM users WHERE id = $1', [id])).rows[0].password_hash;

describe('passwords', () => {
  it('hashes with argon2id m=19456 t=2 p=1 and verifies', async () => {
    const hash = await hashPassword(PASSWORD);
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/);
    expect(await verifyPassword(hash, PASSWORD)).toEqual({ ok: true, needsRehash: false });
    expect(await verifyPassword(hash, 'wrong password!')).toEqual({ ok: false, needsRehash: false });
    expect(await verifyPassword('not a hash', PASSWORD)).toEqual({ ok: false, needsRehash: false });
  });

  it('the dummy hash uses the current parameters, so unknown emails cost a real verification', async () => {
    expect(argon2.needsRehash(DUMMY_HASH, ARGON2_PARAMS)).toBe(false);
    expect(DUMMY_HASH.startsWith('$argon2id$')).toBe(true);
    expect(await verifyAgainstDummy(PASSWORD)).toBe(false);
  });

  it('policy: 12 to 1024 characters, not the email', () => {
    expect(passwordPolicyViolation('short')).toMatch(/at least 12/);
    expect(passwordPolicyViolation('x'.repeat(1025))).toMatch(/at most 1024/);
    expect(passwordPolicyViolation('Someone@Example.com', { email: 'someone@example.com' })).toMatch(/email/);
    expect(passwordPolicyViolation(PASSWORD, { email: 'someone@example.com' })).toBeNull();
  });
});

describe('accounts', () => {
  it('creates users with UUID ids; email is trimmed and unique case-insensitively', async () => {
    const u = await accounts.createUser({ email: '  Alice@Example.com ', password: PASSWORD, name: 'Alice' });
    expect(u.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(u).toMatchObject({ email: 'Alice@Example.com', name: 'Alice', active: true, emailVerified: false, lastLoginAt: null });
    expect(u.createdAt).toBeInstanceOf(Date);
    await expect(accounts.createUser({ email: 'alice@example.COM', password: PASSWORD })).rejects.toBeInstanceOf(EmailTakenError);
    expect((await accounts.findUserByEmail('ALICE@example.com'))?.id).toBe(u.id);
    expect((await accounts.findUserById(u.id))?.email).toBe('Alice@Example.com');
    expect(await accounts.findUserById('00000000-0000-4000-8000-000000000000')).toBeUndefined();
  });

  it('one normalisation: every spelling of an address (fullwidth, İ, ß/SS, combining marks) reaches its account; another address reaches nothing of it', async () => {
    // NFKC, full case fold, NFKC; idempotent, so a stored key keyed again is the same.
    const samples = ['Straße@Example.com', 'ＳＴＲＡＳＳＥ@example.com', 'İlker@example.com', 'José@example.com', 'Jose\u0301@example.com', 'ΣΑΣ@example.com'];
    for (const s of samples) expect(emailKey(emailKey(s))).toBe(emailKey(s));
    expect(emailKey('İlker@example.com')).toBe('i\u0307lker@example.com');
    expect(emailKey('İlker@example.com')).not.toBe(emailKey('ilker@example.com'));

    const strasse = await accounts.createUser({ email: 'Straße@Example.com', password: PASSWORD });
    for (const spelling of ['strasse@example.com', 'STRASSE@EXAMPLE.COM', 'ｓｔｒａｓｓｅ@ｅｘａｍｐｌｅ.ｃｏｍ', ' straße@example.com ']) {
      expect((await accounts.findUserByEmail(spelling))?.id, spelling).toBe(strasse.id);
      await expect(accounts.createUser({ email: spelling, password: PASSWORD }), spelling).rejects.toBeInstanceOf(EmailTakenError);
    }
    expect(await accounts.authenticate('ＳＴＲＡＳＳＥ@example.com', PASSWORD)).toMatchObject({ user: { id: strasse.id, email: 'Straße@Example.com' } });

    const ilker = await accounts.createUser({ email: 'İlker@example.com', password: PASSWORD });
    // The same İ, decomposed (I + combining dot above) or lower-cased with the combining dot.
    for (const spelling of ['I\u0307lker@example.com', 'i\u0307lker@example.com', 'İLKER@EXAMPLE.COM']) {
      expect((await accounts.findUserByEmail(spelling))?.id, spelling).toBe(ilker.id);
    }
    // A plain i is another address: not this account, and free to be its own.
    expect(await accounts.findUserByEmail('ilker@example.com')).toBeUndefined();
    expect(await accounts.authenticate('ilker@example.com', PASSWORD)).toEqual({ error: 'invalid_credentials' });
    const other = await accounts.createUser({ email: 'ilker@example.com', password: PASSWORD });
    expect(other.id).not.toBe(ilker.id);

    const jose = await accounts.createUser({ email: 'José@example.com' });
    expect((await accounts.findUserByEmail('JOSE\u0301@example.com'))?.id).toBe(jose.id);
    // A fullwidth at sign would fold into a second '@': not an address.
    await expect(accounts.createUser({ email: 'a＠b@example.com' })).rejects.toBeInstanceOf(InvalidEmailError);
    const { rows } = await db.query<{ email_key: string }>('SELECT email_key FROM users WHERE id = $1', [strasse.id]);
    expect(rows[0].email_key).toBe('strasse@example.com');
  });

  it('refuses unknown roles, bad emails and weak passwords with typed errors, writing nothing', async () => {
    const before = (await accounts.listUsers({ limit: 1000, offset: 0 })).length;
    await expect(accounts.createUser({ email: 'r@example.com', roles: ['user', 'wizard'] })).rejects.toBeInstanceOf(UnknownRoleError);
    await expect(accounts.createUser({ email: 'not-an-email' })).rejects.toBeInstanceOf(InvalidEmailError);
    await expect(accounts.createUser({ email: 'x\u0000y@example.com' })).rejects.toBeInstanceOf(InvalidEmailError);
    await expect(accounts.createUser({ email: 'w@example.com', password: 'short' })).rejects.toBeInstanceOf(WeakPasswordError);
    await expect(accounts.createUser({ email: 'w@example.com', password: 'w@example.com' })).rejects.toBeInstanceOf(WeakPasswordError);
    expect((await accounts.listUsers({ limit: 1000, offset: 0 })).length).toBe(before);
  });

  it('authenticates; a wrong password and an unknown email get the same error', async () => {
    const u = await accounts.createUser({ email: 'bob@example.com', password: PASSWORD });
    const ok = await accounts.authenticate('BOB@example.com', PASSWORD);
    expect('user' in ok && ok.user.id).toBe(u.id);
    expect('user' in ok && ok.user.lastLoginAt).toBeInstanceOf(Date);
    expect((await accounts.findUserById(u.id))?.lastLoginAt).toBeInstanceOf(Date);
    expect(await accounts.authenticate('bob@example.com', 'wrong password!')).toEqual({ error: 'invalid_credentials' });
    expect(await accounts.authenticate('nobody@example.com', PASSWORD)).toEqual({ error: 'invalid_credentials' });
    expect(await accounts.authenticate("' OR 1=1 --", PASSWORD)).toEqual({ error: 'invalid_credentials' });
    expect(await accounts.authenticate('x\u0000y', PASSWORD)).toEqual({ error: 'invalid_credentials' });
    // A user without a password (created by an admin, or federated) cannot log in with one.
    await accounts.createUser({ email: 'nopass@example.com' });
    expect(await accounts.authenticate('nopass@example.com', '')).toEqual({ error: 'invalid_credentials' });
  });

  it('re-hashes on login when the stored hash used other parameters', async () => {
    const u = await accounts.createUser({ email: 'legacy@example.com', password: PASSWORD });
    const legacy = await argon2.hash(PASSWORD, { type: argon2.argon2id, memoryCost: 65536, timeCost: 3, parallelism: 4 });
    await db.query('UPDATE users SET password_hash = $2 WHERE id = $1', [u.id, legacy]);
    const changedAt = async () => (await db.query<{ t: Date }>('SELECT password_changed_at AS t FROM users WHERE id = $1', [u.id])).rows[0].t;
    const before = await changedAt();
    expect('user' in await accounts.authenticate('legacy@example.com', PASSWORD)).toBe(true);
    const after = await storedHash(u.id);
    expect(after).not.toBe(legacy);
    expect(after).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/);
    expect(await changedAt()).toEqual(before);
    // And the new hash still verifies.
    expect('user' in await accounts.authenticate('legacy@example.com', PASSWORD)).toBe(true);
    expect(await storedHash(u.id)).toBe(after);
  });

  it('refuses an inactive user, but only after the right password', async () => {
    const u = await accounts.createUser({ email: 'carol@example.com', password: PASSWORD });
    await accounts.setActive(u.id, false);
    expect(await accounts.authenticate('carol@example.com', PASSWORD)).toEqual({ error: 'inactive' });
    expect(await accounts.authenticate('carol@example.com', 'wrong password!')).toEqual({ error: 'invalid_credentials' });
    await accounts.setActive(u.id, true);
    expect('user' in await accounts.authenticate('carol@example.com', PASSWORD)).toBe(true);
  });

  it('sets a new password and records when', async () => {
    const u = await accounts.createUser({ email: 'dave@example.com', password: PASSWORD });
    await expect(accounts.setPassword(u.id, 'short')).rejects.toBeInstanceOf(WeakPasswordError);
    await db.query("UPDATE users SET password_changed_at = now() - interval '1 day' WHERE id = $1", [u.id]);
    await accounts.setPassword(u.id, 'another long passphrase');
    const { rows } = await db.query<{ recent: boolean }>("SELECT password_changed_at > now() - interval '1 minute' AS recent FROM users WHERE id = $1", [u.id]);
    expect(rows[0].recent).toBe(true);
    expect(await accounts.authenticate('dave@example.com', PASSWORD)).toEqual({ error: 'invalid_credentials' });
    expect('user' in await accounts.authenticate('dave@example.com', 'another long passphrase')).toBe(true);
  });

  it('roles and permissions: the union over roles', async () => {
    await db.query("INSERT INTO roles (name, permissions) VALUES ('support', ARRAY['tickets:read', 'livekit:join'])");
    const u = await accounts.createUser({ email: 'erin@example.com', password: PASSWORD });
    expect(await accounts.rolesAndPermissions(u.id)).toEqual({ roles: ['user'], permissions: ['livekit:join'] });
    await accounts.setRoles(u.id, ['user', 'support', 'user']);
    expect(await accounts.rolesAndPermissions(u.id)).toEqual({ roles: ['support', 'user'], permissions: ['livekit:join', 'tickets:read'] });
    await expect(accounts.setRoles(u.id, ['nope'])).rejects.toBeInstanceOf(UnknownRoleError);
    expect((await accounts.rolesAndPermissions(u.id)).roles).toEqual(['support', 'user']);
    await accounts.setRoles(u.id, []);
    expect(await accounts.rolesAndPermissions(u.id)).toEqual({ roles: [], permissions: [] });
  });

  it('claims by scope', async () => {
    const u = await accounts.createUser({ email: 'frank@example.com', password: PASSWORD, name: 'Frank', emailVerified: true, roles: ['admin'] });
    expect(await accounts.claimsFor(u.id, new Set(['openid']))).toEqual({ sub: u.id });
    expect(await accounts.claimsFor(u.id, new Set(['openid', 'email']))).toEqual({ sub: u.id, email: 'frank@example.com', email_verified: true });
    expect(await accounts.claimsFor(u.id, new Set(['openid', 'profile']))).toEqual({ sub: u.id, name: 'Frank' });
    expect(await accounts.claimsFor(u.id, new Set(['openid', 'roles']))).toEqual({
      sub: u.id, roles: ['admin'], permissions: ['gatehouse:admin', 'livekit:admin', 'livekit:join'],
    });
    // Every claim returned is one CLAIMS lists under a granted scope.
    const all = await accounts.claimsFor(u.id, new Set(Object.keys(CLAIMS)));
    expect(Object.keys(all).sort()).toEqual(Object.values(CLAIMS).flat().sort());
  });

  it('lists users with limit and offset', async () => {
    const all = await accounts.listUsers({ limit: 1000, offset: 0 });
    const page = await accounts.listUsers({ limit: 2, offset: 1 });
    expect(page.map((u) => u.id)).toEqual(all.slice(1, 3).map((u) => u.id));
  });
});

describe('ensureFirstAdmin', () => {
  it('creates an admin with a one-time password once; later calls do nothing', async () => {
    const fresh = await createPgliteDb();
    try {
      await migrate(fresh);
      const acc = createAccounts(fresh, createAudit(fresh, createLogger('silent')));
      const first = await acc.ensureFirstAdmin({});
      expect(first?.password).toEqual(expect.any(String));
      expect(first!.password!.length).toBeGreaterThanOrEqual(12);
      const login = await acc.authenticate(first!.email, first!.password!);
      expect('user' in login).toBe(true);
      const id = 'user' in login ? login.user.id : '';
      expect((await acc.rolesAndPermissions(id)).roles).toEqual(['admin']);
      expect(await acc.ensureFirstAdmin({})).toBeNull();
      expect(await acc.ensureFirstAdmin({ email: 'other@example.com', password: PASSWORD })).toBeNull();
      expect(await acc.findUserByEmail('other@example.com')).toBeUndefined();
      const events = await fresh.query<{ details: unknown }>("SELECT details FROM audit_events WHERE type = 'admin.bootstrap'");
      expect(events.rows.length).toBe(1);
      expect(JSON.stringify(events.rows)).not.toContain(first!.password!);
    } finally {
      await fresh.close();
    }
  });

  it('uses ADMIN_EMAIL/ADMIN_PASSWORD when given, and returns no password', async () => {
    const fresh = await createPgliteDb();
    try {
      await migrate(fresh);
      const acc = createAccounts(fresh, createAudit(fresh, createLogger('silent')));
      expect(await acc.ensureFirstAdmin({ email: 'root@example.com', password: PASSWORD })).toEqual({ email: 'root@example.com' });
      expect('user' in await acc.authenticate('root@example.com', PASSWORD)).toBe(true);
      expect(await acc.ensureFirstAdmin({ email: 'root@example.com', password: PASSWORD })).toBeNull();
    } finally {
      await fresh.close();
    }
  });
});

describe('views', () => {
  const base = { title: 'Test', uid: 'abc123', clientName: 'Demo <App>', csrf: 'tok' };
  it.each([
    ['login', { ...base, email: 'a@example.com', error: 'Invalid email or password.', registrationEnabled: true }],
    ['login', { ...base, email: '', registrationEnabled: false }],
    ['consent', { ...base, accountEmail: 'a@example.com', scopes: ['See your email address'], claims: ['name'], resources: [{ indicator: 'https://mcp.example.com/', scopes: ['tools:read'] }] }],
    ['consent', { ...base, scopes: [], claims: [], resources: [] }],
    ['register', { ...base, email: '', name: '', minLength: 12, maxLength: 1024, error: 'Password must be at least 12 characters.' }],
    ['logout', { title: 'Sign out', clientName: 'Demo', form: '<form id="op.logoutForm" method="post" action="/session/end/confirm"><input type="hidden" name="xsrf" value="x"/></form>' }],
    ['logout', { title: 'Sign out', form: '<form id="op.logoutForm"></form>' }],
    ['logged-out', { title: 'Signed out', clientName: 'Demo' }],
    ['logged-out', { title: 'Signed out' }],
    ['error', { title: 'Error', error: 'invalid_request', description: 'bad <thing>', status: 400 }],
  ] as const)('%s renders without inline script or style', (name, locals) => {
    const html = renderView(name, locals as Record<string, unknown>);
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain('href="/assets/style.css"');
    expect(html).not.toMatch(/<script|style=|\son[a-z]+=/i);
    // Untrusted text is escaped.
    expect(html).not.toContain('<App>');
    expect(html).not.toContain('<thing>');
  });

  it('login: labelled fields, the CSRF field and the client name', () => {
    const html = renderView('login', { ...base, email: '', registrationEnabled: false });
    expect(html).toContain('<label for="email">');
    expect(html).toContain('<label for="password">');
    expect(html).toContain('<input type="hidden" name="_csrf" value="tok">');
    expect(html).toContain('action="/interaction/abc123/login"');
    expect(html).toContain('Demo &lt;App&gt;');
    expect(html).not.toContain('/register');
  });

  it('logout: the button submits oidc-provider’s form by id', () => {
    const html = renderView('logout', { form: '<form id="op.logoutForm" method="post" action="/session/end/confirm"></form>' });
    expect(html).toContain('<form id="op.logoutForm"');
    expect(html).toMatch(/<button[^>]*form="op.logoutForm"[^>]*name="logout"[^>]*value="yes"/);
  });
});

describe('interaction router (real oidc-provider, in-memory adapter)', () => {
  const CALLBACK = 'http://127.0.0.1:8976/callback';
  let server: http.Server;
  let base: string;
  let routerDb: Db;
  let acc: Accounts;

  beforeAll(async () => {
    routerDb = await createPgliteDb();
    await migrate(routerDb);
    const log = createLogger('silent');
    const audit = createAudit(routerDb, log);
    acc = createAccounts(routerDb, audit);
    await acc.createUser({ email: 'pat@example.com', password: PASSWORD, roles: ['user'] });
    server = http.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const provider = new Provider(base, {
      clients: [
        { client_id: 'web', client_secret: 'web-secret-web-secret-web-secret', redirect_uris: [CALLBACK], client_name: 'Web <App>' },
        { client_id: 'spa', token_endpoint_auth_method: 'none', redirect_uris: [CALLBACK], first_party: true } as never,
      ],
      extraClientMetadata: { properties: ['first_party'] },
      async findAccount(_ctx, sub) {
        return { accountId: sub, claims: async (_use, scope) => acc.claimsFor(sub, new Set(String(scope ?? '').split(' '))) as never };
      },
      claims: CLAIMS as never,
      scopes: ['openid', 'email', 'profile', 'roles'],
      interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
      features: { devInteractions: { enabled: false } },
      cookies: { keys: ['test-cookie-key'] },
    });
    const config = loadConfig({ ISSUER: base, ALLOW_REGISTRATION: 'true' });
    const router = createInteractionRouter({ provider, config, accounts: acc, audit, log });
    const app = new Koa();
    app.keys = ['test-cookie-key'];
    app.use(errorHandler(log, (status, error, description) => renderView('error', { title: 'Error', error, description, status })));
    app.use(router.routes());
    app.use(router.allowedMethods());
    app.use(compose(provider.middleware as never) as Koa.Middleware);
    server.on('request', app.callback());
  });
  afterAll(async () => {
    server?.close();
    await routerDb?.close();
  });

  /** A cookie jar and manual redirects; returns the last response and the URL it came from. */
  function browser() {
    const jar = new Map<string, string>();
    async function request(url: string, form?: Record<string, string>) {
      const headers: Record<string, string> = { accept: 'text/html' };
      if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      if (form) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(url, { method: form ? 'POST' : 'GET', headers, body: form ? new URLSearchParams(form) : undefined, redirect: 'manual' });
      for (const c of res.headers.getSetCookie()) {
        const [pair] = c.split(';');
        const i = pair.indexOf('=');
        if (/expires=Thu, 01 Jan 1970/i.test(c)) jar.delete(pair.slice(0, i));
        else jar.set(pair.slice(0, i), pair.slice(i + 1));
      }
      return res;
    }
    async function follow(url: string, form?: Record<string, string>) {
      let res = await request(url, form);
      let current = url;
      while (res.status >= 300 && res.status < 400) {
        current = new URL(res.headers.get('location')!, current).href;
        if (!current.startsWith(base)) break;
        res = await request(current);
      }
      return { url: current, res, html: current.startsWith(base) ? await res.text() : '' };
    }
    return { request, follow };
  }

  const hidden = (html: string, action: string) => {
    const form = [...html.matchAll(/<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/g)].find((f) => f[1].includes(action))!;
    return { action: new URL(form[1], base).href, csrf: /name="_csrf" value="([^"]+)"/.exec(form[2])![1] };
  };

  function authUrl(clientId: string) {
    const u = new URL('/auth', base);
    u.search = new URLSearchParams({
      client_id: clientId, response_type: 'code', scope: 'openid email roles', redirect_uri: CALLBACK,
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256',
    }).toString();
    return u.href;
  }

  it('login (wrong password, then right) → consent → code at the callback', async () => {
    const b = browser();
    const login = await b.follow(authUrl('web'));
    expect(login.res.status).toBe(200);
    expect(login.res.headers.get('cache-control')).toBe('no-store');
    expect(login.html).toContain('Web &lt;App&gt;');
    const f = hidden(login.html, '/login');
    const wrong = await b.follow(f.action, { _csrf: f.csrf, email: 'pat@example.com', password: 'not the password' });
    expect(wrong.res.status).toBe(401);
    expect(wrong.html).toContain('Invalid email or password.');
    const unknown = await b.follow(f.action, { _csrf: f.csrf, email: 'nobody@example.com', password: 'not the password' });
    expect(unknown.res.status).toBe(401);
    expect(unknown.html).toContain('Invalid email or password.');
    const noCsrf = await b.request(f.action, { email: 'pat@example.com', password: PASSWORD });
    expect(noCsrf.status).toBe(403);
    const consent = await b.follow(f.action, { _csrf: f.csrf, email: 'pat@example.com', password: PASSWORD });
    expect(consent.html).toContain('/confirm');
    expect(consent.html).toContain('See your email address');
    const c = hidden(consent.html, '/confirm');
    // Consent and abort are CSRF-protected too: a wrong or missing token grants and denies nothing.
    expect((await b.request(c.action, { _csrf: 'x'.repeat(43) })).status).toBe(403);
    expect((await b.request(c.action.replace(/\/confirm$/, '/abort'), {})).status).toBe(403);
    const done = await b.follow(c.action, { _csrf: c.csrf });
    expect(done.url.startsWith(CALLBACK)).toBe(true);
    expect(new URL(done.url).searchParams.get('code')).toBeTruthy();
    const audit = await routerDb.query<{ outcome: string; details: unknown }>("SELECT outcome, details FROM audit_events WHERE type = 'login'");
    expect(audit.rows.map((r) => r.outcome)).toEqual(['failure', 'failure', 'success']);
    expect(JSON.stringify(audit.rows)).not.toContain('not the password');
  });

  it('skips the consent page for a first-party client', async () => {
    const b = browser();
    const login = await b.follow(authUrl('spa'));
    const f = hidden(login.html, '/login');
    const done = await b.follow(f.action, { _csrf: f.csrf, email: 'pat@example.com', password: PASSWORD });
    expect(done.url.startsWith(CALLBACK)).toBe(true);
    expect(new URL(done.url).searchParams.get('code')).toBeTruthy();
  });

  it('abort sends access_denied to the client', async () => {
    const b = browser();
    const login = await b.follow(authUrl('web'));
    const f = hidden(login.html, '/abort');
    const done = await b.follow(f.action, { _csrf: f.csrf });
    expect(new URL(done.url).searchParams.get('error')).toBe('access_denied');
  });

  it('registers a new user with role user and signs them in', async () => {
    const b = browser();
    const login = await b.follow(authUrl('spa'));
    const uid = /\/interaction\/([^/"]+)\/login/.exec(login.html)![1];
    const page = await b.follow(`${base}/interaction/${uid}/register`);
    const f = hidden(page.html, '/register');
    const weak = await b.follow(f.action, { _csrf: f.csrf, email: 'new@example.com', password: 'short' });
    expect(weak.res.status).toBe(400);
    expect(weak.html).toContain('at least 12 characters');
    const taken = await b.follow(f.action, { _csrf: f.csrf, email: 'PAT@example.com', password: PASSWORD });
    expect(taken.res.status).toBe(409);
    const done = await b.follow(f.action, { _csrf: f.csrf, email: 'new@example.com', password: PASSWORD, name: 'New' });
    expect(done.url.startsWith(CALLBACK)).toBe(true);
    const user = await acc.findUserByEmail('new@example.com');
    expect((await acc.rolesAndPermissions(user!.id)).roles).toEqual(['user']);
  });

  it('rejects a non-form body with 415 and a large one with 413', async () => {
    const b = browser();
    const login = await b.follow(authUrl('web'));
    const f = hidden(login.html, '/login');
    const json = await fetch(f.action, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(json.status).toBe(415);
    const big = await b.request(f.action, { _csrf: f.csrf, email: 'x'.repeat(20_000), password: 'y' });
    expect(big.status).toBe(413);
  });
});

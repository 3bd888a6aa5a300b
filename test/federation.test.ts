// Enterprise SSO (issue 4), black-box: a client signs in at Gatehouse through a real upstream
// oidc-provider. Every hop of client → Gatehouse → upstream → Gatehouse → client is driven with a
// cookie-jar browser; the client side is openid-client; assertions are on the final ID token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { Browser, CALLBACK, formOf, rpConfig, startTestGatehouse, codeFlow, type TestGatehouse } from './helpers/gatehouse.ts';
import { followAcross, startUpstreamIdp, type UpstreamIdp } from './helpers/upstream-idp.ts';

const SECRET = 'upstream-secret-upstream-secret-123';

let gh: TestGatehouse;
let acme: UpstreamIdp;
let globex: UpstreamIdp;
let rogue: UpstreamIdp;
let client: oidc.Configuration;

beforeAll(async () => {
  gh = await startTestGatehouse();
  const redirectUri = `${gh.url}/federation/callback`;
  const postLogoutRedirectUri = `${gh.url}/federation/logged-out`;
  [acme, globex, rogue] = await Promise.all([
    startUpstreamIdp({ redirectUri, postLogoutRedirectUri }),
    startUpstreamIdp({ redirectUri, postLogoutRedirectUri }),
    // Registers the same client as acme: a response from it must still be refused (wrong issuer).
    startUpstreamIdp({ redirectUri, postLogoutRedirectUri }),
  ]);
  await gh.deps.db.query(`INSERT INTO roles (name, permissions) VALUES ('developer', ARRAY['code:write']), ('ops', ARRAY['infra:admin']), ('support', '{}')`);
  await gh.cli('connection', 'create', 'acme', '--display-name', 'Acme SSO', '--issuer', acme.issuer, '--client-id', 'gatehouse',
    '--client-secret', SECRET, '--domain', 'acme.test', '--scope', 'email profile groups', '--link-by-email', 'on',
    '--map-role', 'eng=developer', '--map-role', 'ops=ops');
  await gh.cli('connection', 'create', 'globex', '--issuer', globex.issuer, '--client-id', 'gatehouse', '--client-secret', SECRET,
    '--domain', 'globex.test', '--scope', 'email profile', '--password-login', 'off');
  const c = await gh.cli('client', 'create', '--name', 'Voice App', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', 'http://127.0.0.1:8976/bye', '--first-party');
  client = await rpConfig(gh, c.client_id, c.client_secret);
}, 30_000);

afterAll(async () => {
  await Promise.all([acme?.close(), globex?.close(), rogue?.close()]);
  await gh?.close();
});

interface LoginOptions {
  email?: string;
  /** How the email is submitted: the SSO button, or "Sign in" with (or without) a password. */
  via?: 'sso' | 'signin';
  password?: string;
  extra?: Record<string, string>;
  browser?: Browser;
  rewrite?: (url: string) => string;
}

/** The whole dance; returns the client's tokens, or the page Gatehouse stopped on. */
async function federatedLogin(opts: LoginOptions) {
  const browser = opts.browser ?? new Browser();
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const authUrl = oidc.buildAuthorizationUrl(client, {
    redirect_uri: CALLBACK, scope: 'openid email profile roles', state, nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...opts.extra,
  });
  let step = await followAcross(browser, authUrl.href, CALLBACK, undefined, opts.rewrite);
  const hops = [...step.hops];
  if (step.html && /name="password"/.test(step.html) && opts.email) {
    const { fields } = formOf(step.html, '/login');
    const uid = /\/interaction\/([^/]+)\/login/.exec(step.html)![1];
    const action = opts.via === 'signin' ? `/interaction/${uid}/login` : `/interaction/${uid}/federation`;
    step = await followAcross(browser, new URL(action, gh.url).href, CALLBACK, { form: { ...fields, email: opts.email, password: opts.password ?? '' } }, opts.rewrite);
    hops.push(...step.hops);
  }
  if (step.html !== undefined) return { page: step.html, status: step.res.status, hops, browser };
  const callbackUrl = new URL(step.url);
  if (callbackUrl.searchParams.has('error')) return { error: callbackUrl.searchParams.get('error')!, hops, browser };
  const tokens = await oidc.authorizationCodeGrant(client, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
  return { tokens, claims: tokens.claims()!, hops, browser };
}

async function auditTypes(subject?: string) {
  const { rows } = await gh.deps.db.query<{ type: string; outcome: string; details: Record<string, unknown>; subject: string | null }>(
    `SELECT type, outcome, details, subject FROM audit_events WHERE ($1::text IS NULL OR subject = $1) ORDER BY id`, [subject ?? null]);
  return rows;
}

describe('connections (CLI)', () => {
  it('seals the upstream client secret and never prints it', async () => {
    const { rows } = await gh.deps.db.query<{ client_secret_enc: string }>(`SELECT client_secret_enc FROM federation_connections WHERE name = 'acme'`);
    expect(rows[0].client_secret_enc).toMatch(/^v1\./);
    expect(rows[0].client_secret_enc).not.toContain(SECRET);
    const list = await gh.cli('connection', 'list');
    expect(JSON.stringify(list)).not.toContain(SECRET);
    expect(list.map((c: { name: string }) => c.name)).toEqual(['acme', 'globex']);
    expect(list[0]).toMatchObject({ hasClientSecret: true, domains: ['acme.test'], redirect_uri: `${gh.url}/federation/callback`, roleMap: { eng: ['developer'], ops: ['ops'] } });
  });

  it('refuses a domain owned by another connection, an http issuer off loopback and unknown roles', async () => {
    await expect(gh.cli('connection', 'create', 'dup', '--issuer', acme.issuer, '--client-id', 'x', '--domain', 'acme.test')).rejects.toThrow(/already belongs to connection acme/);
    await expect(gh.cli('connection', 'create', 'plain', '--issuer', 'http://idp.example.com', '--client-id', 'x')).rejects.toThrow(/https/);
    await expect(gh.cli('connection', 'create', 'roles', '--issuer', acme.issuer, '--client-id', 'x', '--map-role', 'a=nope')).rejects.toThrow(/unknown role/);
    await gh.cli('connection', 'create', 'temp', '--issuer', 'https://login.example.com', '--client-id', 'x');
    expect(await gh.cli('connection', 'delete', 'temp')).toEqual({ deleted: 'temp' });
  });
});

describe('sign-in through an upstream IdP', () => {
  let aliceSub: string;

  it('creates the account on first sign-in (JIT) with mapped roles, typing only the email', async () => {
    acme.users.set('a-1', { sub: 'a-1', email: 'alice@acme.test', email_verified: true, name: 'Alice Acme', groups: ['eng'] });
    acme.next.sub = 'a-1';
    acme.next.deny = false;
    const r = await federatedLogin({ email: 'alice@acme.test' });
    expect(r.claims).toBeDefined();
    // The upstream request: code + PKCE S256 + state + nonce, login_hint from the typed email.
    const upstreamAuth = new URL(r.hops.find((h) => h.startsWith(`${acme.issuer}/auth`))!);
    expect(upstreamAuth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(upstreamAuth.searchParams.get('state')).toBeTruthy();
    expect(upstreamAuth.searchParams.get('nonce')).toBeTruthy();
    expect(upstreamAuth.searchParams.get('login_hint')).toBe('alice@acme.test');
    const claims = r.claims!;
    expect(claims).toMatchObject({ email: 'alice@acme.test', email_verified: true, name: 'Alice Acme', amr: ['fed'] });
    expect(claims.roles).toEqual(['developer', 'user']);
    expect(claims.permissions).toContain('code:write');
    aliceSub = claims.sub;
    const events = await auditTypes(aliceSub);
    expect(events.map((e) => e.type)).toEqual(expect.arrayContaining(['federation.jit', 'login']));
    expect(events.find((e) => e.type === 'login')!.details).toMatchObject({ method: 'federated', connection: 'acme', how: 'jit' });
  });

  it('reuses the link on the second sign-in ("Sign in" with no password also goes to the IdP)', async () => {
    const r = await federatedLogin({ email: 'alice@acme.test', via: 'signin' });
    expect(r.claims!.sub).toBe(aliceSub);
    const { rows } = await gh.deps.db.query(`SELECT * FROM federated_identities WHERE connection = 'acme' AND subject = 'a-1'`);
    expect(rows).toHaveLength(1);
    expect((await auditTypes(aliceSub)).filter((e) => e.type === 'federation.jit')).toHaveLength(1);
  });

  it('re-maps roles at each sign-in when upstream groups change, keeping roles an admin gave', async () => {
    await gh.deps.db.query(`INSERT INTO user_roles (user_id, role) VALUES ($1, 'support')`, [aliceSub]);
    acme.users.set('a-1', { ...acme.users.get('a-1')!, groups: ['ops'] });
    const r = await federatedLogin({ email: 'alice@acme.test' });
    expect(r.claims!.roles).toEqual(['ops', 'support', 'user']);
    const roles = (await auditTypes(aliceSub)).filter((e) => e.type === 'federation.roles').at(-1)!;
    expect(roles.details).toMatchObject({ added: ['ops'], removed: ['developer'] });
  });

  it('skips the email question with connection=<name>', async () => {
    const r = await federatedLogin({ extra: { connection: 'acme' } });
    expect(r.claims!.sub).toBe(aliceSub);
    expect(r.hops.some((h) => h.includes('/login'))).toBe(false);
  });

  it('links an existing local account only when the upstream says email_verified', async () => {
    const bob = await gh.deps.accounts.createUser({ email: 'bob@acme.test', password: 'a long local password 1' });
    acme.users.set('b-1', { sub: 'b-1', email: 'bob@acme.test', email_verified: false, name: 'Bob' });
    acme.next.sub = 'b-1';
    const refused = await federatedLogin({ email: 'bob@acme.test' });
    expect(refused.status).toBe(403);
    expect(refused.page).toContain('cannot be linked');
    expect((await auditTypes(bob.id)).find((e) => e.type === 'federation.link')).toMatchObject({ outcome: 'failure', details: { reason: 'link_refused' } });

    acme.users.set('b-1', { ...acme.users.get('b-1')!, email_verified: true });
    const linked = await federatedLogin({ email: 'bob@acme.test' });
    expect(linked.claims!.sub).toBe(bob.id);
    expect((await auditTypes(bob.id)).filter((e) => e.type === 'federation.link').map((e) => e.outcome)).toEqual(['failure', 'success']);
  });

  it('refuses a disabled user', async () => {
    const bob = await gh.deps.accounts.findUserByEmail('bob@acme.test');
    await gh.cli('user', 'disable', '--email', 'bob@acme.test');
    acme.next.sub = 'b-1';
    const r = await federatedLogin({ email: 'bob@acme.test' });
    expect(r.status).toBe(403);
    expect(r.page).toContain('disabled');
    await gh.cli('user', 'enable', '--email', 'bob@acme.test');
    expect(bob).toBeDefined();
  });

  it('routes by domain between two connections; password sign-in off for globex', async () => {
    globex.users.set('g-1', { sub: 'g-1', email: 'carol@globex.test', email_verified: true, name: 'Carol' });
    globex.next.sub = 'g-1';
    const carol = await federatedLogin({ email: 'carol@globex.test' });
    expect(carol.hops.some((h) => h.startsWith(globex.issuer))).toBe(true);
    expect(carol.hops.some((h) => h.startsWith(acme.issuer))).toBe(false);
    expect(carol.claims).toMatchObject({ email: 'carol@globex.test', roles: ['user'] });

    // A local password for a globex address is not accepted: the domain signs in through its IdP.
    await gh.deps.accounts.createUser({ email: 'dave@globex.test', password: 'a long local password 2' });
    globex.users.set('g-2', { sub: 'g-2', email: 'dave@globex.test', email_verified: true });
    globex.next.sub = 'g-2';
    const dave = await federatedLogin({ email: 'dave@globex.test', via: 'signin', password: 'a long local password 2' });
    expect(dave.hops.some((h) => h.startsWith(globex.issuer))).toBe(true);
    // globex does not allow linking by email, so the existing account is not taken over.
    expect(dave.status).toBe(403);

    // login_hint of such a domain skips the login page altogether.
    globex.next.sub = 'g-1';
    const hinted = await federatedLogin({ extra: { login_hint: 'carol@globex.test' } });
    expect(hinted.claims!.email).toBe('carol@globex.test');
  });

  it('keeps password sign-in for users without a connection', async () => {
    await gh.deps.accounts.createUser({ email: 'erin@example.org', password: 'a long local password 3' });
    const { tokens } = await codeFlow(gh, client, { scope: 'openid email', creds: { email: 'erin@example.org', password: 'a long local password 3' } });
    expect(tokens.claims()!.amr).toEqual(['pwd']);
  });
});

describe('refused and failed upstream responses', () => {
  it('shows an upstream error and returns it to the client as an OIDC error', async () => {
    acme.next.deny = true;
    try {
      const r = await federatedLogin({ email: 'alice@acme.test' });
      expect(r.status).toBe(400);
      expect(r.page).toContain('The user cancelled the sign-in');
      const { action, fields } = formOf(r.page!, '/federation/return');
      const back = await followAcross(r.browser, new URL(action, gh.url).href, CALLBACK, { form: fields });
      const callback = new URL(back.url);
      expect(callback.origin + callback.pathname).toBe(CALLBACK);
      expect(callback.searchParams.get('error')).toBe('access_denied');
      expect((await auditTypes()).filter((e) => e.type === 'federation.error').at(-1)!.details).toMatchObject({ connection: 'acme', reason: 'upstream_error: access_denied' });
    } finally {
      acme.next.deny = false;
    }
  });

  it('refuses a disabled connection', async () => {
    await gh.cli('connection', 'update', 'acme', '--enabled', 'off');
    try {
      acme.next.sub = 'a-1';
      const r = await federatedLogin({ email: 'alice@acme.test' });
      expect(r.status).toBe(403);
      expect(r.page).toContain('disabled');
      expect(r.hops.some((h) => h.startsWith(acme.issuer))).toBe(false);
    } finally {
      await gh.cli('connection', 'update', 'acme', '--enabled', 'on');
    }
  });

  it('refuses a wrong state and a replayed callback', async () => {
    acme.next.sub = 'a-1';
    const tampered = await federatedLogin({ email: 'alice@acme.test', rewrite: (u) => u.replace(/(\/federation\/callback\?.*state=)[^&]+/, '$1forged') });
    expect(tampered.status).toBe(400);
    expect(tampered.page).toContain('not valid');

    let callback = '';
    const ok = await federatedLogin({ email: 'alice@acme.test', rewrite: (u) => { if (u.includes('/federation/callback?') && !callback) callback = u; return u; } });
    expect(ok.claims).toBeDefined();
    const replay = await followAcross(ok.browser, callback, CALLBACK);
    expect(replay.res.status).toBe(400);
    expect(replay.html).toMatch(/already used|not valid/);
  });

  it('refuses an ID token with a wrong nonce', async () => {
    acme.next.sub = 'a-1';
    const r = await federatedLogin({ email: 'alice@acme.test', rewrite: (u) => (u.startsWith(`${acme.issuer}/auth?`) ? u.replace(/nonce=[^&]+/, 'nonce=not-the-one') : u) });
    expect(r.status).toBe(400);
    expect(r.page).toContain('could not be verified');
    expect((await auditTypes()).filter((e) => e.type === 'federation.error').at(-1)!.details.reason).toMatch(/invalid_response/);
  });

  it('refuses a response from the wrong issuer', async () => {
    rogue.users.set('a-1', { sub: 'a-1', email: 'alice@acme.test', email_verified: true });
    rogue.next.sub = 'a-1';
    const r = await federatedLogin({ email: 'alice@acme.test', rewrite: (u) => (u.startsWith(`${acme.issuer}/auth?`) ? u.replace(acme.issuer, rogue.issuer) : u) });
    expect(r.hops.some((h) => h.startsWith(rogue.issuer))).toBe(true);
    expect(r.status).toBe(400);
    expect(r.page).toContain('could not be verified');
  });
});

describe('upstream MFA', () => {
  it('counts the upstream amr as MFA only when the connection is trusted for it', async () => {
    acme.next.sub = 'a-1';
    acme.next.amr = ['pwd', 'mfa'];
    try {
      const untrusted = await federatedLogin({ email: 'alice@acme.test' });
      expect(untrusted.claims).toMatchObject({ amr: ['fed'], acr: 'urn:gatehouse:acr:pwd' });
      await gh.cli('connection', 'update', 'acme', '--trust-mfa', 'on');
      const trusted = await federatedLogin({ email: 'alice@acme.test' });
      expect(trusted.claims).toMatchObject({ amr: ['fed', 'mfa'], acr: 'urn:gatehouse:acr:mfa' });
    } finally {
      acme.next.amr = undefined;
      await gh.cli('connection', 'update', 'acme', '--trust-mfa', 'off');
    }
  });
});

describe('logout', () => {
  it('offers upstream logout and sends the browser through the upstream end_session_endpoint', async () => {
    acme.next.sub = 'a-1';
    const r = await federatedLogin({ email: 'alice@acme.test' });
    const end = oidc.buildEndSessionUrl(client, { id_token_hint: r.tokens!.id_token!, post_logout_redirect_uri: 'http://127.0.0.1:8976/bye' });
    const page = await followAcross(r.browser, end.href, 'http://127.0.0.1:8976/bye');
    expect(page.html).toContain('Sign out here and at Acme SSO');
    const { fields } = formOf(page.html!.replace(/<form id="op.logoutForm"/, '<form id="op.logoutForm" action="/session/end/confirm"'), '/session/end/confirm');
    const res = await r.browser.request(`${gh.url}/session/end/confirm?upstream=1`, { form: { ...fields, logout: 'yes' } });
    expect([302, 303]).toContain(res.status);
    const to = new URL(res.headers.get('location')!);
    expect(to.origin).toBe(acme.issuer);
    expect(to.pathname).toBe('/session/end');
    expect(to.searchParams.get('post_logout_redirect_uri')).toBe(`${gh.url}/federation/logged-out`);
    // Back from the upstream, the browser continues where Gatehouse was sending it.
    const back = await r.browser.request(`${gh.url}/federation/logged-out?state=${to.searchParams.get('state')}`);
    expect(back.headers.get('location')).toMatch(/^http:\/\/127\.0\.0\.1:8976\/bye/);
  });
});

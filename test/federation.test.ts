// Enterprise SSO (issue 4), black-box: a client signs in at Gatehouse through a real upstream
// oidc-provider. Every hop of client → Gatehouse → upstream → Gatehouse → client is driven with a
// cookie-jar browser; the client side is openid-client; assertions are on the final ID token.
// The whole suite runs on the embedded store (PGlite + in-process) and on PostgreSQL + Redis (a
// database and key prefix of its own, dropped after; REQUIRE_SERVICES=1 makes them mandatory).
import { Writable } from 'node:stream';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import pg from 'pg';
import { Redis } from 'ioredis';
import { generate } from 'otplib';
import { Browser, CALLBACK, formOf, rpConfig, startTestGatehouse, codeFlow, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { followAcross, startUpstreamIdp, type UpstreamIdp } from './helpers/upstream-idp.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';
import { ROOT, TSX } from './helpers/process.ts';
import { createLogger } from '../src/http/log.ts';

const SECRET = 'upstream-secret-upstream-secret-123';
const ACR_PWD = 'urn:gatehouse:acr:pwd';
const ACR_MFA = 'urn:gatehouse:acr:mfa';

let gh: TestGatehouse;
let acme: UpstreamIdp;
let globex: UpstreamIdp;
let rogue: UpstreamIdp;
let client: oidc.Configuration;
/** What `connection create` printed for acme and globex. */
let created: unknown[];
/** Every line Gatehouse logged (at trace level). */
let logged: string[];
/** PostgreSQL + Redis mode: the run's own database and key prefix. */
let services: { pg: Awaited<ReturnType<typeof createTestPgDatabase>>; redis: Awaited<ReturnType<typeof createTestRedisPrefix>> } | undefined;

async function setUp(mode: Mode) {
  logged = [];
  const log = createLogger('trace', new Writable({ write(chunk, _enc, done) { logged.push(String(chunk)); done(); } }));
  // MFA_REQUIRED_ROLES: the `secure` role (upstream group secops at acme) must use a second factor.
  const env = { MFA_REQUIRED_ROLES: 'secure' };
  if (mode === 'postgres') {
    services = { pg: await createTestPgDatabase(), redis: await createTestRedisPrefix() };
    gh = await startTestGatehouse({ mode, env, log, databaseUrl: services.pg.url, redis: services.redis });
  } else {
    services = undefined;
    gh = await startTestGatehouse({ env, log });
  }
  const redirectUri = `${gh.url}/federation/callback`;
  const postLogoutRedirectUri = `${gh.url}/federation/logged-out`;
  [acme, globex, rogue] = await Promise.all([
    startUpstreamIdp({ redirectUri, postLogoutRedirectUri }),
    startUpstreamIdp({ redirectUri, postLogoutRedirectUri }),
    // Registers the same client as acme: a response from it must still be refused (wrong issuer).
    startUpstreamIdp({ redirectUri, postLogoutRedirectUri }),
  ]);
  await gh.deps.db.query(`INSERT INTO roles (name, permissions) VALUES ('developer', ARRAY['code:write']), ('ops', ARRAY['infra:admin']), ('support', '{}'), ('secure', '{}')`);
  created = [
    await gh.cli('connection', 'create', 'acme', '--display-name', 'Acme SSO', '--issuer', acme.issuer, '--client-id', 'gatehouse',
      '--client-secret', SECRET, '--domain', 'acme.test', '--scope', 'email profile groups', '--link-by-email', 'on',
      '--map-role', 'eng=developer', '--map-role', 'ops=ops', '--map-role', 'secops=secure'),
    await gh.cli('connection', 'create', 'globex', '--issuer', globex.issuer, '--client-id', 'gatehouse', '--client-secret', SECRET,
      '--domain', 'globex.test', '--scope', 'email profile', '--password-login', 'off'),
  ];
  const c = await gh.cli('client', 'create', '--name', 'Voice App', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', 'http://127.0.0.1:8976/bye', '--first-party');
  client = await rpConfig(gh, c.client_id, c.client_secret);
}

async function tearDown() {
  await Promise.all([acme?.close(), globex?.close(), rogue?.close()]);
  await gh?.close();
  await services?.pg.drop();
  await services?.redis.cleanup();
}

interface LoginOptions {
  email?: string;
  /** How the email is submitted: the SSO button, or "Sign in" with (or without) a password. */
  via?: 'sso' | 'signin';
  password?: string;
  extra?: Record<string, string>;
  browser?: Browser;
  rewrite?: (url: string) => string;
}

/** An authorization request of the client, with what is needed to redeem its code. */
async function authorizationRequest(extra: Record<string, string> = {}) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(client, {
    redirect_uri: CALLBACK, scope: 'openid email profile roles', state, nonce,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...extra,
  });
  async function redeem(callback: string) {
    const tokens = await oidc.authorizationCodeGrant(client, new URL(callback), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
    return { tokens, claims: tokens.claims()! };
  }
  return { url: url.href, redeem };
}

/**
 * The whole dance; returns the client's tokens, or the page Gatehouse stopped on (with `redeem`
 * for the callback URL, when the test goes on from that page).
 */
async function federatedLogin(opts: LoginOptions) {
  const browser = opts.browser ?? new Browser();
  const request = await authorizationRequest(opts.extra);
  let step = await followAcross(browser, request.url, CALLBACK, undefined, opts.rewrite);
  const hops = [...step.hops];
  if (step.html && /name="password"/.test(step.html) && opts.email) {
    const { fields } = formOf(step.html, '/login');
    const uid = /\/interaction\/([^/]+)\/login/.exec(step.html)![1];
    const action = opts.via === 'signin' ? `/interaction/${uid}/login` : `/interaction/${uid}/federation`;
    step = await followAcross(browser, new URL(action, gh.url).href, CALLBACK, { form: { ...fields, email: opts.email, password: opts.password ?? '' } }, opts.rewrite);
    hops.push(...step.hops);
  }
  if (step.html !== undefined) return { page: step.html, status: step.res.status, hops, browser, redeem: request.redeem };
  const callbackUrl = new URL(step.url);
  if (callbackUrl.searchParams.has('error')) return { error: callbackUrl.searchParams.get('error')!, hops, browser };
  const { tokens, claims } = await request.redeem(step.url);
  return { tokens, claims, hops, browser };
}

/** Submit the form of `html` whose action contains `action`, and follow on to the client or the next page. */
async function submit(browser: Browser, html: string, action: string, fields: Record<string, string>) {
  const form = formOf(html, action);
  return followAcross(browser, new URL(form.action, gh.url).href, CALLBACK, { form: { ...form.fields, ...fields } });
}

async function auditTypes(subject?: string) {
  const { rows } = await gh.deps.db.query<{ type: string; outcome: string; details: Record<string, unknown>; subject: string | null }>(
    `SELECT type, outcome, details, subject FROM audit_events WHERE ($1::text IS NULL OR subject = $1) ORDER BY id`, [subject ?? null]);
  return rows;
}

const modes: { mode: Mode; store: string; run: boolean }[] = [
  { mode: 'embedded', store: 'PGlite + in-process store', run: true },
  { mode: 'postgres', store: 'PostgreSQL + Redis', run: await servicesFor('postgres+redis') },
];

describe.each(modes)('enterprise SSO on $store', ({ mode, run }) => {
  if (!run) {
    it.skip('needs PostgreSQL and Redis (set REQUIRE_SERVICES=1 to require them)', () => {});
    return;
  }
  beforeAll(() => setUp(mode), 60_000);
  afterAll(tearDown);

  describe('connections (CLI)', () => {
    it('seals the upstream client secret and never prints it', async () => {
      const { rows } = await gh.deps.db.query<{ client_secret_enc: string }>(`SELECT client_secret_enc FROM federation_connections WHERE name = 'acme'`);
      expect(rows[0].client_secret_enc).toMatch(/^v1\./);
      expect(rows[0].client_secret_enc).not.toContain(SECRET);
      const list = await gh.cli('connection', 'list');
      expect(JSON.stringify(list)).not.toContain(SECRET);
      expect(list.map((c: { name: string }) => c.name)).toEqual(['acme', 'globex']);
      expect(list[0]).toMatchObject({ has_client_secret: true, domains: ['acme.test'], redirect_uri: `${gh.url}/federation/callback`, role_map: { eng: ['developer'], ops: ['ops'] } });
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

  describe('login page', () => {
    async function loginPage() {
      const step = await followAcross(new Browser(), (await authorizationRequest()).url, CALLBACK);
      expect(step.res.status).toBe(200);
      expect(step.html).toContain('name="password"');
      return step.html!;
    }

    it('offers single sign-on only while some connection is enabled', async () => {
      expect(await loginPage()).toContain('Use single sign-on (SSO)');
      await gh.cli('connection', 'update', 'acme', '--enabled', 'off');
      await gh.cli('connection', 'update', 'globex', '--enabled', 'off');
      try {
        const page = await loginPage();
        expect(page).not.toContain('single sign-on');
        expect(page).not.toMatch(/formaction="[^"]*\/federation"/);
        expect(page).toContain('>Sign in</button>');
        await gh.cli('connection', 'update', 'globex', '--enabled', 'on');
        expect(await loginPage()).toContain('Use single sign-on (SSO)');
      } finally {
        await gh.cli('connection', 'update', 'acme', '--enabled', 'on');
        await gh.cli('connection', 'update', 'globex', '--enabled', 'on');
      }
    });
  });

  describe("upstream MFA and Gatehouse's MFA policy", () => {
    // MFA_REQUIRED_ROLES=secure, and acme maps the upstream group secops to `secure`.
    const secretOf = (html: string) => /id="totp-secret"[^>]*>([^<]+)</.exec(html)![1].replace(/\s/g, '');
    let secret: string;

    beforeAll(() => {
      acme.users.set('m-1', { sub: 'm-1', email: 'mia@acme.test', email_verified: true, name: 'Mia', groups: ['secops'] });
    });
    const loginAs = async (amr: string[], trust: 'on' | 'off') => {
      await gh.cli('connection', 'update', 'acme', '--trust-mfa', trust);
      acme.next.sub = 'm-1';
      acme.next.amr = amr;
      try {
        return await federatedLogin({ email: 'mia@acme.test' });
      } finally {
        acme.next.amr = undefined;
        await gh.cli('connection', 'update', 'acme', '--trust-mfa', 'off');
      }
    };
    const askedForGatehouseMfa = (hops: string[]) => hops.some((h) => /\/interaction\/[^/]+\/mfa/.test(new URL(h).pathname));

    it('a trusted connection whose upstream amr shows MFA satisfies it: acr = MFA, no Gatehouse TOTP asked', async () => {
      const r = await loginAs(['pwd', 'otp'], 'on');
      expect(r.page).toBeUndefined();
      expect(askedForGatehouseMfa(r.hops)).toBe(false);
      expect(r.claims).toMatchObject({ email: 'mia@acme.test', acr: ACR_MFA, amr: ['fed', 'mfa'], roles: ['secure', 'user'] });
      const login = (await auditTypes(r.claims!.sub)).filter((e) => e.type === 'login').at(-1)!;
      expect(login.details).toMatchObject({ method: 'federated', upstream_mfa: true, amr: ['fed', 'mfa'] });
      const factors = await gh.deps.db.query('SELECT 1 FROM mfa_factors WHERE user_id = $1', [r.claims!.sub]);
      expect(factors.rows).toHaveLength(0);
    });

    it('the trusted connection with an upstream amr of pwd only: Gatehouse asks for its own second factor', async () => {
      const r = await loginAs(['pwd'], 'on');
      expect(r.claims).toBeUndefined();
      expect(askedForGatehouseMfa(r.hops)).toBe(true);
      expect(r.status).toBe(200);
      expect(r.page).toContain('Set up two-step verification');
      secret = secretOf(r.page!);
      const codes = await submit(r.browser, r.page!, '/mfa/enrol', { code: await generate({ secret }), name: 'Phone' });
      const done = await submit(r.browser, codes.html!, '/mfa/continue', {});
      const { claims } = await r.redeem!(done.url);
      // The first factor was the IdP's sign-in, not a Gatehouse password.
      expect(claims).toMatchObject({ email: 'mia@acme.test', acr: ACR_MFA, amr: ['fed', 'otp', 'mfa'] });
    });

    it('an untrusted connection: upstream MFA does not count, Gatehouse asks for its TOTP', async () => {
      const r = await loginAs(['pwd', 'mfa'], 'off');
      expect(r.claims).toBeUndefined();
      expect(r.status).toBe(200);
      expect(r.page).toContain('Two-step verification');
      expect(r.page).toContain('Code from your authenticator app');
      // The next time step, so the code differs from the one enrolment used.
      const code = await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 });
      const done = await submit(r.browser, r.page!, '/mfa', { code });
      const { claims } = await r.redeem!(done.url);
      // The first factor was the IdP's sign-in, not a Gatehouse password.
      expect(claims).toMatchObject({ email: 'mia@acme.test', acr: ACR_MFA, amr: ['fed', 'otp', 'mfa'] });
    });

    it('without the MFA role, an untrusted federated sign-in is one factor (acr = password)', async () => {
      acme.users.set('m-2', { sub: 'm-2', email: 'max@acme.test', email_verified: true, groups: ['eng'] });
      acme.next.sub = 'm-2';
      acme.next.amr = ['pwd', 'otp'];
      try {
        const r = await federatedLogin({ email: 'max@acme.test' });
        expect(r.claims).toMatchObject({ acr: ACR_PWD, amr: ['fed'], roles: ['developer', 'user'] });
      } finally {
        acme.next.amr = undefined;
      }
    });
  });

  describe.runIf(mode === 'postgres')('on PostgreSQL + Redis', () => {
    async function pgQuery<T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) {
      const c = new pg.Client({ connectionString: services!.pg.url });
      await c.connect();
      try {
        return (await c.query<T>(sql, params)).rows;
      } finally {
        await c.end();
      }
    }

    it('JIT then a second sign-in: one link row in this run\'s PostgreSQL database, pending sign-ins in its Redis prefix', async () => {
      acme.users.set('p-1', { sub: 'p-1', email: 'pat@acme.test', email_verified: true, name: 'Pat', groups: ['eng'] });
      acme.next.sub = 'p-1';
      const first = await federatedLogin({ email: 'pat@acme.test' });
      expect(first.claims).toMatchObject({ email: 'pat@acme.test', roles: ['developer', 'user'] });
      const link = `SELECT l.connection, l.subject, l.user_id, l.email, l.managed_roles, l.last_login_at, u.email AS account_email
        FROM federated_identities l JOIN users u ON u.id = l.user_id WHERE l.connection = 'acme' AND l.subject = 'p-1'`;
      const [row] = await pgQuery<{ user_id: string; email: string; managed_roles: string[]; last_login_at: Date; account_email: string }>(link);
      expect(row).toMatchObject({ user_id: first.claims!.sub, email: 'pat@acme.test', account_email: 'pat@acme.test' });
      expect([...row.managed_roles].sort()).toEqual(['developer', 'user']);

      const second = await federatedLogin({ email: 'pat@acme.test', via: 'signin' });
      expect(second.claims!.sub).toBe(first.claims!.sub);
      const rows = await pgQuery<{ user_id: string; last_login_at: Date }>(link);
      expect(rows).toHaveLength(1);
      expect(rows[0].last_login_at.getTime()).toBeGreaterThan(row.last_login_at.getTime());
      expect(await pgQuery(`SELECT id FROM users WHERE email = 'pat@acme.test'`)).toHaveLength(1);
      const jit = await pgQuery<{ type: string }>(`SELECT type FROM audit_events WHERE subject = $1 AND type = 'federation.jit'`, [first.claims!.sub]);
      expect(jit).toHaveLength(1);

      // Each sign-in's one-use marker for its state went through Redis, under this run's prefix only.
      const redis = new Redis(services!.redis.url);
      try {
        expect((await redis.keys(`${services!.redis.prefix}fed:used:*`)).length).toBeGreaterThanOrEqual(2);
        expect(await redis.keys('fed:used:*')).toEqual([]);
      } finally {
        redis.disconnect();
      }
    });

    it('the gatehouse CLI (its own process on the same database) never prints the client secret', async () => {
      const other = 'cli-secret-cli-secret-cli-secret-456';
      const rotated = 'rotated-secret-rotated-secret-789';
      const env = { ...process.env, DATABASE_URL: services!.pg.url, REDIS_URL: services!.redis.url, REDIS_KEY_PREFIX: services!.redis.prefix, ISSUER: gh.url, LOG_LEVEL: 'trace' };
      const run = (...argv: string[]) => new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
        const p = spawn(TSX, ['src/cli/main.ts', ...argv], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        p.stdout.on('data', (d) => (out += d));
        p.stderr.on('data', (d) => (err += d));
        p.on('error', reject).on('exit', (code) => resolve({ code, out, err }));
      });
      const outputs = [
        await run('connection', 'create', 'cli-made', '--issuer', 'https://login.example.com', '--client-id', 'x', '--client-secret', other),
        await run('connection', 'list', '--json'),
        await run('connection', 'update', 'cli-made', '--client-secret', rotated),
        await run('connection', 'get', 'cli-made', '--json'),
      ];
      try {
        for (const o of outputs) expect(o.code, o.err).toBe(0);
        expect(JSON.parse(outputs[0].out)).toMatchObject({ name: 'cli-made', has_client_secret: true, redirect_uri: `${gh.url}/federation/callback` });
        expect(JSON.parse(outputs[1].out).map((c: { name: string }) => c.name)).toEqual(['acme', 'cli-made', 'globex']);
        const printed = outputs.map((o) => o.out + o.err).join('\n');
        for (const s of [other, rotated, SECRET]) expect(printed).not.toContain(s);
        // The rotated secret is what the server would now use.
        expect(await gh.deps.connections.clientSecret('cli-made')).toBe(rotated);
        const audit = JSON.stringify(await pgQuery('SELECT * FROM audit_events'));
        expect(audit).toContain('admin.connection.update');
        for (const s of [other, rotated]) expect(audit).not.toContain(s);
      } finally {
        await run('connection', 'delete', 'cli-made');
      }
    });
  });

  describe('the upstream client secret', () => {
    it('is in no CLI output, no audit row and no log line, after every sign-in above used it', async () => {
      const rotated = 'another-upstream-secret-0123456789';
      const printed = [
        ...created,
        await gh.cli('connection', 'list'),
        await gh.cli('connection', 'get', 'acme'),
        await gh.cli('connection', 'create', 'temp-secret', '--issuer', 'https://login.example.com', '--client-id', 'x', '--client-secret', rotated),
        await gh.cli('connection', 'update', 'temp-secret', '--client-secret', `${rotated}-2`),
      ];
      await gh.cli('connection', 'delete', 'temp-secret');
      const cli = JSON.stringify(printed);
      expect(cli).toContain('"has_client_secret":true');
      for (const s of [SECRET, rotated]) expect(cli).not.toContain(s);

      const audit = JSON.stringify((await gh.deps.db.query('SELECT * FROM audit_events')).rows);
      expect(audit).toContain('admin.connection.create');
      expect(audit).toContain('federation.jit');
      for (const s of [SECRET, rotated]) expect(audit).not.toContain(s);

      // The request log saw the upstream callbacks (and the upstream refusals above were logged).
      const log = logged.join('');
      expect(log).toContain('/federation/callback');
      expect(log).toContain('upstream sign-in failed');
      for (const s of [SECRET, rotated]) expect(log).not.toContain(s);
    });
  });
});

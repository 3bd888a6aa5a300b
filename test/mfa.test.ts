// TOTP MFA over HTTP (issue 7): enrolment during login, challenge, replay refusal, recovery codes,
// policy (role, client, acr_values step-up), amr/acr in the ID token, admin reset.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { generate } from 'otplib';
import { decodeJwt } from 'jose';
import { ADMIN, Browser, CALLBACK, describeEachMode, formOf, raceTally, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const ACR_PWD = 'urn:gatehouse:acr:pwd';
const ACR_MFA = 'urn:gatehouse:acr:mfa';
const USER = { email: 'sam@example.com', password: 'sam-has-a-long-password' };
const MCP = 'https://mcp.example.com/mcp';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';

const secretOf = (html: string) => /id="totp-secret"[^>]*>([^<]+)</.exec(html)![1].replace(/\s/g, '');
const codesOf = (html: string) => [...html.matchAll(/class="recovery-code"[^>]*>([^<]+)</g)].map((m) => m[1]);
/** A code for the next time step: inside the ±1 window, and not the step enrolment just used. */
const nextCode = (secret: string, steps = 1) => generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 * steps });

/** The sign-in steps as a browser takes them, for the Gatehouse and RP configuration of a suite. */
function signInSteps(getGh: () => TestGatehouse, getConfig: () => oidc.Configuration) {
  /** Start an authorization request; returns the first page and what is needed to redeem the code. */
  async function begin(browser: Browser, extra: Record<string, string> = {}) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(getConfig(), {
      redirect_uri: CALLBACK, scope: 'openid email', state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...extra,
    });
    const step = await browser.follow(url.href, getGh().url);
    return { step, verifier, state };
  }
  async function submit(browser: Browser, html: string, action: string, fields: Record<string, string>) {
    const form = formOf(html, action);
    return browser.follow(new URL(form.action, getGh().url).href, getGh().url, { form: { ...form.fields, ...fields } });
  }
  async function redeem(step: { url: string }, verifier: string, state: string) {
    const tokens = await oidc.authorizationCodeGrant(getConfig(), new URL(step.url), { pkceCodeVerifier: verifier, expectedState: state });
    return tokens.claims()!;
  }
  async function password(browser: Browser, creds: { email: string; password: string }, extra: Record<string, string> = {}) {
    const { step, verifier, state } = await begin(browser, extra);
    expect(step.html).toContain('name="password"');
    const next = await submit(browser, step.html!, '/login', creds);
    return { step: next, verifier, state };
  }
  return { begin, submit, redeem, password };
}

describe('TOTP MFA', () => {
  let gh: TestGatehouse;
  let config: oidc.Configuration;
  let clientId: string;
  let adminSecret: string;
  let adminCodes: string[];
  let samSecret: string;

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'admin', RATE_LIMITS: 'on', LOGIN_DELAY_MS: '0' } });
    const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    clientId = client.client_id;
    config = await rpConfig(gh, client.client_id, client.client_secret);
    await gh.cli('user', 'create', '--email', USER.email, '--password', USER.password);
  });
  afterAll(async () => {
    await gh?.close();
  });

  const { begin, submit, redeem, password } = signInSteps(() => gh, () => config);

  it('an admin cannot sign in without a second factor: enrolment (QR + secret) comes first', async () => {
    const browser = new Browser();
    const { step, verifier, state } = await password(browser, ADMIN);
    expect(step.html).toContain('Set up two-step verification');
    expect(step.html).toMatch(/<img[^>]+src="data:image\/png;base64,/);
    adminSecret = secretOf(step.html!);
    // A wrong first code does not count.
    const wrong = await submit(browser, step.html!, '/mfa/enrol', { code: '000000', name: 'Phone' });
    expect(wrong.res.status).toBe(401);
    expect(wrong.html).toContain('not valid');
    const codes = await submit(browser, wrong.html!, '/mfa/enrol', { code: await generate({ secret: adminSecret }), name: 'Phone' });
    adminCodes = codesOf(codes.html!);
    expect(adminCodes).toHaveLength(10);
    expect(new Set(adminCodes).size).toBe(10);
    const done = await submit(browser, codes.html!, '/mfa/continue', {});
    const claims = await redeem(done, verifier, state);
    expect(claims.acr).toBe(ACR_MFA);
    expect(claims.amr).toEqual(['pwd', 'otp', 'mfa']);
  });

  it('stores the seed sealed and the recovery codes hashed', async () => {
    const { rows } = await gh.deps.db.query<{ secret_enc: string; name: string }>('SELECT secret_enc, name FROM mfa_factors');
    expect(rows).toHaveLength(1);
    expect(rows[0].name).toBe('Phone');
    expect(rows[0].secret_enc).not.toContain(adminSecret);
    expect(gh.deps.box.open(rows[0].secret_enc)).toBe(adminSecret);
    const hashes = await gh.deps.db.query<{ code_hash: string }>('SELECT code_hash FROM mfa_recovery_codes');
    expect(hashes.rows).toHaveLength(10);
    for (const code of adminCodes) expect(JSON.stringify(hashes.rows)).not.toContain(code.replace(/-/g, ''));
  });

  it('signs in with password + TOTP; the same code a second time is refused (replay)', async () => {
    const code = await nextCode(adminSecret);
    const first = new Browser();
    const a = await password(first, ADMIN);
    expect(a.step.html).toContain('Two-step verification');
    const ok = await submit(first, a.step.html!, '/mfa', { code });
    expect((await redeem(ok, a.verifier, a.state)).amr).toEqual(['pwd', 'otp', 'mfa']);

    const second = new Browser();
    const b = await password(second, ADMIN);
    const replay = await submit(second, b.step.html!, '/mfa', { code });
    expect(replay.res.status).toBe(401);
    expect(replay.html).toContain('not valid');
    // Two steps ahead is outside the ±1 step window: refused too.
    const later = await submit(second, replay.html!, '/mfa', { code: await nextCode(adminSecret, 2) });
    expect(later.res.status).toBe(401);
  });

  it('a recovery code signs in once; the same one twice fails; each use is audited', async () => {
    const first = new Browser();
    const a = await password(first, ADMIN);
    const ok = await submit(first, a.step.html!, '/mfa', { recovery_code: adminCodes[0].toLowerCase() });
    expect((await redeem(ok, a.verifier, a.state)).acr).toBe(ACR_MFA);

    const second = new Browser();
    const b = await password(second, ADMIN);
    const again = await submit(second, b.step.html!, '/mfa', { recovery_code: adminCodes[0] });
    expect(again.res.status).toBe(401);
    expect(again.html).toContain('already used');
    const { rows } = await gh.deps.db.query<{ outcome: string }>("SELECT outcome FROM audit_events WHERE type = 'mfa.recovery_code' ORDER BY id");
    expect(rows.map((r) => r.outcome)).toEqual(['success', 'failure']);
  });

  it('nudges to regenerate when few recovery codes remain, and a new set replaces the old', async () => {
    // Spend codes until MFA_RECOVERY_LOW (3) remain: codes 1..6 (code 0 is spent).
    for (let i = 1; i <= 6; i++) await gh.deps.mfa.useRecoveryCode((await gh.deps.accounts.findUserByEmail(ADMIN.email))!.id, adminCodes[i]);
    const browser = new Browser();
    const a = await password(browser, ADMIN);
    const nudge = await submit(browser, a.step.html!, '/mfa', { recovery_code: adminCodes[7] });
    expect(nudge.html).toContain('2 recovery codes left');
    const fresh = await submit(browser, nudge.html!, '/mfa/recovery-codes', {});
    const newCodes = codesOf(fresh.html!);
    expect(newCodes).toHaveLength(10);
    const done = await submit(browser, fresh.html!, '/mfa/continue', {});
    expect((await redeem(done, a.verifier, a.state)).acr).toBe(ACR_MFA);
    const adminId = (await gh.deps.accounts.findUserByEmail(ADMIN.email))!.id;
    expect(await gh.deps.mfa.useRecoveryCode(adminId, adminCodes[8])).toBeNull();
    expect(await gh.deps.mfa.useRecoveryCode(adminId, newCodes[0])).toEqual({ remaining: 9 });
    adminCodes = newCodes.slice(1);
  });

  it('a user with no factor and no policy signs in with the password only (amr pwd)', async () => {
    const browser = new Browser();
    const { step, verifier, state } = await password(browser, USER);
    const claims = await redeem(step, verifier, state);
    expect(claims.acr).toBe(ACR_PWD);
    expect(claims.amr).toEqual(['pwd']);
  });

  it('step-up with acr_values asks a signed-in user only for the missing factor', async () => {
    const browser = new Browser();
    const pwd = await password(browser, USER);
    expect((await redeem(pwd.step, pwd.verifier, pwd.state)).acr).toBe(ACR_PWD);
    // Same browser (session), now asking for MFA: no password form, straight to enrolment.
    const { step, verifier, state } = await begin(browser, { acr_values: ACR_MFA });
    expect(step.html).not.toContain('name="password"');
    expect(step.html).toContain('Set up two-step verification');
    const secret = secretOf(step.html!);
    samSecret = secret;
    const codes = await submit(browser, step.html!, '/mfa/enrol', { code: await generate({ secret }), name: 'Laptop' });
    const done = await submit(browser, codes.html!, '/mfa/continue', {});
    const claims = await redeem(done, verifier, state);
    expect(claims.acr).toBe(ACR_MFA);
    expect(claims.amr).toEqual(['pwd', 'otp', 'mfa']);
    // The session now has MFA: a later request goes straight through, with acr mfa.
    const again = await begin(browser, { acr_values: ACR_MFA });
    expect(again.step.html).toBeUndefined();
    expect((await redeem(again.step, again.verifier, again.state)).acr).toBe(ACR_MFA);
  });

  it('a client with require_mfa needs a second factor from everyone', async () => {
    const other = { email: 'ria@example.com', password: 'ria-has-a-long-password' };
    await gh.cli('user', 'create', '--email', other.email, '--password', other.password);
    const strict = await gh.cli('client', 'create', '--name', 'Bank', '--redirect-uri', CALLBACK, '--first-party');
    expect(await gh.cli('client', 'require-mfa', strict.client_id)).toEqual({ client_id: strict.client_id, require_mfa: true });
    const saved = config;
    config = await rpConfig(gh, strict.client_id, strict.client_secret);
    try {
      const { step } = await password(new Browser(), other);
      expect(step.html).toContain('Set up two-step verification');
    } finally {
      config = saved;
    }
    // The default client still lets ria in with a password.
    const plain = await password(new Browser(), other);
    expect((await redeem(plain.step, plain.verifier, plain.state)).acr).toBe(ACR_PWD);
  });

  it('acr/amr reach JWT access tokens, and token exchange carries them into MCP tokens', async () => {
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'user'");
    const ex = await gh.cli('client', 'create', '--name', 'Exchanger', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', TX);
    await gh.cli('policy', 'client', 'set', ex.client_id, '--resource', MCP);
    const saved = config;
    config = await rpConfig(gh, ex.client_id, ex.client_secret);
    try {
      const browser = new Browser();
      const { step, verifier, state } = await password(browser, USER, { resource: MCP, scope: 'openid tools:read' });
      const done = await submit(browser, step.html!, '/mfa', { code: await nextCode(samSecret) });
      // Issue 14: the token request names no resource, so the access token is Gatehouse's own (opaque;
      // an MCP token would be refused as a subject_token). Introspection shows its acr/amr.
      const tokens = await oidc.authorizationCodeGrant(config, new URL(done.url), { pkceCodeVerifier: verifier, expectedState: state });
      expect(await oidc.tokenIntrospection(config, tokens.access_token)).toMatchObject({ active: true, acr: ACR_MFA, amr: ['pwd', 'otp', 'mfa'] });
      const res = await fetch(`${gh.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${ex.client_id}:${ex.client_secret}`).toString('base64')}` },
        body: new URLSearchParams({ grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, resource: MCP }),
      });
      const body = await res.json();
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(decodeJwt(body.access_token)).toMatchObject({ aud: MCP, acr: ACR_MFA, amr: ['pwd', 'otp', 'mfa'] });
    } finally {
      config = saved;
    }
  });

  it('locks the second factor after repeated wrong codes (429 + Retry-After)', async () => {
    const browser = new Browser();
    const a = await password(browser, USER);
    let html = a.step.html!;
    for (let i = 0; i < 5; i++) {
      const r = await submit(browser, html, '/mfa', { code: '000000' });
      expect(r.res.status).toBe(401);
      html = r.html!;
    }
    const locked = await submit(browser, html, '/mfa', { code: '000000' });
    expect(locked.res.status).toBe(429);
    expect(Number(locked.res.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('gatehouse user reset-mfa removes the factors, ends sessions, is audited; the next login enrols again', async () => {
    const browser = new Browser();
    const a = await password(browser, ADMIN);
    const ok = await submit(browser, a.step.html!, '/mfa', { recovery_code: adminCodes[0] });
    await redeem(ok, a.verifier, a.state);
    const out = await gh.cli('user', 'reset-mfa', '--email', ADMIN.email);
    expect(out.factors_removed).toBe(1);
    const { rows } = await gh.deps.db.query("SELECT 1 FROM audit_events WHERE type = 'admin.user.reset_mfa'");
    expect(rows).toHaveLength(1);
    // The browser's session is gone: the password is asked again, then enrolment (admins must have MFA).
    const again = await password(browser, ADMIN);
    expect(again.step.html).toContain('Set up two-step verification');
    expect(clientId).toBeTruthy();
  });
});


// Issue 20: a second factor is spent once even when many sign-ins present it at the same moment
// (a phished code raced against its owner). Each round: 20 browsers past the password, one code
// sent by all of them at once.
describeEachMode('one second-factor code, 20 sign-ins at once', (mode) => {
  const PARALLEL = 20;
  let gh: TestGatehouse;
  let config: oidc.Configuration;
  const { submit, password } = signInSteps(() => gh, () => config);

  beforeAll(async () => {
    // The limits would refuse some racers with 429 before their code is looked at; this suite is
    // about single use, so every racer gets its code checked.
    gh = await startTestGatehouse({ mode, env: { RATE_LIMITS: 'off', LOGIN_DELAY_MS: '0' } });
    const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
  }, 60_000);
  afterAll(async () => gh?.close());

  /** A user with an authenticator (enrolled with the current step) and recovery codes. */
  async function enrolledUser(email: string) {
    const user = await gh.cli('user', 'create', '--email', email, '--password', USER.password);
    const secret = gh.deps.mfa.newSecret();
    expect(await gh.deps.mfa.confirmFactor(user.id, { name: 'Phone', secret, code: await generate({ secret }) })).toBeTruthy();
    const codes = await gh.deps.mfa.regenerateRecoveryCodes(user.id);
    return { id: user.id as string, creds: { email, password: USER.password }, secret, codes };
  }

  /** PARALLEL browsers, each signed in with the password and shown the second-factor challenge. */
  async function atChallenge(creds: { email: string; password: string }) {
    return Promise.all(Array.from({ length: PARALLEL }, async () => {
      const browser = new Browser();
      const { step } = await password(browser, creds);
      expect(step.html).toContain('Two-step verification');
      return { browser, html: step.html! };
    }));
  }

  /** Everyone submits `fields` at once; the one that reached the client, and the rest. */
  async function race(contenders: { browser: Browser; html: string }[], fields: Record<string, string>) {
    const results = await Promise.all(contenders.map((c) => submit(c.browser, c.html, '/mfa', fields)));
    const winners = results.filter((r) => r.html === undefined && r.url.startsWith(`${CALLBACK}?`) && new URL(r.url).searchParams.has('code'));
    const losers = results.filter((r) => !winners.includes(r));
    return { winners, losers };
  }

  it('a TOTP code: exactly one sign-in goes through, every other is refused as not valid', async () => {
    const tally = raceTally(`TOTP (${mode})`);
    for (const email of ['race-1@example.com', 'race-2@example.com']) {
      const user = await enrolledUser(email);
      const contenders = await atChallenge(user.creds);
      const code = await nextCode(user.secret);
      const { winners, losers } = await race(contenders, { code });
      expect(winners).toHaveLength(1);
      for (const l of losers) {
        expect(l.res.status).toBe(401);
        expect(l.html).toContain('not valid');
      }
      tally.round(PARALLEL, winners.length);
      const { rows } = await gh.deps.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM audit_events WHERE type = 'mfa' AND outcome = 'success' AND subject = $1", [user.id]);
      expect(rows[0].n).toBe(1);
    }
    tally.print();
  }, 120_000);

  it('a recovery code: exactly one sign-in goes through, every other is refused as used; nine remain', async () => {
    const tally = raceTally(`recovery code (${mode})`);
    for (const email of ['recovery-race-1@example.com', 'recovery-race-2@example.com']) {
      const user = await enrolledUser(email);
      const contenders = await atChallenge(user.creds);
      const { winners, losers } = await race(contenders, { recovery_code: user.codes[0] });
      expect(winners).toHaveLength(1);
      for (const l of losers) {
        expect(l.res.status).toBe(401);
        expect(l.html).toContain('already used');
      }
      tally.round(PARALLEL, winners.length);
      expect(await gh.deps.mfa.remainingRecoveryCodes(user.id)).toBe(9);
    }
    tally.print();
  }, 120_000);
});

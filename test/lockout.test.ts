// Brute-force protection on the login form (issue 7): N wrong passwords lock the account for
// LOCKOUT_DURATION (the right password fails meanwhile, works after); a device that signed in
// before is not locked out; a password reset ends the lockout; progressive delay; unknown emails
// cost what known ones do.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { Browser, CALLBACK, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const PAT = { email: 'pat@example.com', password: 'pat-has-a-long-password' };

/** A login page at `gh` for `config`'s client; returns a function that posts credentials to it. */
async function loginPage(gh: TestGatehouse, config: oidc.Configuration, browser = new Browser(), extra: Record<string, string> = {}) {
  const url = oidc.buildAuthorizationUrl(config, {
    ...extra,
    redirect_uri: CALLBACK, scope: 'openid', state: oidc.randomState(),
    code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
  });
  const first = await browser.follow(url.href, gh.url);
  let html = first.html!;
  return async function attempt(email: string, password: string) {
    const form = formOf(html, '/login');
    const started = performance.now();
    const step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email, password } });
    const ms = performance.now() - started;
    if (step.html) html = step.html;
    // Reached the client's callback: signed in.
    return { status: step.html === undefined ? 'ok' as const : step.res.status, html: step.html ?? '', retryAfter: step.res.headers.get('retry-after'), ms };
  };
}

describe('account lockout', () => {
  let gh: TestGatehouse;
  let config: oidc.Configuration;

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_ACCOUNT: '3/15m', LOCKOUT_DURATION: '2', LOGIN_DELAY_MS: '0' } });
    await gh.cli('user', 'create', '--email', PAT.email, '--password', PAT.password);
    const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
  });
  afterAll(async () => {
    await gh?.close();
  });

  it('N wrong passwords lock the account; the right password fails during the lockout and works after', async () => {
    const attempt = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) expect((await attempt(PAT.email, 'wrong password guess')).status).toBe(401);
    const locked = await attempt(PAT.email, PAT.password);
    expect(locked.status).toBe(429);
    expect(locked.html).toContain('Too many failed sign-in attempts');
    expect(Number(locked.retryAfter)).toBeGreaterThan(0);
    // Case and spaces do not make a fresh counter.
    expect((await attempt(` ${PAT.email.toUpperCase()}`, PAT.password)).status).toBe(429);
    await new Promise((r) => setTimeout(r, 2200));
    expect((await attempt(PAT.email, PAT.password)).status).toBe('ok');
    const { rows } = await gh.deps.db.query("SELECT 1 FROM audit_events WHERE type = 'login' AND details->>'reason' = 'locked'");
    expect(rows.length).toBe(2);
  });

  it('unknown emails are counted and locked the same way (no hint that the account does not exist)', async () => {
    const attempt = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) expect((await attempt('nobody@example.com', 'wrong password guess')).status).toBe(401);
    expect((await attempt('nobody@example.com', 'wrong password guess')).status).toBe(429);
  });

  it('a device that signed in before is not locked out, and its success clears the lockout', async () => {
    const owner = new Browser();
    expect((await (await loginPage(gh, config, owner))(PAT.email, PAT.password)).status).toBe('ok');
    const attacker = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) await attacker(PAT.email, 'wrong password guess');
    expect((await attacker(PAT.email, PAT.password)).status).toBe(429);
    // The owner's browser (its device cookie) still signs in (prompt=login: show the form again)...
    expect((await (await loginPage(gh, config, owner, { prompt: 'login' }))(PAT.email, PAT.password)).status).toBe('ok');
    // ...and that success ends the lockout for everyone.
    expect((await attacker(PAT.email, PAT.password)).status).toBe('ok');
  });

  it('a password reset ends the lockout', async () => {
    const attempt = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) await attempt(PAT.email, 'wrong password guess');
    expect((await attempt(PAT.email, PAT.password)).status).toBe(429);
    const user = (await gh.deps.accounts.findUserByEmail(PAT.email))!;
    const fresh = 'pat-has-a-brand-new-password';
    await gh.deps.accounts.setPassword(user.id, fresh);
    expect((await attempt(PAT.email, fresh)).status).toBe('ok');
    PAT.password = fresh;
  });
});

describe('login timing', () => {
  it('delays repeated failures progressively', async () => {
    const gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_ACCOUNT: '10/15m', LOGIN_DELAY_MS: '150' } });
    try {
      const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK);
      const attempt = await loginPage(gh, await rpConfig(gh, client.client_id, client.client_secret));
      const times = [];
      for (let i = 0; i < 4; i++) times.push((await attempt('someone@example.com', 'wrong password guess')).ms);
      // 150, 300, 600, 1200 ms of delay on top of the password check.
      expect(times[3]).toBeGreaterThan(1200);
      expect(times[3] - times[0]).toBeGreaterThan(900);
    } finally {
      await gh.close();
    }
  });

  it('unknown emails take as long as wrong passwords for real accounts (median of many attempts)', async () => {
    const gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_ACCOUNT: '1000/15m', LOGIN_DELAY_MS: '0' } });
    try {
      await gh.cli('user', 'create', '--email', PAT.email, '--password', 'pat-has-a-long-password');
      const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK);
      const attempt = await loginPage(gh, await rpConfig(gh, client.client_id, client.client_secret));
      const known: number[] = [];
      const unknown: number[] = [];
      await attempt(PAT.email, 'warm up the argon2 path');
      for (let i = 0; i < 15; i++) {
        known.push((await attempt(PAT.email, `wrong password ${i}`)).ms);
        unknown.push((await attempt(`nobody${i}@example.com`, `wrong password ${i}`)).ms);
      }
      const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
      const ratio = median(unknown) / median(known);
      expect(ratio).toBeGreaterThan(0.7);
      expect(ratio).toBeLessThan(1.4);
    } finally {
      await gh.close();
    }
  });
});

// Passkeys (issue 19) in real Chromium with a virtual authenticator (DevTools protocol WebAuthn
// domain: CTAP2, internal transport, resident keys, user verification), in both store modes:
// register on the account page, sign out, sign in with the passkey alone through an authorization
// code flow (openid-client as the RP) and read amr from the ID token; replay one assertion in
// parallel at the verify endpoint (exactly one 2xx); use the passkey as the second factor; a cloned
// authenticator (sign count going back) is refused; the admin removes it and it no longer signs in.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
import { CHROMIUM, haveChromium, launchChromium } from './helpers/chromium.ts';
import * as oidc from 'openid-client';
import { describeEachMode, rpConfig, localhostIssuer, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';


const ALICE = { email: 'alice@example.com', password: 'a long and private passphrase' };

describeEachMode('passkeys in Chromium', (mode) => {
  // Under REQUIRE_SERVICES=1 a missing Chromium throws (helpers/chromium.ts) rather than skips.
  if (!haveChromium) return void it.skip(`needs Chromium at ${CHROMIUM}`);
  let gh: TestGatehouse;
  let browser: Browser;
  let rp: http.Server;
  let rpUrl: string;
  let config: oidc.Configuration;
  let mfaConfig: oidc.Configuration;
  let alice: { id: string };
  let context: BrowserContext;
  let page: Page;
  let cdp: CDPSession;
  let authenticatorId: string;
  const received: URL[] = [];
  const errors: string[] = [];

  beforeAll(async () => {
    gh = await startTestGatehouse({ mode, env: { ...(await localhostIssuer()), LOGIN_DELAY_MS: '0' } });
    rp = http.createServer((req, res) => {
      if (req.url!.startsWith('/callback')) received.push(new URL(req.url!, rpUrl));
      res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>signed in</h1>');
    });
    await new Promise<void>((r) => rp.listen(0, '127.0.0.1', r));
    rpUrl = `http://127.0.0.1:${(rp.address() as AddressInfo).port}`;
    const client = await gh.cli('client', 'create', '--name', 'Voice App', '--redirect-uri', `${rpUrl}/callback`, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
    // A second app that requires a second factor for every sign-in (client require_mfa).
    const strict = await gh.cli('client', 'create', '--name', 'Bank App', '--redirect-uri', `${rpUrl}/callback`, '--first-party');
    await gh.cli('client', 'require-mfa', strict.client_id);
    mfaConfig = await rpConfig(gh, strict.client_id, strict.client_secret);
    alice = await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password);
    browser = await launchChromium();
    context = await browser.newContext();
    page = await context.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && !/Failed to load resource: (.* 40[01]|net::ERR_FAILED)/.test(m.text()) && errors.push(m.text()));
    cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    ({ authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    }));
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    rp?.close();
    await gh?.close();
  });

  /** Start an authorization code flow in the page; the returned function redeems the code. */
  async function start(rpConfiguration = config) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(rpConfiguration, {
      redirect_uri: `${rpUrl}/callback`, scope: 'openid email', state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    await page.goto(url.href);
    return async () => {
      await page.waitForURL(/\/callback/);
      const tokens = await oidc.authorizationCodeGrant(rpConfiguration, received.at(-1)!, { pkceCodeVerifier: verifier, expectedState: state });
      return tokens.claims()!;
    };
  }

  async function signInWithPassword() {
    await page.getByLabel('Email').fill(ALICE.email);
    await page.getByLabel('Password').fill(ALICE.password);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForLoadState();
  }

  async function signOut() {
    await page.goto(`${gh.url}/session/end?client_id=gatehouse-account`);
    await page.getByRole('button', { name: /yes, sign me out/i }).click();
    await page.waitForLoadState();
  }

  const audit = async (type: string) =>
    (await gh.deps.db.query<{ outcome: string; details: Record<string, unknown> }>('SELECT outcome, details FROM audit_events WHERE type = $1 ORDER BY id', [type])).rows;

  it('registers a passkey on the account page, signs in with it alone (amr hwk user mfa), and one assertion replayed in parallel signs in once', { timeout: 60_000 }, async () => {
    // 1. Register on the account page (signed in with the password; the password is asked again).
    await page.goto(`${gh.url}/account/security`);
    await signInWithPassword();
    await page.waitForURL(/\/account\/security$/);
    await page.getByLabel('Name for the new passkey').fill('Work laptop');
    await page.getByLabel('Your current password').fill(ALICE.password);
    await page.getByRole('button', { name: 'Add a passkey' }).click();
    await page.locator('.passkey-name').first().waitFor();
    expect(await page.locator('.passkey-name').allInnerTexts()).toEqual(['Work laptop']);
    const { rows } = await gh.deps.db.query<{ user_id: string; name: string; sign_count: string }>('SELECT user_id, name, sign_count FROM passkeys');
    expect(rows).toEqual([expect.objectContaining({ user_id: alice.id, name: 'Work laptop' })]);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    expect(credentials).toHaveLength(1);
    expect(credentials[0].isResidentCredential).toBe(true);
    // The audit names the passkey by our id, never its credential id or key.
    const registered = await audit('passkey.register');
    expect(registered.at(-1)).toMatchObject({ outcome: 'success', details: { name: 'Work laptop' } });
    expect(JSON.stringify(registered)).not.toContain(credentials[0].credentialId);
    // Renamed on the same page.
    await page.getByText('Rename Work laptop').click();
    await page.getByLabel('New name').fill('Laptop');
    await page.getByRole('button', { name: 'Rename', exact: true }).click();
    await page.waitForURL(/\/account\/security$/);
    expect(await page.locator('.passkey-name').allInnerTexts()).toEqual(['Laptop']);
    await signOut();

    // 2. Sign in with the passkey alone: no email, no password. The login page asks for a passkey
    // through the email field's autofill (conditional UI); the virtual authenticator answers it
    // as a person picking the passkey from the autofill list would.
    let finish = await start();
    const claims = await finish();
    expect(claims.sub).toBe(alice.id);
    expect(claims.amr).toEqual(['hwk', 'user', 'mfa']);
    expect(claims.acr).toBe('urn:gatehouse:acr:mfa');
    await signOut();

    // 3. One assertion, replayed: the browser's request is held back and sent 8 times at once.
    let held: { url: string; body: string } | undefined;
    await page.route('**/passkey', async (route) => {
      held = { url: route.request().url(), body: route.request().postData()! };
      await route.abort();
    });
    finish = await start();
    await expect.poll(() => held).toBeTruthy();
    await page.unroute('**/passkey');
    expect(await page.locator('#email').getAttribute('autocomplete')).toBe('username webauthn');
    const cookie = (await context.cookies(held!.url)).map((c) => `${c.name}=${c.value}`).join('; ');
    const replies = await Promise.all(Array.from({ length: 8 }, () => fetch(held!.url, {
      method: 'POST', headers: { cookie, 'content-type': 'application/json', accept: 'application/json' }, body: held!.body,
    })));
    const bodies = await Promise.all(replies.map((r) => r.json()));
    expect(replies.map((r) => r.status).sort(), JSON.stringify(bodies)).toEqual([200, 400, 400, 400, 400, 400, 400, 400]);
    expect(bodies.filter((b) => b.error === 'invalid_request')).toHaveLength(7);
    // The one success finishes the sign-in in this browser.
    const winner = bodies.find((b) => b.location)!;
    await page.goto(new URL(winner.location, gh.url).href);
    expect((await finish()).amr).toEqual(['hwk', 'user', 'mfa']);
    await signOut();
    expect(errors).toEqual([]);
  });

  it('serves as the second factor, refuses a cloned authenticator, and stops signing in once the admin removes it', { timeout: 60_000 }, async () => {
    // 1. An app that requires MFA: password, then the passkey (alice has no authenticator app).
    // The person types the password instead of picking the passkey from autofill: the passkey is
    // taken out of the authenticator while the login page is open, and put back for the second step.
    const [credential] = (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
    const replace = async (signCount: number) => {
      await cdp.send('WebAuthn.clearCredentials', { authenticatorId });
      await cdp.send('WebAuthn.addCredential', { authenticatorId, credential: { ...credential, signCount } });
    };
    await cdp.send('WebAuthn.clearCredentials', { authenticatorId });
    let finish = await start(mfaConfig);
    await signInWithPassword();
    expect(await page.title()).toMatch(/two-step/i);
    expect(await page.getByLabel(/code from your authenticator/i).count()).toBe(0);
    await replace(credential.signCount);
    await page.getByRole('button', { name: 'Use a passkey' }).click();
    const claims = await finish();
    expect(claims.amr).toEqual(['pwd', 'hwk', 'user', 'mfa']);
    expect(claims.acr).toBe('urn:gatehouse:acr:mfa');
    await signOut();

    // 2. A clone: the same key with its signature counter back at 0. Refused, and audited as such.
    const [used] = (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials;
    expect(used.signCount).toBeGreaterThan(1);
    await replace(0);
    finish = await start();
    await expect.poll(() => page.locator('#passkey-error').innerText()).toMatch(/not accepted/);
    expect(page.url()).toContain('/interaction/');
    expect((await audit('login')).at(-1)).toMatchObject({ outcome: 'failure', details: { method: 'passkey', reason: 'sign_count' } });
    // The real authenticator (its counter ahead of the stored one) still signs in, from the button.
    await replace(used.signCount + 10);
    await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
    expect((await finish()).sub).toBe(alice.id);
    await signOut();

    // 3. The admin (a service account of the admin API) lists alice's passkeys and removes this
    // one; it no longer signs in.
    const robot = await gh.cli('client', 'create', '--name', 'provisioning', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    const { access_token: token } = await (await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${robot.client_id}:${robot.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin' }),
    })).json();
    const api = (method: string, path: string) => fetch(`${gh.url}/admin/api${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    const res = await api('GET', `/users/${alice.id}/passkeys`);
    expect(res.status).toBe(200);
    const listed = await res.json();
    expect(listed.passkeys).toEqual([expect.objectContaining({ name: 'Laptop', user_id: alice.id, device_type: expect.any(String) })]);
    expect(JSON.stringify(listed)).not.toContain(credential.credentialId);
    expect((await api('DELETE', `/users/${alice.id}/passkeys/${listed.passkeys[0].id}`)).status).toBe(204);
    expect((await api('DELETE', `/users/${alice.id}/passkeys/${listed.passkeys[0].id}`)).status).toBe(404);
    expect((await audit('admin.user.remove_passkey')).at(-1)).toMatchObject({ outcome: 'success', details: { factor: listed.passkeys[0].id, name: 'Laptop' } });
    await start();
    await expect.poll(() => page.locator('#passkey-error').innerText()).toMatch(/not accepted/);
    expect((await audit('login')).at(-1)).toMatchObject({ outcome: 'failure', details: { method: 'passkey', reason: 'unknown_credential' } });
    expect(errors).toEqual([]);
  });
});

// TOTP in a real browser (issue 7): Debian's Chromium via playwright-core. Enrol by reading the
// secret from the page, sign out, sign in with password + an otplib code, then with a recovery
// code; the same recovery code twice fails, and a replayed TOTP code fails.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import * as oidc from 'openid-client';
import { generate } from 'otplib';
import { ADMIN, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.REQUIRE_SERVICES === '1') throw new Error(`Chromium not found at ${CHROMIUM}`);
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

describe.skipIf(!haveChromium)('MFA in Chromium', () => {
  let gh: TestGatehouse;
  let browser: Browser;
  let rp: http.Server;
  let rpUrl: string;
  let config: oidc.Configuration;
  let clientId: string;
  const received: URL[] = [];

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'admin', RATE_LIMITS: 'on', LOGIN_DELAY_MS: '0' } });
    rp = http.createServer((req, res) => {
      if (req.url!.startsWith('/callback')) received.push(new URL(req.url!, rpUrl));
      res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>signed in</h1>');
    });
    await new Promise<void>((r) => rp.listen(0, '127.0.0.1', r));
    rpUrl = `http://127.0.0.1:${(rp.address() as AddressInfo).port}`;
    const client = await gh.cli('client', 'create', '--name', 'Voice App', '--redirect-uri', `${rpUrl}/callback`, '--post-logout-redirect-uri', `${rpUrl}/bye`, '--first-party');
    clientId = client.client_id;
    config = await rpConfig(gh, client.client_id, client.client_secret);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  }, 45_000);
  afterAll(async () => {
    await browser?.close();
    rp?.close();
    await gh?.close();
  });

  async function start(page: Page) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: `${rpUrl}/callback`, scope: 'openid email', state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    await page.goto(url.href);
    return async () => {
      await page.waitForURL(/\/callback/);
      const tokens = await oidc.authorizationCodeGrant(config, received.at(-1)!, { pkceCodeVerifier: verifier, expectedState: state });
      return tokens.claims()!;
    };
  }

  async function signInWithPassword(page: Page) {
    await page.getByLabel('Email').fill(ADMIN.email);
    await page.getByLabel('Password').fill(ADMIN.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForLoadState();
  }

  async function signOut(page: Page) {
    await page.goto(`${gh.url}/session/end?client_id=${clientId}`);
    await page.getByRole('button', { name: /yes, sign me out/i }).click();
    await page.waitForLoadState();
  }

  it('enrols, signs in with TOTP and with a recovery code, and refuses replays', { timeout: 50_000 }, async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && !/Failed to load resource: .* 40[01]/.test(m.text()) && errors.push(m.text()));

    // 1. Enrolment during the first sign-in (admins must use a second factor).
    let finish = await start(page);
    await signInWithPassword(page);
    expect(await page.title()).toMatch(/two-step/i);
    const qrOk = await page.locator('#totp-qr').evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0);
    expect(qrOk).toBe(true);
    const secret = (await page.locator('#totp-secret').innerText()).replace(/\s/g, '');
    await page.getByLabel(/name for this authenticator/i).fill('Pixel');
    await page.getByLabel(/6-digit code/i).fill(await generate({ secret }));
    await page.getByRole('button', { name: /verify and continue/i }).click();
    await page.waitForLoadState();
    const codes = await page.locator('.recovery-code').allInnerTexts();
    expect(codes).toHaveLength(10);
    await page.getByRole('button', { name: /saved them/i }).click();
    let claims = await finish();
    expect(claims.amr).toEqual(['pwd', 'otp', 'mfa']);
    expect(claims.acr).toBe('urn:gatehouse:acr:mfa');
    await signOut(page);

    // 2. Password + a TOTP code computed by otplib (the next time step: enrolment used this one).
    const code = await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 });
    finish = await start(page);
    await signInWithPassword(page);
    await page.getByLabel(/code from your authenticator/i).fill(code);
    await page.getByRole('button', { name: /^verify$/i }).click();
    claims = await finish();
    expect(claims.amr).toEqual(['pwd', 'otp', 'mfa']);
    await signOut(page);

    // 3. The same TOTP code again: refused.
    await start(page);
    await signInWithPassword(page);
    await page.getByLabel(/code from your authenticator/i).fill(code);
    await page.getByRole('button', { name: /^verify$/i }).click();
    await page.waitForLoadState();
    expect(await page.locator('[role=alert]').innerText()).toMatch(/not valid/);

    // 4. A recovery code instead (same interaction, from the "lost your device" section).
    await page.locator('summary').click();
    await page.getByLabel(/recovery code/i).fill(codes[0]);
    await page.getByRole('button', { name: /use recovery code/i }).click();
    await page.waitForURL(/\/callback/);
    expect(received.at(-1)!.searchParams.get('code')).toBeTruthy();
    await signOut(page);

    // 5. The same recovery code twice: refused.
    await start(page);
    await signInWithPassword(page);
    await page.locator('summary').click();
    await page.getByLabel(/recovery code/i).fill(codes[0]);
    await page.getByRole('button', { name: /use recovery code/i }).click();
    await page.waitForLoadState();
    expect(await page.locator('[role=alert]').innerText()).toMatch(/already used/);
    expect(page.url()).toContain('/interaction/');
    expect(errors).toEqual([]);
    await page.close();
  });
});

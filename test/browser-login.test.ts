// The login pages in a real browser: Debian's Chromium driven by playwright-core.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import * as oidc from 'openid-client';
import { ADMIN, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.REQUIRE_SERVICES === '1') throw new Error(`Chromium not found at ${CHROMIUM}`);

export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

describe.skipIf(!haveChromium)('login in Chromium', () => {
  let gh: TestGatehouse;
  let browser: Browser;
  let rp: http.Server;
  let rpUrl: string;
  const received: URL[] = [];

  beforeAll(async () => {
    // Signs in as ADMIN to test the browser sign-in, not the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none' } });
    // A tiny relying-party callback that records what it receives.
    rp = http.createServer((req, res) => {
      if (req.url!.startsWith('/callback')) received.push(new URL(req.url!, rpUrl));
      res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>signed in</h1>');
    });
    await new Promise<void>((r) => rp.listen(0, '127.0.0.1', r));
    rpUrl = `http://127.0.0.1:${(rp.address() as AddressInfo).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    rp?.close();
    await gh?.close();
  });

  // The pages need no JavaScript (issue 2): the same sign-in with it switched off.
  it.each([{ javaScript: true }, { javaScript: false }])('signs in through the login and consent pages and the RP redeems the code (JavaScript: $javaScript)', async ({ javaScript }) => {
    const client = await gh.cli('client', 'create', '--name', 'Browser App', '--redirect-uri', `${rpUrl}/callback`);
    const config = await rpConfig(gh, client.client_id, client.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: `${rpUrl}/callback`, scope: 'openid email profile', state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const context = await browser.newContext({ javaScriptEnabled: javaScript });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && !/Failed to load resource: .* 401/.test(m.text()) && errors.push(m.text()));
    await page.goto(url.href);
    expect(await page.getByText('Browser App').count()).toBeGreaterThan(0);
    expect(await page.title()).toMatch(/sign in/i);
    // A wrong password first: the page says so and stays.
    await page.getByLabel(/email/i).fill(ADMIN.email);
    await page.getByLabel(/password/i).fill('definitely wrong');
    await page.getByRole('button', { name: /sign in|log in|continue/i }).click();
    await page.waitForLoadState();
    expect(await page.content()).toContain('Invalid email or password');
    await page.getByLabel(/email/i).fill(ADMIN.email);
    await page.getByLabel(/password/i).fill(ADMIN.password);
    await page.getByRole('button', { name: /sign in|log in|continue/i }).click();
    await page.waitForURL(/\/interaction\/|\/callback/);
    if (page.url().includes('/interaction/')) {
      expect(await page.content()).toContain('Browser App');
      await page.getByRole('button', { name: /allow|continue|authorize/i }).click();
    }
    await page.waitForURL(/\/callback/);
    expect(errors).toEqual([]);
    const callback = received.at(-1)!;
    const tokens = await oidc.authorizationCodeGrant(config, callback, { pkceCodeVerifier: verifier, expectedState: state });
    expect(tokens.claims()!.email).toBe(ADMIN.email);
    await context.close();
  });
});

// The browser package (@gatehouse/web) in real Chromium, through the example app (examples/web): a
// user signs in with code + PKCE, the app gets LiveKit connection details with the user's token,
// refreshes it, keeps every token out of localStorage, sessionStorage and cookies (in memory: a
// reload forgets them), and signs out (refresh token revoked, Gatehouse session ended).
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { TokenVerifier } from 'livekit-server-sdk';
import { startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { startWebExample } from '../examples/web/server.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.REQUIRE_SERVICES === '1') throw new Error(`Chromium not found at ${CHROMIUM}`);
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APItestkey', LIVEKIT_API_SECRET: 'lk-secret-'.padEnd(40, 'x') };
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };

describe.skipIf(!haveChromium)('@gatehouse/web in Chromium (examples/web)', () => {
  let gh: TestGatehouse;
  let web: Awaited<ReturnType<typeof startWebExample>>;
  let browser: Browser;
  let bob: string;
  let clientId: string;

  beforeAll(async () => {
    // No CORS_ORIGINS: the client's redirect URI origin may call /token and connection-details.
    web = await startWebExample();
    gh = await startTestGatehouse({ env: LK });
    bob = (await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--name', 'Bob', '--role', 'user', '--verified')).id;
    const client = await gh.cli('client', 'create', '--type', 'public', '--name', 'Web example', '--redirect-uri', `${web.url}/`, '--post-logout-redirect-uri', `${web.url}/`);
    clientId = client.client_id;
    await gh.cli('policy', 'client', 'set', clientId, '--livekit');
    web.configure({ issuer: gh.url, clientId });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await web?.close();
    await gh?.close();
  });

  /** Every token the page received from Gatehouse's token endpoint, and the connection-details answers. */
  function watch(page: Page) {
    const seen = { tokens: [] as Record<string, string>[], details: [] as { auth?: string; body: any }[] };
    page.on('response', async (res) => {
      const url = new URL(res.url());
      if (url.origin !== gh.url || res.request().method() !== 'POST') return;
      if (url.pathname === '/token') seen.tokens.push(await res.json().catch(() => ({})));
      if (url.pathname === '/livekit/connection-details') seen.details.push({ auth: res.request().headers().authorization, body: await res.json().catch(() => ({})) });
    });
    return seen;
  }
  const status = (page: Page) => page.getByRole('status').innerText();
  /** Everything the page keeps where other scripts (or a later visit) could read it. */
  const stored = (page: Page) => page.evaluate(() => JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage }, cookie: document.cookie }));

  async function signIn(page: Page, opts: { password: boolean }) {
    await page.getByRole('button', { name: 'Sign in' }).click();
    if (opts.password) {
      await page.getByLabel(/email/i).fill(BOB.email);
      await page.getByLabel(/password/i).fill(BOB.password);
      await page.getByRole('button', { name: /sign in/i }).click();
    }
    // offline_access asks for consent each time (a refresh token is a standing grant).
    await page.getByRole('button', { name: /allow/i }).click();
    await page.waitForURL(`${web.url}/`);
    await expect.poll(() => status(page)).toBe('Signed in as Bob');
  }

  it('signs in with PKCE, gets connection details with the bearer token, refreshes, and stores no token', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const seen = watch(page);
    const authorizeUrls: URL[] = [];
    page.on('request', (r) => {
      if (r.url().startsWith(`${gh.url}/auth`)) authorizeUrls.push(new URL(r.url()));
    });
    await page.goto(web.url);
    expect(await status(page)).toBe('Signed out');
    await signIn(page, { password: true });
    expect(authorizeUrls[0].searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorizeUrls[0].searchParams.get('client_id')).toBe(clientId);
    // The code is gone from the address bar once redeemed.
    expect(page.url()).toBe(`${web.url}/`);
    // (The response listener reads bodies asynchronously: wait for it.)
    await expect.poll(() => seen.tokens.length).toBe(1);
    const [first] = seen.tokens;
    expect(first).toMatchObject({ access_token: expect.any(String), refresh_token: expect.any(String), id_token: expect.any(String) });

    await page.getByRole('button', { name: 'Get connection details' }).click();
    await expect.poll(() => page.locator('#room').innerText()).toMatch(new RegExp(`^user_${bob}_`));
    await expect.poll(() => seen.details.length).toBe(1);
    expect(await page.locator('#participant').innerText()).toBe('Bob');
    expect(await page.locator('#server').innerText()).toBe(LK.LIVEKIT_URL);
    expect(seen.details[0].auth).toBe(`Bearer ${first.access_token}`);
    const lk = await new TokenVerifier(LK.LIVEKIT_API_KEY, LK.LIVEKIT_API_SECRET).verify(seen.details[0].body.participantToken);
    expect(lk.sub).toBe(`user_${bob}`);

    await page.getByRole('button', { name: 'Refresh token' }).click();
    await expect.poll(() => page.getByRole('alert').innerText()).toBe('Token refreshed');
    await expect.poll(() => seen.tokens.length).toBe(2);
    const second = seen.tokens[1];
    expect(second.access_token).toEqual(expect.any(String));
    expect(second.access_token).not.toBe(first.access_token);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    await page.getByRole('button', { name: 'Get connection details' }).click();
    await expect.poll(() => seen.details.length).toBe(2);
    expect(seen.details[1].auth).toBe(`Bearer ${second.access_token}`);

    // The weakness list: no token in localStorage, sessionStorage or the app's cookies.
    const kept = await stored(page);
    for (const t of [...seen.tokens.flatMap((x) => [x.access_token, x.refresh_token, x.id_token]), seen.details[0].body.participantToken]) {
      expect(kept).not.toContain(t);
    }
    expect(JSON.parse(kept).local).toEqual({});
    // In memory only: a reload forgets the tokens. Signing in again needs no password (Gatehouse's session).
    await page.reload();
    expect(await status(page)).toBe('Signed out');
    await signIn(page, { password: false });
    await context.close();
  });

  it('signs out: the refresh token is revoked and the Gatehouse session ends', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const seen = watch(page);
    await page.goto(web.url);
    await signIn(page, { password: true });
    await expect.poll(() => seen.tokens.length).toBe(1);
    const refresh = seen.tokens[0].refresh_token;
    const introspect = async () => (await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: refresh, client_id: clientId }),
    })).json();
    expect(await introspect()).toMatchObject({ active: true, client_id: clientId, sub: bob });
    await page.getByRole('button', { name: 'Sign out' }).click();
    // Gatehouse may ask to confirm the sign-out (RP-initiated logout).
    const confirm = page.getByRole('button', { name: /sign out|log out|yes/i });
    await Promise.race([page.waitForURL(`${web.url}/`), confirm.waitFor().then(() => confirm.click())]);
    await page.waitForURL(`${web.url}/`);
    await expect.poll(() => status(page)).toBe('Signed out');
    expect(await introspect()).toEqual({ active: false });
    // The Gatehouse session is gone too: signing in asks for the password again.
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByLabel(/password/i).waitFor();
    await context.close();
  });
});

// The device authorization grant (RFC 8628) end to end, as a voice device would run it: the device
// starts with openid-client and polls; the person types the code on a phone-sized page in Chromium,
// names the device, signs in and consents; the device then exchanges its access token for a
// LiveKit room token. Then the person lists and revokes the device at /account/devices.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import * as oidc from 'openid-client';
import { TokenVerifier } from 'livekit-server-sdk';
import { generate, generateSecret } from 'otplib';
import { rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.REQUIRE_SERVICES === '1') throw new Error(`Chromium not found at ${CHROMIUM}`);
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

const LK = { url: 'wss://livekit.test', key: 'APIdevicekey', secret: 'lk-device-secret-'.padEnd(40, 'x') };
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const CAROL = { email: 'carol@example.com', password: 'carol has a long passphrase' };
const ERIN = { email: 'erin@example.com', password: 'erin has a long passphrase' };

/** The ordinary sign-in page, reached from the device confirmation page. */
async function signInOnPage(page: Page, creds: { email: string; password: string }) {
  await page.waitForURL(/\/interaction\//);
  await page.getByLabel(/email/i).fill(creds.email);
  await page.getByLabel(/password/i).fill(creds.password);
  await page.getByRole('button', { name: /sign in/i }).click();
  await page.waitForLoadState();
}

describe('device authorization grant', () => {
  let gh: TestGatehouse;
  let device: { client_id: string; client_secret: string };
  let config: oidc.Configuration;
  let carol: string;

  const tokenRequest = async (params: Record<string, string>) => {
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${device.client_id}:${device.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
    });
    return { status: res.status, body: await res.json() as Record<string, any> };
  };

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: { LIVEKIT_URL: LK.url, LIVEKIT_API_KEY: LK.key, LIVEKIT_API_SECRET: LK.secret, DEVICE_POLL_INTERVAL: '1' } });
    carol = (await gh.cli('user', 'create', '--email', CAROL.email, '--password', CAROL.password, '--name', 'Carol', '--role', 'user', '--verified')).id;
    const c = await gh.cli('client', 'create', '--name', 'Kitchen speaker app', '--grant', DEVICE_GRANT, '--grant', 'refresh_token', '--grant', TX);
    device = { client_id: c.client_id, client_secret: c.client_secret };
    await gh.cli('policy', 'client', 'set', device.client_id, '--livekit');
    config = await rpConfig(gh, device.client_id, device.client_secret);
  });
  afterAll(async () => {
    await gh?.close();
  });

  it('tells the device its interval and answers slow_down to a device that polls too fast', async () => {
    const start = await oidc.initiateDeviceAuthorization(config, { scope: 'openid' });
    expect(start.interval).toBe(1);
    expect(start.user_code).toMatch(/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
    expect(start.verification_uri).toBe(`${gh.url}/device`);
    const poll = () => tokenRequest({ grant_type: DEVICE_GRANT, device_code: start.device_code });
    expect((await poll()).body.error).toBe('authorization_pending');
    const fast = await poll();
    expect(fast.status).toBe(400);
    expect(fast.body.error).toBe('slow_down');
    // RFC 8628 §3.5: the interval grew by 5 seconds, so polling again at the old pace is still too fast.
    await new Promise((r) => setTimeout(r, 1100));
    expect((await poll()).body.error).toBe('slow_down');
  });

  describe.skipIf(!haveChromium)('in a phone browser', () => {
    let browser: Browser;
    beforeAll(async () => {
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    });
    afterAll(async () => {
      await browser?.close();
    });

    it('signs the device in with the code, gets a LiveKit token by exchange, and the user revokes the device', async () => {
      const start = await oidc.initiateDeviceAuthorization(config, { scope: 'openid offline_access', device_name: 'Speaker in the kitchen' });
      const polling = oidc.pollDeviceAuthorizationGrant(config, start);

      const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(start.verification_uri);
      expect(await page.title()).toMatch(/connect a device/i);
      // Fits a phone: no sideways scrolling at 390 px, and the field and button are full-size tap targets.
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
      for (const target of [page.getByLabel(/code/i), page.getByRole('button', { name: /continue/i })]) {
        const box = (await target.boundingBox())!;
        expect(box.height).toBeGreaterThanOrEqual(40);
        expect(box.x + box.width).toBeLessThanOrEqual(390);
      }
      expect(await page.getByLabel(/code/i).getAttribute('autocapitalize')).toBe('characters');
      // A wrong code first: the page says so.
      await page.getByLabel(/code/i).fill('BBBB-BBBB');
      await page.getByRole('button', { name: /continue/i }).click();
      await page.waitForLoadState();
      expect(await page.content()).toContain('That code is not right');
      // Typed as a person would on a phone: lower case, no dash.
      await page.getByLabel(/code/i).fill(start.user_code.replace('-', '').toLowerCase());
      await page.getByRole('button', { name: /continue/i }).click();
      await page.waitForLoadState();
      expect(await page.locator('#user-code').textContent()).toBe(start.user_code);
      expect(await page.content()).toContain('Kitchen speaker app');
      expect(await page.getByLabel(/name this device/i).inputValue()).toBe('Speaker in the kitchen');
      await page.getByLabel(/name this device/i).fill('Kitchen speaker');
      await page.getByRole('button', { name: /continue/i }).click();
      // The ordinary sign-in and consent pages.
      await signInOnPage(page, CAROL);
      if (await page.getByRole('button', { name: /allow/i }).count()) {
        expect(await page.content()).toContain('Kitchen speaker app');
        await page.getByRole('button', { name: /allow/i }).click();
      }
      await page.getByText(/device connected/i).first().waitFor();
      expect(await page.locator('#device-name').textContent()).toBe('Kitchen speaker');

      const tokens = await polling;
      expect(tokens.access_token).toEqual(expect.any(String));
      expect(tokens.refresh_token).toEqual(expect.any(String));
      expect(tokens.claims()?.sub).toBe(carol);

      // The device's access token buys a LiveKit room token (RFC 8693, policy from the client).
      const lk = await tokenRequest({ grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, requested_token_type: LIVEKIT });
      expect(lk.status).toBe(200);
      expect(lk.body.issued_token_type).toBe(LIVEKIT);
      const grant = await new TokenVerifier(LK.key, LK.secret).verify(lk.body.access_token);
      expect(grant.sub).toBe(`user_${carol}`);
      expect(grant.video?.roomJoin).toBe(true);

      // The person sees the device in their account, by the name they gave it…
      const list = await page.request.get(`${gh.url}/account/devices`, { headers: { accept: 'application/json' } });
      expect(list.status()).toBe(200);
      const { devices } = await list.json();
      expect(devices).toEqual([expect.objectContaining({ name: 'Kitchen speaker', client_id: device.client_id })]);
      // …and disconnects it on the page.
      await page.goto(`${gh.url}/account/devices`);
      expect(await page.content()).toContain('Kitchen speaker');
      await page.getByRole('button', { name: /disconnect kitchen speaker/i }).click();
      await page.waitForLoadState();
      expect(await page.content()).toContain('No devices are signed in');
      expect(errors).toEqual([]);

      // Its refresh token and its access token stop working.
      const refreshed = await tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token! });
      expect(refreshed.body.error).toBe('invalid_grant');
      const again = await tokenRequest({ grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, requested_token_type: LIVEKIT });
      expect(again.status).toBe(400);
      const audit = await gh.deps.db.query<{ type: string; request_id: string | null }>("SELECT type, request_id FROM audit_events WHERE type LIKE 'device.%' AND subject = $1 ORDER BY id", [carol]);
      expect(audit.rows.map((r) => r.type)).toEqual(['device.authorize', 'device.revoke']);
      // Each row names the request that made it (the id the server gave it, also in the log line).
      expect(audit.rows.every((r) => typeof r.request_id === 'string' && r.request_id.length > 0)).toBe(true);
      await context.close();
    });

    it('asks a user with an authenticator for the second factor on the phone, and the device token carries it', async () => {
      const erin = (await gh.cli('user', 'create', '--email', ERIN.email, '--password', ERIN.password, '--name', 'Erin', '--role', 'user', '--verified')).id;
      const secret = generateSecret();
      expect(await gh.deps.mfa.confirmFactor(erin, { name: 'Phone', secret, code: await generate({ secret }) })).toBeTruthy();

      const start = await oidc.initiateDeviceAuthorization(config, { scope: 'openid offline_access', device_name: 'Hallway speaker' });
      const polling = oidc.pollDeviceAuthorizationGrant(config, start);
      const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
      const page = await context.newPage();
      await page.goto(start.verification_uri_complete!);
      await page.getByRole('button', { name: /continue/i }).click();
      await signInOnPage(page, ERIN);
      // The password alone does not finish the sign-in: the second-factor page follows.
      expect(await page.title()).toMatch(/two-step/i);
      // The next time step: enrolment used this one, and a code is good only once.
      await page.getByLabel(/code from your authenticator/i).fill(await generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 }));
      await page.getByRole('button', { name: /^verify$/i }).click();
      await page.waitForLoadState();
      if (await page.getByRole('button', { name: /allow/i }).count()) await page.getByRole('button', { name: /allow/i }).click();
      await page.getByText(/device connected/i).first().waitFor();

      const tokens = await polling;
      expect(tokens.claims()).toMatchObject({ sub: erin, acr: 'urn:gatehouse:acr:mfa', amr: ['pwd', 'otp', 'mfa'] });
      const lk = await tokenRequest({ grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, requested_token_type: LIVEKIT });
      expect(lk.status, JSON.stringify(lk.body)).toBe(200);
      expect((await new TokenVerifier(LK.key, LK.secret).verify(lk.body.access_token)).sub).toBe(`user_${erin}`);
      await context.close();
    });

    it('keeps two devices of one client apart: revoking one leaves the other signed in', async () => {
      const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
      const page = await context.newPage();
      const signIn = async (name: string, first: boolean) => {
        const start = await oidc.initiateDeviceAuthorization(config, { scope: 'openid offline_access', device_name: name });
        const polling = oidc.pollDeviceAuthorizationGrant(config, start);
        // verification_uri_complete carries the code: straight to the confirmation page.
        await page.goto(start.verification_uri_complete!);
        await page.getByRole('button', { name: /continue/i }).click();
        if (first) {
          await signInOnPage(page, CAROL);
        }
        if (await page.getByRole('button', { name: /allow/i }).count()) await page.getByRole('button', { name: /allow/i }).click();
        await page.getByText(/device connected/i).first().waitFor();
        return polling;
      };
      const bedroom = await signIn('Bedroom speaker', true);
      const office = await signIn('Office speaker', false);
      const { devices } = await (await page.request.get(`${gh.url}/account/devices`, { headers: { accept: 'application/json' } })).json();
      expect(devices.map((d: { name: string }) => d.name).sort()).toEqual(['Bedroom speaker', 'Office speaker']);
      const bedroomId = devices.find((d: { name: string }) => d.name === 'Bedroom speaker').id;
      const del = await page.request.delete(`${gh.url}/account/devices/${bedroomId}`);
      expect(del.status()).toBe(204);
      expect((await tokenRequest({ grant_type: 'refresh_token', refresh_token: bedroom.refresh_token! })).body.error).toBe('invalid_grant');
      expect((await tokenRequest({ grant_type: 'refresh_token', refresh_token: office.refresh_token! })).status).toBe(200);
      await context.close();
    });
  });

  it('refuses /account/devices without a signed-in browser session', async () => {
    const res = await fetch(`${gh.url}/account/devices`, { headers: { accept: 'application/json' } });
    expect(res.status).toBe(401);
    expect((await res.json()).error).toBe('invalid_token');
  });
});

// The issuer's own URL in a browser (issue 18): a page that says what the server is, where to sign
// in, the admin console for those allowed in, and the discovery URL for developers, under the
// strict page CSP of the other pages.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, Browser, formOf, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const NED = { email: 'ned@example.com', password: 'ned has a long passphrase' };

/** Sign in through the account pages, then open the front door with that browser. */
async function signedIn(gh: TestGatehouse, creds: { email: string; password: string }) {
  const browser = new Browser();
  let step = await browser.follow(`${gh.url}/account`, gh.url);
  const { action, fields } = formOf(step.html!, '/login');
  step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: creds.email, password: creds.password } });
  expect(step.url).toBe(`${gh.url}/account`);
  return browser;
}

describe('front door at /', () => {
  let gh: TestGatehouse;
  beforeAll(async () => {
    // Signs in as ADMIN to see the console link, not to test the second factor.
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none' } });
    await gh.cli('user', 'create', '--email', NED.email, '--password', NED.password, '--name', 'Ned', '--role', 'user');
  });
  afterAll(async () => {
    await gh?.close();
  });

  it('tells a visitor what this is, where to sign in, and where discovery is', async () => {
    const res = await fetch(`${gh.url}/`, { headers: { accept: 'text/html' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
    const html = await res.text();
    expect(html).toContain('Sign-in service');
    expect(html).toContain(`<code id="issuer">${gh.url}</code>`);
    expect(html).toContain(`href="${gh.url}/.well-known/openid-configuration"`);
    expect(html).toContain('href="/account"');
    expect(html).toContain('Sign in to your account');
    expect(html).not.toContain('/admin');
    expect(html).not.toMatch(/<script|style=/);
    // The discovery link it shows works.
    expect((await fetch(`${gh.url}/.well-known/openid-configuration`)).status).toBe(200);
    // Other paths still answer as before (the strict CSP is for the front door, not a prefix for all).
    expect((await fetch(`${gh.url}/no-such-page`)).status).toBe(404);
  });

  it('shows a signed-in user their account, and the admin console only to an admin', async () => {
    const ned = await signedIn(gh, NED);
    const nedPage = await (await ned.request(`${gh.url}/`)).text();
    expect(nedPage).toContain('Signed in as');
    expect(nedPage).toContain(NED.email);
    expect(nedPage).toContain('Your account');
    expect(nedPage).not.toContain('id="admin-console"');

    const admin = await signedIn(gh, ADMIN);
    const adminPage = await (await admin.request(`${gh.url}/`)).text();
    expect(adminPage).toContain(ADMIN.email);
    expect(adminPage).toContain('<a class="button secondary" id="admin-console" href="/admin">Admin console</a>');
  });
});

// The account pages, as a person uses them with a browser (cookie jar, every hop followed): sign in
// through Gatehouse's own login, land on /account, change the password. A changed password ends
// every session and token of the user; wrong current passwords count toward the login lockout.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const ERIN = { email: 'erin@example.com', password: 'erin has a long password' };

describe('account pages', () => {
  let gh: TestGatehouse;

  /** Open an /account page, signing in on the way if the login page appears. */
  async function open(browser: Browser, path: string, creds = ERIN) {
    let step = await browser.follow(`${gh.url}${path}`, gh.url);
    if (step.html && /name="password"/.test(step.html) && /\/interaction\//.test(step.html)) {
      const { action, fields } = formOf(step.html, '/login');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: creds.email, password: creds.password } });
    }
    return step;
  }

  beforeAll(async () => {
    gh = await startTestGatehouse();
    await gh.cli('user', 'create', '--email', ERIN.email, '--password', ERIN.password, '--name', 'Erin Example');
  });
  afterAll(async () => gh?.close());

  it('sends a visitor without a session through the login page and back to the page asked for', async () => {
    const browser = new Browser();
    const first = await browser.request(`${gh.url}/account/password`);
    expect(first.status).toBe(302);
    expect(first.headers.get('location')).toBe('/account/sign-in?return_to=%2Faccount%2Fpassword');
    const step = await open(browser, '/account/password');
    expect(step.res.status).toBe(200);
    expect(step.url).toBe(`${gh.url}/account/password`);
    expect(step.html).toContain('Current password');
    expect(step.res.headers.get('cache-control')).toBe('no-store');

    const home = await open(browser, '/account');
    expect(home.html).toContain('Erin Example');
    expect(home.html).toContain(ERIN.email);
    expect(home.html).toContain('href="/account/password"');
  });

  it('only ever returns to an /account page after signing in', async () => {
    const browser = new Browser();
    const step = await open(browser, `/account/sign-in?return_to=${encodeURIComponent('https://evil.example/')}`);
    expect(step.url).toBe(`${gh.url}/account`);
    const forged = await browser.request(`${gh.url}/account/callback?code=x&state=not-the-one`);
    expect(forged.status).toBe(400);
  });

  it('changes the password: refuses a wrong current one, a mismatch and a weak one; then ends every session and token', async () => {
    const app = await gh.cli('client', 'create', '--name', 'app', '--redirect-uri', CALLBACK, '--first-party');
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const { tokens } = await codeFlow(gh, config, { creds: ERIN });

    const browser = new Browser();
    const form = async () => formOf((await open(browser, '/account/password')).html!, '/account/password');
    const submit = async (fields: Record<string, string>) => {
      const f = await form();
      const res = await browser.request(`${gh.url}${f.action}`, { form: { ...f.fields, ...fields } });
      return { status: res.status, html: await res.text() };
    };

    const wrong = await submit({ current_password: 'not my password at all', new_password: 'a brand new passphrase', confirm_password: 'a brand new passphrase' });
    expect(wrong.status).toBe(400);
    expect(wrong.html).toContain('The current password is not right.');
    const mismatch = await submit({ current_password: ERIN.password, new_password: 'a brand new passphrase', confirm_password: 'a different passphrase' });
    expect(mismatch.status).toBe(400);
    expect(mismatch.html).toContain('do not match');
    const weak = await submit({ current_password: ERIN.password, new_password: 'short', confirm_password: 'short' });
    expect(weak.status).toBe(400);
    expect(weak.html).toMatch(/at least 12/);
    const noCsrf = await browser.request(`${gh.url}/account/password`, { form: { current_password: ERIN.password, new_password: 'a brand new passphrase', confirm_password: 'a brand new passphrase' } });
    expect(noCsrf.status).toBe(403);

    const done = await submit({ current_password: ERIN.password, new_password: 'a brand new passphrase', confirm_password: 'a brand new passphrase' });
    expect(done.status).toBe(200);
    expect(done.html).toContain('Password changed');

    // Every token and session of the user is gone, this browser's included.
    const intro = await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.access_token }),
    });
    expect(await intro.json()).toEqual({ active: false });
    expect((await browser.request(`${gh.url}/account`)).status).toBe(302);

    // A user-level revocation covers its whole second (README § Revocation); a person signs in later.
    await new Promise((r) => setTimeout(r, 1100));
    const again = await open(new Browser(), '/account', { email: ERIN.email, password: 'a brand new passphrase' });
    expect(again.html).toContain('Erin Example');

    const audit = await gh.deps.db.query<{ outcome: string; details: unknown }>("SELECT outcome, details FROM audit_events WHERE type = 'account.password_change' ORDER BY id");
    expect(audit.rows.map((r) => r.outcome)).toEqual(['failure', 'success']);
    const everything = JSON.stringify((await gh.deps.db.query('SELECT * FROM audit_events')).rows);
    expect(everything).not.toContain('a brand new passphrase');
    expect(everything).not.toContain(ERIN.password);
  });
});

// /account/security as a person uses it (cookie jar, every hop followed): add a named authenticator
// from the account page, get recovery codes once, be asked for the code at the next sign-in, rename,
// regenerate codes and remove authenticators — each sensitive change needing a current code — and
// never drop the last authenticator of an account whose role requires one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { generate } from 'otplib';
import { ADMIN, Browser, CALLBACK, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const DANA = { email: 'dana@example.com', password: 'dana has a long password' };
const ACR_MFA = 'urn:gatehouse:acr:mfa';

const secretOf = (html: string) => /id="totp-secret"[^>]*>([^<]+)</.exec(html)![1].replace(/\s/g, '');
const codesOf = (html: string) => [...html.matchAll(/class="recovery-code"[^>]*>([^<]+)</g)].map((m) => m[1]);
/** A code for a later time step: inside the ±1 window and after the step already used. */
const codeAt = (secret: string, steps: number) => generate({ secret, epoch: Math.floor(Date.now() / 1000) + 30 * steps });

describe('account security page', () => {
  let gh: TestGatehouse;

  /** Open an /account page, signing in (password, then a TOTP code when asked) on the way. */
  async function open(browser: Browser, path: string, creds = DANA, totp?: () => Promise<string>) {
    let step = await browser.follow(`${gh.url}${path}`, gh.url);
    if (step.html && /name="password"/.test(step.html) && /\/interaction\//.test(step.html)) {
      const { action, fields } = formOf(step.html, '/login');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: creds.email, password: creds.password } });
    }
    if (step.html && /\/mfa"/.test(step.html) && totp) {
      const { action, fields } = formOf(step.html, '/mfa');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, code: await totp() } });
    }
    return step;
  }
  async function post(browser: Browser, html: string, action: string, fields: Record<string, string>) {
    const form = formOf(html, action);
    const res = await browser.request(new URL(form.action, gh.url).href, { form: { ...form.fields, ...fields } });
    return { status: res.status, location: res.headers.get('location'), html: await res.text() };
  }
  const factorRows = async (email: string) =>
    (await gh.deps.db.query<{ name: string }>('SELECT f.name FROM mfa_factors f JOIN users u ON u.id = f.user_id WHERE u.email = $1 ORDER BY f.created_at', [email])).rows.map((r) => r.name);
  const auditTypes = async (type: string) =>
    (await gh.deps.db.query<{ outcome: string; details: unknown }>('SELECT outcome, details FROM audit_events WHERE type = $1 ORDER BY id', [type])).rows;

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'admin', RATE_LIMITS: 'on', LOGIN_DELAY_MS: '0' } });
    await gh.cli('user', 'create', '--email', DANA.email, '--password', DANA.password, '--name', 'Dana');
  });
  afterAll(async () => gh?.close());

  it('adds, uses, renames and removes authenticators; regenerating codes voids the old set', async () => {
    const browser = new Browser();
    const off = await open(browser, '/account/security');
    expect(off.res.status).toBe(200);
    expect(off.html).toContain('Two-step sign-in is off');

    // Add the first authenticator: QR page, a wrong code, then the right one → recovery codes, once.
    const enrol = await open(browser, '/account/security/totp');
    expect(enrol.html).toMatch(/<img id="totp-qr" src="data:image\/png;base64,/);
    const secret = secretOf(enrol.html!);
    const wrong = await post(browser, enrol.html!, '/account/security/totp', { name: 'Phone', code: '000000' });
    expect(wrong.status).toBe(401);
    expect(wrong.html).toContain('That code is not valid');
    const tampered = await post(browser, enrol.html!, '/account/security/totp', { name: 'Phone', code: await codeAt(secret, 0), enrolment: 'v1.x.y.z' });
    expect(tampered.status).toBe(400);
    expect(await factorRows(DANA.email)).toEqual([]);
    const saved = await post(browser, enrol.html!, '/account/security/totp', { name: 'Phone', code: await codeAt(secret, 0) });
    expect(saved.status).toBe(200);
    const codes = codesOf(saved.html);
    expect(codes).toHaveLength(10);
    expect(saved.html).toContain('href="/account/security"');
    expect(await factorRows(DANA.email)).toEqual(['Phone']);

    const on = await open(browser, '/account/security');
    expect(on.html).toContain('Phone');
    expect(on.html).toContain('10 of 10 recovery codes left.');

    // A second, named authenticator keeps the same recovery codes.
    const enrol2 = await open(browser, '/account/security/totp');
    const secret2 = secretOf(enrol2.html!);
    const second = await post(browser, enrol2.html!, '/account/security/totp', { name: 'Laptop', code: await codeAt(secret2, 0) });
    expect(second.status).toBe(303);
    expect(second.location).toBe('/account/security');
    expect(await factorRows(DANA.email)).toEqual(['Phone', 'Laptop']);

    // The next sign-in asks for a code; the session then carries acr MFA.
    const app = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const fresh = new Browser();
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    let step = await fresh.follow(url.href, gh.url);
    const login = formOf(step.html!, '/login');
    step = await fresh.follow(new URL(login.action, gh.url).href, gh.url, { form: { ...login.fields, ...DANA } });
    expect(step.html).toContain('Code from your authenticator app');
    const challenge = formOf(step.html!, '/mfa');
    step = await fresh.follow(new URL(challenge.action, gh.url).href, gh.url, { form: { ...challenge.fields, code: await codeAt(secret2, 1) } });
    const tokens = await oidc.authorizationCodeGrant(config, new URL(step.url), { pkceCodeVerifier: verifier });
    expect(tokens.claims()!.acr).toBe(ACR_MFA);
    expect(tokens.claims()!.amr).toEqual(['pwd', 'otp', 'mfa']);

    // Rename.
    let page = (await open(browser, '/account/security')).html!;
    const renamed = await post(browser, page, '/rename', { name: 'Old phone' });
    expect(renamed.status).toBe(303);
    expect(await factorRows(DANA.email)).toEqual(['Old phone', 'Laptop']);

    // New recovery codes need a current code; the old set stops working.
    page = (await open(browser, '/account/security')).html!;
    const refused = await post(browser, page, '/account/security/recovery-codes', { code: '123456' });
    expect(refused.status).toBe(401);
    expect(refused.html).toContain('That code is not valid');
    const fresher = await post(browser, page, '/account/security/recovery-codes', { code: codes[0] });
    expect(fresher.status).toBe(200);
    const newCodes = codesOf(fresher.html);
    expect(newCodes).toHaveLength(10);
    expect(newCodes).not.toContain(codes[1]);
    expect((await auditTypes('mfa.recovery_codes')).map((r) => r.outcome)).toEqual(['failure', 'success']);

    // Remove one authenticator with an old (void) code: refused; with a new recovery code: done.
    page = (await open(browser, '/account/security')).html!;
    expect(page).toContain('10 of 10 recovery codes left.');
    const stale = await post(browser, page, '/remove', { code: codes[1] });
    expect(stale.status).toBe(401);
    expect(await factorRows(DANA.email)).toEqual(['Old phone', 'Laptop']);
    const removed = await post(browser, page, '/remove', { code: newCodes[0] });
    expect(removed.status).toBe(303);
    expect(await factorRows(DANA.email)).toEqual(['Laptop']);

    // Removing the last one turns two-step sign-in off and voids the recovery codes.
    page = (await open(browser, '/account/security')).html!;
    const last = await post(browser, page, '/remove', { code: newCodes[1] });
    expect(last.status).toBe(303);
    expect(await factorRows(DANA.email)).toEqual([]);
    const { rows } = await gh.deps.db.query('SELECT 1 FROM mfa_recovery_codes c JOIN users u ON u.id = c.user_id WHERE u.email = $1', [DANA.email]);
    expect(rows).toHaveLength(0);
    expect((await open(browser, '/account/security')).html).toContain('Two-step sign-in is off');

    const removals = await auditTypes('mfa.remove');
    expect(removals.map((r) => r.outcome)).toEqual(['failure', 'success', 'success']);
    const text = JSON.stringify(await gh.deps.db.query('SELECT * FROM audit_events'));
    for (const secretValue of [secret, secret2, codes[0], newCodes[0]]) expect(text).not.toContain(secretValue);
  });

  it("keeps an admin's last authenticator, and asks for a code on every change (no stolen-session removals)", async () => {
    const browser = new Browser();
    // The admin must enrol while signing in (role policy); do it through the login's own enrolment.
    let step = await browser.follow(`${gh.url}/account/security`, gh.url);
    const login = formOf(step.html!, '/login');
    step = await browser.follow(new URL(login.action, gh.url).href, gh.url, { form: { ...login.fields, ...ADMIN } });
    const secret = secretOf(step.html!);
    const enrolForm = formOf(step.html!, '/mfa/enrol');
    step = await browser.follow(new URL(enrolForm.action, gh.url).href, gh.url, { form: { ...enrolForm.fields, name: 'Key', code: await codeAt(secret, 0) } });
    const cont = formOf(step.html!, '/mfa/continue');
    step = await browser.follow(new URL(cont.action, gh.url).href, gh.url, { form: cont.fields });
    expect(step.url).toBe(`${gh.url}/account/security`);
    expect(step.html).toContain('Your account requires two-step sign-in.');

    const res = await post(browser, step.html!, '/remove', { code: await codeAt(secret, 1) });
    expect(res.status).toBe(400);
    expect(res.html).toContain('must keep two-step sign-in');
    expect(await factorRows(ADMIN.email)).toEqual(['Key']);

    // Forms without the CSRF field are refused.
    const factorId = /\/account\/security\/totp\/([^/]+)\/remove/.exec(step.html!)![1];
    const noCsrf = await browser.request(`${gh.url}/account/security/totp/${factorId}/remove`, { form: { code: await codeAt(secret, 1) } });
    expect(noCsrf.status).toBe(403);
    // Another user's factor id is not found from this session.
    const other = await post(browser, step.html!, '/rename', { name: 'x' });
    expect(other.status).toBe(303);
    const foreign = await browser.request(`${gh.url}/account/security/totp/not-a-factor/rename`, { form: { ...formOf(step.html!, '/rename').fields, name: 'x' } });
    expect(foreign.status).toBe(404);
  });

  it('lists the voice rooms the user joined', async () => {
    const browser = new Browser();
    const empty = await open(browser, '/account/rooms');
    expect(empty.res.status).toBe(200);
    expect(empty.html).toContain('You have not joined a voice room yet.');
    const { rows } = await gh.deps.db.query<{ id: string }>('SELECT id FROM users WHERE email = $1', [DANA.email]);
    await gh.deps.db.query(
      `INSERT INTO room_sessions (participant_sid, user_id, room_name, participant_identity, joined_at)
       VALUES ('PA_1', $1, 'user_x_support', 'user_x', now())`,
      [rows[0].id],
    );
    // A session Gatehouse ended (a rejoin after revocation) says so in plain words.
    await gh.deps.db.query(
      `INSERT INTO room_sessions (participant_sid, user_id, room_name, participant_identity, joined_at, left_at, removed_at, removal_reason)
       VALUES ('PA_2', $1, 'user_x_removed', 'user_x', now(), now(), now(), 'revoked_user')`,
      [rows[0].id],
    );
    const listed = await open(browser, '/account/rooms');
    expect(listed.html).toContain('user_x_support');
    expect(listed.html).toContain('still in the room');
    expect(listed.html).toContain('removed: your sign-ins were ended');
  });
});

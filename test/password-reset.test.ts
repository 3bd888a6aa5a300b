// Self-service password reset and email verification, with the mail going through a real SMTP
// server (smtp-server, in this process) to which Gatehouse talks with nodemailer. Driven as a browser
// would (cookie jar, every hop followed): ask for a link, read it from the delivered message, use it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import { Browser, CALLBACK, codeFlow, describeEachMode, formOf, raceTally, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { createAccountTokens } from '../src/account/recovery.ts';

const GWEN = { email: 'gwen@example.com', password: 'gwen has a long password' };
const NEW_PASSWORD = 'a completely new passphrase';

interface Delivered { to: string[]; raw: string }

/** The text of a message, quoted-printable soft breaks and escapes undone. */
function textOf(raw: string) {
  return raw.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}
const linkIn = (raw: string, path: string) => new RegExp(`(https?://[^\\s]+${path.replace(/\//g, '\\/')}\\?token=[A-Za-z0-9_-]+)`).exec(textOf(raw))?.[1];

/** An SMTP server in this process that keeps every message it is given. */
async function startInbox() {
  const inbox: Delivered[] = [];
  const smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        inbox.push({ to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks).toString('utf8') });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', resolve));
  return {
    inbox,
    url: `smtp://127.0.0.1:${(smtp.server.address() as AddressInfo).port}`,
    mailsTo: (email: string) => inbox.filter((m) => m.to.includes(email)),
    close: () => new Promise<void>((resolve) => smtp.close(() => resolve())),
  };
}

describe('password reset and email verification by mail', () => {
  let mail: Awaited<ReturnType<typeof startInbox>>;
  let inbox: Delivered[] = [];
  let gh: TestGatehouse;

  beforeAll(async () => {
    mail = await startInbox();
    inbox = mail.inbox;
    gh = await startTestGatehouse({
      env: {
        SMTP_URL: mail.url, MAIL_FROM: 'Gatehouse <id@example.com>', ALLOW_REGISTRATION: 'true',
        RATE_LIMITS: 'on', LOGIN_DELAY_MS: '0', RATE_LIMIT_LOGIN_ACCOUNT: '3/15m', LOCKOUT_DURATION: '900', RATE_LIMIT_RESET_ACCOUNT: '3/1h',
      },
    });
    await gh.cli('user', 'create', '--email', GWEN.email, '--password', GWEN.password, '--name', 'Gwen');
  });
  afterAll(async () => {
    await gh?.close();
    await mail?.close();
  });

  const mailsTo = (email: string) => mail.mailsTo(email);
  async function askForLink(browser: Browser, email: string) {
    const page = await browser.follow(`${gh.url}/password/forgot`, gh.url);
    const form = formOf(page.html!, '/password/forgot');
    return browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email } });
  }
  async function setPassword(browser: Browser, link: string, next: string, confirm = next) {
    const page = await browser.follow(link, gh.url);
    if (page.res.status !== 200) return page;
    const form = formOf(page.html!, '/password/reset');
    return browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, new_password: next, confirm_password: confirm } });
  }
  const audits = async (type: string) => (await gh.deps.db.query<{ outcome: string; details: Record<string, unknown> }>(
    'SELECT outcome, details FROM audit_events WHERE type = $1 ORDER BY id', [type])).rows;

  it('offers "Forgot your password?" on the sign-in page', async () => {
    const app = await gh.cli('client', 'create', '--name', 'app', '--redirect-uri', CALLBACK, '--first-party');
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const browser = new Browser();
    const { buildAuthorizationUrl, calculatePKCECodeChallenge, randomPKCECodeVerifier, randomState } = await import('openid-client');
    const url = buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: 'openid', state: randomState(), code_challenge: await calculatePKCECodeChallenge(randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    const login = await browser.follow(url.href, gh.url);
    expect(login.html).toContain('href="/password/forgot"');
  });

  it('answers the same for an unknown address and sends it nothing', async () => {
    const before = inbox.length;
    const known = await askForLink(new Browser(), GWEN.email);
    const unknown = await askForLink(new Browser(), 'nobody@example.com');
    expect(known.res.status).toBe(200);
    expect(unknown.res.status).toBe(200);
    expect(unknown.html!.replace('nobody@example.com', GWEN.email)).toBe(known.html);
    await expect.poll(() => inbox.length).toBe(before + 1);
    expect(mailsTo('nobody@example.com')).toHaveLength(0);
    expect((await audits('account.password_reset_request')).map((r) => [r.outcome, r.details.reason ?? null])).toEqual([['success', null], ['failure', 'unknown_email']]);
  });

  it('resets the password with the link, once: old password and every token stop working, a lockout ends', async () => {
    // Lock Gwen out with wrong passwords, and hold a token from before.
    const app = await gh.cli('client', 'create', '--name', 'notes', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', 'refresh_token');
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const { tokens } = await codeFlow(gh, config, { creds: GWEN, scope: 'openid offline_access' });
    // (the flow helper posts the wrong password until it gives up: more than the 3 failures allowed)
    await expect(codeFlow(gh, config, { creds: { email: GWEN.email, password: 'not the password at all' }, scope: 'openid' })).rejects.toThrow();
    await expect(codeFlow(gh, config, { creds: GWEN, scope: 'openid' })).rejects.toThrow(/429/);

    const browser = new Browser();
    await askForLink(browser, GWEN.email);
    await expect.poll(() => mailsTo(GWEN.email).length).toBeGreaterThanOrEqual(2);
    const mail = mailsTo(GWEN.email).at(-1)!;
    expect(textOf(mail.raw)).toMatch(/Subject: Reset your password/);
    const link = linkIn(mail.raw, '/password/reset')!;
    expect(link.startsWith(`${gh.url}/password/reset?token=`)).toBe(true);
    // The first link (previous test) was replaced by this one.
    expect((await browser.follow(linkIn(mailsTo(GWEN.email)[0].raw, '/password/reset')!, gh.url)).res.status).toBe(400);

    const mismatch = await setPassword(browser, link, NEW_PASSWORD, 'something else entirely');
    expect(mismatch.res.status).toBe(400);
    expect(mismatch.html).toContain('do not match');
    const weak = await setPassword(browser, link, 'short');
    expect(weak.res.status).toBe(400);
    expect(weak.html).toMatch(/at least 12/);
    // Gwen has a passkey (issue 19): the reset keeps it, and says so (docs/passkeys.md#recovery).
    const gwen = (await gh.deps.accounts.findUserByEmail(GWEN.email))!;
    const passkey = await gh.deps.passkeys.add({
      userId: gwen.id, name: 'Phone', credentialId: 'cred-gwen', publicKey: new Uint8Array([1, 2, 3]), signCount: 0, transports: [], deviceType: 'multiDevice', backedUp: true,
    });
    const done = await setPassword(browser, link, NEW_PASSWORD);
    expect(done.res.status, done.html).toBe(200);
    expect(done.html).toContain('Password changed');
    expect(done.html).toContain('Your passkey still signs in to this account');
    expect((await gh.deps.passkeys.list(gwen.id)).map((p) => p.id)).toEqual([passkey.id]);
    expect(done.res.headers.get('referrer-policy')).toBe('no-referrer');
    // Our own strict page policy: no inline code, never framed.
    expect(done.res.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
    expect(done.res.headers.get('content-security-policy')).not.toMatch(/unsafe-inline/);

    expect(await gh.deps.accounts.authenticate(GWEN.email, GWEN.password)).toHaveProperty('error');
    expect(await gh.deps.accounts.authenticate(GWEN.email, NEW_PASSWORD)).toHaveProperty('user');
    await expect(codeFlow(gh, config, { creds: { email: GWEN.email, password: NEW_PASSWORD }, scope: 'openid' })).resolves.toBeDefined();
    const introspected = await (await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.access_token }),
    })).json();
    expect(introspected).toEqual({ active: false });
    // Used once: the same link is dead now.
    const again = await new Browser().follow(link, gh.url);
    expect(again.res.status).toBe(400);
    expect(again.html).toContain('expired or was already used');
    expect((await audits('account.password_reset')).map((r) => [r.outcome, r.details.webauthn_kept])).toEqual([['success', 1]]);
    // Neither the link's token nor the new password is in the audit log.
    const token = new URL(link).searchParams.get('token')!;
    expect(JSON.stringify((await gh.deps.db.query('SELECT * FROM audit_events')).rows)).not.toMatch(new RegExp(`${token}|${NEW_PASSWORD}`));
    expect((await gh.deps.db.query('SELECT 1 FROM account_tokens WHERE token_hash = $1', [token])).rows).toHaveLength(0);
  });

  it('sends nothing for an account without a password (single sign-on only)', async () => {
    const sso = await gh.cli('user', 'create', '--email', 'sso-only@example.com');
    await gh.deps.db.query('UPDATE users SET password_hash = NULL WHERE id = $1', [sso.id]);
    await askForLink(new Browser(), 'sso-only@example.com');
    expect(mailsTo('sso-only@example.com')).toHaveLength(0);
    expect((await audits('account.password_reset_request')).at(-1)).toMatchObject({ outcome: 'failure', details: { reason: 'no_password' } });
  });

  it('limits requests per address, known or not (429 with Retry-After)', async () => {
    const browser = new Browser();
    for (let i = 0; i < 3; i++) expect((await askForLink(browser, 'flood@example.com')).res.status).toBe(200);
    const refused = await askForLink(browser, 'flood@example.com');
    expect(refused.res.status).toBe(429);
    expect(Number(refused.res.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('a new account confirms its address with the link sent at registration', async () => {
    const app = await gh.cli('client', 'create', '--name', 'signup', '--redirect-uri', CALLBACK, '--first-party');
    const config = await rpConfig(gh, app.client_id, app.client_secret);
    const { buildAuthorizationUrl, calculatePKCECodeChallenge, randomPKCECodeVerifier, randomState } = await import('openid-client');
    const browser = new Browser();
    const url = buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: 'openid', state: randomState(), code_challenge: await calculatePKCECodeChallenge(randomPKCECodeVerifier()), code_challenge_method: 'S256' });
    const login = await browser.follow(url.href, gh.url);
    const uid = /\/interaction\/([^/"]+)\/login/.exec(login.html!)![1];
    const register = await browser.follow(`${gh.url}/interaction/${uid}/register`, gh.url);
    const form = formOf(register.html!, '/register');
    const done = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email: 'hal@example.com', password: 'hal has a long password', name: 'Hal' } });
    expect(done.html).toBeUndefined(); // reached the app
    const verified = async () => (await gh.deps.db.query<{ email_verified: boolean }>("SELECT email_verified FROM users WHERE email = 'hal@example.com'")).rows[0].email_verified;
    expect(await verified()).toBe(false);

    await expect.poll(() => mailsTo('hal@example.com').length).toBe(1);
    const link = linkIn(mailsTo('hal@example.com')[0].raw, '/account/verify-email')!;
    const confirm = await new Browser().follow(link, gh.url);
    expect(confirm.res.status).toBe(200);
    expect(confirm.html).toContain('Email address confirmed');
    expect(await verified()).toBe(true);
    expect((await new Browser().follow(link, gh.url)).res.status).toBe(400);
  });
});

// Issue 20: a link works once even when it is opened (or its form posted) many times at the same
// moment — a mail scanner racing its reader, or an attacker racing the owner.
describeEachMode('one link, 20 uses at once', (mode) => {
  const PARALLEL = 20;
  let mail: Awaited<ReturnType<typeof startInbox>>;
  let gh: TestGatehouse;
  beforeAll(async () => {
    mail = await startInbox();
    // Limits off: this suite is about single use; the limits have their own tests above.
    gh = await startTestGatehouse({ mode, env: { SMTP_URL: mail.url, MAIL_FROM: 'Gatehouse <id@example.com>', RATE_LIMITS: 'off', LOGIN_DELAY_MS: '0' } });
  }, 60_000);
  afterAll(async () => {
    await gh?.close();
    await mail?.close();
  });

  it('a password-reset link: one new password is set, every other post is refused as used', async () => {
    const tally = raceTally(`reset link (${mode})`);
    for (const email of ['reset-race-1@example.com', 'reset-race-2@example.com']) {
      await gh.cli('user', 'create', '--email', email, '--password', GWEN.password);
      const ask = new Browser();
      const page = await ask.follow(`${gh.url}/password/forgot`, gh.url);
      const form = formOf(page.html!, '/password/forgot');
      await ask.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email } });
      await expect.poll(() => mail.mailsTo(email).length).toBe(1);
      const link = linkIn(mail.mailsTo(email)[0].raw, '/password/reset')!;
      // Each racer has the form open (its own CSRF cookie) and posts its own new password at once.
      const racers = await Promise.all(Array.from({ length: PARALLEL }, async (_, i) => {
        const browser = new Browser();
        const shown = await browser.follow(link, gh.url);
        expect(shown.res.status).toBe(200);
        return { browser, password: `racer ${i} has a long password`, form: formOf(shown.html!, '/password/reset') };
      }));
      const results = await Promise.all(racers.map((r) => r.browser.follow(new URL(r.form.action, gh.url).href, gh.url, {
        form: { ...r.form.fields, new_password: r.password, confirm_password: r.password },
      })));
      const won = results.map((r, i) => ({ r, i })).filter(({ r }) => r.res.status === 200 && r.html!.includes('Password changed'));
      expect(won).toHaveLength(1);
      for (const r of results.filter((_, i) => i !== won[0].i)) {
        expect(r.res.status).toBe(400);
        expect(r.html).toContain('expired or was already used');
      }
      // Exactly the winner's password works; the old one and every loser's do not.
      for (const [i, racer] of racers.entries()) {
        expect('user' in (await gh.deps.accounts.authenticate(email, racer.password)), `racer ${i}`).toBe(i === won[0].i);
      }
      expect(await gh.deps.accounts.authenticate(email, GWEN.password)).toHaveProperty('error');
      tally.round(PARALLEL, won.length);
    }
    tally.print();
  }, 120_000);

  it('"forgot password" sent 10 times at once leaves exactly one live link', async () => {
    const email = 'forgot-race@example.com';
    const user = await gh.cli('user', 'create', '--email', email, '--password', GWEN.password);
    const askers = await Promise.all(Array.from({ length: 10 }, async () => {
      const browser = new Browser();
      const page = await browser.follow(`${gh.url}/password/forgot`, gh.url);
      return { browser, form: formOf(page.html!, '/password/forgot') };
    }));
    await Promise.all(askers.map((a) => a.browser.follow(new URL(a.form.action, gh.url).href, gh.url, { form: { ...a.form.fields, email } })));
    await expect.poll(() => mail.mailsTo(email).length).toBe(10);
    const { rows } = await gh.deps.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM account_tokens WHERE user_id = $1 AND purpose = 'password_reset' AND used_at IS NULL AND expires_at > now()", [user.id]);
    expect(rows[0].n).toBe(1);
    // Of the ten links mailed, exactly one opens the form.
    const shown = await Promise.all(mail.mailsTo(email).map((m) => new Browser().follow(linkIn(m.raw, '/password/reset')!, gh.url)));
    expect(shown.filter((r) => r.res.status === 200)).toHaveLength(1);
  });

  it('an e-mail verification link: one opening confirms the address, every other is refused', async () => {
    const tally = raceTally(`verification link (${mode})`);
    for (const email of ['verify-race-1@example.com', 'verify-race-2@example.com']) {
      const user = await gh.cli('user', 'create', '--email', email, '--password', GWEN.password);
      const verified = async () => (await gh.deps.db.query<{ email_verified: boolean }>('SELECT email_verified FROM users WHERE id = $1', [user.id])).rows[0].email_verified;
      expect(await verified()).toBe(false);
      const token = await createAccountTokens(gh.deps.db).issue(user.id, 'verify_email', email, 3600);
      const results = await Promise.all(Array.from({ length: PARALLEL }, () => new Browser().follow(`${gh.url}/account/verify-email?token=${token}`, gh.url)));
      const won = results.filter((r) => r.res.status === 200 && r.html!.includes('Email address confirmed'));
      expect(won).toHaveLength(1);
      for (const r of results.filter((x) => !won.includes(x))) {
        expect(r.res.status).toBe(400);
        expect(r.html).toContain('was already used');
      }
      expect(await verified()).toBe(true);
      const { rows } = await gh.deps.db.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events WHERE type = 'account.email_verified' AND subject = $1", [user.id]);
      expect(rows[0].n).toBe(1);
      tally.round(PARALLEL, won.length);
    }
    tally.print();
  }, 120_000);
});

describe('without SMTP_URL', () => {
  it('offers no reset: the pages are not there', async () => {
    const gh = await startTestGatehouse();
    try {
      expect((await fetch(`${gh.url}/password/forgot`)).status).toBe(404);
      expect((await fetch(`${gh.url}/password/reset?token=x`)).status).toBe(404);
    } finally {
      await gh.close();
    }
  });
});

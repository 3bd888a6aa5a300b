// Passkey sign-in over plain HTTP (issue 19), with a software authenticator: a P-256 key made here
// signs assertions exactly as WebAuthn L3 §6.3.3 lays them out. What a browser cannot show cheaply:
// bad input at the JSON endpoints answers 4xx (never 500), a challenge serves only its own sign-in,
// sign-in alone needs user verification, and the account lockout holds passkeys back too (both modes).
import crypto from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { isoCBOR } from '@simplewebauthn/server/helpers';
import { decodeJwt } from 'jose';
import { Browser, CALLBACK, codeFlow, describeEachMode, formOf, rpConfig, localhostIssuer, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const BOB = { email: 'bob@example.com', password: 'bob has a long password' };

const b64u = (b: Buffer | Uint8Array) => Buffer.from(b).toString('base64url');

/** One authenticator: a key pair and a counter; `assert` signs authenticatorData ‖ SHA-256(clientDataJSON). */
function softwareAuthenticator(rpId: string, origin: string) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  // RFC 9053 COSE_Key: kty EC2 (2), alg ES256 (-7), crv P-256 (1), x, y.
  const cose = isoCBOR.encode(new Map<number, number | Uint8Array>([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x!, 'base64url')], [-3, Buffer.from(jwk.y!, 'base64url')]]));
  const credentialId = b64u(crypto.randomBytes(16));
  let counter = 0;
  return {
    credentialId,
    publicKey: new Uint8Array(cose),
    assert(challenge: string, userHandle: string, opts: { userVerified?: boolean } = {}) {
      const clientDataJSON = Buffer.from(JSON.stringify({ type: 'webauthn.get', challenge, origin, crossOrigin: false }));
      const flags = 0x01 | (opts.userVerified === false ? 0 : 0x04); // UP, UV
      const count = Buffer.alloc(4);
      count.writeUInt32BE(++counter);
      const authenticatorData = Buffer.concat([crypto.createHash('sha256').update(rpId).digest(), Buffer.from([flags]), count]);
      const signature = crypto.sign('sha256', Buffer.concat([authenticatorData, crypto.createHash('sha256').update(clientDataJSON).digest()]), privateKey);
      return {
        id: credentialId, rawId: credentialId, type: 'public-key', clientExtensionResults: {},
        response: { clientDataJSON: b64u(clientDataJSON), authenticatorData: b64u(authenticatorData), signature: b64u(signature), userHandle: b64u(Buffer.from(userHandle)) },
      };
    },
  };
}

describeEachMode('passkey sign-in over HTTP', (mode) => {
  let gh: TestGatehouse;
  let config: oidc.Configuration;
  let bob: { id: string };
  let key: ReturnType<typeof softwareAuthenticator>;

  beforeAll(async () => {
    gh = await startTestGatehouse({ mode, env: { ...(await localhostIssuer()), LOGIN_DELAY_MS: '0' } });
    const client = await gh.cli('client', 'create', '--name', 'Notes', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
    bob = await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password);
    key = softwareAuthenticator('localhost', gh.url);
    await gh.deps.passkeys.add({ userId: bob.id, name: 'Soft key', credentialId: key.credentialId, publicKey: key.publicKey, signCount: 0, transports: ['internal'], deviceType: 'singleDevice', backedUp: false });
  }, 60_000);
  afterAll(async () => gh?.close());

  /** A browser at the login page of a fresh authorization request: its uid and CSRF token. */
  async function loginPage(browser = new Browser(), rp = config, params: Record<string, string> = {}) {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(rp, {
      redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state: 'passkey', ...params,
    });
    const step = await browser.follow(url.href, gh.url);
    const form = formOf(step.html!, '/login');
    return { browser, verifier, html: step.html!, uid: /\/interaction\/([^/]+)\/login/.exec(form.action)![1], csrf: form.fields._csrf };
  }

  /** fetch with the browser's cookies; the Browser helper only sends forms. */
  async function send(browser: Browser, path: string, body: string, contentType = 'application/json') {
    const cookie = await browser.jar.getCookieString(`${gh.url}${path}`);
    const res = await fetch(`${gh.url}${path}`, { method: 'POST', headers: { cookie, 'content-type': contentType, accept: 'application/json' }, body, redirect: 'manual' });
    return { status: res.status, headers: res.headers, body: await res.json().catch(() => undefined) };
  }
  async function options(page: Awaited<ReturnType<typeof loginPage>>) {
    const res = await send(page.browser, `/interaction/${page.uid}/passkey/options`, JSON.stringify({ _csrf: page.csrf }));
    expect(res.status).toBe(200);
    return res.body as { challenge: string; rpId: string; userVerification: string; allowCredentials: unknown[] };
  }
  const verify = (page: Awaited<ReturnType<typeof loginPage>>, response: unknown) =>
    send(page.browser, `/interaction/${page.uid}/passkey`, JSON.stringify({ _csrf: page.csrf, response }));

  it('signs in with a valid assertion; options ask for user verification and name no credential', async () => {
    const page = await loginPage();
    expect(page.html).toContain('autocomplete="username webauthn"');
    const opts = await options(page);
    expect(opts).toMatchObject({ rpId: 'localhost', userVerification: 'required', allowCredentials: [] });
    const res = await verify(page, key.assert(opts.challenge, bob.id));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.location).toMatch(/\/auth\//);
    expect(res.headers.get('cache-control')).toBe('no-store');
  });

  it('account page: registering asks for the current password first; the owner removes a passkey (audited)', async () => {
    const dave = await gh.cli('user', 'create', '--email', 'dave@example.com', '--password', 'dave has a long password');
    const daveKey = softwareAuthenticator('localhost', gh.url);
    const added = await gh.deps.passkeys.add({ userId: dave.id, name: 'Dave key', credentialId: daveKey.credentialId, publicKey: daveKey.publicKey, signCount: 0, transports: ['usb'], deviceType: 'singleDevice', backedUp: false });
    const browser = new Browser();
    let step = await browser.follow(`${gh.url}/account/security`, gh.url);
    const form = formOf(step.html!, '/login');
    step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email: 'dave@example.com', password: 'dave has a long password' } });
    expect(step.url).toBe(`${gh.url}/account/security`);
    expect(step.html).toContain('Dave key');
    const csrf = /data-csrf="([^"]+)"/.exec(step.html!)![1];
    const ask = (body: Record<string, unknown>) => send(browser, '/account/security/passkeys/options', JSON.stringify({ _csrf: csrf, ...body }));
    expect(await ask({})).toMatchObject({ status: 401, body: { error: 'access_denied' } });
    expect(await ask({ password: 'not dave' })).toMatchObject({ status: 401, body: { error: 'access_denied' } });
    const ok = await ask({ password: 'dave has a long password' });
    expect(ok.status).toBe(200);
    // A discoverable credential, not one of the account's again, for this RP.
    expect(ok.body).toMatchObject({ rp: { id: 'localhost' }, excludeCredentials: [{ id: daveKey.credentialId }], authenticatorSelection: { residentKey: 'required' }, attestation: 'none' });
    // Another browser (no CSRF cookie, no session): refused before anything else.
    expect((await send(new Browser(), '/account/security/passkeys/options', '{}')).status).toBe(403);
    const removed = await browser.follow(new URL(formOf(step.html!, `/passkeys/${added.id}/remove`).action, gh.url).href, gh.url, { form: formOf(step.html!, `/passkeys/${added.id}/remove`).fields });
    expect(removed.url).toBe(`${gh.url}/account/security`);
    expect(removed.html).toContain('No passkeys yet.');
    expect(await gh.deps.passkeys.list(dave.id)).toEqual([]);
    const { rows } = await gh.deps.db.query<{ actor: string; details: Record<string, unknown> }>("SELECT actor, details FROM audit_events WHERE type = 'passkey.remove'");
    expect(rows).toEqual([{ actor: dave.id, details: { via: 'account', factor: added.id, name: 'Dave key' } }]);
    expect(JSON.stringify(rows)).not.toContain(daveKey.credentialId);
  });

  it('answers bad input with 4xx and a clear error, never 500', async () => {
    const page = await loginPage();
    const path = `/interaction/${page.uid}/passkey`;
    expect((await send(page.browser, path, JSON.stringify({ response: {} }))).status).toBe(403); // no CSRF token
    expect((await send(page.browser, path, `_csrf=${page.csrf}`, 'application/x-www-form-urlencoded')).status).toBe(415);
    expect((await send(page.browser, path, '{"_csrf":')).status).toBe(400);
    expect((await send(page.browser, path, '[]')).status).toBe(400);
    for (const response of [undefined, 'x', {}, { id: 'a', rawId: 'a', type: 'public-key', response: { clientDataJSON: '!!' } },
      { id: 'a', rawId: 'a', type: 'public-key', response: { clientDataJSON: b64u(Buffer.from('not json')), authenticatorData: 'AA', signature: 'AA' } }]) {
      const res = await send(page.browser, path, JSON.stringify({ _csrf: page.csrf, response }));
      expect(res.status, JSON.stringify(response)).toBe(400);
      expect(res.body).toMatchObject({ error: 'invalid_request', error_description: expect.any(String) });
    }
    // A well-formed answer to a challenge nobody issued.
    const res = await verify(page, key.assert(b64u(crypto.randomBytes(32)), bob.id));
    expect(res).toMatchObject({ status: 400, body: { error: 'invalid_request', error_description: expect.stringMatching(/expired or was already used/) } });
  });

  it("refuses a challenge issued to another sign-in, and an assertion without user verification", async () => {
    const mine = await loginPage();
    const theirs = await loginPage();
    // Their challenge, presented in my sign-in: spent, and refused.
    const stolen = await options(theirs);
    expect((await verify(mine, key.assert(stolen.challenge, bob.id))).status).toBe(400);
    expect((await verify(theirs, key.assert(stolen.challenge, bob.id))).status).toBe(400);
    // Presence only (no PIN or biometric): not enough to sign in with a passkey alone.
    const opts = await options(mine);
    const res = await verify(mine, key.assert(opts.challenge, bob.id, { userVerified: false }));
    expect(res).toMatchObject({ status: 401, body: { error: 'access_denied' } });
    const { rows } = await gh.deps.db.query<{ details: Record<string, unknown> }>("SELECT details FROM audit_events WHERE type = 'login' AND outcome = 'failure' ORDER BY id DESC LIMIT 1");
    expect(rows[0].details).toMatchObject({ method: 'passkey', reason: 'invalid' });
  });

  it('steps a password session up with the passkey as second factor (acr_values): amr pwd hwk user mfa', async () => {
    const browser = new Browser();
    const first = await codeFlow(gh, config, { creds: BOB, scope: 'openid', browser });
    expect(first.tokens.claims()).toMatchObject({ amr: ['pwd'], acr: 'urn:gatehouse:acr:pwd' });
    // The client asks for MFA: only the missing factor is asked for, and a passkey answers it.
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', acr_values: 'urn:gatehouse:acr:mfa', state: 'step-up',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const step = await browser.follow(url.href, gh.url);
    expect(step.html).toContain('Use a passkey');
    const uid = /\/interaction\/([^/]+)\/mfa\/passkey\/options/.exec(step.html!)![1];
    const csrf = /data-csrf="([^"]+)"/.exec(step.html!)![1];
    const opts = (await send(browser, `/interaction/${uid}/mfa/passkey/options`, JSON.stringify({ _csrf: csrf }))).body;
    expect(opts).toMatchObject({ userVerification: 'preferred', allowCredentials: [{ id: key.credentialId, transports: ['internal'] }] });
    const done = await send(browser, `/interaction/${uid}/mfa/passkey`, JSON.stringify({ _csrf: csrf, response: key.assert(opts.challenge, bob.id) }));
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    const back = await browser.follow(new URL(done.body.location, gh.url).href, gh.url);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(back.url), { pkceCodeVerifier: verifier, expectedState: 'step-up' });
    expect(tokens.claims()).toMatchObject({ sub: bob.id, amr: ['pwd', 'hwk', 'user', 'mfa'], acr: 'urn:gatehouse:acr:mfa' });
  });

  it('a passkey sign-in is MFA for token exchange: a resource registered with --require-mfa accepts its token', async () => {
    const BANK = 'https://bank.example.com/mcp';
    await gh.cli('resource', 'create', '--uri', BANK, '--scope', 'tools:read', '--require-mfa');
    await gh.cli('role', 'update', 'user', '--add', 'tools:read');
    const web = await gh.cli('client', 'create', '--name', 'Bank web', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', TX);
    await gh.cli('policy', 'client', 'set', web.client_id, '--resource', BANK);
    const bank = await rpConfig(gh, web.client_id, web.client_secret);
    // Signing in for BANK needs MFA: the passkey alone is enough, no second step follows.
    const page = await loginPage(new Browser(), bank, { scope: 'openid tools:read', resource: BANK });
    const done = await verify(page, key.assert((await options(page)).challenge, bob.id));
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    const back = await page.browser.follow(new URL(done.body.location, gh.url).href, gh.url);
    expect(back.url.startsWith(CALLBACK), back.html?.slice(0, 500)).toBe(true);
    // The access token is Gatehouse's own (no resource at the token endpoint); the grant holds BANK.
    const tokens = await oidc.authorizationCodeGrant(bank, new URL(back.url), { pkceCodeVerifier: page.verifier, expectedState: 'passkey' });
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TX, subject_token_type: AT, subject_token: tokens.access_token, resource: BANK }),
    });
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(decodeJwt(body.access_token)).toMatchObject({ aud: BANK, sub: bob.id, acr: 'urn:gatehouse:acr:mfa', amr: ['hwk', 'user', 'mfa'] });
  });

  it("does not sign in alone where the domain's SSO connection has password sign-in off (403, audited)", async () => {
    const carol = await gh.cli('user', 'create', '--email', 'carol@acme.test', '--password', 'carol has a long password');
    const carolKey = softwareAuthenticator('localhost', gh.url);
    await gh.deps.passkeys.add({ userId: carol.id, name: 'Work key', credentialId: carolKey.credentialId, publicKey: carolKey.publicKey, signCount: 0, transports: [], deviceType: 'singleDevice', backedUp: false });
    const page = await loginPage();
    // Before the organisation turns password sign-in off, the passkey signs in.
    expect((await verify(page, carolKey.assert((await options(page)).challenge, carol.id))).status).toBe(200);
    await gh.deps.connections.create({ name: 'acme', issuer: 'https://idp.acme.test', clientId: 'gatehouse', domains: ['acme.test'], passwordLogin: false });
    const after = await loginPage();
    const res = await verify(after, carolKey.assert((await options(after)).challenge, carol.id));
    expect(res).toMatchObject({ status: 403, body: { error: 'access_denied', error_description: expect.stringMatching(/single sign-on/) } });
    const { rows } = await gh.deps.db.query<{ subject: string; details: Record<string, unknown> }>("SELECT subject, details FROM audit_events WHERE type = 'login' ORDER BY id DESC LIMIT 1");
    expect(rows[0]).toMatchObject({ subject: carol.id, details: { method: 'passkey', reason: 'sso_only' } });
  });

  it("is held back by the account's lockout like a password (429 with Retry-After), from a device new to the account", async () => {
    // Five wrong passwords (RATE_LIMIT_LOGIN_ACCOUNT's production default, 5/15m) lock bob.
    for (let i = 0; i < 6; i++) {
      const page = await loginPage();
      const form = formOf(page.html, '/login');
      await page.browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email: BOB.email, password: `wrong ${i}` } });
    }
    const page = await loginPage();
    const opts = await options(page);
    const res = await verify(page, key.assert(opts.challenge, bob.id));
    expect(res.status, JSON.stringify(res.body)).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    const { rows } = await gh.deps.db.query<{ subject: string; details: Record<string, unknown> }>("SELECT subject, details FROM audit_events WHERE type = 'login' ORDER BY id DESC LIMIT 1");
    expect(rows[0]).toMatchObject({ subject: bob.id, details: { method: 'passkey', reason: 'locked' } });
  });
});

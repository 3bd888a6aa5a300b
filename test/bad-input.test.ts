// Bad input gets a clear 4xx with the right OAuth error, never a 500, and nothing is written.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { ADMIN, Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

let gh: TestGatehouse;
let web: { client_id: string; client_secret: string };
const count = async (table: string) => Number((await gh.deps.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n);

beforeAll(async () => {
  gh = await startTestGatehouse();
  web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
});
afterAll(async () => gh?.close());

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

async function token(form: Record<string, string>, auth?: string, contentType = 'application/x-www-form-urlencoded', raw?: string) {
  const res = await fetch(`${gh.url}/token`, {
    method: 'POST',
    headers: { 'content-type': contentType, ...(auth ? { authorization: auth } : {}) },
    body: raw ?? new URLSearchParams(form).toString(),
  });
  return { status: res.status, connection: res.headers.get('connection'), body: await res.json().catch(() => ({})) as Record<string, string> };
}

/** Rows that a refused request must not create: tokens and grants, clients, users. */
const written = async () => ({ payloads: await count('oidc_payloads'), clients: await count('clients'), users: await count('users') });

describe('bad input at the token endpoint', () => {
  it('unknown client → 401 invalid_client, SQL metacharacters in the id included', async () => {
    const before = await written();
    for (const id of ['nope', "' OR 1=1 --", "x'); DELETE FROM clients; --"]) {
      const r = await token({ grant_type: 'client_credentials' }, basic(id, 'nope'));
      expect(r.status, id).toBe(401);
      expect(r.body.error, id).toBe('invalid_client');
      const posted = await token({ grant_type: 'client_credentials', client_id: id, client_secret: 'nope' });
      expect(posted.status, id).toBe(401);
      expect(posted.body.error, id).toBe('invalid_client');
    }
    expect(await written()).toEqual(before);
  });

  it('wrong secret → 401 invalid_client, and the secret is not echoed', async () => {
    const before = await written();
    const r = await token({ grant_type: 'authorization_code', code: 'x', redirect_uri: CALLBACK }, basic(web.client_id, 'wrong-secret-value'));
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('invalid_client');
    expect(JSON.stringify(r.body)).not.toContain('wrong-secret-value');
    expect(await written()).toEqual(before);
  });

  it('a reused authorization code → 400 invalid_grant', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const { callbackUrl } = await (async () => {
      const { authorize } = await import('./helpers/gatehouse.ts');
      return authorize(gh, oidc.buildAuthorizationUrl(config, {
        redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      }), ADMIN);
    })();
    const code = callbackUrl.searchParams.get('code')!;
    const form = { grant_type: 'authorization_code', code, redirect_uri: CALLBACK, code_verifier: verifier };
    const first = await token(form, basic(web.client_id, web.client_secret));
    expect(first.status).toBe(200);
    const again = await token(form, basic(web.client_id, web.client_secret));
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
    // RFC 6749 §4.1.2: a code used twice revokes what was issued for it (the code may have leaked).
    const intro = await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(web.client_id, web.client_secret) },
      body: new URLSearchParams({ token: first.body.access_token }),
    });
    expect(await intro.json()).toEqual({ active: false });
  });

  it('malformed body → 400 invalid_request, never 500, nothing written', async () => {
    const before = await written();
    const r = await token({}, basic(web.client_id, web.client_secret), 'application/json', '{"grant_type": ');
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('invalid_request');
    const r2 = await token({}, basic(web.client_id, web.client_secret), 'application/x-www-form-urlencoded', '%%%grant_type=%zz');
    expect(r2.status).toBe(400);
    expect(r2.body.error).toBe('invalid_request');
    const r3 = await token({}, basic(web.client_id, web.client_secret), 'text/plain', 'grant_type=client_credentials');
    expect(r3.status).toBe(400);
    expect(r3.body.error).toBe('invalid_request');
    expect(await written()).toEqual(before);
  });

  it('a 1 MB body → 413 without reading it into a token request', async () => {
    const before = await count('audit_events');
    const r = await token({}, basic(web.client_id, web.client_secret), 'application/x-www-form-urlencoded', `grant_type=client_credentials&x=${'a'.repeat(1024 * 1024)}`);
    expect(r.status).toBe(413);
    expect(r.body.error).toBe('invalid_request');
    // Sent chunked, with no Content-Length to refuse it by: the reader stops at the limit.
    const big = `grant_type=client_credentials&x=${'a'.repeat(1024 * 1024)}`;
    const chunked = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(web.client_id, web.client_secret) },
      body: new ReadableStream({ start(c) { for (let i = 0; i < big.length; i += 64 * 1024) c.enqueue(new TextEncoder().encode(big.slice(i, i + 64 * 1024))); c.close(); } }),
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
    expect((await chunked.json()).error).toBe('invalid_request');
    // The unread rest of a refused body must not meet the next request on the same connection.
    expect(r.connection).toBe('close');
    expect(chunked.headers.get('connection')).toBe('close');
    expect((await fetch(`${gh.url}/health`)).status).toBe(200);
    expect(await count('audit_events')).toBe(before);
  });
});

describe('bad input at the authorization endpoint', () => {
  it('a redirect URI that is not registered exactly → error page, no redirect', async () => {
    for (const uri of [`${CALLBACK}/extra`, 'http://127.0.0.1:8976/callback?x=1', 'https://evil.example.com/callback']) {
      const res = await fetch(`${gh.url}/auth?${new URLSearchParams({
        client_id: web.client_id, response_type: 'code', scope: 'openid', redirect_uri: uri, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256',
      })}`, { redirect: 'manual' });
      expect(res.status).toBe(400);
      expect(res.headers.get('location')).toBeNull();
      expect(await res.text()).toContain('redirect_uri');
    }
  });

  it('an unknown client → 400 page, no redirect', async () => {
    const res = await fetch(`${gh.url}/auth?client_id=nope&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(CALLBACK)}`, { redirect: 'manual' });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('invalid_client');
  });
});

describe('bad input at the login page', () => {
  it('SQL metacharacters in the email are just a failed login; nothing is written but the audit event', async () => {
    const users = await count('users');
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const browser = new Browser();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    });
    const page = await browser.follow(url.href, gh.url);
    const { action, fields } = formOf(page.html!, '/login');
    for (const email of ["' OR 1=1 --", "admin@example.com'; DROP TABLE users; --", 'x\u0000y']) {
      const res = await browser.request(new URL(action, gh.url).href, { form: { ...fields, email, password: 'whatever-password' } });
      expect(res.status).toBe(401);
      expect(await res.text()).toContain('Invalid email or password');
    }
    expect(await count('users')).toBe(users);
  });

  it('a login POST without the CSRF token is refused with 403', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const browser = new Browser();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    });
    const page = await browser.follow(url.href, gh.url);
    const { action } = formOf(page.html!, '/login');
    const res = await browser.request(new URL(action, gh.url).href, { form: { email: ADMIN.email, password: ADMIN.password } });
    expect(res.status).toBe(403);
  });

  it('the same message for an unknown email and a wrong password', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const texts: string[] = [];
    for (const email of [ADMIN.email, 'nobody@example.com']) {
      const browser = new Browser();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
      });
      const page = await browser.follow(url.href, gh.url);
      const { action, fields } = formOf(page.html!, '/login');
      const res = await browser.request(new URL(action, gh.url).href, { form: { ...fields, email, password: 'not-the-password' } });
      expect(res.status).toBe(401);
      texts.push(/Invalid email or password\.?/.exec(await res.text())?.[0] ?? '');
    }
    expect(texts[0]).toBe(texts[1]);
    expect(texts[0]).not.toBe('');
    const fails = await gh.deps.db.query<{ details: unknown }>("SELECT details FROM audit_events WHERE type = 'login' AND outcome = 'failure'");
    expect(fails.rowCount).toBeGreaterThan(0);
    expect(JSON.stringify(fails.rows)).not.toContain('not-the-password');
  });
});

describe('the code flow still works after all that', () => {
  it('logs in', async () => {
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { scope: 'openid email' });
    expect(tokens.claims()!.email).toBe(ADMIN.email);
  });
});

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
  return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, string> };
}

describe('bad input at the token endpoint', () => {
  it('unknown client → 401 invalid_client', async () => {
    const r = await token({ grant_type: 'client_credentials' }, basic('nope', 'nope'));
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('invalid_client');
  });

  it('wrong secret → 401 invalid_client, and the secret is not echoed', async () => {
    const r = await token({ grant_type: 'authorization_code', code: 'x', redirect_uri: CALLBACK }, basic(web.client_id, 'wrong-secret-value'));
    expect(r.status).toBe(401);
    expect(r.body.error).toBe('invalid_client');
    expect(JSON.stringify(r.body)).not.toContain('wrong-secret-value');
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
    expect((await token(form, basic(web.client_id, web.client_secret))).status).toBe(200);
    const again = await token(form, basic(web.client_id, web.client_secret));
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
  });

  it('malformed body → 400 invalid_request, never 500', async () => {
    const r = await token({}, basic(web.client_id, web.client_secret), 'application/json', '{"grant_type": ');
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('invalid_request');
    const r2 = await token({}, basic(web.client_id, web.client_secret), 'application/x-www-form-urlencoded', '%%%grant_type=%zz');
    expect(r2.status).toBeLessThan(500);
    expect(r2.status).toBeGreaterThanOrEqual(400);
  });

  it('a 1 MB body → 413 without reading it into a token request', async () => {
    const before = await count('audit_events');
    const r = await token({}, basic(web.client_id, web.client_secret), 'application/x-www-form-urlencoded', `grant_type=client_credentials&x=${'a'.repeat(1024 * 1024)}`);
    expect(r.status).toBe(413);
    expect(r.body.error).toBe('invalid_request');
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

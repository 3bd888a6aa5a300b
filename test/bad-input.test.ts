// Bad input gets a clear 4xx with the right OAuth error, never a 500, and nothing is written.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { ADMIN, Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

let gh: TestGatehouse;
let web: { client_id: string; client_secret: string };
const count = async (table: string) => Number((await gh.deps.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n);

beforeAll(async () => {
  // Signs in as ADMIN and sends floods of malformed requests from one IP: the MFA policy and the
  // limits would answer before the input checks this suite is about (their own suites test them).
  gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none', RATE_LIMITS: 'off' } });
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

const lastAuditId = async () => Number((await gh.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0)::int AS id FROM audit_events')).rows[0].id);
/** The request.refused rows after `after` (the refusal is written before the answer). */
async function refusals(after: number, atLeast = 1) {
  const rows = (await gh.deps.db.query<{ ip: string; request_id: string; details: Record<string, string> }>(
    "SELECT ip, request_id, details FROM audit_events WHERE type = 'request.refused' AND id > $1 ORDER BY id", [after])).rows;
  expect(rows.length).toBeGreaterThanOrEqual(atLeast);
  return rows;
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

/** A fresh browser on the sign-in page of a code flow. */
async function loginPage() {
  const config = await rpConfig(gh, web.client_id, web.client_secret);
  const browser = new Browser();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
  });
  return { browser, page: await browser.follow(url.href, gh.url) };
}

describe('bad input at the login page', () => {
  it('SQL metacharacters in the email are just a failed login; nothing is written but the audit event', async () => {
    const users = await count('users');
    const { browser, page } = await loginPage();
    const { action, fields } = formOf(page.html!, '/login');
    for (const email of ["' OR 1=1 --", "admin@example.com'; DROP TABLE users; --"]) {
      const res = await browser.request(new URL(action, gh.url).href, { form: { ...fields, email, password: 'whatever-password' } });
      expect(res.status).toBe(401);
      expect(await res.text()).toContain('Invalid email or password');
    }
    expect(await count('users')).toBe(users);
  });

  it('a NUL or control character in a field is refused with a page (400), and the refusal is audited without the password', async () => {
    const { browser, page } = await loginPage();
    const { action, fields } = formOf(page.html!, '/login');
    const before = await lastAuditId();
    const nul = await browser.request(new URL(action, gh.url).href, { form: { ...fields, email: 'x\u0000y@example.com', password: 'whatever-password' } });
    expect(nul.status).toBe(400);
    expect(nul.headers.get('content-type')).toContain('text/html');
    expect(await nul.text()).toContain('body parameter &quot;email&quot; contains a NUL character');
    const secret = await browser.request(new URL(action, gh.url).href, { form: { ...fields, email: ADMIN.email, password: 'sekrit\u0001password' } });
    expect(secret.status).toBe(400);
    const rows = await refusals(before, 2);
    expect(rows.map((r) => [r.details.parameter, r.details.reason, r.details.value])).toEqual([
      ['email', 'contains a NUL character', 'x\\u0000y@example.com'],
      ['password', 'contains a control character', undefined],
    ]);
    expect(JSON.stringify(rows)).not.toContain('sekrit');
  });

  it('a login POST without the CSRF token is refused with 403', async () => {
    const { browser, page } = await loginPage();
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

describe('hostile values at the edge (issue 15)', () => {
  it('/auth?state=%00 → 400 page, audited with the value made safe (no 500, no lost row)', async () => {
    const before = await lastAuditId();
    const res = await fetch(`${gh.url}/auth?client_id=${web.client_id}&response_type=code&scope=openid&state=%00`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
    expect(await res.text()).toContain('query parameter &quot;state&quot; contains a NUL character');
    const [row] = await refusals(before);
    expect(row.details).toMatchObject({ method: 'GET', path: '/auth', where: 'query', parameter: 'state', value: '\\u0000', reason: 'contains a NUL character' });
    expect(row.request_id).toBe(res.headers.get('x-request-id'));
  });

  it('invalid UTF-8, over-long and repeated parameters → 400 invalid_request (JSON for APIs)', async () => {
    const cases: [string, string][] = [
      ['grant_type=client_credentials&scope=%C3%28', 'body parameter "scope" is not valid percent-encoded UTF-8'],
      ['grant_type=client_credentials&scope=a&scope=b', 'body parameter "scope" is given more than once'],
      ['grant_type=client_credentials&sc%01ope=a', 'has a name that contains a control character'],
    ];
    for (const [body, message] of cases) {
      const r = await token({}, basic(web.client_id, web.client_secret), 'application/x-www-form-urlencoded', body);
      expect(r.status, body).toBe(400);
      expect(r.body.error, body).toBe('invalid_request');
      expect(r.body.error_description, body).toContain(message);
    }
    const long = await fetch(`${gh.url}/.well-known/openid-configuration?x=${'a'.repeat(10_000)}`);
    expect(long.status).toBe(400);
    expect((await long.json()).error_description).toMatch(/query parameter "x" is longer than 8192 characters/);
    // RFC 8707: resource may repeat.
    const twoResources = await fetch(`${gh.url}/auth?client_id=${web.client_id}&response_type=code&scope=openid&resource=https://a.example&resource=https://b.example`, { redirect: 'manual' });
    expect(twoResources.status).not.toBe(500);
    expect((await twoResources.text())).not.toContain('given more than once');
  });

  it('NUL and unpaired surrogates in JSON, and bodies that are not UTF-8 → 400', async () => {
    for (const raw of ['{"redirect_uris":["http://127.0.0.1/cb"],"client_name":"a\\u0000b"}', '{"redirect_uris":["http://127.0.0.1/cb"],"client_name":"\\ud800"}']) {
      const res = await fetch(`${gh.url}/reg`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });
      expect(res.status, raw).toBe(400);
      expect((await res.json()).error).toBe('invalid_request');
    }
    const bytes = await fetch(`${gh.url}/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: Buffer.from([0x61, 0x3d, 0xff]) });
    expect(bytes.status).toBe(400);
    expect((await bytes.json()).error_description).toBe('body parameter "body" is not valid UTF-8');
  });

  it('POST /device without the session GET /device started → 400 page, not 500', async () => {
    const res = await fetch(`${gh.url}/device`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'text/html' }, body: 'user_code=BCDF-GHJK' });
    expect(res.status).toBe(400);
    expect(await res.text()).toContain('Open the device sign-in page again');
  });

  it('the audit writer stores any text: NUL and unpaired surrogates in fields and details do not lose the row', async () => {
    const before = await lastAuditId();
    await gh.deps.audit.record({ type: 'test.hostile', subject: 'a\u0000b', ip: '\ud800', details: { 'k\u0000': 'v\u0000', nested: ['\udc00x'] } });
    const rows = (await gh.deps.db.query<{ subject: string; ip: string; details: unknown }>("SELECT subject, ip, details FROM audit_events WHERE type = 'test.hostile' AND id > $1", [before])).rows;
    expect(rows).toEqual([{ subject: 'a\\u0000b', ip: '\ufffd', details: { 'k\\u0000': 'v\\u0000', nested: ['\ufffdx'] } }]);
  });
});

describe('the code flow still works after all that', () => {
  it('logs in', async () => {
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { scope: 'openid email' });
    expect(tokens.claims()!.email).toBe(ADMIN.email);
  });
});

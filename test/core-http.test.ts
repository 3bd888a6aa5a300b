// Issue 2's HTTP surface against a running Gatehouse: health and readiness, security headers,
// CORS from CORS_ORIGINS, request ids (header, audit row), the audit trail of a sign-in with its
// tokens, logs free of secrets, secrets sealed at rest, the default lifetimes and the absolute
// refresh-token cap, self-registration off by default, and the client/resource delete commands.
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { decodeJwt } from 'jose';
import { createLogger } from '../src/http/log.ts';
import { createPgDb } from '../src/store/db.ts';
import { PG_ADMIN_URL, servicesFor } from './helpers/databases.ts';
import { ADMIN, Browser, CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const APP_ORIGIN = 'https://app.example.com';
const RESOURCE = 'https://mcp.example.com/mcp';
const BYE = 'http://127.0.0.1:8976/bye';

const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`;

interface AuditRow {
  id: number;
  at: Date;
  type: string;
  outcome: string;
  actor: string | null;
  subject: string | null;
  client_id: string | null;
  ip: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
}

let gh: TestGatehouse;
const logged: string[] = [];
let web: { client_id: string; client_secret: string };
let agent: { client_id: string; client_secret: string };

beforeAll(async () => {
  const log = createLogger('trace', new Writable({ write(chunk, _enc, done) { logged.push(String(chunk)); done(); } }));
  // Signs in as ADMIN to test the HTTP core, not the admin role's MFA requirement (mfa.test.ts has that).
  gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none', CORS_ORIGINS: APP_ORIGIN }, log });
  web = await gh.cli('client', 'create', '--name', 'Web App', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', BYE);
  agent = await gh.cli('client', 'create', '--name', 'Agent', '--grant', 'client_credentials');
  await gh.cli('resource', 'create', '--uri', RESOURCE, '--scope', 'tools:read');
  // The admin signs in below for resource tokens: its role holds tools:read (the one scope rule, issue 14).
  await gh.cli('role', 'update', 'admin', '--add', 'tools:read');
});
afterAll(async () => gh?.close());

/** Audit writes are not awaited by the request; read until the expected rows are there. */
async function auditRows(where: string, params: unknown[], atLeast = 1): Promise<AuditRow[]> {
  let rows: AuditRow[] = [];
  for (let i = 0; i < 40 && rows.length < atLeast; i++) {
    if (i) await new Promise((r) => setTimeout(r, 25));
    rows = (await gh.deps.db.query<AuditRow>(`SELECT * FROM audit_events WHERE ${where} ORDER BY id`, params)).rows;
  }
  return rows;
}
const lastAuditId = async () => Number((await gh.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0)::int AS id FROM audit_events')).rows[0].id);

async function postForm(path: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  const res = await fetch(`${gh.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
  });
  return { res, body: await res.json().catch(() => ({})) as Record<string, any> };
}

describe('health and readiness', () => {
  it('/health is liveness; /ready checks the database and the store, never cached', async () => {
    const health = await fetch(`${gh.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${gh.url}/ready`);
    expect(ready.status).toBe(200);
    expect(ready.headers.get('cache-control')).toBe('no-store');
    expect(await ready.json()).toMatchObject({ status: 'ready', checks: { database: 'ok', store: 'ok' } });
  });
});

describe('security headers', () => {
  it('the login page: a CSP without inline code that forbids framing, no caching', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    });
    const page = await new Browser().follow(url.href, gh.url);
    expect(page.res.status).toBe(200);
    expect(page.html).toMatch(/name="password"/);
    const csp = page.res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("default-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(page.res.headers.get('x-frame-options')).toBe('DENY');
    expect(page.res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.res.headers.get('cache-control')).toContain('no-store');
    // The page's stylesheet is served from this origin, which the CSP allows.
    const css = /<link[^>]+href="([^"]+\.css)"/.exec(page.html!)![1];
    const sheet = await fetch(new URL(css, gh.url));
    expect(sheet.status).toBe(200);
    expect(sheet.headers.get('content-type')).toMatch(/text\/css/);
  });

  it('an http issuer sends no Strict-Transport-Security', async () => {
    expect((await fetch(`${gh.url}/.well-known/openid-configuration`)).headers.get('strict-transport-security')).toBeNull();
  });

  it("oidc-provider's error page forbids framing too", async () => {
    const res = await fetch(`${gh.url}/auth?client_id=nope&response_type=code&scope=openid&redirect_uri=${encodeURIComponent(CALLBACK)}`, { redirect: 'manual' });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(res.headers.get('x-frame-options')).toBe('DENY');
  });
});

describe('an https issuer (issue 15)', () => {
  const ISSUER = 'https://id.example.test';
  const local = (g: TestGatehouse) => `http://127.0.0.1:${(g.server.address() as AddressInfo).port}`;
  const authPath = (clientId: string) => `/auth?${new URLSearchParams({ client_id: clientId, response_type: 'code', scope: 'openid', redirect_uri: CALLBACK, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })}`;

  it('served over plain HTTP without TRUST_PROXY: a warning with the fix at start, a clear 400 page at sign-in (not 500), HSTS', async () => {
    const plain = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none', ISSUER } });
    try {
      expect(plain.warnings.join('\n')).toMatch(/ISSUER is https:\/\/ but .*set TRUST_PROXY=true/);
      const c = await plain.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
      const res = await fetch(`${local(plain)}${authPath(c.client_id)}`, { headers: { accept: 'text/html' }, redirect: 'manual' });
      expect(res.status).toBe(400);
      expect(res.headers.get('content-type')).toContain('text/html');
      expect(await res.text()).toContain('TRUST_PROXY=true');
      expect(res.headers.get('strict-transport-security')).toBe('max-age=31536000');
    } finally {
      await plain.close();
    }
  });

  it('behind a TLS proxy with TRUST_PROXY=true: no warning, sign-in starts, HSTS', async () => {
    const proxied = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none', ISSUER, TRUST_PROXY: 'true' } });
    try {
      expect(proxied.warnings.join('\n')).not.toContain('TRUST_PROXY');
      const c = await proxied.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
      const res = await fetch(`${local(proxied)}${authPath(c.client_id)}`, { headers: { accept: 'text/html', 'x-forwarded-proto': 'https' }, redirect: 'manual' });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toMatch(/\/interaction\//);
      expect(res.headers.getSetCookie().join(';')).toMatch(/;\s*secure/i);
      expect(res.headers.get('strict-transport-security')).toBe('max-age=31536000');
    } finally {
      await proxied.close();
    }
  });
});

describe('CORS from CORS_ORIGINS', () => {
  it('a listed origin may call the token endpoint from a browser; another origin may not', async () => {
    const ok = await postForm('/token', { grant_type: 'client_credentials' }, { origin: APP_ORIGIN, authorization: basic(agent.client_id, agent.client_secret) });
    expect(ok.res.status).toBe(200);
    expect(ok.res.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);

    const other = await postForm('/token', { grant_type: 'client_credentials' }, { origin: 'https://evil.example.com', authorization: basic(agent.client_id, agent.client_secret) });
    expect(other.res.status).toBe(400);
    expect(other.body.error).toBe('invalid_request');
    expect(other.res.headers.get('access-control-allow-origin')).toBeNull();
  });

  it("Gatehouse's own endpoints answer preflights for listed origins only", async () => {
    const preflight = (origin: string) => fetch(`${gh.url}/livekit/connection-details`, {
      method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    const ok = await preflight(APP_ORIGIN);
    expect(ok.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(ok.headers.get('access-control-allow-methods')).toContain('POST');
    const other = await preflight('https://evil.example.com');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('request ids', () => {
  it('every response carries one; a well-formed incoming id is kept, anything else replaced', async () => {
    const fresh = await fetch(`${gh.url}/health`);
    expect(fresh.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const kept = await fetch(`${gh.url}/health`, { headers: { 'x-request-id': 'lb-trace-0123456789' } });
    expect(kept.headers.get('x-request-id')).toBe('lb-trace-0123456789');
    const replaced = await fetch(`${gh.url}/health`, { headers: { 'x-request-id': 'bad id <script>' } });
    expect(replaced.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("an audit event carries the id of the request that caused it, as the response and the log line show it", async () => {
    const { res } = await postForm('/token', { grant_type: 'client_credentials' }, { authorization: basic(agent.client_id, agent.client_secret) });
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id')!;
    const [row] = await auditRows("type = 'token.issue' AND request_id = $1", [id]);
    expect(row).toMatchObject({ outcome: 'success', client_id: agent.client_id, details: { grant_type: 'client_credentials' } });
    expect(logged.some((line) => line.includes(`"requestId":"${id}"`) && line.includes('"path":"/token"'))).toBe(true);
  });
});

describe('the audit trail of a sign-in', () => {
  it('login, token issue, refresh, revoke and logout: who, which client, from where, when; never a secret', async () => {
    const since = await lastAuditId();
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const browser = new Browser();
    const { tokens } = await codeFlow(gh, config, { browser });
    const sub = tokens.claims()!.sub;
    const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    await oidc.tokenRevocation(config, refreshed.refresh_token!);
    const endUrl = oidc.buildEndSessionUrl(config, { id_token_hint: refreshed.id_token ?? tokens.id_token!, post_logout_redirect_uri: BYE });
    const page = await browser.follow(endUrl.href, gh.url);
    const form = /<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"[\s\S]*?<\/form>/.exec(page.html!)!;
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(form[0])![1];
    expect((await browser.follow(new URL(form[1], gh.url).href, gh.url, { form: { xsrf, logout: 'yes' } })).url).toBe(BYE);

    const rows = await auditRows('id > $1', [since], 5);
    const one = (type: string, extra: (r: AuditRow) => boolean = () => true) => {
      const found = rows.filter((r) => r.type === type && extra(r));
      expect(found, `${type}: ${JSON.stringify(rows.map((r) => r.type))}`).toHaveLength(1);
      return found[0];
    };
    const login = one('login', (r) => r.outcome === 'success');
    const issue = one('token.issue', (r) => r.details.grant_type === 'authorization_code');
    const refresh = one('token.refresh');
    const revoke = one('token.revoke');
    const logout = one('logout');
    for (const r of [login, issue, refresh, revoke, logout]) {
      expect(r, r.type).toMatchObject({ outcome: 'success', subject: sub, client_id: web.client_id, ip: expect.stringMatching(/127\.0\.0\.1/) });
      expect(r.at, r.type).toBeInstanceOf(Date);
    }
    for (const r of [issue, refresh, revoke]) expect(r.request_id, r.type).toMatch(/^[0-9a-f-]{36}$/);
    expect(revoke.details).toMatchObject({ kind: 'RefreshToken' });

    const everything = JSON.stringify(rows);
    for (const secret of [ADMIN.password, web.client_secret, tokens.access_token, tokens.refresh_token!, tokens.id_token!, refreshed.access_token, refreshed.refresh_token!]) {
      expect(everything).not.toContain(secret);
    }
  });

  it('revoking a JWT access token is one audit row naming its subject; an unknown token revokes and records nothing', async () => {
    const t = await postForm('/token', { grant_type: 'client_credentials', resource: RESOURCE, scope: 'tools:read' }, { authorization: basic(agent.client_id, agent.client_secret) });
    expect(t.res.status).toBe(200);
    const jti = decodeJwt(t.body.access_token).jti;
    const since = await lastAuditId();
    const revoked = await postForm('/token/revocation', { token: t.body.access_token }, { authorization: basic(agent.client_id, agent.client_secret) });
    expect(revoked.res.status).toBe(200);
    const rows = await auditRows("id > $1 AND type = 'token.revoke'", [since]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ client_id: agent.client_id, subject: agent.client_id, details: { format: 'jwt', jti } });

    const before = await lastAuditId();
    const unknown = await postForm('/token/revocation', { token: 'not-a-token-we-issued' }, { authorization: basic(agent.client_id, agent.client_secret) });
    // RFC 7009 §2.2: an invalid token is not an error.
    expect(unknown.res.status).toBe(200);
    // A later event proves the audit writer has caught up; no token.revoke came before it.
    await postForm('/token', { grant_type: 'client_credentials' }, { authorization: basic(agent.client_id, agent.client_secret) });
    await auditRows("id > $1 AND type = 'token.issue'", [before]);
    expect(await auditRows("id > $1 AND type = 'token.revoke'", [before], 0)).toEqual([]);
  });
});

describe('logs', () => {
  it('hold no password, secret, token, code or cookie from the requests above', async () => {
    // Sign in once more here, so this test stands alone with its own secrets to look for.
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens, callbackUrl, browser } = await codeFlow(gh, config);
    const cookies = (await browser.jar.getCookies(gh.url)).map((c) => c.value).filter((v) => v.length >= 16);
    expect(cookies.length).toBeGreaterThan(0);
    const text = logged.join('');
    expect(text).toContain('"path":"/token"');
    for (const secret of [ADMIN.password, web.client_secret, agent.client_secret, tokens.access_token, tokens.refresh_token!, tokens.id_token!, callbackUrl.searchParams.get('code')!, ...cookies]) {
      expect(text).not.toContain(secret);
    }
  });

  it("a failing query's parameters never reach a log line, in either store mode (issue 15)", async () => {
    const lines: string[] = [];
    const log = createLogger('info', new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
    const secret = 'device-code-BCDF-GHJK-sekrit';
    const pgDb = (await servicesFor('postgres')) ? createPgDb(PG_ADMIN_URL) : undefined;
    try {
      for (const db of [gh.deps.db, pgDb]) {
        if (!db) continue;
        // 22P02 quotes the value in its message; PGlite's error also carries the parameters.
        const err = await db.query('SELECT $1::int AS n', [secret]).catch((e: Error) => e);
        expect(err).toBeInstanceOf(Error);
        log.error({ err, what: db.kind }, 'query failed');
        // 23505 names the duplicate key, value included, in `detail`.
        const dup = await db.transaction(async (tx) => {
          await tx.query('CREATE TEMP TABLE fuzz_dup (x text PRIMARY KEY) ON COMMIT DROP');
          await tx.query('INSERT INTO fuzz_dup VALUES ($1), ($1)', [secret]);
        }).catch((e: Error) => e);
        expect((dup as { code?: string }).code).toBe('23505');
        log.error({ err: dup }, 'query failed');
      }
    } finally {
      await pgDb?.close();
    }
    const text = lines.join('');
    expect(text).toContain('"type"');
    expect(text).not.toContain('sekrit');
    expect(text).toContain('"errCode":"22P02"');
    expect(text).toContain('"errCode":"23505"');
  });

  it('the logger redacts secrets wherever a caller puts them', () => {
    const lines: string[] = [];
    const log = createLogger('info', new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
    log.info({
      req: { headers: { authorization: 'Bearer sekrit-header', cookie: 'sid=sekrit-cookie' } },
      res: { headers: { 'set-cookie': 'sid=sekrit-set-cookie' } },
      body: { password: 'sekrit-password', client_secret: 'sekrit-client', refresh_token: 'sekrit-refresh', code: 'sekrit-code', subject_token: 'sekrit-subject',
        assertion: 'sekrit-id-jag', auth_req_id: 'sekrit-ciba', login_hint_token: 'sekrit-hint', client_notification_token: 'sekrit-ping', password_hash: 'sekrit-hash' },
      token: 'sekrit-token',
    }, 'request');
    expect(lines.join('')).not.toMatch(/sekrit/);
    expect(lines.join('')).toContain('[redacted]');
  });
});

describe('secrets at rest', () => {
  it('signing keys, client secrets and cookie keys are sealed with the data-encryption key', async () => {
    const keys = (await gh.deps.db.query<{ kid: string; private_jwk_enc: string }>('SELECT kid, private_jwk_enc FROM signing_keys')).rows;
    expect(keys.length).toBeGreaterThanOrEqual(2);
    for (const k of keys) {
      expect(k.private_jwk_enc).toMatch(/^v1\./);
      const jwk = JSON.parse(gh.deps.box.open(k.private_jwk_enc));
      expect(jwk.kid).toBe(k.kid);
      expect(typeof jwk.d).toBe('string');
      expect(k.private_jwk_enc).not.toContain(jwk.d);
    }
    const [client] = (await gh.deps.db.query<{ client_secret_enc: string; metadata: unknown }>('SELECT client_secret_enc, metadata FROM clients WHERE client_id = $1', [web.client_id])).rows;
    expect(client.client_secret_enc).toMatch(/^v1\./);
    expect(client.client_secret_enc).not.toContain(web.client_secret);
    expect(JSON.stringify(client.metadata)).not.toContain(web.client_secret);
    expect(gh.deps.box.open(client.client_secret_enc)).toBe(web.client_secret);
    const [cookieKeys] = (await gh.deps.db.query<{ value: string }>("SELECT value FROM instance_secrets WHERE name = 'cookie_keys'")).rows;
    expect(cookieKeys.value).toMatch(/^v1\./);
    for (const key of gh.deps.cookieKeys) expect(cookieKeys.value).not.toContain(key);
  });

  it('a client secret is printed once, at creation: `client list` never shows it', async () => {
    const listed = await gh.cli('client', 'list');
    expect(listed.map((c: { client_id: string }) => c.client_id)).toEqual(expect.arrayContaining([web.client_id, agent.client_id]));
    const text = JSON.stringify(listed);
    expect(text).not.toContain(web.client_secret);
    expect(text).not.toContain(agent.client_secret);
  });
});

describe('lifetimes (DESIGN.md defaults)', () => {
  it('access token 15 min, ID token 1 h, refresh token 7 days', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config, { resource: RESOURCE, scope: 'openid offline_access tools:read' });
    const at = decodeJwt(tokens.access_token);
    expect(at.exp! - at.iat!).toBe(900);
    const id = tokens.claims()!;
    expect(id.exp - id.iat).toBe(3600);
    const rt = await oidc.tokenIntrospection(config, tokens.refresh_token!);
    expect(rt.active).toBe(true);
    expect(rt.exp! - rt.iat!).toBe(7 * 24 * 3600);
  });

  it("a resource's shorter lifetime (resource create --ttl) holds for its tokens, by either grant", async () => {
    await gh.cli('resource', 'create', '--uri', 'https://short.example.com/mcp', '--scope', 'tools:read', '--ttl', '120');
    const agent = await gh.cli('client', 'create', '--name', 'Short-lived agent', '--grant', 'client_credentials');
    const cc = await postForm('/token', { grant_type: 'client_credentials', resource: 'https://short.example.com/mcp', scope: 'tools:read' }, { authorization: basic(agent.client_id, agent.client_secret) });
    expect(cc.body.expires_in).toBe(120);
    const ccJwt = decodeJwt(cc.body.access_token);
    expect(ccJwt.exp! - ccJwt.iat!).toBe(120);
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config, { resource: 'https://short.example.com/mcp', scope: 'openid tools:read' });
    const at = decodeJwt(tokens.access_token);
    expect(at.exp! - at.iat!).toBe(120);
  });
});

describe('self-registration', () => {
  it('is off unless ALLOW_REGISTRATION=true: no link on the login page, and the page is not there', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    });
    const browser = new Browser();
    const login = await browser.follow(url.href, gh.url);
    expect(login.html).toMatch(/name="password"/);
    expect(login.html).not.toContain('/register');
    const uid = /\/interaction\/([^/"]+)\/login/.exec(login.html!)![1];
    const res = await browser.request(`${gh.url}/interaction/${uid}/register`);
    expect(res.status).toBe(404);
    const users = await gh.deps.db.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    const post = await browser.request(`${gh.url}/interaction/${uid}/register`, { form: { email: 'new@example.com', password: 'a long enough password' } });
    expect(post.status).toBe(404);
    expect((await gh.deps.db.query<{ n: number }>('SELECT count(*)::int AS n FROM users')).rows[0].n).toBe(users.rows[0].n);
  });
});

describe('admin commands: delete', () => {
  it('a deleted client can no longer authenticate; a deleted resource can no longer be targeted', async () => {
    const temp = await gh.cli('client', 'create', '--name', 'Temp', '--grant', 'client_credentials');
    await gh.cli('resource', 'create', '--uri', 'https://temp.example.com/mcp', '--scope', 'x:read');
    const grant = (resource?: string) => postForm('/token', { grant_type: 'client_credentials', ...(resource ? { resource } : {}) }, { authorization: basic(temp.client_id, temp.client_secret) });
    expect((await grant('https://temp.example.com/mcp')).res.status).toBe(200);

    expect(await gh.cli('resource', 'delete', '--uri', 'https://temp.example.com/mcp')).toEqual({ deleted: 'https://temp.example.com/mcp' });
    expect((await gh.cli('resource', 'list')).map((r: { uri: string }) => r.uri)).not.toContain('https://temp.example.com/mcp');
    const gone = await grant('https://temp.example.com/mcp');
    expect(gone.res.status).toBe(400);
    expect(gone.body.error).toBe('invalid_target');

    expect(await gh.cli('client', 'delete', temp.client_id)).toEqual({ deleted: temp.client_id });
    const refused = await grant();
    expect(refused.res.status).toBe(401);
    expect(refused.body.error).toBe('invalid_client');
    await expect(gh.cli('client', 'delete', temp.client_id)).rejects.toThrow(/no client/);
    await expect(gh.cli('resource', 'delete', '--uri', 'https://temp.example.com/mcp')).rejects.toThrow(/no resource/);
    const audited = await auditRows("type IN ('admin.client.delete', 'admin.resource.delete') AND actor = 'cli'", [], 2);
    expect(audited.map((r) => [r.type, r.subject])).toEqual([['admin.resource.delete', 'https://temp.example.com/mcp'], ['admin.client.delete', temp.client_id]]);
  });
});

describe('refresh tokens: 30 days absolute', () => {
  let capped: TestGatehouse;
  beforeAll(async () => {
    // A short absolute lifetime under a longer sliding one, so the cap shows without waiting.
    capped = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none', REFRESH_TOKEN_TTL: String(7 * 24 * 3600), REFRESH_TOKEN_ABSOLUTE_TTL: '86400' } });
  });
  afterAll(async () => capped?.close());

  it('rotation slides the lifetime but never past the absolute end of the first refresh token', async () => {
    const c = await capped.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
    const config = await rpConfig(capped, c.client_id, c.client_secret);
    const { tokens } = await codeFlow(capped, config);
    // Lifetimes are whole seconds counted from two clock readings, hence the one second of slack.
    const first = await oidc.tokenIntrospection(config, tokens.refresh_token!);
    expect(86400 - (first.exp! - first.iat!)).toBeLessThanOrEqual(1);
    const rotated = await oidc.refreshTokenGrant(config, tokens.refresh_token!);
    const second = await oidc.tokenIntrospection(config, rotated.refresh_token!);
    expect(second.active).toBe(true);
    // Uncapped, the rotated token would live 7 days from now; capped, it ends when the first would.
    expect(Math.abs(second.exp! - first.exp!)).toBeLessThanOrEqual(1);
  });
});

// End to end: every revocation writer (RFC 7009 for refresh / opaque / JWT / exchanged tokens,
// logout, refresh-token reuse, password change, account disable / delete / MFA reset, the CLI) against
// every reader (introspection, userinfo, refresh, token exchange's subject and actor), on embedded
// mode and on PostgreSQL + Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';
import { createTokenVerifier, TokenRejectedError } from '@gatehouse/verify';
import { hashId, jtiDigest } from '../src/revocation/store.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const MCP = 'https://mcp.example.com/mcp';
const PASSWORD = 'a long enough passphrase here';
type Client = { client_id: string; client_secret: string };

const postgres = await servicesFor('postgres+redis');
const modes: Mode[] = postgres ? ['embedded', 'postgres'] : ['embedded'];
const nextSecond = () => new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 50));

describe.each(modes)('revocation end to end (%s)', (mode) => {
  let gh: TestGatehouse;
  let web: Client;
  let agent: Client;
  let n = 0;

  const form = async (path: string, client: Client, params: Record<string, string>, headers: Record<string, string> = {}) => {
    const res = await fetch(`${gh.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded', ...headers },
      body: new URLSearchParams(params),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, any> };
  };
  const introspect = async (token: string) => (await form('/token/introspection', web, { token })).body;
  const revoke = (token: string, client = web) => form('/token/revocation', client, { token });
  const refresh = (token: string) => form('/token', web, { grant_type: 'refresh_token', refresh_token: token });
  const exchange = (subject: string, client = web) => form('/token', client, { grant_type: TX, subject_token_type: AT, subject_token: subject, resource: MCP });
  const userinfo = async (token: string) => (await fetch(`${gh.url}/me`, { headers: { authorization: `Bearer ${token}` } })).status;

  /**
   * A fresh user with an opaque token + refresh token and a JWT for the MCP resource, in one grant (one
   * session, one client). Exchanges take the opaque one: the JWT's audience is MCP, and Gatehouse
   * refuses tokens bound to a resource server (issue 14, audience binding).
   */
  async function login(opts: { email?: string; browser?: Browser } = {}) {
    const email = opts.email ?? `u${++n}-${mode}@example.com`;
    if (!opts.email) await gh.cli('user', 'create', '--email', email, '--password', PASSWORD, '--role', 'user');
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const browser = opts.browser ?? new Browser();
    const opaque = await codeFlow(gh, config, { creds: { email, password: PASSWORD }, browser });
    const jwt = await codeFlow(gh, config, { creds: { email, password: PASSWORD }, resource: MCP, scope: 'openid offline_access tools:read', browser });
    return {
      email, browser,
      sub: opaque.tokens.claims()!.sub,
      opaque: opaque.tokens.access_token, refresh: opaque.tokens.refresh_token!, idToken: opaque.tokens.id_token!,
      jwt: jwt.tokens.access_token, jwtRefresh: jwt.tokens.refresh_token!,
    };
  }

  async function mcpToken(subject: string) {
    const r = await exchange(subject);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.access_token as string;
  }

  beforeAll(async () => {
    gh = await startTestGatehouse({ mode });
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'user'");
    const grants = ['--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX];
    const c = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', 'http://127.0.0.1:8976/bye', ...grants);
    web = { client_id: c.client_id, client_secret: c.client_secret };
    const a = await gh.cli('client', 'create', '--name', 'Agent', '--grant', 'client_credentials', '--grant', TX);
    agent = { client_id: a.client_id, client_secret: a.client_secret };
    await gh.cli('policy', 'client', 'set', web.client_id, '--resource', MCP);
    // The agent may act for users at the MCP server (delegation: actor_token).
    await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', MCP, '--act', '--scope', 'tools:read');
  }, 60_000);
  afterAll(async () => gh?.close());

  it('introspects JWT access tokens (which oidc-provider alone refuses) as active', async () => {
    const u = await login();
    const body = await introspect(u.jwt);
    expect(body).toMatchObject({ active: true, sub: u.sub, client_id: web.client_id, aud: MCP, token_type: 'Bearer' });
    expect(body.jti).toBe(decodeJwt(u.jwt).jti);
    expect(await introspect('eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.')).toEqual({ active: false });
  });

  it('revoking a refresh token kills the refresh and every access and MCP token of its grant', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    expect((await introspect(mcp)).active).toBe(true);
    expect((await revoke(u.jwtRefresh)).status).toBe(200);
    expect((await refresh(u.jwtRefresh)).body.error).toBe('invalid_grant');
    expect(await introspect(u.jwt)).toEqual({ active: false });
    expect(await introspect(mcp)).toEqual({ active: false });
    const ex = await exchange(u.opaque);
    expect(ex.status).toBe(400);
    // The grant's opaque tokens are gone with it (oidc-provider), its JWTs are on the revocation list.
    expect(ex.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/revoked|not an active access token/) });
    // One session + one client is one grant in oidc-provider: the opaque token shared it.
    expect(decodeJwt(u.jwt).gid).toBeTruthy();
    expect(await introspect(u.opaque)).toEqual({ active: false });
    // Another user's grant is untouched.
    const other = await login();
    expect((await introspect(other.jwt)).active).toBe(true);
    expect((await refresh(other.refresh)).status).toBe(200);
  });

  it('revokes a JWT access token by jti (RFC 7009), and an exchanged MCP token alone', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    expect((await revoke(mcp)).status).toBe(200);
    expect(await introspect(mcp)).toEqual({ active: false });
    expect((await introspect(u.jwt)).active).toBe(true); // only that token
    expect((await revoke(u.jwt)).status).toBe(200);
    expect(await introspect(u.jwt)).toEqual({ active: false });
    // Only that token: the grant's Gatehouse token still exchanges.
    expect((await exchange(u.opaque)).status).toBe(200);
    const rows = (await gh.deps.db.query<{ id: string }>("SELECT id FROM revocations WHERE kind = 'jti'")).rows.map((r) => r.id);
    // Stored as digests (an opaque token's jti is its value, which no row may hold).
    expect(rows).toEqual(expect.arrayContaining([jtiDigest(decodeJwt(mcp).jti!), jtiDigest(decodeJwt(u.jwt).jti!)]));
  });

  it('does not let another client revoke a JWT it was not issued', async () => {
    const u = await login();
    const r = await revoke(u.jwt, agent);
    expect(r.status).toBe(400);
    expect((await introspect(u.jwt)).active).toBe(true);
  });

  it('revoking an opaque access token makes introspection and userinfo refuse it', async () => {
    const u = await login();
    expect(await userinfo(u.opaque)).toBe(200);
    expect((await revoke(u.opaque)).status).toBe(200);
    expect(await introspect(u.opaque)).toEqual({ active: false });
    expect(await userinfo(u.opaque)).toBe(401);
  });

  it('refresh-token reuse revokes the whole grant, JWTs and MCP tokens included', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    const first = await refresh(u.jwtRefresh);
    expect(first.status).toBe(200);
    expect((await refresh(u.jwtRefresh)).body.error).toBe('invalid_grant'); // reuse
    expect(await introspect(u.jwt)).toEqual({ active: false });
    expect(await introspect(mcp)).toEqual({ active: false });
    expect(await introspect(first.body.access_token)).toEqual({ active: false });
    const reasons = (await gh.deps.db.query<{ reason: string }>("SELECT reason FROM revocations WHERE kind = 'grant' AND id = $1", [decodeJwt(u.jwt).gid])).rows;
    expect(reasons).toEqual([{ reason: 'refresh_token_reuse' }]);
  });

  it('logout revokes everything derived from the session', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    const sid = decodeJwt(u.jwt).sid as string;
    expect(sid).toBeTruthy();
    // RP-initiated logout, confirming "sign me out" on the logout page.
    const start = await u.browser.follow(`${gh.url}/session/end?id_token_hint=${encodeURIComponent(u.idToken)}&post_logout_redirect_uri=${encodeURIComponent('http://127.0.0.1:8976/bye')}`, gh.url);
    const { action, fields } = formOf(start.html!, '/session/end/confirm');
    const done = await u.browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, logout: 'yes' } });
    expect(done.url).toMatch(/^http:\/\/127\.0\.0\.1:8976\/bye/);
    expect(await introspect(u.jwt)).toEqual({ active: false });
    expect(await introspect(mcp)).toEqual({ active: false });
    expect((await exchange(u.opaque)).body.error).toBe('invalid_request');
    expect((await refresh(u.refresh)).body.error).toBe('invalid_grant');
    expect((await gh.deps.db.query("SELECT 1 FROM revocations WHERE kind = 'session' AND id = $1", [sid])).rows).toHaveLength(1);
  });

  it('a password change revokes all the user\'s tokens; a new login works', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    await gh.deps.accounts.setPassword(u.sub, PASSWORD); // same value is fine: it is a change event
    expect(await introspect(u.jwt)).toEqual({ active: false });
    expect(await introspect(u.opaque)).toEqual({ active: false });
    expect(await introspect(mcp)).toEqual({ active: false });
    expect(await userinfo(u.opaque)).toBe(401);
    expect((await refresh(u.refresh)).body.error).toBe('invalid_grant');
    expect((await exchange(u.opaque)).body.error).toBe('invalid_request');
    // Tokens issued in the second of the change are refused too (fail safe); a login after it works.
    await nextSecond();
    const again = await login({ email: u.email, browser: new Browser() });
    expect((await introspect(again.jwt)).active).toBe(true);
    expect(await userinfo(again.opaque)).toBe(200);
    expect((await refresh(again.refresh)).status).toBe(200);
    expect((await exchange(again.opaque)).status).toBe(200);
  });

  it.each([
    ['disabling', 'account_disabled', ['user', 'disable']],
    ['deleting', 'account_deleted', ['user', 'delete']],
    ['an MFA reset of', 'mfa_reset', ['user', 'reset-mfa']],
  ])('%s an account revokes every token of the user', async (_what, reason, command) => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    await gh.cli(...command, '--email', u.email);
    expect(await introspect(u.jwt)).toEqual({ active: false });
    expect(await introspect(u.opaque)).toEqual({ active: false });
    expect(await introspect(mcp)).toEqual({ active: false });
    expect(await userinfo(u.opaque)).toBe(401);
    expect((await refresh(u.jwtRefresh)).body.error).toBe('invalid_grant');
    expect((await exchange(u.opaque)).body.error).toBe('invalid_request');
    const rows = (await gh.deps.db.query<{ reason: string }>("SELECT reason FROM revocations WHERE kind = 'user' AND id = $1", [u.sub])).rows;
    expect(rows).toEqual([{ reason }]);
  });

  it("token exchange refuses a revoked actor token, and revoking it or the user's grant reaches the delegated tokens", async () => {
    const u = await login();
    // The agent's own client-credentials token, bound to Gatehouse (issue 14: one issued for MCP is
    // that server's, and refused as an actor_token).
    const actorToken = async () => {
      const cc = await form('/token', agent, { grant_type: 'client_credentials' });
      expect(cc.status, JSON.stringify(cc.body)).toBe(200);
      return cc.body.access_token as string;
    };
    const delegate = (actor: string) => form('/token', agent, { grant_type: TX, subject_token_type: AT, subject_token: u.opaque, actor_token: actor, actor_token_type: AT, resource: MCP });
    const actor = await actorToken();
    const ok = await delegate(actor);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const delegated = ok.body.access_token as string;
    const claims = decodeJwt(delegated);
    expect(claims).toMatchObject({ sub: u.sub, act: { sub: agent.client_id }, gid: decodeJwt(u.jwt).gid });
    // Its lineage names both tokens it came from, as digests: opaque token values never travel.
    expect(claims.ojti).toEqual(expect.arrayContaining([jtiDigest(u.opaque), jtiDigest(actor)]));
    expect(JSON.stringify(claims)).not.toContain(u.opaque);
    expect(JSON.stringify(claims)).not.toContain(actor);

    expect((await revoke(actor, agent)).status).toBe(200);
    expect(await introspect(actor)).toEqual({ active: false });
    const refused = await delegate(actor);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/^actor_token (has been revoked|is not an active access token)/) });
    // Revoking the actor token reaches what was exchanged with it; the subject is untouched.
    expect(await introspect(delegated)).toEqual({ active: false });
    expect((await introspect(u.jwt)).active).toBe(true);
    // Durably, as a digest: the client-credentials token's value is in no row.
    const { rows } = await gh.deps.db.query<{ id: string; reason: string }>("SELECT id, reason FROM revocations WHERE kind = 'jti' AND id = $1", [jtiDigest(actor)]);
    expect(rows).toEqual([{ id: jtiDigest(actor), reason: 'token_revocation' }]);
    expect((await gh.deps.db.query("SELECT 1 FROM revocations WHERE id = $1", [actor])).rowCount).toBe(0);

    // A fresh actor token delegates again; revoking the user's grant reaches that one too.
    const again = await delegate(await actorToken());
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect((await introspect(again.body.access_token)).active).toBe(true);
    expect((await revoke(u.jwtRefresh)).status).toBe(200);
    expect(await introspect(again.body.access_token)).toEqual({ active: false });
  });

  it('a token that says it descends from a revoked one is refused wherever it is checked', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    // The exchanged token's lineage holds its subject token; revoking the MCP token by jti does not
    // touch the subject, and revoking a token by jti reaches every token whose ojti names it.
    expect(decodeJwt(mcp).ojti).toEqual([jtiDigest(u.opaque)]);
    expect((await gh.cli('revoke', '--jti', u.opaque))).toMatchObject({ revoked: 'jti' });
    expect(await introspect(mcp)).toEqual({ active: false });
  });

  it('gatehouse revoke --jti | --grant | --session | --user', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    const { jti, gid, sid } = decodeJwt(mcp) as { jti: string; gid: string; sid: string };
    expect(await gh.cli('revoke', '--jti', jti)).toMatchObject({ revoked: 'jti', id: jti });
    expect(await introspect(mcp)).toEqual({ active: false });
    expect((await introspect(u.jwt)).active).toBe(true);

    expect(await gh.cli('revoke', '--grant', gid)).toMatchObject({ revoked: 'grant', subject: u.sub });
    expect(await introspect(u.jwt)).toEqual({ active: false });
    expect(await introspect(u.opaque)).toEqual({ active: false });
    expect((await refresh(u.jwtRefresh)).body.error).toBe('invalid_grant');

    const w = await login();
    // An opaque access token's value is its jti: refused afterwards, and the audit log names it by hash only.
    expect(await gh.cli('revoke', '--jti', w.opaque)).toMatchObject({ revoked: 'jti' });
    expect(await introspect(w.opaque)).toEqual({ active: false });
    const { rows: audited } = await gh.deps.db.query<{ details: Record<string, unknown> }>(
      "SELECT details FROM audit_events WHERE type = 'admin.revoke' AND details->>'kind' = 'jti' AND details->>'jti_sha256' = ANY($1) ORDER BY id", [[hashId(jti), hashId(w.opaque)]]);
    expect(audited).toHaveLength(2);
    expect(audited.every((r) => typeof r.details.jti_sha256 === 'string' && !('id' in r.details))).toBe(true);
    expect(JSON.stringify(audited)).not.toContain(w.opaque);
    const wSid = decodeJwt(w.jwt).sid as string;
    expect(await gh.cli('revoke', '--session', wSid)).toMatchObject({ revoked: 'session', subject: w.sub });
    expect(await introspect(w.jwt)).toEqual({ active: false });
    expect(await introspect(w.opaque)).toEqual({ active: false });
    expect(await userinfo(w.opaque)).toBe(401);
    expect(sid).toBeTruthy();

    const v = await login();
    expect(await gh.cli('revoke', '--user', v.email)).toMatchObject({ revoked: 'user', id: v.sub });
    expect(await introspect(v.jwt)).toEqual({ active: false });
    await expect(gh.cli('revoke', '--user', v.email, '--jti', 'x')).rejects.toThrow(/exactly one/);
    const audit = await gh.deps.db.query("SELECT 1 FROM audit_events WHERE type = 'admin.revoke'");
    expect(audit.rows.length).toBeGreaterThanOrEqual(4);
  });

  it('the resource-server package (@gatehouse/verify) accepts a live token and refuses it once revoked', async () => {
    const u = await login();
    const mcp = await mcpToken(u.opaque);
    const verifier = createTokenVerifier({ issuer: gh.url, audience: MCP, clientId: agent.client_id, clientSecret: agent.client_secret, cacheSeconds: 0 });
    expect(await verifier.verify(mcp)).toMatchObject({ sub: u.sub, aud: MCP });
    await expect(createTokenVerifier({ issuer: gh.url, audience: 'https://elsewhere.example/' }).verify(mcp)).rejects.toBeInstanceOf(TokenRejectedError);
    expect((await revoke(mcp)).status).toBe(200);
    await expect(verifier.verify(mcp)).rejects.toThrow(/revoked/);
  });

  it('reports revocation readiness on /ready', async () => {
    const res = await fetch(`${gh.url}/ready`);
    expect(res.status).toBe(200);
    expect((await res.json()).checks.revocation).toBe('ok');
  });
});

// The admin REST API (/admin/api) against a running Gatehouse: who may call it (service accounts
// with client credentials, users whose roles grant gatehouse:admin[:read]), what a refusal looks
// like (RFC 6750 challenges), and that calls do what the CLI does — with the caller in the audit log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { ADMIN, CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

type Client = { client_id: string; client_secret: string };
const DANA = { email: 'dana@example.com', password: 'dana has a long password' };

describe('admin API', () => {
  let gh: TestGatehouse;
  let api: string;
  let robot: Client;
  let token: string;

  const basic = (c: Client) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
  async function clientToken(c: Client, resource = api, scope = 'gatehouse:admin gatehouse:admin:read') {
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: basic(c), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource, scope }),
    });
    return { status: res.status, body: await res.json() as Record<string, any> };
  }
  async function call(method: string, path: string, bearer: string | undefined, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${api}${path}`, {
      method,
      headers: { ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  }

  beforeAll(async () => {
    // Signs in as ADMIN to test the API, not the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none' } });
    api = `${gh.url}/admin/api`;
    robot = await gh.cli('client', 'create', '--name', 'provisioning robot', '--grant', 'client_credentials');
  });
  afterAll(async () => gh?.close());

  it('gives a client credentials token for the API only to a service account, for five minutes', async () => {
    const refused = await clientToken(robot);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: 'invalid_target', error_description: expect.stringMatching(/admin API service account/) });

    expect(await gh.cli('client', 'admin-api', robot.client_id, '--full')).toEqual({ client_id: robot.client_id, admin_api: 'full' });
    const granted = await clientToken(robot);
    expect(granted.status, JSON.stringify(granted.body)).toBe(200);
    token = granted.body.access_token;
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ aud: api, client_id: robot.client_id, scope: 'gatehouse:admin gatehouse:admin:read' });
    expect(claims.exp! - claims.iat!).toBeLessThanOrEqual(300);
  });

  it('refuses a request without a token, or with a token for something else (401 with a challenge)', async () => {
    const none = await call('GET', '/users', undefined);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer realm="gatehouse-admin", error="invalid_token"/);
    expect(none.body).toMatchObject({ error: 'invalid_token' });
    expect(none.headers.get('cache-control')).toBe('no-store');

    await expect(gh.cli('resource', 'create', '--uri', `${api}/`, '--scope', 'gatehouse:admin')).rejects.toThrow(/reserved/);
    await gh.cli('resource', 'create', '--uri', 'https://mcp.example.com/mcp', '--scope', 'gatehouse:admin');
    const other = await clientToken(robot, 'https://mcp.example.com/mcp', 'gatehouse:admin');
    expect(other.status).toBe(200);
    const wrongAudience = await call('GET', '/users', other.body.access_token);
    expect(wrongAudience.status).toBe(401);
    expect(wrongAudience.body.error_description).toMatch(/not issued for/);
    expect((await call('GET', '/users', `${token}x`)).status).toBe(401);
  });

  it('manages users as the CLI does: create, read, change roles, set a password, delete; errors are JSON', async () => {
    const created = await call('POST', '/users', token, { email: DANA.email, password: DANA.password, name: 'Dana', roles: ['user'] });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ email: DANA.email, name: 'Dana', active: true });
    const id = created.body.id as string;
    expect((await call('POST', '/users', token, { email: DANA.email })).status).toBe(409);
    expect(await call('POST', '/users', token, { email: 'x@example.com', admin: true })).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect((await call('POST', '/users', token, 'email=x@example.com', { 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(415);
    expect((await call('POST', '/users', token, '{not json')).status).toBe(400);

    await call('POST', '/roles', token, { name: 'auditor', permissions: ['gatehouse:admin:read'] });
    const patched = await call('PATCH', `/users/${id}`, token, { roles: ['user', 'auditor'] });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ id, roles: ['auditor', 'user'], permissions: expect.arrayContaining(['gatehouse:admin:read']) });

    const reset = await call('POST', `/users/${id}/password`, token, {});
    expect(reset.status).toBe(200);
    expect(reset.body).toMatchObject({ id, sessions_revoked: true, password: expect.any(String) });
    expect((await gh.deps.accounts.authenticate(DANA.email, reset.body.password))).toHaveProperty('user');
    await call('POST', `/users/${id}/password`, token, { password: DANA.password });

    const list = await call('GET', '/users?limit=10', token);
    expect(list.body.map((u: { email: string }) => u.email)).toEqual(expect.arrayContaining([ADMIN.email, DANA.email]));
    expect(await call('GET', '/users/nobody', token)).toMatchObject({ status: 404, body: { error: 'not_found' } });
    expect(await call('GET', '/no-such-thing', token)).toMatchObject({ status: 404, body: { error: 'not_found' } });

    // The only administrator stays.
    const adminId = (await gh.cli('user', 'get', '--email', ADMIN.email)).id;
    expect(await call('DELETE', `/users/${adminId}`, token)).toMatchObject({ status: 409, body: { error: 'conflict', error_description: expect.stringMatching(/only active administrator/) } });
  });

  it('records the caller as the actor, and serves the audit log newest first, paged', async () => {
    const { rows } = await gh.deps.db.query<{ actor: string }>("SELECT actor FROM audit_events WHERE type = 'admin.user.create' AND details->>'roles' IS NOT NULL ORDER BY id DESC LIMIT 1");
    expect(rows[0].actor).toBe(`client:${robot.client_id}`);
    const first = await call('GET', '/audit?limit=2', token);
    expect(first.status).toBe(200);
    expect(first.body.events).toHaveLength(2);
    expect(first.body.events[0].id).toBeGreaterThan(first.body.events[1].id);
    const next = await call('GET', `/audit?limit=2&before_id=${first.body.next_before_id}`, token);
    expect(next.body.events[0].id).toBeLessThan(first.body.events[1].id);
    const creates = await call('GET', `/audit?type=admin.user.create&actor=${encodeURIComponent(`client:${robot.client_id}`)}`, token);
    expect(creates.body.events).toHaveLength(1);
    expect((await call('GET', '/audit?since=yesterday', token)).status).toBe(400);
  });

  it('creates a client and shows its secret once; never writes it to the audit log', async () => {
    const created = await call('POST', '/clients', token, { name: 'new app', redirect_uris: [CALLBACK], grant_types: ['authorization_code'] });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ client_id: expect.any(String), client_secret: expect.any(String) });
    const listed = await call('GET', '/clients', token);
    expect(JSON.stringify(listed.body)).not.toContain(created.body.client_secret);
    const audit = await gh.deps.db.query('SELECT details FROM audit_events');
    expect(JSON.stringify(audit.rows)).not.toContain(created.body.client_secret);
    expect((await call('DELETE', `/clients/${created.body.client_id}`, token)).status).toBe(204);
    expect((await call('DELETE', `/clients/${created.body.client_id}`, token)).status).toBe(404);
  });

  it('a read-only service account reads but cannot change (403 insufficient_scope); --off ends access at once', async () => {
    const reader = await gh.cli('client', 'create', '--name', 'dashboard', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', reader.client_id, '--read');
    const t = (await clientToken(reader)).body;
    expect(t.scope).toBe('gatehouse:admin:read');
    expect((await call('GET', '/roles', t.access_token)).status).toBe(200);
    const write = await call('POST', '/roles', t.access_token, { name: 'sneaky' });
    expect(write.status).toBe(403);
    expect(write.headers.get('www-authenticate')).toMatch(/error="insufficient_scope".*scope="gatehouse:admin"/);

    await gh.cli('client', 'admin-api', reader.client_id, '--off');
    expect((await call('GET', '/roles', t.access_token)).status).toBe(403);
  });

  it("a user's token carries only the admin scopes their roles grant, and the API checks the roles again", async () => {
    const web = await gh.cli('client', 'create', '--name', 'admin console', '--redirect-uri', CALLBACK, '--first-party');
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const asAdmin = await codeFlow(gh, config, { creds: ADMIN, scope: 'openid gatehouse:admin gatehouse:admin:read', resource: api });
    const adminToken = asAdmin.tokens.access_token;
    expect(decodeJwt(adminToken)).toMatchObject({ aud: api, scope: 'gatehouse:admin gatehouse:admin:read' });
    const made = await call('POST', '/roles', adminToken, { name: 'support', permissions: ['livekit:join'] });
    expect(made.status).toBe(201);
    const { rows } = await gh.deps.db.query<{ actor: string }>("SELECT actor FROM audit_events WHERE type = 'admin.role.create' AND subject = 'support'");
    expect(rows).toEqual([{ actor: `user:${asAdmin.tokens.claims()!.sub}` }]);

    // Dana (user, auditor) asked for both scopes: her token has only the read one.
    const asDana = await codeFlow(gh, config, { creds: DANA, scope: 'openid gatehouse:admin gatehouse:admin:read', resource: api });
    const danaToken = asDana.tokens.access_token;
    expect(decodeJwt(danaToken).scope).toBe('gatehouse:admin:read');
    expect((await call('GET', '/users', danaToken)).status).toBe(200);
    expect((await call('POST', '/roles', danaToken, { name: 'x' })).status).toBe(403);
    // Her auditor role is taken away: the token she holds stops working for the API at once.
    await call('PATCH', `/users/${asDana.tokens.claims()!.sub}`, token, { roles: ['user'] });
    const after = await call('GET', '/users', danaToken);
    expect(after.status).toBe(403);
    expect(after.body.error_description).toMatch(/roles do not grant/);
  });

  it('manages resources, exchange policy and SSO connections; a connection secret is write-only', async () => {
    const uri = 'https://tools.example.com/mcp';
    expect(await call('POST', '/resources', token, { uri, scopes: ['tools:read'], require_mfa: true })).toMatchObject({ status: 201, body: { uri, scopes: ['tools:read'], require_mfa: true } });
    expect(await call('PUT', `/resources/require-mfa?uri=${encodeURIComponent(uri)}`, token, { require_mfa: false })).toMatchObject({ status: 200, body: { uri, require_mfa: false } });
    const app = await gh.cli('client', 'create', '--name', 'voice app', '--grant', 'client_credentials');
    const policy = await call('PUT', `/policies/clients/${app.client_id}`, token, { livekit: true, resources: [uri] });
    expect(policy).toMatchObject({ status: 200, body: { client_id: app.client_id, livekit: true, resources: [uri] } });
    expect((await call('GET', `/policies/clients/${app.client_id}`, token)).body).toMatchObject({ livekit: true });
    expect((await call('DELETE', `/policies/clients/${app.client_id}`, token)).status).toBe(204);
    expect((await call('GET', `/policies/clients/${app.client_id}`, token)).status).toBe(404);
    expect((await call('PUT', '/policies/roles/user', token, { rooms: ['{identity}_*'], publish: true, subscribe: true })).body).toMatchObject({ role: 'user', room_patterns: ['{identity}_*'], can_publish: true });
    // ID-JAG targets (docs/id-jag.md), one per audience.
    const target = { audience: 'https://auth.chat.example/', target_client_id: 'at-chat', resources: ['https://mcp.chat.example/'], scopes: ['chat.read'] };
    expect(await call('PUT', `/policies/id-jag/${app.client_id}`, token, target)).toMatchObject({ status: 200,
      body: { client_id: app.client_id, audience: target.audience, target_client_id: 'at-chat', resources: target.resources, scopes: ['chat.read'] } });
    expect((await call('GET', `/policies/id-jag?client_id=${app.client_id}`, token)).body).toHaveLength(1);
    expect((await call('PUT', `/policies/id-jag/${app.client_id}`, token, { ...target, audience: 'ftp://x' })).status).toBe(400);
    expect((await call('DELETE', `/policies/id-jag/${app.client_id}?audience=${encodeURIComponent(target.audience)}`, token)).status).toBe(204);
    expect((await call('DELETE', `/policies/id-jag/${app.client_id}?audience=${encodeURIComponent(target.audience)}`, token)).status).toBe(404);

    const secret = 'upstream-client-secret-do-not-show';
    const made = await call('POST', '/connections', token, {
      name: 'acme', issuer: 'http://127.0.0.1:9/realms/acme', client_id: 'gatehouse', client_secret: secret,
      domains: ['acme.test'], trust_mfa: true, role_map: { engineering: ['user'] },
    });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body).toMatchObject({ name: 'acme', domains: ['acme.test'], trust_mfa: true, has_client_secret: true });
    const cleared = await call('PATCH', '/connections/acme', token, { client_secret: null, enabled: false });
    expect(cleared.body).toMatchObject({ has_client_secret: false, enabled: false });
    const trusted = await call('PATCH', '/connections/acme', token, { id_jag: true, id_jag_clients: [app.client_id], id_jag_resources: [uri], id_jag_jwks_uri: 'https://acme.test/jwks' });
    expect(trusted.body.id_jag, JSON.stringify(trusted.body)).toEqual({ enabled: true, jwks_uri: 'https://acme.test/jwks', jwks: null, clients: [app.client_id], resources: [uri] });
    expect((await call('PATCH', '/connections/acme', token, { id_jag_clients: [], id_jag_jwks_uri: null })).body.id_jag).toMatchObject({ clients: [], jwks_uri: null });
    const everything = JSON.stringify([made.body, cleared.body, (await call('GET', '/connections', token)).body, (await gh.deps.db.query('SELECT details FROM audit_events')).rows]);
    expect(everything).not.toContain(secret);
    expect((await call('DELETE', '/connections/acme', token)).status).toBe(204);
    expect((await call('DELETE', `/resources?uri=${encodeURIComponent(uri)}`, token)).status).toBe(204);
  });

  it('rotates signing keys and serves them at once; revokes through the API', async () => {
    const before = (await (await fetch(`${gh.url}/jwks`)).json()).keys.map((k: { kid: string }) => k.kid);
    const rotated = await call('POST', '/keys/rotate', token);
    expect(rotated.status).toBe(200);
    const after = (await (await fetch(`${gh.url}/jwks`)).json()).keys.map((k: { kid: string }) => k.kid);
    expect(after.length).toBeGreaterThan(before.length);

    const fresh = (await clientToken(robot)).body.access_token as string;
    const { jti } = decodeJwt(fresh) as { jti: string };
    expect((await call('POST', '/revocations', token, { jti })).status).toBe(200);
    expect((await call('GET', '/users', fresh)).status).toBe(401);
    expect((await call('POST', '/revocations', token, { jti, user: 'x' })).status).toBe(400);
  });
});

describe('admin API and MFA policy', () => {
  it("refuses a user's password-only token once policy requires MFA of them (401 insufficient_user_authentication)", async () => {
    const gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'auditor' } });
    try {
      const api = `${gh.url}/admin/api`;
      await gh.cli('role', 'create', 'reader', '--permission', 'gatehouse:admin:read');
      await gh.cli('role', 'create', 'auditor', '--permission', 'gatehouse:admin:read');
      await gh.cli('user', 'create', '--email', DANA.email, '--password', DANA.password, '--role', 'user', '--role', 'reader');
      const web = await gh.cli('client', 'create', '--name', 'console', '--redirect-uri', CALLBACK, '--first-party');
      const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: DANA, scope: 'openid gatehouse:admin:read', resource: api });
      expect(decodeJwt(tokens.access_token)).toMatchObject({ scope: 'gatehouse:admin:read', acr: 'urn:gatehouse:acr:pwd' });
      const get = () => fetch(`${api}/roles`, { headers: { authorization: `Bearer ${tokens.access_token}` } });
      expect((await get()).status).toBe(200);
      // Now she is an auditor too, and auditors must use a second factor.
      await gh.cli('user', 'set-roles', '--email', DANA.email, '--role', 'user', '--role', 'reader', '--role', 'auditor');
      const refused = await get();
      expect(refused.status).toBe(401);
      expect(refused.headers.get('www-authenticate')).toMatch(/error="insufficient_user_authentication".*acr_values="urn:gatehouse:acr:mfa"/);
    } finally {
      await gh.close();
    }
  });
});

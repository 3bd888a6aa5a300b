// `update` for resources, users, roles and connections (issue 18), through the CLI's commands and
// PATCH in the admin API, in both store modes: each change counts at the next request (nothing
// caches it), is held to the rules of creation, is audited, and refusals say what to do.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { describeEachMode, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const MCP = 'https://tools.example.test/mcp';
type Client = { client_id: string; client_secret: string };

describeEachMode('update commands', (mode) => {
  let gh: TestGatehouse;
  let robot: Client;
  let service: Client;
  let adminToken: string;

  const basic = (c: Client) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
  const token = async (c: Client, params: Record<string, string>) => {
    const res = await fetch(`${gh.url}/token`, { method: 'POST', headers: { authorization: basic(c), 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(params) });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${gh.url}/admin/api${path}`, {
      method, headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const audited = async (type: string, subject: string) =>
    (await gh.deps.db.query<{ actor: string; details: Record<string, any> }>('SELECT actor, details FROM audit_events WHERE type = $1 AND subject = $2 ORDER BY id', [type, subject])).rows;

  beforeAll(async () => {
    gh = await startTestGatehouse({ mode });
    robot = await gh.cli('client', 'create', '--preset', 'mcp-server', '--name', 'provisioning');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    adminToken = (await token(robot, { grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin' })).body.access_token;
    service = await gh.cli('client', 'create', '--name', 'service', '--grant', 'client_credentials');
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--name', 'Tools');
  }, 120_000);
  afterAll(async () => gh?.close());

  it('resource update: a new scope and lifetime count at the next token request; creation rules hold', async () => {
    const before = await token(service, { grant_type: 'client_credentials', resource: MCP, scope: 'tools:write' });
    expect(before.status).toBe(400);
    expect(before.body.error_description).toMatch(/does not define tools:write/);

    const updated = await gh.cli('resource', 'update', MCP, '--add-scope', 'tools:write', '--ttl', '120', '--name', 'Tool server', '--require-mfa', 'off');
    expect(updated).toMatchObject({ uri: MCP, name: 'Tool server', scopes: ['tools:read', 'tools:write'], access_token_ttl: 120, require_mfa: false, signing: 'jwks' });
    const after = await token(service, { grant_type: 'client_credentials', resource: MCP, scope: 'tools:write' });
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    const claims = decodeJwt(after.body.access_token);
    expect(claims.scope).toBe('tools:write');
    expect(claims.exp! - claims.iat!).toBe(120);

    // Default scopes must stay among the scopes; a lifetime outside 30..900 is refused; nothing changes.
    await gh.cli('resource', 'update', MCP, '--default-scope', 'tools:read');
    await expect(gh.cli('resource', 'update', MCP, '--remove-scope', 'tools:read')).rejects.toThrow(/default scopes must be among/);
    await expect(gh.cli('resource', 'update', MCP, '--ttl', '5')).rejects.toThrow(/accessTokenTtl|30/);
    await expect(gh.cli('resource', 'update', MCP)).rejects.toThrow(/nothing to change/);
    await expect(gh.cli('resource', 'update', 'https://nowhere.example.test/mcp', '--name', 'x')).rejects.toMatchObject({ status: 404, message: expect.stringMatching(/no resource .*resource list/) });
    expect(await gh.cli('resource', 'get', `${MCP}/`)).toMatchObject({ uri: MCP, scopes: ['tools:read', 'tools:write'], default_scopes: ['tools:read'] });

    // PATCH through the API does the same; the API's answer is the CLI's.
    const patched = await api('PATCH', `/resources?uri=${encodeURIComponent(MCP)}`, { scopes: ['tools:read', 'tools:write', 'tools:admin'], default_scopes: null, claims: ['roles'] });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({ scopes: ['tools:read', 'tools:write', 'tools:admin'], default_scopes: null, claims: ['roles'] });
    expect((await api('PATCH', `/resources?uri=${encodeURIComponent(MCP)}`, { access_token_ttl: 'long' })).status).toBe(400);
    expect((await api('PATCH', `/resources?uri=${encodeURIComponent(MCP)}`, { signing: 'hs256' })).status).toBe(400);
    expect((await api('PATCH', '/resources?uri=https%3A%2F%2Fnone.example.test', { name: 'x' })).status).toBe(404);
    expect((await api('GET', `/resources?uri=${encodeURIComponent(MCP)}`)).body).toMatchObject([{ uri: MCP }]);

    const audit = await audited('admin.resource.update', MCP);
    expect(audit.map((a) => a.details.changed)).toEqual([['name', 'scopes', 'accessTokenTtl', 'requireMfa'], ['defaultScopes'], ['scopes', 'defaultScopes', 'claims']]);
    expect(audit.at(-1)!.actor).toBe(`client:${robot.client_id}`);
  });

  it('user update: name, address, roles and disabling, each in force at once; the last admin stays', async () => {
    const user = await gh.cli('user', 'create', '--email', 'erin@example.com', '--password', 'erin has a long password', '--verified');
    const updated = await gh.cli('user', 'update', 'erin@example.com', '--name', 'Erin', '--new-email', 'erin.b@example.com', '--add-role', 'admin');
    // A new address is unverified until shown to reach the user.
    expect(updated).toMatchObject({ id: user.id, email: 'erin.b@example.com', name: 'Erin', email_verified: false, roles: ['admin', 'user'], active: true });
    expect(await gh.deps.accounts.authenticate('erin.b@example.com', 'erin has a long password')).toHaveProperty('user');
    await expect(gh.cli('user', 'update', user.id, '--new-email', 'admin@example.com')).rejects.toThrow(/already exists/);
    await expect(gh.cli('user', 'update', user.id, '--verified', 'maybe')).rejects.toThrow(/--verified takes on or off/);

    // Disabling ends what the user holds; the console/API read the same row.
    const { body } = await api('PATCH', `/users/${user.id}`, { active: false, email_verified: true, name: null });
    expect(body).toMatchObject({ id: user.id, active: false, email_verified: true, name: null });
    expect(await gh.deps.accounts.authenticate('erin.b@example.com', 'erin has a long password')).toEqual({ error: 'inactive' });
    expect((await api('PATCH', `/users/${user.id}`, { is_admin: true })).status).toBe(400);
    expect((await api('PATCH', '/users/00000000-0000-0000-0000-000000000000', { name: 'x' })).status).toBe(404);

    // The one active admin cannot be disabled or lose the role (erin is disabled now).
    const admin = await gh.cli('user', 'get', 'admin@example.com');
    await expect(gh.cli('user', 'update', admin.id, '--enabled', 'off')).rejects.toMatchObject({ status: 409, message: expect.stringMatching(/only active administrator/) });
    await expect(gh.cli('user', 'update', admin.id, '--remove-role', 'admin')).rejects.toThrow(/only active administrator/);
    expect((await gh.cli('user', 'get', admin.id)).roles).toContain('admin');

    const audit = await audited('admin.user.update', user.id);
    expect(audit.map((a) => a.details.changed)).toEqual([['name', 'email', 'roles'], ['name', 'emailVerified', 'active']]);
    expect(JSON.stringify(audit)).not.toContain('long password');
  });

  it('role update and connection update take effect for the next read; get answers one of each', async () => {
    await gh.cli('role', 'create', 'support', '--permission', 'tools:read');
    const role = await api('PATCH', '/roles/support', { add: ['tools:write'], description: 'Support desk' });
    expect(role.body).toEqual({ name: 'support', description: 'Support desk', permissions: ['tools:read', 'tools:write'], users: 0 });
    expect(await gh.cli('role', 'get', 'support')).toEqual(role.body);
    expect((await api('GET', '/roles/support')).body).toEqual(role.body);
    expect((await api('GET', '/roles/nobody')).status).toBe(404);

    await gh.cli('connection', 'create', 'acme', '--issuer', 'https://login.acme.test', '--client-id', 'gh', '--domain', 'acme.test');
    const off = await gh.cli('connection', 'update', 'acme', '--enabled', 'off', '--display-name', 'Acme SSO');
    expect(off).toMatchObject({ name: 'acme', display_name: 'Acme SSO', enabled: false, client_id: 'gh', has_client_secret: false });
    // The login page offers single sign-on only while some connection is enabled (this is the only one).
    expect(await gh.deps.connections.anyEnabled()).toBe(false);
    const on = await api('PATCH', '/connections/acme', { enabled: true });
    expect(on.body).toMatchObject({ enabled: true, display_name: 'Acme SSO' });
    expect(await gh.deps.connections.anyEnabled()).toBe(true);

    const policy = await api('PUT', '/policies/roles/support', { rooms: ['support-*'], subscribe: true });
    expect(policy.body).toMatchObject({ role: 'support', room_patterns: ['support-*'], can_subscribe: true, can_publish: false });
    expect(await gh.cli('policy', 'role', 'get', 'support')).toEqual(policy.body);
    const client = await api('GET', `/clients/${service.client_id}`);
    expect(client.body).toMatchObject({ client_id: service.client_id, name: 'service', type: 'confidential', first_party: false });
    expect(client.body.client_secret).toBeUndefined();
  });
});

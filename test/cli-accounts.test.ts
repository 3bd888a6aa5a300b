// Operator commands for users and roles, seen from the outside: a permission given to a role shows
// up in the ID token and bounds what token exchange grants; a password set by the operator ends the
// user's sessions and tokens; a deleted user's tokens die with the account; Gatehouse never loses
// its last administrator.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const MCP = 'https://tools.example.test/mcp';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';

describe('user and role commands', () => {
  let gh: TestGatehouse;
  let app: { client_id: string; client_secret: string };
  let config: oidc.Configuration;

  const introspect = async (token: string) => {
    const res = await fetch(`${gh.url}/token/introspection`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    return (await res.json()) as { active: boolean };
  };
  const exchange = async (subject: string, scope: string) => {
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${app.client_id}:${app.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TX, subject_token: subject, subject_token_type: AT, resource: MCP, scope }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  beforeAll(async () => {
    gh = await startTestGatehouse();
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--scope', 'tools:write');
    app = await gh.cli('client', 'create', '--name', 'app', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX, '--first-party');
    await gh.cli('policy', 'client', 'set', app.client_id, '--resource', MCP);
    config = await rpConfig(gh, app.client_id, app.client_secret);
  });
  afterAll(async () => gh?.close());

  it('a role with permissions: in the ID token, and the bound on exchanged scopes', async () => {
    const role = await gh.cli('role', 'create', 'tool-reader', '--permission', 'tools:read', '--description', 'May read tools');
    expect(role).toEqual({ name: 'tool-reader', description: 'May read tools', permissions: ['tools:read'], users: 0 });
    const bob = { email: 'bob@example.com', password: 'bob has a long password' };
    await gh.cli('user', 'create', '--email', bob.email, '--password', bob.password, '--role', 'user');
    const set = await gh.cli('user', 'set-roles', '--email', bob.email, '--role', 'user', '--role', 'tool-reader');
    expect(set.roles).toEqual(['tool-reader', 'user']);
    expect(set.permissions).toEqual(['livekit:join', 'tools:read']);

    // Bob's own (Gatehouse-bound) token: one for MCP itself would be refused as a subject_token (issue 14).
    const { tokens } = await codeFlow(gh, config, { creds: bob, scope: 'openid roles offline_access tools:read tools:write', resource: MCP, gatehouseToken: true });
    expect(tokens.claims()!.permissions).toEqual(['livekit:join', 'tools:read']);
    // tools:write is defined by MCP but not among bob's permissions.
    expect((await exchange(tokens.access_token, 'tools:read')).body.scope).toBe('tools:read');
    const refused = await exchange(tokens.access_token, 'tools:write');
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_scope');

    // Adding the permission to the role takes effect for the next exchange; no new login needed.
    expect((await gh.cli('role', 'update', 'tool-reader', '--add', 'tools:write')).permissions).toEqual(['tools:read', 'tools:write']);
    expect((await exchange(tokens.access_token, 'tools:write')).body.scope).toBe('tools:write');

    expect((await gh.cli('role', 'list')).find((r: { name: string }) => r.name === 'tool-reader').users).toBe(1);
    await expect(gh.cli('role', 'delete', 'tool-reader')).rejects.toThrow(/1 user\(s\) hold tool-reader/);
    await expect(gh.cli('role', 'delete', 'user')).rejects.toThrow(/built in/);
    await expect(gh.cli('role', 'create', 'Bad Name')).rejects.toThrow(/role name/);
    expect(await gh.cli('role', 'delete', 'tool-reader', '--force')).toEqual({ deleted: 'tool-reader' });
    expect((await gh.cli('user', 'get', '--email', bob.email)).roles).toEqual(['user']);
  });

  it('takes option values that start with a dash (generated secrets and ids are base64url)', async () => {
    const dashed = { email: 'dash@example.com', password: '-starts-with-a-dash-and-is-long' };
    await gh.cli('user', 'create', '--email', dashed.email, '--password', dashed.password);
    expect(await gh.deps.accounts.authenticate(dashed.email, dashed.password)).toHaveProperty('user');
    await gh.cli('user', 'set-password', '--email', dashed.email, '--password', '--also-a-dash-but-long-enough');
    expect(await gh.deps.accounts.authenticate(dashed.email, '--also-a-dash-but-long-enough')).toHaveProperty('user');
  });

  it('set-password: the old password and every token stop working, the new password signs in', async () => {
    const carol = { email: 'carol@example.com', password: 'carol has a long password' };
    await gh.cli('user', 'create', '--email', carol.email, '--password', carol.password);
    const { tokens } = await codeFlow(gh, config, { creds: carol });
    expect((await introspect(tokens.access_token)).active).toBe(true);

    const out = await gh.cli('user', 'set-password', '--email', carol.email);
    expect(out.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect((await introspect(tokens.access_token)).active).toBe(false);
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(codeFlow(gh, config, { creds: carol })).rejects.toThrow();
    // A user-level revocation refuses everything issued up to and including its second (fail safe,
    // README § Revocation); a real person signs in again later than that.
    await new Promise((r) => setTimeout(r, 1100));
    const again = await codeFlow(gh, config, { creds: { email: carol.email, password: out.password } });
    expect(again.tokens.claims()!.sub).toBe(tokens.claims()!.sub);

    const audit = await gh.deps.db.query<{ details: unknown }>("SELECT details FROM audit_events WHERE type = 'admin.user.set_password'");
    expect(JSON.stringify(audit.rows)).not.toContain(out.password);
  });

  it('delete: the account and its tokens are gone; the last administrator stays', async () => {
    const dave = { email: 'dave@example.com', password: 'dave has a long password' };
    const { id } = await gh.cli('user', 'create', '--email', dave.email, '--password', dave.password);
    const { tokens } = await codeFlow(gh, config, { creds: dave });
    expect(await gh.cli('user', 'delete', '--email', dave.email)).toMatchObject({ deleted: id });
    expect((await introspect(tokens.access_token)).active).toBe(false);
    expect((await gh.deps.db.query('SELECT 1 FROM users WHERE id = $1', [id])).rows).toHaveLength(0);
    await expect(gh.cli('user', 'get', '--email', dave.email)).rejects.toThrow(/no user/);

    await expect(gh.cli('user', 'delete', '--email', 'admin@example.com')).rejects.toThrow(/only active administrator/);
    await expect(gh.cli('user', 'set-roles', '--email', 'admin@example.com', '--role', 'user')).rejects.toThrow(/only active administrator/);
    expect((await gh.cli('user', 'get', '--email', 'admin@example.com')).roles).toContain('admin');
  });
});

// Dynamic client registration (RFC 7591 / RFC 7592) and MCP-ready metadata, black-box over HTTP:
// discovery, open and token-gated registration, the registration policy, management, the default
// scope, PKCE for public clients, audit, the CLI's view, and abuse (malformed metadata, bad redirect
// URIs, too many registrations from one IP).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import * as oidc from 'openid-client';
import { ADMIN, authorize, CALLBACK, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const MCP = 'https://mcp.example.com/mcp';

async function register(gh: { url: string }, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${gh.url}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json().catch(() => ({})) as Record<string, any> };
}

const PUBLIC_CLIENT = { client_name: 'Claude-ish MCP host', redirect_uris: [CALLBACK], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] };

describe('MCP-ready metadata and dynamic client registration (REGISTRATION=open, the default)', () => {
  let gh: TestGatehouse;

  beforeAll(async () => {
    // Registers more clients from one IP than RATE_LIMIT_REGISTER_IP allows (that limit is tested
    // below) and signs in as ADMIN (the admin role's MFA policy is mfa.test.ts's).
    gh = await startTestGatehouse({ env: { MFA_REQUIRED_ROLES: 'none', RATE_LIMITS: 'off' } });
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--scope', 'tools:write');
    // The one scope rule: the signed-in user (ADMIN) must hold the resource's scopes to be given them.
    await gh.cli('role', 'update', 'admin', '--add', 'tools:read', '--add', 'tools:write');
  });
  afterAll(async () => {
    await gh?.close();
  });

  it.each(['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'])('%s lists what MCP clients need', async (path) => {
    const meta = await (await fetch(`${gh.url}${path}`)).json() as Record<string, any>;
    expect(meta.issuer).toBe(gh.url);
    expect(meta.response_types_supported).toContain('code');
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.registration_endpoint).toBe(`${gh.url}/reg`);
    expect(meta.authorization_response_iss_parameter_supported).toBe(true);
    expect(meta.grant_types_supported).toContain('urn:ietf:params:oauth:grant-type:device_code');
    expect(meta.device_authorization_endpoint).toBe(`${gh.url}/device/auth`);
    // CIMD is off unless hosts are allowed.
    expect(meta.client_id_metadata_document_supported).toBeUndefined();
  });

  it('registers a public client (no secret), shows it in the CLI with its origin, and audits it', async () => {
    const { status, body } = await register(gh, PUBLIC_CLIENT);
    expect(status).toBe(201);
    expect(body.client_id).toMatch(/^gh_/);
    expect(body.client_secret).toBeUndefined();
    expect(body.token_endpoint_auth_method).toBe('none');
    expect(body.registration_access_token).toEqual(expect.any(String));
    expect(body.registration_client_uri).toBe(`${gh.url}/reg/${body.client_id}`);
    const listed = (await gh.cli('client', 'list')).find((c: any) => c.client_id === body.client_id);
    expect(listed).toMatchObject({ origin: 'registration', type: 'public', name: PUBLIC_CLIENT.client_name });
    const audit = await gh.deps.db.query<{ outcome: string; details: any }>("SELECT outcome, details FROM audit_events WHERE type = 'client.register' AND client_id = $1", [body.client_id]);
    expect(audit.rows).toEqual([expect.objectContaining({ outcome: 'success', details: expect.objectContaining({ auth_method: 'none', origin: 'registration' }) })]);
    // The secret-free row: nothing sealed.
    const row = await gh.deps.db.query<{ client_secret_enc: string | null }>('SELECT client_secret_enc FROM clients WHERE client_id = $1', [body.client_id]);
    expect(row.rows[0].client_secret_enc).toBeNull();
  });

  it('registers a confidential client whose secret is stored sealed and works at /token', async () => {
    const { status, body } = await register(gh, { client_name: 'Backend host', redirect_uris: ['https://host.example.com/cb'] });
    expect(status).toBe(201);
    expect(body.token_endpoint_auth_method).toBe('client_secret_basic');
    expect(body.client_secret).toEqual(expect.any(String));
    const row = await gh.deps.db.query<{ client_secret_enc: string; metadata: any }>('SELECT client_secret_enc, metadata FROM clients WHERE client_id = $1', [body.client_id]);
    expect(row.rows[0].client_secret_enc).not.toContain(body.client_secret);
    expect(JSON.stringify(row.rows[0].metadata)).not.toContain(body.client_secret);
    // The secret authenticates: a bad grant is refused as invalid_grant (auth passed), not invalid_client.
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${body.client_id}:${body.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: 'nope', redirect_uri: 'https://host.example.com/cb' }),
    });
    expect((await res.json()).error).toBe('invalid_grant');
  });

  it('keeps only OpenID scopes in a registered `scope` (resource scopes are the resource\'s to give)', async () => {
    const { status, body } = await register(gh, { ...PUBLIC_CLIENT, scope: 'openid tools:read offline_access' });
    expect(status).toBe(201);
    expect(body.scope).toBe('openid offline_access');
    const only = await register(gh, { ...PUBLIC_CLIENT, scope: 'tools:read' });
    expect(only.status).toBe(201);
    expect(only.body.scope).toBeUndefined();
  });

  it('manages a registration with its access token (RFC 7592): read, update, delete', async () => {
    const created = (await register(gh, PUBLIC_CLIENT)).body;
    const auth = { authorization: `Bearer ${created.registration_access_token}` };
    const read = await fetch(created.registration_client_uri, { headers: auth });
    expect(read.status).toBe(200);
    expect((await read.json()).client_name).toBe(PUBLIC_CLIENT.client_name);

    const { registration_access_token: _t, registration_client_uri: _u, client_id_issued_at: _i, ...metadata } = created;
    const updated = await fetch(created.registration_client_uri, {
      method: 'PUT', headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ ...metadata, client_name: 'Renamed host' }),
    });
    expect(updated.status).toBe(200);
    const body = await updated.json();
    expect(body.client_name).toBe('Renamed host');
    expect((await gh.cli('client', 'list')).find((c: any) => c.client_id === created.client_id)).toMatchObject({ name: 'Renamed host', origin: 'registration' });

    // An update is held to the same policy.
    const bad = await fetch(created.registration_client_uri, {
      method: 'PUT', headers: { authorization: `Bearer ${body.registration_access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...metadata, redirect_uris: ['javascript:alert(1)'] }),
    });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toBe('invalid_redirect_uri');

    const deleted = await fetch(created.registration_client_uri, { method: 'DELETE', headers: { authorization: `Bearer ${body.registration_access_token}` } });
    expect(deleted.status).toBe(204);
    expect((await gh.cli('client', 'list')).find((c: any) => c.client_id === created.client_id)).toBeUndefined();
  });

  it('enforces PKCE for registered public clients', async () => {
    const { body } = await register(gh, PUBLIC_CLIENT);
    const url = new URL(`${gh.url}/auth`);
    url.search = new URLSearchParams({ client_id: body.client_id, redirect_uri: CALLBACK, response_type: 'code', scope: 'openid', state: 's' }).toString();
    const res = await fetch(url, { redirect: 'manual' });
    const location = new URL(res.headers.get('location')!);
    expect(location.searchParams.get('error')).toBe('invalid_request');
    expect(location.searchParams.get('error_description')).toMatch(/PKCE/);
  });

  it('gives a request without scope the default (DEFAULT_SCOPE + the resource\'s scopes); the token\'s aud is the resource, trailing slash normalised', async () => {
    const { body } = await register(gh, PUBLIC_CLIENT);
    const config = await oidc.discovery(new URL(gh.url), body.client_id, undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] });
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      state: 'st', resource: `${MCP}/`,
    });
    expect(url.searchParams.has('scope')).toBe(false);
    const { callbackUrl } = await authorize(gh, url, ADMIN);
    expect(callbackUrl.searchParams.get('iss')).toBe(gh.url);
    const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: 'st' }, { resource: `${MCP}/` });
    const at = decodeJwt(tokens.access_token);
    expect(at.aud).toBe(MCP);
    expect(String(at.scope).split(' ').sort()).toEqual(['tools:read', 'tools:write']);
    // openid came from DEFAULT_SCOPE: an ID token is issued too.
    expect(tokens.claims()?.sub).toEqual(expect.any(String));
  });

  describe('abuse: clear 4xx answers', () => {
    const cases: [string, unknown, string][] = [
      ['malformed JSON', '{"redirect_uris": [', 'invalid_client_metadata'],
      ['a JSON array', '[]', 'invalid_client_metadata'],
      ['a javascript: redirect URI', { ...PUBLIC_CLIENT, redirect_uris: ['javascript:alert(document.cookie)'] }, 'invalid_redirect_uri'],
      ['a data: redirect URI', { ...PUBLIC_CLIENT, redirect_uris: ['data:text/html,hi'] }, 'invalid_redirect_uri'],
      ['a non-loopback http redirect URI', { ...PUBLIC_CLIENT, redirect_uris: ['http://evil.example.com/cb'] }, 'invalid_redirect_uri'],
      ['a redirect URI with a fragment', { ...PUBLIC_CLIENT, redirect_uris: ['https://app.example.com/cb#x'] }, 'invalid_redirect_uri'],
      ['no redirect URI for the code grant', { client_name: 'x' }, 'invalid_redirect_uri'],
      ['redirect_uris not an array', { ...PUBLIC_CLIENT, redirect_uris: 'https://app.example.com/cb' }, 'invalid_client_metadata'],
      ['a self-declared first-party client', { ...PUBLIC_CLIENT, first_party: true }, 'invalid_client_metadata'],
      ['the client_credentials grant', { ...PUBLIC_CLIENT, grant_types: ['client_credentials'] }, 'invalid_client_metadata'],
      ['the token-exchange grant', { ...PUBLIC_CLIENT, grant_types: ['urn:ietf:params:oauth:grant-type:token-exchange'] }, 'invalid_client_metadata'],
      ['an implicit response type', { ...PUBLIC_CLIENT, response_types: ['token'] }, 'invalid_client_metadata'],
      ['a client-chosen secret', { ...PUBLIC_CLIENT, token_endpoint_auth_method: 'client_secret_basic', client_secret: 'mine' }, 'invalid_client_metadata'],
    ];
    it.each(cases)('refuses %s', async (_name, body, error) => {
      const res = await register(gh, body);
      expect(res.status).toBe(400);
      expect(res.body.error).toBe(error);
      expect(res.body.error_description).toEqual(expect.any(String));
    });

    it('audits refusals', async () => {
      const rows = await gh.deps.db.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events WHERE type = 'client.register' AND outcome = 'failure'");
      expect(rows.rows[0].n).toBeGreaterThanOrEqual(cases.length);
    });
  });
});

describe('registration limits and modes', () => {
  it('answers 429 with Retry-After after too many registrations from one IP', async () => {
    const gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_REGISTER_IP: '3/1h' } });
    try {
      for (let i = 0; i < 3; i++) expect((await register(gh, PUBLIC_CLIENT)).status).toBe(201);
      const refused = await register(gh, PUBLIC_CLIENT);
      expect(refused.status).toBe(429);
      expect(refused.body.error).toBe('slow_down');
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      await gh.close();
    }
  });

  it('REGISTRATION=token requires the initial access token', async () => {
    const token = 'initial-access-token-'.padEnd(40, 'z');
    const gh = await startTestGatehouse({ env: { REGISTRATION: 'token', REGISTRATION_INITIAL_ACCESS_TOKEN: token } });
    try {
      const without = await register(gh, PUBLIC_CLIENT);
      expect(without.status).toBe(401);
      expect(without.body.error).toBe('invalid_token');
      expect((await register(gh, PUBLIC_CLIENT, { authorization: 'Bearer wrong-token' })).status).toBe(401);
      expect((await register(gh, PUBLIC_CLIENT, { authorization: `Bearer ${token}` })).status).toBe(201);
    } finally {
      await gh.close();
    }
  });

  it('REGISTRATION=off has no registration endpoint', async () => {
    const gh = await startTestGatehouse({ env: { REGISTRATION: 'off' } });
    try {
      const meta = await (await fetch(`${gh.url}/.well-known/oauth-authorization-server`)).json() as Record<string, unknown>;
      expect(meta.registration_endpoint).toBeUndefined();
      expect((await register(gh, PUBLIC_CLIENT)).status).toBe(404);
    } finally {
      await gh.close();
    }
  });
});

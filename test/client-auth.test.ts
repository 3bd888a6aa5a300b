// private_key_jwt and client_secret_jwt (RFC 7523, OIDC Core §9) for confidential clients and
// agents: clients made by the CLI (--jwks, --jwks @file, --jwks-uri), the admin API and dynamic
// registration; the client_assertion checks (audience, issuer, expiry, signature, one use, also
// under parallel requests); a jwks_uri fetched through the outbound guard; and an agent that gets
// its own token and then acts for a user (token exchange with an actor token), authenticated by
// key. On PGlite and on PostgreSQL + Redis (clients and used assertion ids live in the database).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { ADMIN, CALLBACK, codeFlow, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';
import { assertion, clientKey, jwksOf, postForm, startJwksServer, type ClientKey } from './helpers/client-auth.ts';
import { readFileArguments } from '../src/cli/main.ts';
import { expectNoTokensInAudit } from './helpers/audit.ts';

const modes: { mode: Mode; run: boolean }[] = [
  { mode: 'embedded', run: true },
  { mode: 'postgres', run: await servicesFor('postgres+redis') },
];
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const MCP = 'https://mcp.example.com/mcp';

describe.each(modes)('private_key_jwt and client_secret_jwt ($mode)', ({ mode, run }) => {
  if (!run) {
    it.skip('needs PostgreSQL and Redis (set REQUIRE_SERVICES=1 to require them)', () => {});
    return;
  }
  let gh: TestGatehouse;
  let jwksServer: Awaited<ReturnType<typeof startJwksServer>>;
  let key: ClientKey;
  let agent: { client_id: string };
  const seen = new Set<string>();
  const token = () => `${gh.url}/token`;
  const cc = async (clientId: string, signed: string, extra: Record<string, string> = {}) => {
    seen.add(signed);
    const r = await postForm(token(), { method: 'jwt', clientId, assertion: signed }, { grant_type: 'client_credentials', ...extra });
    if (r.body.access_token) seen.add(r.body.access_token);
    return r;
  };

  beforeAll(async () => {
    jwksServer = await startJwksServer();
    // localhost is a loopback address: the outbound guard lets it through only when told to.
    // Signs in as ADMIN to test client authentication, not the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ mode, env: { MFA_REQUIRED_ROLES: 'none', CIMD_ALLOW_PRIVATE_ADDRESSES: 'true', CIMD_CA_FILE: jwksServer.ca, REGISTRATION: 'open' } });
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--scope', 'tools:write');
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'admin'");
    key = await clientKey('ES256');
    agent = await gh.cli('client', 'create', '--name', 'Voice agent', '--grant', 'client_credentials', '--grant', TX, '--jwks', JSON.stringify(jwksOf(key)));
    await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', MCP, '--act', '--scope', 'tools:read');
  }, 120_000);
  afterAll(async () => {
    await gh?.close();
    await jwksServer?.close();
  }, 30_000);

  it('creates a private_key_jwt client from --jwks with no secret, and it authenticates with a signed assertion', async () => {
    const row = await gh.deps.db.query<{ client_secret_enc: string | null; metadata: Record<string, unknown> }>('SELECT client_secret_enc, metadata FROM clients WHERE client_id = $1', [agent.client_id]);
    expect(agent).not.toHaveProperty('client_secret');
    expect(row.rows[0].client_secret_enc).toBeNull();
    expect(row.rows[0].metadata).toMatchObject({ token_endpoint_auth_method: 'private_key_jwt', jwks: jwksOf(key) });
    // openid-client as the agent's library: aud = the issuer.
    const config = await oidc.discovery(new URL(gh.url), agent.client_id, {}, oidc.PrivateKeyJwt({ key: key.privateKey, kid: key.kid }), { execute: [oidc.allowInsecureRequests] });
    const tokens = await oidc.clientCredentialsGrant(config, { resource: MCP, scope: 'tools:read' });
    const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: MCP });
    expect(payload).toMatchObject({ client_id: agent.client_id, sub: agent.client_id, scope: 'tools:read' });
    seen.add(tokens.access_token);
  });

  it('checks the assertion as oidc-provider does: audience, issuer, expiry, signing key', async () => {
    const ok = (aud: string | string[]) => assertion(agent.client_id, key, { aud });
    // RFC 7523 §3: the audience identifies the server: the issuer, the token endpoint, or the endpoint it is sent to.
    for (const aud of [gh.url, token(), ['https://elsewhere.example', gh.url]]) {
      const r = await cc(agent.client_id, await ok(aud));
      expect(r.status, `${aud}: ${JSON.stringify(r.body)}`).toBe(200);
    }
    const other = await clientKey('ES256');
    const refused: [string, string][] = [
      [await ok('https://elsewhere.example'), 'another audience'],
      [await ok(`${gh.url}/token/introspection`), 'another endpoint'],
      [await assertion(agent.client_id, key, { aud: gh.url, iss: 'someone-else' }), 'iss is not the client'],
      [await assertion(agent.client_id, key, { aud: gh.url, exp: Math.floor(Date.now() / 1000) - 120 }), 'expired'],
      [await assertion(agent.client_id, { ...other, kid: key.kid }, { aud: gh.url }), 'a key not in the client\'s set'],
      [await assertion(agent.client_id, { secret: 'x'.repeat(43) }, { aud: gh.url }), 'HS256 for a private_key_jwt client'],
    ];
    for (const [signed, why] of refused) {
      const r = await cc(agent.client_id, signed);
      expect([r.status, r.body.error], why).toEqual([401, 'invalid_client']);
      expect(r.body.error_description).toBe('client authentication failed');
    }
    // The assertion is presented to introspection with that endpoint as its audience.
    const t = (await cc(agent.client_id, await ok(gh.url))).body.access_token;
    const intro = await postForm(`${gh.url}/token/introspection`, { method: 'jwt', clientId: agent.client_id, assertion: await ok(`${gh.url}/token/introspection`) }, { token: t });
    expect(intro.status).toBe(200);
    expect(intro.body).toMatchObject({ active: true, client_id: agent.client_id });
    // Revocation authenticates the same way.
    const revoked = await postForm(`${gh.url}/token/revocation`, { method: 'jwt', clientId: agent.client_id, assertion: await ok(gh.url) }, { token: t });
    expect(revoked.status).toBe(200);
    const after = await postForm(`${gh.url}/token/introspection`, { method: 'jwt', clientId: agent.client_id, assertion: await ok(gh.url) }, { token: t });
    expect(after.body).toEqual({ active: false });
    // ... and a secret does not authenticate this client.
    const basic = await postForm(token(), { method: 'client_secret_basic', clientId: agent.client_id, secret: 'guess' }, { grant_type: 'client_credentials' });
    expect([basic.status, basic.body.error]).toEqual([401, 'invalid_client']);
  });

  it('accepts an assertion once, also when twenty requests carry it at the same moment', async () => {
    const signed = await assertion(agent.client_id, key, { aud: gh.url });
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 20 }, () => cc(agent.client_id, signed)));
    const statuses = results.map((r) => r.status);
    console.log(`[${mode}] 20 parallel uses of one client_assertion: ${statuses.filter((s) => s === 200).length} x 200, ${statuses.filter((s) => s === 401).length} x 401, ${Date.now() - started} ms`);
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 401)).toHaveLength(19);
    expect(statuses.some((s) => s >= 500)).toBe(false);
    expect(results.filter((r) => r.status === 401).every((r) => r.body.error === 'invalid_client')).toBe(true);
    // Later, one at a time: still used.
    expect((await cc(agent.client_id, signed)).status).toBe(401);
    // The check itself, without HTTP in between to spread the requests out: one first use.
    const exp = Math.floor(Date.now() / 1000) + 60;
    const firsts = await Promise.all(Array.from({ length: 20 }, () => gh.gh.provider().ReplayDetection.unique(agent.client_id, 'same-jti', exp)));
    expect(firsts.filter(Boolean)).toHaveLength(1);
  });

  if (mode === 'postgres') it('accepts an assertion once across two Gatehouse nodes sharing PostgreSQL + Redis', async () => {
    // A second node of the same deployment: same issuer, database and Redis, its own port.
    const second = await startTestGatehouse({
      mode, databaseUrl: gh.config.DATABASE_URL, redis: { url: gh.config.REDIS_URL!, prefix: gh.config.REDIS_KEY_PREFIX },
      env: { ISSUER: gh.url, MFA_REQUIRED_ROLES: 'none', CIMD_ALLOW_PRIVATE_ADDRESSES: 'true', CIMD_CA_FILE: jwksServer.ca },
    });
    const nodes = [gh.url, `http://127.0.0.1:${(second.server.address() as AddressInfo).port}`];
    try {
      for (let round = 0; round < 5; round++) {
        const signed = await assertion(agent.client_id, key, { aud: gh.url });
        seen.add(signed);
        const results = await Promise.all(nodes.flatMap((u) => Array.from({ length: 5 }, () =>
          postForm(`${u}/token`, { method: 'jwt', clientId: agent.client_id, assertion: signed }, { grant_type: 'client_credentials' }))));
        const statuses = results.map((r) => r.status);
        console.log(`[two nodes] round ${round}: ${statuses.join(' ')}`);
        expect(statuses.filter((s) => s === 200), `round ${round}`).toHaveLength(1);
        expect(statuses.filter((s) => s === 401), `round ${round}`).toHaveLength(9);
      }
    } finally {
      await second.close();
    }
  });

  it('lets an agent authenticated by key act for a user: its own token as actor_token, then token exchange', async () => {
    const web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token');
    // The user's own (Gatehouse-bound) token from a grant that consented to MCP (issue 14: a token
    // for MCP itself is refused as a subject_token).
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { resource: MCP, scope: 'openid tools:read', gatehouseToken: true });
    const actor = (await cc(agent.client_id, await assertion(agent.client_id, key, { aud: gh.url }))).body.access_token;
    const signed = await assertion(agent.client_id, key, { aud: gh.url });
    seen.add(signed);
    const r = await postForm(token(), { method: 'jwt', clientId: agent.client_id, assertion: signed }, {
      grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, actor_token: actor, actor_token_type: AT, resource: MCP,
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    seen.add(r.body.access_token);
    const { payload } = await jwtVerify(r.body.access_token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: MCP });
    expect(payload).toMatchObject({ sub: tokens.claims()!.sub, client_id: agent.client_id, act: { sub: agent.client_id }, scope: 'tools:read' });
  });

  it('fetches the keys from --jwks-uri through the outbound guard', async () => {
    const k = await clientKey('RS256');
    const url = jwksServer.serve(jwksOf(k));
    const c = await gh.cli('client', 'create', '--name', 'Enterprise backend', '--grant', 'client_credentials', '--jwks-uri', url);
    expect(c).not.toHaveProperty('client_secret');
    const r = await cc(c.client_id, await assertion(c.client_id, k, { aud: gh.url }));
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(jwksServer.hits(url)).toBe(1);
    // Cached (at least a minute, oidc-provider): the next request does not fetch again.
    expect((await cc(c.client_id, await assertion(c.client_id, k, { aud: gh.url }))).status).toBe(200);
    expect(jwksServer.hits(url)).toBe(1);
    // A jwks_uri that redirects is not followed.
    const moved = jwksServer.redirect(jwksServer.serve(jwksOf(k)));
    const m = await gh.cli('client', 'create', '--name', 'Moved keys', '--grant', 'client_credentials', '--jwks-uri', moved);
    const r2 = await cc(m.client_id, await assertion(m.client_id, k, { aud: gh.url }));
    expect([r2.status, r2.body.error]).toEqual([401, 'invalid_client']);
    expect(jwksServer.hits(moved)).toBe(1);
  });

  it('reads --jwks @file in the command line, and refuses bad key sets with the reason', async () => {
    const k = await clientKey('EdDSA');
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gh-jwks-file-')), 'agent.jwks.json');
    fs.writeFileSync(file, JSON.stringify(jwksOf(k)));
    const argv = readFileArguments(['client', 'create', '--name', 'From file', '--grant', 'client_credentials', '--jwks', `@${file}`]);
    expect(readFileArguments([`--jwks=@${file}`])).toEqual([`--jwks=${JSON.stringify(jwksOf(k))}`]);
    const c = await gh.cli(...argv);
    expect((await cc(c.client_id, await assertion(c.client_id, k, { aud: gh.url }))).status).toBe(200);

    const bad: [string[], RegExp][] = [
      [['--jwks', `@${file}`], /read by the gatehouse command line/],
      [['--jwks', 'not json'], /must be a JSON Web Key Set/],
      [['--jwks', JSON.stringify({ keys: [{ ...k.publicJwk, d: 'secret' }] })], /public keys only/],
      [['--jwks', JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }] })], /RSA, EC or OKP/],
      [['--jwks', JSON.stringify({ keys: [] })], /at least one key/],
      [['--jwks-uri', 'http://keys.example.com/jwks'], /https/],
      [['--jwks-uri', jwksServer.serve(jwksOf(k)), '--jwks', JSON.stringify(jwksOf(k))], /not both/],
      [['--auth-method', 'private_key_jwt'], /needs the client's public keys/],
      [['--auth-method', 'client_secret_post', '--jwks', JSON.stringify(jwksOf(k))], /keys are for private_key_jwt/],
      [['--type', 'public', '--redirect-uri', CALLBACK, '--jwks', JSON.stringify(jwksOf(k))], /public clients do not authenticate/],
    ];
    for (const [args, message] of bad) {
      await expect(gh.cli('client', 'create', '--name', 'Bad', '--grant', 'client_credentials', ...args), args.join(' ')).rejects.toThrow(message);
    }
  });

  it('creates a private_key_jwt service account through the admin API', async () => {
    const robot = await gh.cli('client', 'create', '--name', 'Provisioner', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    const adminToken = (await postForm(token(), { method: 'client_secret_basic', clientId: robot.client_id, secret: robot.client_secret }, {
      grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin',
    })).body.access_token;
    const k = await clientKey('PS256');
    const res = await fetch(`${gh.url}/admin/api/clients`, {
      method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'HR sync', grant_types: ['client_credentials'], token_endpoint_auth_method: 'private_key_jwt', jwks: jwksOf(k) }),
    });
    const created = await res.json();
    expect(res.status, JSON.stringify(created)).toBe(201);
    expect(created).not.toHaveProperty('client_secret');
    expect(created.metadata).toMatchObject({ token_endpoint_auth_method: 'private_key_jwt' });
    expect((await cc(created.client_id, await assertion(created.client_id, k, { aud: gh.url }))).status).toBe(200);
    const bad = await fetch(`${gh.url}/admin/api/clients`, {
      method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Bad', grant_types: ['client_credentials'], jwks: { keys: [{ ...k.publicJwk, d: 'x' }] } }),
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error_description: expect.stringMatching(/public keys only/) });
  });

  it('registers a private_key_jwt client dynamically (jwks or an https jwks_uri) and it runs the code flow', async () => {
    const k = await clientKey('ES256');
    const url = jwksServer.serve(jwksOf(k));
    const reg = await fetch(`${gh.url}/reg`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'MCP host', redirect_uris: [CALLBACK], token_endpoint_auth_method: 'private_key_jwt', jwks_uri: url }),
    });
    const client = await reg.json();
    expect(reg.status, JSON.stringify(client)).toBe(201);
    expect(client).not.toHaveProperty('client_secret');
    expect(client).toMatchObject({ token_endpoint_auth_method: 'private_key_jwt', jwks_uri: url });
    const config = await oidc.discovery(new URL(gh.url), client.client_id, {}, oidc.PrivateKeyJwt({ key: k.privateKey, kid: k.kid }), { execute: [oidc.allowInsecureRequests] });
    const { tokens } = await codeFlow(gh, config, { scope: 'openid email' });
    expect(tokens.claims()).toMatchObject({ aud: client.client_id, email: ADMIN.email });
    expect(jwksServer.hits(url)).toBe(1);

    const refused: [Record<string, unknown>, RegExp][] = [
      [{ jwks_uri: url.replace('https:', 'http:') }, /jwks_uri: must be an https URL/],
      [{ jwks: { keys: [{ ...k.publicJwk, d: 'x' }] } }, /public keys only/],
      [{ token_endpoint_auth_method: 'tls_client_auth' }, /token_endpoint_auth_method must be one of/],
    ];
    for (const [extra, message] of refused) {
      const r = await fetch(`${gh.url}/reg`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'MCP host', redirect_uris: [CALLBACK], token_endpoint_auth_method: 'private_key_jwt', ...extra }),
      });
      expect(r.status).toBe(400);
      expect(await r.json()).toMatchObject({ error: 'invalid_client_metadata', error_description: expect.stringMatching(message) });
    }
  });

  it('client_secret_jwt: an HS256 assertion with the generated secret, and the secret alone is refused', async () => {
    const c = await gh.cli('client', 'create', '--name', 'Legacy backend', '--grant', 'client_credentials', '--auth-method', 'client_secret_jwt');
    expect(c.client_secret).toEqual(expect.any(String));
    const config = await oidc.discovery(new URL(gh.url), c.client_id, {}, oidc.ClientSecretJwt(c.client_secret), { execute: [oidc.allowInsecureRequests] });
    const tokens = await oidc.clientCredentialsGrant(config);
    expect(tokens.token_type).toBe('bearer');
    const basic = await postForm(token(), { method: 'client_secret_basic', clientId: c.client_id, secret: c.client_secret }, { grant_type: 'client_credentials' });
    expect([basic.status, basic.body.error]).toEqual([401, 'invalid_client']);
    const wrong = await cc(c.client_id, await assertion(c.client_id, { secret: 'not-the-secret' }, { aud: gh.url }));
    expect([wrong.status, wrong.body.error]).toEqual([401, 'invalid_client']);
  });

  it('keeps assertions and tokens out of the audit log', async () => {
    await expectNoTokensInAudit(gh, [...seen]);
  });
});

describe('jwks_uri behind the outbound guard (default settings)', () => {
  let gh: TestGatehouse;
  let jwksServer: Awaited<ReturnType<typeof startJwksServer>>;
  beforeAll(async () => {
    jwksServer = await startJwksServer();
    gh = await startTestGatehouse();
  });
  afterAll(async () => {
    await gh?.close();
    await jwksServer?.close();
  }, 30_000);

  it('does not fetch keys from a loopback or private address: the client cannot authenticate, and nothing reached the server', async () => {
    const k = await clientKey('ES256');
    for (const url of [jwksServer.serve(jwksOf(k)), jwksServer.serve(jwksOf(k)).replace('localhost', '127.0.0.1')]) {
      const c = await gh.cli('client', 'create', '--name', 'Inside', '--grant', 'client_credentials', '--jwks-uri', url);
      const r = await postForm(`${gh.url}/token`, { method: 'jwt', clientId: c.client_id, assertion: await assertion(c.client_id, k, { aud: gh.url }) }, { grant_type: 'client_credentials' });
      expect([r.status, r.body.error], url).toEqual([401, 'invalid_client']);
      expect(jwksServer.hits(url)).toBe(0);
    }
  });
});

// @gatehouse/verify against a running Gatehouse, embedded and on PostgreSQL + Redis: the verifier's
// claims and refusals (audience, typ, scope, revocation, outage), its key cache (refetched when
// Gatehouse rotates to a kid it does not hold), and what a user of the Express, Koa and MCP SDK
// adapters sees: 401/403/503 with the WWW-Authenticate challenge, RFC 9728 metadata, req.auth.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import express from 'express';
import Koa from 'koa';
import { decodeProtectedHeader } from 'jose';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import {
  bearerAuth, createTokenVerifier, koaBearerAuth, mcpTokenVerifier, protectedResourceMetadata, TokenRejectedError, type Authenticated,
} from '@gatehouse/verify';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';

const postgres = await servicesFor('postgres+redis');
const modes: Mode[] = postgres ? ['embedded', 'postgres'] : ['embedded'];
const RESOURCE = 'https://api.example.com/tools';
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };

async function listen(handler: http.RequestListener) {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe.each(modes)('@gatehouse/verify against Gatehouse (%s)', (mode) => {
  let gh: TestGatehouse;
  let web: { client_id: string; client_secret: string };
  let rs: { client_id: string; client_secret: string };
  let bob: string;
  let ghClosed = false;
  const servers: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    gh = await startTestGatehouse({ mode });
    await gh.cli('resource', 'create', '--uri', RESOURCE, '--name', 'Tools API', '--scope', 'tools:read', '--scope', 'tools:write');
    await gh.cli('role', 'update', 'user', '--add', 'tools:read', '--add', 'tools:write');
    bob = (await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--role', 'user')).id;
    web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
    // The resource server's own credentials, for introspection.
    rs = await gh.cli('client', 'create', '--name', 'Tools API', '--grant', 'client_credentials');
  });
  afterAll(async () => {
    for (const s of servers) await s.close();
    if (!ghClosed) await gh?.close();
  });

  /** Bob signs in for the resource (code flow + PKCE + resource): a JWT access token with aud = RESOURCE. */
  async function bobsToken(scope = 'tools:read') {
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: BOB, resource: RESOURCE, scope: `openid ${scope}` });
    return tokens;
  }
  const revoke = (token: string) => fetch(`${gh.url}/token/revocation`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }),
  });
  const rejection = async (p: Promise<unknown>) => {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(TokenRejectedError);
    return err as TokenRejectedError;
  };

  it('returns the RFC 9068 claims of a token for its audience, and refuses other audiences, ID tokens and missing scopes', async () => {
    const tokens = await bobsToken('tools:read');
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE });
    const claims = await verifier.verify(tokens.access_token);
    expect(claims).toMatchObject({ iss: gh.url, sub: bob, aud: RESOURCE, client_id: web.client_id, scope: 'tools:read', jti: expect.any(String) });
    expect(claims.exp - claims.iat).toBeGreaterThan(0);

    let err = await rejection(createTokenVerifier({ issuer: gh.url, audience: 'https://other.example.com/' }).verify(tokens.access_token));
    expect([err.status, err.error, err.message]).toEqual([401, 'invalid_token', expect.stringMatching(/aud/)]);
    // An ID token is a JWT from the same issuer with aud = the client: refused for its typ (RFC 9068 §4).
    err = await rejection(createTokenVerifier({ issuer: gh.url, audience: web.client_id }).verify(tokens.id_token!));
    expect([err.status, err.message]).toEqual([401, expect.stringMatching(/typ/)]);
    err = await rejection(createTokenVerifier({ issuer: `${gh.url}/` , audience: RESOURCE }).verify(tokens.access_token));
    expect(err.message).toMatch(/iss/);
    // requiredScopes on the verifier and per call: 403 insufficient_scope naming what is needed.
    err = await rejection(createTokenVerifier({ issuer: gh.url, audience: RESOURCE, requiredScopes: ['tools:write'] }).verify(tokens.access_token));
    expect([err.status, err.error, err.scope]).toEqual([403, 'insufficient_scope', ['tools:write']]);
    err = await rejection(verifier.verify(tokens.access_token, { requiredScopes: ['tools:read', 'tools:write'] }));
    expect(err.scope).toEqual(['tools:read', 'tools:write']);
    err = await rejection(verifier.verify(`${tokens.access_token.slice(0, -4)}AAAA`));
    expect([err.status, err.error]).toEqual([401, 'invalid_token']);
  });

  it('refuses a revoked token once introspection says so, in parallel, while another token of the user still works', async () => {
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, clientId: rs.client_id, clientSecret: rs.client_secret, cacheSeconds: 0 });
    const [a, b] = [await bobsToken(), await bobsToken()];
    expect((await verifier.verify(a.access_token)).sub).toBe(bob);
    expect((await revoke(a.access_token)).status).toBe(200);
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => verifier.verify(i % 2 ? a.access_token : b.access_token)));
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as TokenRejectedError);
    console.log(`verify-package (${mode}): 20 parallel checks, ${refused.length} refused (10 of them the revoked token)`);
    expect(refused).toHaveLength(10);
    expect(refused.every((e) => e.status === 401 && /revoked/.test(e.message))).toBe(true);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(10);

    // Introspection answering "not you" (wrong credentials) is not "active": refused with 503, fail closed.
    const wrong = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, clientId: rs.client_id, clientSecret: 'not the secret' });
    const err = await rejection(wrong.verify(b.access_token));
    expect([err.status, err.error]).toEqual([503, 'temporarily_unavailable']);
  });

  it('caches the signing keys and fetches them again when Gatehouse signs with a kid it has not seen', async () => {
    const fetched: string[] = [];
    const countingFetch: typeof fetch = (input, init) => {
      const url = String(input instanceof Request ? input.url : input);
      if (url.endsWith('/jwks')) fetched.push(url);
      return fetch(input, init);
    };
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, jwksCooldownSeconds: 1, fetch: countingFetch });
    const before = await bobsToken();
    await verifier.verify(before.access_token);
    await verifier.verify((await bobsToken()).access_token);
    expect(fetched).toHaveLength(1);
    const oldKid = decodeProtectedHeader(before.access_token).kid;
    await gh.cli('keys', 'rotate');
    // Gatehouse reloads its keys every KEYS_REFRESH_SECONDS (1 s in tests); the verifier's cooldown is 1 s too.
    let after = await bobsToken();
    for (let i = 0; i < 50 && decodeProtectedHeader(after.access_token).kid === oldKid; i++) {
      await new Promise((r) => setTimeout(r, 200));
      after = await bobsToken();
    }
    expect(decodeProtectedHeader(after.access_token).kid).not.toBe(oldKid);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await verifier.verify(after.access_token)).sub).toBe(bob);
    expect(fetched).toHaveLength(2);
    // The old key is still published: tokens it signed stay good until they expire.
    expect((await verifier.verify(before.access_token)).sub).toBe(bob);
    expect(fetched).toHaveLength(2);
  });

  it('Express middleware and RFC 9728 metadata: 401 without an error code, 401 invalid_token, 403 insufficient_scope, req.auth', async () => {
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, clientId: rs.client_id, clientSecret: rs.client_secret, cacheSeconds: 0 });
    const metadata = protectedResourceMetadata({ resource: RESOURCE, authorizationServers: gh.url, scopesSupported: ['tools:read', 'tools:write'] });
    const app = express();
    app.use(metadata.handler);
    app.get('/tools', bearerAuth(verifier, { resourceMetadataUrl: metadata.url, requiredScopes: ['tools:read'] }), (req, res) => {
      res.json((req as express.Request & { auth: Authenticated }).auth.extra);
    });
    app.post('/tools', bearerAuth(verifier, { resourceMetadataUrl: metadata.url, requiredScopes: ['tools:write'] }), (_req, res) => void res.json({ ok: true }));
    const s = await listen(app);
    servers.push(s);

    // RFC 6750 §3.1: no token → a challenge with no error code, naming the metadata.
    let res = await fetch(`${s.url}/tools`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${metadata.url}"`);
    expect(metadata.url).toBe('https://api.example.com/.well-known/oauth-protected-resource/tools');
    // The metadata document (served here on a local port under the same path).
    res = await fetch(`${s.url}/.well-known/oauth-protected-resource/tools`);
    expect(await res.json()).toEqual({ resource: RESOURCE, authorization_servers: [gh.url], scopes_supported: ['tools:read', 'tools:write'], bearer_methods_supported: ['header'] });

    res = await fetch(`${s.url}/tools`, { headers: { authorization: 'Bearer not.a.jwt' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token", error_description="[^"]+", resource_metadata="https:\/\/api\.example\.com\/\.well-known\/oauth-protected-resource\/tools"$/);
    expect((await res.json()).error).toBe('invalid_token');
    res = await fetch(`${s.url}/tools`, { headers: { authorization: 'Bearer a b' } });
    expect([res.status, (await res.json()).error]).toEqual([400, 'invalid_request']);

    const token = (await bobsToken('tools:read')).access_token;
    res = await fetch(`${s.url}/tools`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ sub: bob, claims: { client_id: web.client_id, scope: 'tools:read' } });
    // Step-up (MCP): the 403 names the scope a new token must carry.
    res = await fetch(`${s.url}/tools`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer error="insufficient_scope", error_description="token lacks scope tools:write", scope="tools:write", resource_metadata="${metadata.url}"`);
    expect(await res.json()).toEqual({ error: 'insufficient_scope', error_description: 'token lacks scope tools:write', scope: 'tools:write' });
    const stepped = (await bobsToken('tools:read tools:write')).access_token;
    res = await fetch(`${s.url}/tools`, { method: 'POST', headers: { authorization: `Bearer ${stepped}` } });
    expect(res.status).toBe(200);

    expect((await revoke(token)).status).toBe(200);
    res = await fetch(`${s.url}/tools`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: 'invalid_token', error_description: 'token has been revoked' });
  });

  it('Koa middleware answers the same way and sets ctx.state.auth', async () => {
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, clientId: rs.client_id, clientSecret: rs.client_secret, cacheSeconds: 0 });
    const metadata = protectedResourceMetadata({ resource: RESOURCE, authorizationServers: gh.url, scopesSupported: ['tools:read'] });
    const app = new Koa();
    app.use(metadata.koa);
    app.use(koaBearerAuth(verifier, { resourceMetadataUrl: metadata.url, requiredScopes: (ctx) => (ctx.method === 'POST' ? ['tools:write'] : ['tools:read']) }));
    app.use((ctx) => {
      ctx.body = { sub: (ctx.state.auth as Authenticated).claims.sub, scopes: (ctx.state.auth as Authenticated).scopes };
    });
    const s = await listen(app.callback());
    servers.push(s);

    let res = await fetch(`${s.url}/anything`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${metadata.url}"`);
    res = await fetch(`${s.url}${new URL(metadata.url).pathname}`);
    expect(await res.json()).toMatchObject({ resource: RESOURCE, authorization_servers: [gh.url] });
    const token = (await bobsToken('tools:read')).access_token;
    res = await fetch(`${s.url}/anything`, { headers: { authorization: `bearer ${token}` } });
    expect([res.status, await res.json()]).toEqual([200, { sub: bob, scopes: ['tools:read'] }]);
    res = await fetch(`${s.url}/anything`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer error="insufficient_scope", .*scope="tools:write", resource_metadata=/);
  });

  it("the MCP SDK's requireBearerAuth takes mcpTokenVerifier: req.auth is the SDK's AuthInfo; revoked and foreign tokens get 401", async () => {
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, clientId: rs.client_id, clientSecret: rs.client_secret, cacheSeconds: 0 });
    const app = express();
    const resourceMetadataUrl = protectedResourceMetadata({ resource: RESOURCE, authorizationServers: gh.url }).url;
    app.get('/mcp', requireBearerAuth({ verifier: mcpTokenVerifier(verifier), requiredScopes: ['tools:read'], resourceMetadataUrl, expectedResource: new URL(RESOURCE) }), (req, res) => {
      const { token: _t, claims: _c, ...auth } = req.auth as Authenticated;
      res.json({ ...auth, resource: String(auth.resource) });
    });
    const s = await listen(app);
    servers.push(s);

    const token = (await bobsToken('tools:read')).access_token;
    let res = await fetch(`${s.url}/mcp`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const auth = await res.json();
    expect(auth).toMatchObject({ clientId: web.client_id, scopes: ['tools:read'], expiresAt: expect.any(Number), resource: RESOURCE, extra: { sub: bob } });

    expect((await revoke(token)).status).toBe(200);
    res = await fetch(`${s.url}/mcp`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer error="invalid_token", error_description="token has been revoked".*resource_metadata=/);

    // A Gatehouse token for another audience is no good here either.
    const other = createTokenVerifier({ issuer: gh.url, audience: 'https://elsewhere.example.com/' });
    const app2 = express();
    app2.get('/mcp', requireBearerAuth({ verifier: mcpTokenVerifier(other) }), (_req, res) => void res.json({}));
    const s2 = await listen(app2);
    servers.push(s2);
    res = await fetch(`${s2.url}/mcp`, { headers: { authorization: `Bearer ${(await bobsToken()).access_token}` } });
    expect(res.status).toBe(401);
  });

  it('fails closed when Gatehouse is down: 503 with Retry-After from the middleware', async () => {
    const verifier = createTokenVerifier({ issuer: gh.url, audience: RESOURCE, clientId: rs.client_id, clientSecret: rs.client_secret });
    const app = express();
    app.get('/tools', bearerAuth(verifier), (_req, res) => void res.json({ ok: true }));
    const s = await listen(app);
    servers.push(s);
    const token = (await bobsToken()).access_token;
    // A verifier that has never fetched the keys cannot check anything either.
    const fresh = createTokenVerifier({ issuer: gh.url, audience: RESOURCE });
    await gh.close();
    ghClosed = true;
    const res = await fetch(`${s.url}/tools`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('5');
    expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable' });
    const err = await rejection(fresh.verify(token));
    expect([err.status, err.error]).toEqual([503, 'temporarily_unavailable']);
  });
});

// Black-box OIDC flows against a running Gatehouse with openid-client as the relying party,
// in embedded mode (PGlite + in-process store) and on PostgreSQL + Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { ADMIN, Browser, CALLBACK, authorize, codeFlow, formOf, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';

const modes: { mode: Mode; run: boolean }[] = [
  { mode: 'embedded', run: true },
  { mode: 'postgres', run: await servicesFor('postgres+redis') },
];

describe.each(modes)('OIDC flows ($mode)', ({ mode, run }) => {
  if (!run) {
    it.skip('needs PostgreSQL and Redis (set REQUIRE_SERVICES=1 to require them)', () => {});
    return;
  }
  let gh: TestGatehouse;
  let web: { client_id: string; client_secret: string };
  let spa: { client_id: string };
  let agent: { client_id: string; client_secret: string };
  const RESOURCE = 'https://mcp.example.com/mcp';

  beforeAll(async () => {
    // Signs in as ADMIN to test the OIDC flows, not the admin role's MFA requirement (mfa.test.ts has that).
    gh = await startTestGatehouse({ mode, env: { MFA_REQUIRED_ROLES: 'none' } });
    web = await gh.cli('client', 'create', '--name', 'Web App', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', 'http://127.0.0.1:8976/bye');
    spa = await gh.cli('client', 'create', '--name', 'SPA', '--type', 'public', '--redirect-uri', CALLBACK, '--first-party');
    agent = await gh.cli('client', 'create', '--name', 'Agent', '--grant', 'client_credentials');
    await gh.cli('resource', 'create', '--uri', RESOURCE, '--scope', 'tools:read', '--scope', 'tools:write');
  });
  afterAll(async () => gh?.close());

  it('serves discovery at both well-known paths', async () => {
    const a = await (await fetch(`${gh.url}/.well-known/openid-configuration`)).json();
    const b = await (await fetch(`${gh.url}/.well-known/oauth-authorization-server`)).json();
    expect(a.issuer).toBe(gh.url);
    expect(b).toEqual(a);
    expect(a.code_challenge_methods_supported).toEqual(['S256']);
    for (const k of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint', 'introspection_endpoint',
      'revocation_endpoint', 'end_session_endpoint', 'pushed_authorization_request_endpoint', 'device_authorization_endpoint']) {
      expect(a[k], k).toMatch(/^http:\/\/127\.0\.0\.1:\d+\//);
    }
    const jwks = await (await fetch(a.jwks_uri)).json();
    expect(jwks.keys.map((k: { alg: string }) => k.alg).sort()).toEqual(['ES256', 'RS256']);
    expect(jwks.keys.every((k: Record<string, unknown>) => !('d' in k))).toBe(true);
  });

  it('logs a user in with code + PKCE and returns a valid ID token with roles', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config);
    const claims = tokens.claims()!;
    expect(claims.iss).toBe(gh.url);
    expect(claims.aud).toBe(web.client_id);
    expect(claims.email).toBe(ADMIN.email);
    expect(claims.roles).toEqual(['admin']);
    expect(claims.amr).toEqual(['pwd']);
    expect(decodeProtectedHeader(tokens.id_token!).alg).toBe('RS256');
    expect(tokens.refresh_token).toBeTruthy();
    const info = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
    expect(info.email).toBe(ADMIN.email);
    expect(info.permissions).toContain('gatehouse:admin');
  });

  it('skips consent for a first-party public client and requires PKCE from it', async () => {
    const config = await rpConfig(gh, spa.client_id);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const browser = new Browser();
    const login = await browser.follow(oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid email', state, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    }).href, gh.url);
    const { action, fields } = formOf(login.html!, '/login');
    const after = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: ADMIN.email, password: ADMIN.password } });
    // From the password straight back to the client: no consent page in between.
    expect(after.html).toBeUndefined();
    expect(after.url.startsWith(`${CALLBACK}?`)).toBe(true);
    const tokens = await oidc.authorizationCodeGrant(config, new URL(after.url), { pkceCodeVerifier: verifier, expectedState: state });
    expect(tokens.claims()!.email).toBe(ADMIN.email);

    const noPkce = oidc.buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: 'openid' });
    noPkce.searchParams.delete('code_challenge');
    const res = await fetch(noPkce, { redirect: 'manual' });
    const loc = new URL(res.headers.get('location')!);
    expect(loc.origin + loc.pathname).toBe(CALLBACK);
    expect(loc.searchParams.get('error')).toBe('invalid_request');
    expect(loc.searchParams.get('error_description')).toMatch(/PKCE/);
  });

  it('takes pushed authorization requests (PAR): the browser carries only a single-use request_uri', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = await oidc.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: CALLBACK, scope: 'openid email', state, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    expect([...url.searchParams.keys()].sort()).toEqual(['client_id', 'request_uri']);
    expect(url.searchParams.get('request_uri')).toMatch(/^urn:ietf:params:oauth:request_uri:/);
    const { callbackUrl } = await authorize(gh, url, ADMIN);
    const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state });
    expect(tokens.claims()!.email).toBe(ADMIN.email);
    // Used once, the request_uri is gone: no second sign-in from the same pushed request.
    const again = await fetch(url, { redirect: 'manual' });
    const loc = new URL(again.headers.get('location')!);
    expect(loc.origin + loc.pathname).toBe(CALLBACK);
    expect(loc.searchParams.get('error')).toBe('invalid_request_uri');
    expect(loc.searchParams.get('code')).toBeNull();
  });

  it('rotates refresh tokens, and reuse of a rotated one revokes the whole grant', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config);
    const first = tokens.refresh_token!;
    const second = await oidc.refreshTokenGrant(config, first);
    expect(second.refresh_token).toBeTruthy();
    expect(second.refresh_token).not.toBe(first);
    // Reuse of the rotated token: refused, and the newer token dies with the grant.
    await expect(oidc.refreshTokenGrant(config, first)).rejects.toMatchObject({ error: 'invalid_grant' });
    await expect(oidc.refreshTokenGrant(config, second.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    const intro = await oidc.tokenIntrospection(config, second.access_token);
    expect(intro.active).toBe(false);
  });

  it('issues RFC 9068 JWT access tokens to client credentials for a registered resource', async () => {
    const config = await rpConfig(gh, agent.client_id, agent.client_secret);
    const t = await oidc.clientCredentialsGrant(config, { resource: RESOURCE, scope: 'tools:read' });
    expect(t.token_type.toLowerCase()).toBe('bearer');
    expect(t.expires_in).toBeLessThanOrEqual(900);
    const jwks = createRemoteJWKSet(new URL(`${gh.url}/jwks`));
    const { payload, protectedHeader } = await jwtVerify(t.access_token, jwks, { issuer: gh.url, audience: RESOURCE, typ: 'at+jwt' });
    expect(protectedHeader.alg).toBe('ES256');
    expect(payload.client_id).toBe(agent.client_id);
    expect(payload.scope).toBe('tools:read');
    await expect(jwtVerify(t.access_token, jwks, { issuer: gh.url, audience: 'https://other.example.com' })).rejects.toThrow();
    // A resource that is not registered is refused.
    await expect(oidc.clientCredentialsGrant(config, { resource: 'https://unknown.example.com/' })).rejects.toMatchObject({ error: 'invalid_target' });
  });

  it('introspects a token as active, and inactive after revocation', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config);
    const before = await oidc.tokenIntrospection(config, tokens.access_token);
    expect(before.active).toBe(true);
    expect(before.sub).toBe(tokens.claims()!.sub);
    await oidc.tokenRevocation(config, tokens.refresh_token!);
    // Revoking a refresh token revokes its grant: the access token from the same grant dies too.
    expect((await oidc.tokenIntrospection(config, tokens.refresh_token!)).active).toBe(false);
    expect((await oidc.tokenIntrospection(config, tokens.access_token)).active).toBe(false);
  });

  it('ends the session at RP-initiated logout', async () => {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const browser = new Browser();
    const { tokens } = await codeFlow(gh, config, { browser });
    const endUrl = oidc.buildEndSessionUrl(config, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: 'http://127.0.0.1:8976/bye', state: 's1' });
    const page = await browser.follow(endUrl.href, gh.url);
    expect(page.res.status).toBe(200);
    const form = /<form[^>]*id="op.logoutForm"[^>]*action="([^"]+)"[\s\S]*?<\/form>/.exec(page.html!)!;
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(form[0])![1];
    const done = await browser.follow(new URL(form[1], gh.url).href, gh.url, { form: { xsrf, logout: 'yes' } });
    expect(done.url).toBe('http://127.0.0.1:8976/bye?state=s1');
    // The session is gone: a new authorization request shows the login page again.
    const again = await browser.follow(oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    }).href, gh.url);
    expect(again.html).toMatch(/name="password"/);
    const events = await gh.deps.db.query<{ type: string }>("SELECT type FROM audit_events WHERE type = 'logout'");
    expect(events.rowCount).toBeGreaterThan(0);
  });
});

// Issue 19, part 2: the Identity Assertion JWT Authorization Grant (ID-JAG) between two Gatehouses,
// as the MCP specification's enterprise-managed authorization uses it. `idp` is the enterprise's
// IdP: the user signs in there and the MCP client exchanges the ID token for an ID-JAG (RFC 8693).
// `as` is the MCP server's authorization server: it trusts idp through an enterprise connection
// and redeems the ID-JAG (RFC 7523 jwt-bearer) for an access token to the MCP server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey } from 'jose';
import { CALLBACK, codeFlow, describeEachMode, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { expectNoTokensInAudit } from './helpers/audit.ts';
import { postForm } from './helpers/client-auth.ts';
import { createTestRedisPrefix } from './helpers/databases.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const REFRESH = 'urn:ietf:params:oauth:token-type:refresh_token';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
// The MCP server's authorization server is a second Gatehouse; its issuer is known once it listens.
const MCP = 'https://mcp.chat.example/mcp';
const DOCS = 'https://docs.chat.example/mcp';
const FRANK = { email: 'frank@initech.test', password: 'frank has a long password' };

type Client = { client_id: string; client_secret: string };
const seenTokens = new Set<string>();

/** POST /token as `client` (client_secret_basic); a parameter given as [] is left out. */
async function tokenRequest(gh: { url: string }, client: Client, params: Record<string, string | never[]>) {
  const form = Object.fromEntries(Object.entries(params).filter((e): e is [string, string] => typeof e[1] === 'string'));
  const res = await postForm(`${gh.url}/token`, { method: 'client_secret_basic', clientId: client.client_id, secret: client.client_secret }, form);
  for (const t of [form.subject_token, form.assertion, res.body.access_token, res.body.refresh_token]) if (typeof t === 'string') seenTokens.add(t);
  return res;
}

let idp: TestGatehouse;
/** The MCP client as registered at the IdP (signs users in, exchanges for ID-JAGs). */
let app: Client;
/** Another client at the IdP, with no ID-JAG policy. */
let plain: Client;
/** The issuer of the MCP server's authorization server (a second Gatehouse, per suite below). */
const AS_ISSUER = 'http://127.0.0.1:1/';
let frank: { idToken: string; refresh: string; accessToken: string; sub: string };

beforeAll(async () => {
  idp = await startTestGatehouse();
  await idp.cli('user', 'create', '--email', FRANK.email, '--password', FRANK.password, '--name', 'Frank', '--verified');
  const grants = ['--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX];
  app = await idp.cli('client', 'create', '--name', 'Chat MCP client', '--redirect-uri', CALLBACK, '--first-party', ...grants);
  plain = await idp.cli('client', 'create', '--name', 'Plain app', '--redirect-uri', CALLBACK, '--first-party', ...grants);
  const signedIn = await codeFlow(idp, await rpConfig(idp, app.client_id, app.client_secret), { creds: FRANK });
  frank = { idToken: signedIn.tokens.id_token!, refresh: signedIn.tokens.refresh_token!, accessToken: signedIn.tokens.access_token, sub: signedIn.tokens.claims()!.sub };
  seenTokens.add(frank.idToken).add(frank.refresh).add(frank.accessToken);
  await idp.cli('policy', 'id-jag', 'set', app.client_id, '--audience', AS_ISSUER, '--target-client-id', 'chat-client-at-as',
    '--resource', MCP, '--scope', 'chat.read', '--scope', 'chat.history');
}, 60_000);
afterAll(async () => idp?.close());

const idJagRequest = (client: Client, params: Record<string, string | never[]> = {}) => tokenRequest(idp, client, {
  grant_type: TX, requested_token_type: ID_JAG, subject_token: frank.idToken, subject_token_type: ID_TOKEN,
  audience: AS_ISSUER, resource: MCP, scope: 'chat.read chat.history', ...params,
});

describe('ID-JAG: Gatehouse as the enterprise IdP', () => {
  it("exchanges the user's ID token for a signed ID-JAG addressed to the other authorization server", async () => {
    const { status, body } = await idJagRequest(app);
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ issued_token_type: ID_JAG, token_type: 'N_A', scope: 'chat.read chat.history' });
    expect(body.expires_in).toBeGreaterThan(0);
    expect(body.expires_in).toBeLessThanOrEqual(300);
    expect(body.refresh_token).toBeUndefined();
    expect(decodeProtectedHeader(body.access_token)).toMatchObject({ typ: 'oauth-id-jag+jwt', alg: 'ES256' });
    // Signed with the IdP's published keys.
    const { payload } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(`${idp.url}/jwks`)), { typ: 'oauth-id-jag+jwt' });
    expect(payload).toMatchObject({
      iss: idp.url, sub: frank.sub, aud: AS_ISSUER, client_id: 'chat-client-at-as', resource: MCP, scope: 'chat.read chat.history',
      email: FRANK.email, email_verified: true, amr: ['pwd'],
    });
    expect(payload.jti).toEqual(expect.any(String));
    expect(payload.exp! - payload.iat!).toBe(body.expires_in);
    expect(typeof payload.auth_time).toBe('number');
    const [row] = (await idp.deps.db.query<{ outcome: string; subject: string; client_id: string; details: any }>(
      "SELECT outcome, subject, client_id, details FROM audit_events WHERE type = 'token.exchange' ORDER BY id DESC LIMIT 1")).rows;
    expect(row).toMatchObject({ outcome: 'success', subject: frank.sub, client_id: app.client_id,
      details: { target_type: 'id-jag', target: AS_ISSUER, resource: MCP, target_client_id: 'chat-client-at-as', scopes: ['chat.read', 'chat.history'] } });
  });

  it('narrows the scope to the policy, and gives all of it when none is asked', async () => {
    expect((await idJagRequest(app, { scope: 'chat.read chat.delete' })).body.scope).toBe('chat.read');
    const all = await idJagRequest(app, { scope: [] });
    expect(all.body.scope).toBe('chat.read chat.history');
    expect(decodeJwt(all.body.access_token).scope).toBe('chat.read chat.history');
  });

  it('takes a refresh token of the same client as the subject token', async () => {
    const { status, body } = await idJagRequest(app, { subject_token: frank.refresh, subject_token_type: REFRESH });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(decodeJwt(body.access_token)).toMatchObject({ sub: frank.sub, aud: AS_ISSUER });
  });

  it('refuses what the policy or the subject token does not allow, each with its own error, and audits it', async () => {
    const since = Number((await idp.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0) AS id FROM audit_events')).rows[0].id);
    const cases: [Client, Record<string, string | never[]>, string, RegExp][] = [
      [plain, {}, 'unauthorized_client', /no ID-JAG policy/],
      [app, { audience: 'https://elsewhere.example/' }, 'invalid_target', /for this audience/],
      [app, { resource: 'https://mcp.chat.example/other' }, 'invalid_target', /for this resource/],
      [app, { audience: [] }, 'invalid_target', /audience is required/],
      [app, { resource: [] }, 'invalid_target', /resource is required/],
      [app, { scope: 'chat.delete' }, 'invalid_scope', /ID-JAG policy allows none of chat.delete/],
      // The ID token must be this client's (the draft: the assertion's audience is the requesting client).
      [app, { subject_token: await otherClientsIdToken() }, 'invalid_request', /issued to another client/],
      // An access token is not an identity assertion.
      [app, { subject_token: frank.accessToken }, 'invalid_request', /not an ID token/],
      [app, { subject_token_type: AT }, 'invalid_request', /subject_token_type must be/],
      [app, { subject_token: `${frank.idToken.slice(0, -4)}AAAA` }, 'invalid_request', /not a valid ID token/],
      [app, { subject_token: 'not-a-refresh-token', subject_token_type: REFRESH }, 'invalid_request', /not an active refresh token/],
    ];
    for (const [client, params, error, description] of cases) {
      const { status, body } = await idJagRequest(client, params);
      expect(status, JSON.stringify(params)).toBe(400);
      expect(body.error, JSON.stringify(params)).toBe(error);
      expect(body.error_description).toMatch(description);
    }
    const rows = (await idp.deps.db.query<{ outcome: string; details: any }>(
      "SELECT outcome, details FROM audit_events WHERE type = 'token.exchange' AND id > $1 ORDER BY id", [since])).rows;
    expect(rows.map((r) => [r.outcome, r.details.target_type, r.details.error])).toEqual(cases.map(([, , error]) => ['failure', 'id-jag', error]));
  });

  it('refuses a public client (the draft: confidential clients only)', async () => {
    const spa = await idp.cli('client', 'create', '--name', 'Public SPA', '--type', 'public', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', TX);
    await idp.cli('policy', 'id-jag', 'set', spa.client_id, '--audience', AS_ISSUER, '--target-client-id', 'spa-at-as', '--resource', MCP);
    const { status, body } = await postForm(`${idp.url}/token`, { method: 'none', clientId: spa.client_id }, {
      grant_type: TX, requested_token_type: ID_JAG, subject_token: frank.idToken, subject_token_type: ID_TOKEN, audience: AS_ISSUER, resource: MCP,
    });
    expect([status, body.error, body.error_description]).toEqual([400, 'unauthorized_client', 'ID-JAGs are issued only to confidential clients']);
  });

  it('refuses the ID token of a user who has since been disabled', async () => {
    const other = { email: 'gina@initech.test', password: 'gina has a long password' };
    await idp.cli('user', 'create', '--email', other.email, '--password', other.password, '--verified');
    const { tokens } = await codeFlow(idp, await rpConfig(idp, app.client_id, app.client_secret), { creds: other });
    seenTokens.add(tokens.id_token!);
    await idp.cli('user', 'disable', '--email', other.email);
    const { status, body } = await idJagRequest(app, { subject_token: tokens.id_token! });
    expect(status).toBe(400);
    expect(body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/revoked|disabled/) });
  });

  it('never writes a token to the audit log', async () => {
    await expectNoTokensInAudit(idp, seenTokens);
  });
});

/** Frank's ID token from another client of the IdP. */
async function otherClientsIdToken() {
  const { tokens } = await codeFlow(idp, await rpConfig(idp, plain.client_id, plain.client_secret), { creds: FRANK });
  seenTokens.add(tokens.id_token!);
  return tokens.id_token!;
}

describeEachMode("ID-JAG: Gatehouse as the MCP server's authorization server", (mode) => {
  let as: TestGatehouse;
  /** The MCP client as registered at the authorization server; `other` is a second client of it. */
  let client: Client, other: Client;
  /** A second enterprise IdP, whose keys the connection holds inline: it signs whatever a case needs. */
  const FABRIKAM = 'https://login.fabrikam.example';
  let fabrikamKey: CryptoKey;
  const now = () => Math.floor(Date.now() / 1000);

  // PostgreSQL + Redis: Redis behind a proxy the outage case can cut.
  let redisProxy: TcpProxy | undefined;
  let redisCleanup: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    if (mode === 'postgres') {
      const r = await createTestRedisPrefix();
      const u = new URL(r.url);
      redisProxy = await startTcpProxy(u.hostname, Number(u.port || 6379));
      redisCleanup = r.cleanup;
      // A short store timeout, so the outage case answers quickly.
      as = await startTestGatehouse({ mode, redis: { url: redisProxy.url(r.url), prefix: r.prefix }, env: { REDIS_TIMEOUT_MS: '500' } });
    } else {
      as = await startTestGatehouse({ mode });
    }
    await as.cli('resource', 'create', '--uri', MCP, '--scope', 'chat.read', '--scope', 'chat.history', '--scope', 'chat.admin');
    await as.cli('resource', 'create', '--uri', DOCS, '--scope', 'docs.read');
    // Frank's role here holds chat.read and chat.history; chat.admin is nobody's.
    await as.cli('role', 'create', 'chat-user', '--permission', 'chat.read', '--permission', 'chat.history', '--permission', 'docs.read');
    [client, other] = await Promise.all(['Chat MCP client', 'Second client'].map((name) =>
      as.cli('client', 'create', '--name', name, '--grant', JWT_BEARER)));
    // Trust the IdP for ID-JAGs: its keys from its discovery document, new users provisioned.
    await as.cli('connection', 'create', 'initech', '--issuer', idp.url, '--client-id', 'as-at-initech', '--id-jag', 'on',
      '--id-jag-client', client.client_id, '--id-jag-client', other.client_id, '--id-jag-resource', MCP, '--default-role', 'chat-user');
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    fabrikamKey = privateKey;
    await as.cli('connection', 'create', 'fabrikam', '--issuer', FABRIKAM, '--client-id', 'as-at-fabrikam', '--id-jag', 'on', '--jit', 'off',
      '--id-jag-jwks', JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'f1', alg: 'ES256' }] }),
      '--id-jag-client', client.client_id, '--id-jag-resource', MCP, '--default-role', 'chat-user');
    // The IdP's side: the MCP client may get ID-JAGs for this server's MCP server (more scopes than
    // Frank holds here: this server bounds them).
    await idp.cli('policy', 'id-jag', 'set', app.client_id, '--audience', as.url, '--target-client-id', client.client_id,
      '--resource', MCP, '--scope', 'chat.read', '--scope', 'chat.history', '--scope', 'chat.admin');
  }, 60_000);
  afterAll(async () => {
    await as?.close();
    await redisProxy?.close();
    await redisCleanup?.();
  });

  /** A fresh ID-JAG from the IdP for this server. */
  async function idJag(params: Record<string, string | never[]> = {}) {
    const { status, body } = await idJagRequest(app, { audience: as.url, scope: 'chat.read chat.history', ...params });
    expect(status, JSON.stringify(body)).toBe(200);
    return body.access_token as string;
  }
  const redeem = (assertion: string, by: Client = client, params: Record<string, string> = {}) =>
    tokenRequest(as, by, { grant_type: JWT_BEARER, assertion, ...params });
  /** An ID-JAG signed by Fabrikam's key (or `key`), with claims overridden by `claims`. */
  const fabrikamJag = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) => {
    const { iat = now(), exp = now() + 300, ...rest } = claims;
    return new SignJWT({ sub: 'fab-42', aud: as.url, client_id: client.client_id, resource: MCP, scope: 'chat.read', jti: crypto.randomUUID(), email: 'frank@initech.test', email_verified: true, ...rest })
      .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'f1', ...header })
      .setIssuer(FABRIKAM).setIssuedAt(iat as number).setExpirationTime(exp as number)
      .sign(fabrikamKey);
  };

  it('redeems an ID-JAG from the trusted IdP for an access token to the MCP server, provisioning the user', async () => {
    const { status, body } = await redeem(await idJag());
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body).toMatchObject({ token_type: 'Bearer', scope: 'chat.read chat.history' });
    expect(body.refresh_token).toBeUndefined();
    expect(body.expires_in).toBeLessThanOrEqual(900);
    const { payload, protectedHeader } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(`${as.url}/jwks`)), { issuer: as.url, audience: MCP });
    expect(protectedHeader.typ).toBe('at+jwt');
    const [user] = (await as.deps.db.query<{ id: string; email: string }>('SELECT id, email FROM users WHERE email = $1', [FRANK.email])).rows;
    expect(payload).toMatchObject({ sub: user.id, client_id: client.client_id, scope: 'chat.read chat.history', amr: ['fed'] });
    const [link] = (await as.deps.db.query<{ connection: string; subject: string; user_id: string }>('SELECT connection, subject, user_id FROM federated_identities')).rows;
    expect(link).toEqual({ connection: 'initech', subject: frank.sub, user_id: user.id });
    const [row] = (await as.deps.db.query<{ outcome: string; subject: string; client_id: string; details: any }>(
      "SELECT outcome, subject, client_id, details FROM audit_events WHERE type = 'token.id_jag' ORDER BY id DESC LIMIT 1")).rows;
    expect(row).toMatchObject({ outcome: 'success', subject: user.id, client_id: client.client_id,
      details: { connection: 'initech', issuer: idp.url, upstream_subject: frank.sub, resource: MCP, scopes: ['chat.read', 'chat.history'], account: 'jit' } });
    // The next one finds the linked account.
    expect((await redeem(await idJag({ scope: 'chat.read' }))).body.scope).toBe('chat.read');
  });

  it('advertises the grant and the ID-JAG profile in discovery', async () => {
    const doc = await (await fetch(`${as.url}/.well-known/oauth-authorization-server`)).json();
    expect(doc.grant_types_supported).toContain(JWT_BEARER);
    expect(doc.authorization_grant_profiles_supported).toEqual(['urn:ietf:params:oauth:grant-profile:id-jag']);
  });

  it('redeems each ID-JAG once: of parallel redemptions exactly one succeeds, and a later one is refused', async () => {
    const assertion = await idJag();
    const results = await Promise.all(Array.from({ length: 8 }, () => redeem(assertion)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    for (const r of results.filter((x) => x.status !== 200)) {
      expect(r).toMatchObject({ status: 400, body: { error: 'invalid_grant', error_description: expect.stringMatching(/already been used/) } });
    }
    expect((await redeem(assertion)).body.error_description).toMatch(/already been used/);
  });

  it('refuses each bad ID-JAG with its own error, and audits it', async () => {
    const since = Number((await as.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0) AS id FROM audit_events')).rows[0].id);
    const { privateKey: strangerKey } = await generateKeyPair('ES256');
    const cases: [string, () => Promise<{ status: number; body: Record<string, any> }>, number, string, RegExp][] = [
      ['wrong aud', async () => redeem(await idJag({ audience: AS_ISSUER })), 400, 'invalid_grant', /aud is not this server's issuer/],
      ['aud with two values', async () => redeem(await fabrikamJag({ aud: [as.url, 'https://other.example'] })), 400, 'invalid_grant', /aud is not this server's issuer/],
      ['expired', async () => redeem(await fabrikamJag({ iat: now() - 900, exp: now() - 600 })), 400, 'invalid_grant', /has expired/],
      ['issued in the future', async () => redeem(await fabrikamJag({ iat: now() + 600, exp: now() + 900 })), 400, 'invalid_grant', /iat/],
      ['too long-lived', async () => redeem(await fabrikamJag({ exp: now() + 7200 })), 400, 'invalid_grant', /longer than 3600 seconds/],
      ['untrusted issuer', async () => redeem(await new SignJWT({ sub: 'x', aud: as.url, client_id: client.client_id, resource: MCP, jti: 'j' })
        .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt' }).setIssuer('https://evil.example').setIssuedAt().setExpirationTime('5m').sign(strangerKey)),
      400, 'invalid_grant', /issuer is not trusted/],
      ['signed with another key', async () => redeem(await new SignJWT({ sub: 'fab-42', aud: as.url, client_id: client.client_id, resource: MCP, jti: 'k' })
        .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid: 'f1' }).setIssuer(FABRIKAM).setIssuedAt().setExpirationTime('5m').sign(strangerKey)),
      400, 'invalid_grant', /signature does not verify/],
      ['not typed as an ID-JAG (an ID token)', () => redeem(frank.idToken), 400, 'invalid_grant', /typ must be oauth-id-jag\+jwt/],
      ['client_id is another client', async () => redeem(await idJag(), other), 400, 'invalid_grant', /client_id is not the authenticated client/],
      ['client not allowed for the issuer', async () => redeem(await fabrikamJag({ client_id: other.client_id }), other), 400, 'unauthorized_client', /may not redeem ID-JAGs from fabrikam/],
      ['resource not allowed for the issuer', async () => redeem(await fabrikamJag({ resource: DOCS, scope: 'docs.read' })), 400, 'invalid_target', /may not be used for this resource/],
      ['no resource', async () => redeem(await fabrikamJag({ resource: undefined })), 400, 'invalid_grant', /names no resource/],
      ['scope beyond what the user holds here', async () => redeem(await idJag({ scope: 'chat.admin' })), 400, 'invalid_scope', /user's roles do not hold chat.admin/],
      ['scope beyond the ID-JAG', async () => redeem(await idJag({ scope: 'chat.read' }), client, { scope: 'chat.history' }), 400, 'invalid_scope', /the ID-JAG allows none of chat.history/],
      ['unknown user and no provisioning', async () => redeem(await fabrikamJag({ sub: 'fab-43', email: 'nobody@fabrikam.example' })), 400, 'invalid_grant', /There is no account for nobody@fabrikam.example/],
      ['no assertion', () => tokenRequest(as, client, { grant_type: JWT_BEARER }), 400, 'invalid_request', /assertion/],
    ];
    for (const [name, run, status, error, description] of cases) {
      const { status: got, body } = await run();
      expect(got, name).toBe(status);
      expect(body.error, `${name}: ${JSON.stringify(body)}`).toBe(error);
      expect(body.error_description, name).toMatch(description);
    }
    const rows = (await as.deps.db.query<{ outcome: string; details: any }>(
      "SELECT outcome, details FROM audit_events WHERE type = 'token.id_jag' AND id > $1 ORDER BY id", [since])).rows;
    expect(rows.map((r) => [r.outcome, r.details.error])).toEqual(cases.map(([, , , error]) => ['failure', error]));
  });

  it.runIf(mode === 'postgres')('with Redis down: 503 with Retry-After; once it is back, redemptions work and the interrupted ID-JAG is redeemed at most once', async () => {
    const interrupted = await idJag();
    redisProxy!.cut('refuse');
    let down;
    try {
      down = await tokenRequest(as, client, { grant_type: JWT_BEARER, assertion: interrupted });
    } finally {
      redisProxy!.restore();
    }
    expect(down.status, JSON.stringify(down.body)).toBe(503);
    expect(down.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(down.body.error).toBe('temporarily_unavailable');
    // Back: a fresh ID-JAG is redeemed (after the store has reconnected).
    const fresh = await idJag();
    let ok = await redeem(fresh);
    for (let i = 0; i < 40 && ok.status === 503; i++) {
      await new Promise((r) => setTimeout(r, 250));
      ok = await redeem(fresh);
    }
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    // The interrupted one: its set-if-absent may have reached Redis after the timeout, so it may be
    // used up; never is it good twice (fail closed).
    const retries = [await redeem(interrupted), await redeem(interrupted)];
    expect(retries.filter((r) => r.status === 200).length).toBeLessThanOrEqual(1);
    for (const r of retries.filter((x) => x.status !== 200)) expect(r.body.error_description).toMatch(/already been used/);
  });

  it('never writes a token to the audit log', async () => {
    await expectNoTokensInAudit(as, seenTokens);
  });
});

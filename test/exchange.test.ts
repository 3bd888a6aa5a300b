// Black-box tests of the RFC 8693 token-exchange grant against a running Gatehouse: LiveKit room
// tokens (checked with livekit-server-sdk's TokenVerifier), resource/MCP tokens (checked with jose
// against /jwks and with oauth4webapi's RFC 9068 validator), delegation, every refusal, and audit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, decodeJwt, exportJWK, generateKeyPair, importJWK, jwtVerify, SignJWT, type JWK } from 'jose';
import * as oauth from 'oauth4webapi';
import { TokenVerifier } from 'livekit-server-sdk';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { expectNoTokensInAudit } from './helpers/audit.ts';

/** The CLI prints the client record (clientId) plus the one-time client_secret. */
async function createClient(gh: { cli(...argv: string[]): Promise<any> }, ...argv: string[]): Promise<{ client_id: string; client_secret: string }> {
  const c = await gh.cli('client', 'create', ...argv);
  return { client_id: c.client_id ?? c.clientId, client_secret: c.client_secret };
}

const LK = { url: 'wss://livekit.test', key: 'APItestkey', secret: 'lk-secret-'.padEnd(40, 'x') };
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const MCP = 'https://mcp.example.com/mcp';
const OTHER = 'https://other.example.com/api';
const LEGACY = 'https://legacy.example.com/mcp';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };

type Client = { client_id: string; client_secret: string };

/** Every token this suite sends or receives, so the last test can look for them in the audit log. */
const seenTokens = new Set<string>();
const TOKEN_FIELDS = ['subject_token', 'actor_token', 'access_token', 'refresh_token', 'id_token'];

async function tokenRequest(gh: { url: string }, client: Client, params: Record<string, string | string[]>) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const x of [v].flat()) body.append(k, x);
  const res = await fetch(`${gh.url}/token`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body,
  });
  const json = await res.json() as Record<string, any>;
  for (const f of TOKEN_FIELDS) for (const t of [params[f] ?? [], json[f] ?? []].flat()) if (typeof t === 'string' && t.length > 8) seenTokens.add(t);
  return { status: res.status, headers: res.headers, body: json };
}

describe('token exchange', () => {
  let gh: TestGatehouse;
  let web: Client, other: Client, agent: Client, actingAgent: Client, plainAgent: Client, noPolicy: Client;
  let legacySecret: string;
  // opaque: Alice's login token (bound to Gatehouse); consented: one from a grant that also holds her
  // consent to MCP; jwt: a token for MCP itself (its audience is MCP, so Gatehouse refuses it).
  let alice: { opaque: string; consented: string; jwt: string; refresh: string; idToken: string; sub: string };
  const grantOf = async (opaque: string) => (await gh.gh.provider().AccessToken.find(opaque))!.grantId as string;

  let exchanges = 0;
  const exchange = (client: Client, params: Record<string, string | string[]>) => {
    exchanges++;
    return tokenRequest(gh, client, { grant_type: TX, subject_token_type: AT, ...params });
  };
  const clientCredentials = async (client: Client) => (await tokenRequest(gh, client, { grant_type: 'client_credentials' })).body.access_token as string;
  const auditRows = async (since: number) => (await gh.deps.db.query<{ type: string; outcome: string; subject: string | null; client_id: string; actor: string | null; details: any }>(
    "SELECT type, outcome, subject, client_id, actor, details FROM audit_events WHERE type = 'token.exchange' AND id > $1 ORDER BY id", [since])).rows;
  const lastAuditId = async () => Number((await gh.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0) AS id FROM audit_events')).rows[0].id);

  beforeAll(async () => {
    // More than 60 exchanges a minute for one user: the per-user limit (rate-limit.test.ts) would cut in.
    gh = await startTestGatehouse({ env: { LIVEKIT_URL: LK.url, LIVEKIT_API_KEY: LK.key, LIVEKIT_API_SECRET: LK.secret, RATE_LIMITS: 'off' } });
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--scope', 'tools:write');
    await gh.cli('resource', 'create', '--uri', OTHER, '--scope', 'data:read');
    legacySecret = (await gh.cli('resource', 'create', '--uri', LEGACY, '--scope', 'tools:read', '--signing', 'hs256')).hs256_secret;
    // Users get tools:read from their role; tools:write is nobody's permission here.
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read', 'data:read'] WHERE name IN ('user', 'admin')");
    await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--name', 'Alice', '--role', 'user', '--verified');

    const grants = ['--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX];
    web = await createClient(gh, '--name', 'Web', '--redirect-uri', CALLBACK, ...grants);
    other = await createClient(gh, '--name', 'Other web', '--redirect-uri', CALLBACK, ...grants);
    noPolicy = await createClient(gh, '--name', 'No policy', '--grant', 'client_credentials', '--grant', TX);
    const agentGrants = ['--grant', 'client_credentials', '--grant', TX];
    agent = await createClient(gh, '--name', 'Helper agent', ...agentGrants);
    actingAgent = await createClient(gh, '--name', 'Acting agent', ...agentGrants);
    plainAgent = await createClient(gh, '--name', 'Plain agent', ...agentGrants);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit', '--resource', MCP, '--resource', LEGACY);
    await gh.cli('policy', 'client', 'set', other.client_id, '--livekit', '--resource', MCP);
    await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', MCP, '--agent-name', 'helper');
    await gh.cli('policy', 'client', 'set', actingAgent.client_id, '--resource', MCP, '--act', '--scope', 'tools:read');
    await gh.cli('policy', 'client', 'set', plainAgent.client_id, '--resource', MCP);

    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const opaque = await codeFlow(gh, config, { creds: ALICE });
    const jwt = await codeFlow(gh, config, { creds: ALICE, resource: MCP, scope: 'openid tools:read tools:write' });
    const consented = await codeFlow(gh, config, { creds: ALICE, resource: MCP, scope: 'openid tools:read tools:write', gatehouseToken: true });
    alice = {
      opaque: opaque.tokens.access_token,
      consented: consented.tokens.access_token,
      refresh: opaque.tokens.refresh_token!,
      idToken: opaque.tokens.id_token!,
      jwt: jwt.tokens.access_token,
      sub: opaque.tokens.claims()!.sub,
    };
    for (const t of [alice.opaque, alice.consented, alice.refresh, alice.idToken, alice.jwt]) seenTokens.add(t);
  }, 180_000);
  afterAll(async () => gh?.close());

  describe('LiveKit room tokens', () => {
    it('turns a user access token into a LiveKit token whose grant comes from policy', async () => {
      const room = `user_${alice.sub}_standup`;
      const { status, headers, body } = await exchange(web, { subject_token: alice.opaque, requested_token_type: LIVEKIT, room, agent_name: ['helper'], participant_metadata: 'm1' });
      expect(status, JSON.stringify(body)).toBe(200);
      expect(headers.get('cache-control')).toMatch(/no-store/);
      expect(body).toMatchObject({ issued_token_type: LIVEKIT, token_type: 'N_A', server_url: LK.url, room_name: room, participant_identity: `user_${alice.sub}` });
      // Never outlives the subject token (15 minutes, issued moments ago).
      expect(body.expires_in).toBeLessThanOrEqual(900);
      expect(body.expires_in).toBeGreaterThan(800);
      const claims = await new TokenVerifier(LK.key, LK.secret).verify(body.access_token);
      expect(claims.iss).toBe(LK.key);
      expect(claims.sub).toBe(`user_${alice.sub}`);
      expect(claims.name).toBe('Alice');
      expect(JSON.parse(claims.metadata!)).toEqual({
        user_id: alice.sub, email: ALICE.email, roles: ['user'], permissions: ['data:read', 'livekit:join', 'tools:read'], session_type: 'user', app: 'm1',
        // the opaque subject token carries its session's acr (issue 7)
        acr: 'urn:gatehouse:acr:pwd',
      });
      expect(claims.video).toEqual({ roomJoin: true, room, canPublish: true, canSubscribe: true, canPublishData: true });
      expect((claims.roomConfig as any).agents.map((a: any) => a.agentName)).toEqual(['helper']);
      expect(claims.exp! - Math.floor(Date.now() / 1000)).toBeGreaterThan(800);
      expect(claims.exp! - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(900);
      const [row] = (await auditRows(0)).filter((r) => r.details.room === room);
      expect(row).toMatchObject({ outcome: 'success', subject: alice.sub, client_id: web.client_id, actor: null, details: { target_type: 'livekit', target: 'livekit' } });
    });

    it('generates a room inside the user\'s own rooms when none is named', async () => {
      const { body } = await exchange(web, { subject_token: alice.opaque, requested_token_type: LIVEKIT });
      expect(body.room_name).toMatch(new RegExp(`^user_${alice.sub}_\\d{10}_[0-9a-f]{12}$`));
      expect((await new TokenVerifier(LK.key, LK.secret).verify(body.access_token)).video?.room).toBe(body.room_name);
    });

    it('refuses rooms outside the patterns, reserved and over-long names, unknown agents, and audits each', async () => {
      const since = await lastAuditId();
      const cases: [Record<string, string>, string, RegExp][] = [
        [{ room: 'user_someoneelse_x' }, 'invalid_target', /outside the rooms/],
        [{ room: 'lobby' }, 'invalid_target', /outside the rooms/],
        [{ room: 'admin' }, 'invalid_target', /reserved/],
        [{ room: 'System' }, 'invalid_target', /reserved/],
        [{ room: `user_${alice.sub}_${'x'.repeat(260)}` }, 'invalid_target', /256 bytes/],
        [{ room: 'has space' }, 'invalid_target', /may contain/],
        [{ room: `user_${alice.sub}_x`, agent_name: 'rogue' }, 'invalid_target', /rogue/],
      ];
      for (const [params, error, description] of cases) {
        const { status, body } = await exchange(web, { subject_token: alice.opaque, requested_token_type: LIVEKIT, ...params });
        expect(status, JSON.stringify(params)).toBe(400);
        expect(body.error).toBe(error);
        expect(body.error_description).toMatch(description);
      }
      const rows = await auditRows(since);
      expect(rows.map((r) => [r.outcome, r.details.target_type, r.details.error, r.details.room])).toEqual(
        cases.map(([params, error]) => ['failure', 'livekit', error, params.room]));
    });
  });

  describe('resource (MCP) tokens', () => {
    it('mints an RFC 9068 token for the registered resource, verifiable against /jwks', async () => {
      const { status, body } = await exchange(web, { subject_token: alice.opaque, resource: `${MCP}/` });
      expect(status, JSON.stringify(body)).toBe(200);
      expect(body).toMatchObject({ issued_token_type: AT, token_type: 'Bearer', scope: 'tools:read' });
      expect(body.expires_in).toBeLessThanOrEqual(900);
      const { payload, protectedHeader } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: MCP, typ: 'at+jwt' });
      expect(protectedHeader.alg).toBe('ES256');
      expect(protectedHeader.kid).toBeTruthy();
      expect(payload).toMatchObject({ sub: alice.sub, client_id: web.client_id, scope: 'tools:read', aud: MCP });
      expect(payload.jti).toBeTruthy();
      expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(900);
      expect(payload.gid).toBe(await grantOf(alice.opaque));
      expect(payload.gid).toBeTruthy();
      expect(payload.act).toBeUndefined();
    });

    it('passes an independent RFC 9068 validator for the right audience only', async () => {
      const { body } = await exchange(web, { subject_token: alice.opaque, audience: MCP, scope: 'tools:read' });
      const as = await oauth.processDiscoveryResponse(new URL(gh.url), await oauth.discoveryRequest(new URL(gh.url), { [oauth.allowInsecureRequests]: true }));
      const request = (token: string) => new Request(MCP, { headers: { authorization: `Bearer ${token}` } });
      const claims = await oauth.validateJwtAccessToken(as, request(body.access_token), MCP, { [oauth.allowInsecureRequests]: true } as never);
      expect(claims.sub).toBe(alice.sub);
      await expect(oauth.validateJwtAccessToken(as, request(body.access_token), OTHER, { [oauth.allowInsecureRequests]: true } as never)).rejects.toThrow(/aud/);
    });

    it('signs with the shared secret for HS256 resources', async () => {
      const { status, body } = await exchange(web, { subject_token: alice.opaque, resource: LEGACY });
      expect(status, JSON.stringify(body)).toBe(200);
      const { payload, protectedHeader } = await jwtVerify(body.access_token, Buffer.from(legacySecret), { issuer: gh.url, audience: LEGACY });
      expect(protectedHeader).toMatchObject({ alg: 'HS256', typ: 'at+jwt' });
      expect(payload.scope).toBe('tools:read');
    });

    // Issue 14: the one scope rule. A login token carries OpenID scopes only; what it may be exchanged
    // for is decided by the user's permissions (and consent: web's exchange policy lists MCP, which is
    // the operator's pre-consent), not by the subject token's own scopes. The old test required MCP
    // scopes in the subject token, which made the README's example fail.
    it("grants what the user's roles hold, narrows a wider request, and refuses naming the missing part", async () => {
      let r = await exchange(web, { subject_token: alice.opaque, resource: MCP, scope: 'tools:read' });
      expect([r.status, r.body.scope], JSON.stringify(r.body)).toEqual([200, 'tools:read']);
      // tools:write: defined by MCP, not in Alice's permissions — narrowed, and the response says so.
      r = await exchange(web, { subject_token: alice.opaque, resource: MCP, scope: 'tools:read tools:write' });
      expect([r.status, r.body.scope]).toEqual([200, 'tools:read']);
      const since = await lastAuditId();
      r = await exchange(web, { subject_token: alice.opaque, resource: MCP, scope: 'tools:write' });
      expect([r.status, r.body.error]).toEqual([400, 'invalid_scope']);
      expect(r.body.error_description).toBe("the user's roles do not hold tools:write");
      r = await exchange(web, { subject_token: alice.opaque, resource: MCP, scope: 'read' });
      expect([r.status, r.body.error]).toEqual([400, 'invalid_scope']);
      expect(r.body.error_description).toBe(`${MCP} does not define read`);
      expect(await auditRows(since)).toEqual([
        expect.objectContaining({ outcome: 'failure', subject: alice.sub, details: expect.objectContaining({ error: 'invalid_scope', target: MCP, scopes: ['tools:write'] }) }),
        expect.objectContaining({ outcome: 'failure', details: expect.objectContaining({ error: 'invalid_scope', scopes: ['read'] }) }),
      ]);
    });

    it('refuses a token issued for a resource server as subject_token (audience binding)', async () => {
      const r = await exchange(web, { subject_token: alice.jwt, resource: MCP });
      expect([r.status, r.body.error]).toEqual([400, 'invalid_request']);
      expect(r.body.error_description).toMatch(/issued for another audience/);
    });
  });

  describe('refusals', () => {
    /** Signed with Gatehouse's own key: only the claims are wrong. */
    async function ourKeySigns(claims: { iss: string; iat: number; exp: number }) {
      const { keys } = await gh.deps.keys.privateJwks();
      const jwk = keys.find((k: JWK) => k.alg === 'ES256')!;
      return new SignJWT({ client_id: web.client_id, scope: 'tools:read', gid: 'g' })
        .setProtectedHeader({ alg: 'ES256', kid: jwk.kid, typ: 'at+jwt' })
        .setIssuer(claims.iss).setSubject(alice.sub).setAudience(MCP).setIssuedAt(claims.iat).setExpirationTime(claims.exp).setJti('old')
        .sign(await importJWK(jwk, 'ES256'));
    }
    const now = () => Math.floor(Date.now() / 1000);
    const expired = () => ourKeySigns({ iss: gh.url, iat: now() - 2000, exp: now() - 1000 });
    const otherIssuer = () => ourKeySigns({ iss: 'https://other-gatehouse.example.com', iat: now(), exp: now() + 300 });
    async function foreign() {
      const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
      const kid = (await exportJWK(publicKey)).x!.slice(0, 8);
      return new SignJWT({ client_id: web.client_id, scope: 'tools:read' })
        .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
        .setIssuer('https://evil.example.com').setSubject(alice.sub).setAudience(MCP).setIssuedAt().setExpirationTime('5m').setJti('x')
        .sign(privateKey);
    }
    const tampered = () => {
      const [h, p, s] = alice.jwt.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      return [h, Buffer.from(JSON.stringify({ ...claims, sub: 'someone-else' })).toString('base64url'), s].join('.');
    };

    it('refuses unacceptable subject tokens with invalid_request, and audits each refusal', async () => {
      const since = await lastAuditId();
      const cases: [string, () => Promise<string> | string, RegExp][] = [
        ['id token', () => alice.idToken, /not an access token/],
        ['refresh token', () => alice.refresh, /not an active access token/],
        ['expired', expired, /expired/],
        ['tampered', tampered, /not a valid access token/],
        ['foreign issuer and key', foreign, /not a valid access token|not issued by this server/],
        ['foreign issuer, our key', otherIssuer, /not issued by this server/],
        ['garbage', () => 'nonsense', /not an active access token/],
      ];
      for (const [name, make, description] of cases) {
        const { status, body } = await exchange(web, { subject_token: await make(), resource: MCP });
        expect(status, name).toBe(400);
        expect(body.error, name).toBe('invalid_request');
        expect(body.error_description, name).toMatch(description);
      }
      const rows = await auditRows(since);
      expect(rows).toHaveLength(cases.length);
      for (const row of rows) {
        expect(row).toMatchObject({ outcome: 'failure', client_id: web.client_id, details: { error: 'invalid_request', target_type: 'resource' } });
      }
      // Identifiers only: no token ever reaches the audit log.
      const all = JSON.stringify(rows);
      expect(all).not.toContain(alice.idToken.slice(0, 40));
      expect(all).not.toContain(alice.refresh);
    });

    it('refuses a revoked subject token: by origin grant (revocation list) and at /token/revocation, and audits both', async () => {
      const config = await rpConfig(gh, web.client_id, web.client_secret);
      const fresh = await codeFlow(gh, config, { creds: ALICE, resource: MCP, scope: 'openid tools:read', gatehouseToken: true });
      const gid = await grantOf(fresh.tokens.access_token);
      expect((await exchange(web, { subject_token: fresh.tokens.access_token, resource: MCP })).status).toBe(200);
      const since = await lastAuditId();
      await gh.deps.revocations.revoke('grant', gid, 900);
      const r = await exchange(web, { subject_token: fresh.tokens.access_token, resource: MCP });
      expect([r.status, r.body.error]).toEqual([400, 'invalid_request']);
      expect(r.body.error_description).toMatch(/revoked/);

      const opaque = (await codeFlow(gh, config, { creds: ALICE })).tokens.access_token;
      seenTokens.add(opaque);
      const rev = await fetch(`${gh.url}/token/revocation`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: opaque }),
      });
      expect(rev.status).toBe(200);
      const r2 = await exchange(web, { subject_token: opaque, requested_token_type: LIVEKIT });
      expect([r2.status, r2.body.error]).toEqual([400, 'invalid_request']);
      const rows = await auditRows(since);
      expect(rows.map((row) => [row.outcome, row.subject, row.details.error, row.details.target_type])).toEqual([
        ['failure', alice.sub, 'invalid_request', 'resource'], ['failure', null, 'invalid_request', 'livekit'],
      ]);
      expect(rows.map((row) => row.details.reason)).toEqual([expect.stringMatching(/revoked/), expect.stringMatching(/not an active access token/)]);
    });

    it('refuses targets the client may not reach, unknown token types and clients without policy', async () => {
      const since = await lastAuditId();
      const cases: [Client, Record<string, string | string[]>, number, string][] = [
        [web, { resource: 'https://unknown.example.com/mcp' }, 400, 'invalid_target'],
        [web, { resource: OTHER }, 400, 'invalid_target'],
        [web, { resource: [MCP, LEGACY] }, 400, 'invalid_target'],
        [web, { requested_token_type: 'urn:ietf:params:oauth:token-type:id_token', resource: MCP }, 400, 'invalid_request'],
        [web, { subject_token_type: 'urn:ietf:params:oauth:token-type:refresh_token', resource: MCP }, 400, 'invalid_request'],
        [noPolicy, { resource: MCP }, 400, 'unauthorized_client'],
        // Alice's token was issued to `web`: another client may not exchange it without acting.
        [other, { resource: MCP }, 400, 'invalid_request'],
      ];
      for (const [client, params, status, error] of cases) {
        const r = await exchange(client, { subject_token: alice.opaque, ...params });
        expect([r.status, r.body.error], JSON.stringify(params)).toEqual([status, error]);
      }
      const rows = await auditRows(since);
      expect(rows.map((r) => r.details.error)).toEqual(cases.map((c) => c[3]));
      expect(rows[1]).toMatchObject({ subject: alice.sub, details: { target: OTHER } });
    });
  });

  it('audits exchanges oidc-provider refuses before the grant runs: no grant type, bad client secret', async () => {
    const noGrant = await createClient(gh, '--name', 'No exchange grant', '--grant', 'client_credentials');
    const since = await lastAuditId();
    let r = await exchange(noGrant, { subject_token: alice.jwt, resource: MCP });
    expect([r.status, r.body.error]).toEqual([400, 'invalid_request']);
    expect(r.body.error_description).toMatch(/grant type is not allowed/);
    r = await exchange({ client_id: web.client_id, client_secret: 'not the secret' }, { subject_token: alice.jwt, resource: MCP });
    expect([r.status, r.body.error]).toEqual([401, 'invalid_client']);
    const rows = await auditRows(since);
    expect(rows.map((row) => [row.outcome, row.client_id, row.details.error])).toEqual([
      ['failure', noGrant.client_id, 'invalid_request'],
      // The client id it claimed: a failed authentication under a real client's id is worth seeing.
      ['failure', web.client_id, 'invalid_client'],
    ]);
  });

  it('fails closed with 503 when the revocation store is unreachable', async () => {
    const { RevocationUnavailableError } = await import('../src/revocation/store.ts');
    const check = gh.deps.revocations.check;
    gh.deps.revocations.check = async () => { throw new RevocationUnavailableError(new Error('down')); };
    try {
      const r = await exchange(web, { subject_token: alice.opaque, resource: MCP });
      expect([r.status, r.body.error]).toEqual([503, 'temporarily_unavailable']);
    } finally {
      gh.deps.revocations.check = check;
    }
  });

  it('keeps policy in data: set through the CLI, deny by default', async () => {
    const fresh = await createClient(gh, '--name', 'Fresh', '--grant', 'client_credentials', '--grant', TX);
    await expect(gh.cli('policy', 'client', 'get', fresh.client_id)).rejects.toThrow(/no policy/);
    await expect(gh.cli('policy', 'client', 'set', fresh.client_id, '--resource', 'https://nowhere.example.com')).rejects.toThrow(/not registered/);
    await expect(gh.cli('policy', 'client', 'set', 'gh_nope', '--livekit')).rejects.toThrow(/no client/);
    await expect(gh.cli('policy', 'client', 'set', fresh.client_id, '--agent-name', 'helper')).rejects.toThrow(/already used/);
    const set = await gh.cli('policy', 'client', 'set', fresh.client_id, '--resource', `${MCP}/`, '--scope', 'tools:read');
    expect(set).toEqual({ client_id: fresh.client_id, livekit: false, resources: [MCP], scopes: ['tools:read'], may_act: false, agent_name: null });
    const roles = await gh.cli('policy', 'role', 'list');
    expect(roles.find((r: { role: string }) => r.role === 'user')).toMatchObject({ room_patterns: ['{identity}_*'], room_admin: false });
    // roomAdmin only where configured: give the user role a moderated room.
    await gh.cli('policy', 'role', 'set', 'user', '--room', '{identity}_*', '--room', 'town-hall', '--publish', '--subscribe', '--data', '--room-admin');
    const r = await exchange(web, { subject_token: alice.opaque, requested_token_type: LIVEKIT, room: 'town-hall' });
    expect((await new TokenVerifier(LK.key, LK.secret).verify(r.body.access_token)).video).toMatchObject({ room: 'town-hall', roomAdmin: true });
    await gh.cli('policy', 'role', 'set', 'user', '--room', '{identity}_*', '--publish', '--subscribe', '--data');
    const r2 = await exchange(web, { subject_token: alice.opaque, requested_token_type: LIVEKIT, room: 'town-hall' });
    expect(r2.body.error).toBe('invalid_target');
  });

  describe('delegation (agents)', () => {
    it('lets an agent whose policy allows acting get a token for the user, with act', async () => {
      const actor = await clientCredentials(actingAgent);
      const { status, body } = await exchange(actingAgent, { subject_token: alice.consented, actor_token: actor, actor_token_type: AT, resource: MCP });
      expect(status, JSON.stringify(body)).toBe(200);
      const { payload } = await jwtVerify(body.access_token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: MCP });
      expect(payload).toMatchObject({ sub: alice.sub, client_id: actingAgent.client_id, act: { sub: actingAgent.client_id }, scope: 'tools:read' });
      const [row] = (await auditRows(0)).filter((r) => r.actor === actingAgent.client_id);
      expect(row).toMatchObject({ outcome: 'success', subject: alice.sub, details: { target: MCP, scopes: ['tools:read'] } });
    });

    it('refuses an agent without may_act or acting policy, and another client\'s actor token', async () => {
      const since = await lastAuditId();
      let r = await exchange(plainAgent, { subject_token: alice.consented, actor_token: await clientCredentials(plainAgent), actor_token_type: AT, resource: MCP });
      expect([r.status, r.body.error]).toEqual([400, 'invalid_request']);
      expect(r.body.error_description).toMatch(/may not act/);
      r = await exchange(plainAgent, { subject_token: alice.consented, actor_token: await clientCredentials(actingAgent), actor_token_type: AT, resource: MCP });
      expect([r.status, r.body.error]).toEqual([400, 'invalid_request']);
      expect(r.body.error_description).toMatch(/another client/);
      // A user token is not an actor token.
      r = await exchange(actingAgent, { subject_token: alice.consented, actor_token: alice.consented, actor_token_type: AT, resource: MCP });
      expect(r.body.error_description).toMatch(/own client-credentials token/);
      expect([r.status, r.body.error]).toEqual([400, 'invalid_request']);
      expect((await auditRows(since)).every((x) => x.outcome === 'failure')).toBe(true);
      expect(await auditRows(since)).toHaveLength(3);
    });

    // Issue 14: this test used to show a delegated token exchanged again by a second agent (act nested),
    // which let a chain go on without end and outlive its start. A delegated token's audience is the
    // resource server, so Gatehouse refuses it as a subject_token.
    it('refuses to exchange a delegated token again, and bounds it by the origin', async () => {
      const second = await createClient(gh, '--name', 'Second acting agent', '--grant', 'client_credentials', '--grant', TX);
      await gh.cli('policy', 'client', 'set', second.client_id, '--resource', MCP, '--act');
      const first = await exchange(actingAgent, { subject_token: alice.consented, actor_token: await clientCredentials(actingAgent), actor_token_type: AT, resource: MCP });
      expect(first.status, JSON.stringify(first.body)).toBe(200);
      const payload = decodeJwt(first.body.access_token);
      expect(payload.gid).toBe(await grantOf(alice.consented));
      const origin = await gh.gh.provider().AccessToken.find(alice.consented);
      expect(payload.exp).toBeLessThanOrEqual(origin!.exp!);
      expect(payload.acr).toBe('urn:gatehouse:acr:pwd');
      const again = await exchange(second, { subject_token: first.body.access_token, actor_token: await clientCredentials(second), actor_token_type: AT, resource: MCP });
      expect([again.status, again.body.error]).toEqual([400, 'invalid_request']);
      expect(again.body.error_description).toMatch(/another audience/);
    });

    it("refuses an acting agent a resource the user's consent does not cover, even where scope names overlap", async () => {
      // A resource offering data:read, like OTHER; Alice consented to OTHER only.
      const NOTES = 'https://notes.example.com/mcp';
      await gh.cli('resource', 'create', '--uri', NOTES, '--scope', 'data:read');
      const notesAgent = await createClient(gh, '--name', 'Notes agent', '--grant', 'client_credentials', '--grant', TX);
      await gh.cli('policy', 'client', 'set', notesAgent.client_id, '--resource', NOTES, '--resource', OTHER, '--act');
      const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: ALICE, resource: OTHER, scope: 'openid data:read', gatehouseToken: true });
      const forOther = tokens.access_token;
      seenTokens.add(forOther);

      const since = await lastAuditId();
      const actor = await clientCredentials(notesAgent);
      const refused = await exchange(notesAgent, { subject_token: forOther, actor_token: actor, actor_token_type: AT, resource: NOTES });
      expect([refused.status, refused.body.error], JSON.stringify(refused.body)).toEqual([400, 'invalid_request']);
      expect(refused.body.error_description).toMatch(/consent/);
      expect(refused.body.access_token).toBeUndefined();
      // The resource she did consent to is fine.
      const allowed = await exchange(notesAgent, { subject_token: forOther, actor_token: actor, actor_token_type: AT, resource: `${OTHER}/` });
      expect(allowed.status, JSON.stringify(allowed.body)).toBe(200);
      expect(decodeJwt(allowed.body.access_token)).toMatchObject({ aud: OTHER, sub: alice.sub, scope: 'data:read', act: { sub: notesAgent.client_id } });
      expect((await auditRows(since)).map((r) => [r.outcome, r.actor, r.details.target, r.details.error ?? null])).toEqual([
        ['failure', notesAgent.client_id, NOTES, 'invalid_request'],
        ['success', notesAgent.client_id, OTHER, null],
      ]);
    });
  });

  // Runs last: every token this suite sent or received, and none of them in any audit event.
  it('writes an audit event for every exchange and never a token', async () => {
    const { rows } = await gh.deps.db.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events WHERE type = 'token.exchange'");
    expect(rows[0].n).toBe(exchanges);
    expect(seenTokens.size).toBeGreaterThan(15);
    await expectNoTokensInAudit(gh, seenTokens);
  });
});

// Issue 14: one authorization model on every path that issues a token (docs/authorization.md).
// A table of cases walks each issuing path — authorization code, refresh, device flow, client
// credentials, token exchange to MCP and to LiveKit, delegation by policy and by may_act — for users
// with and without the permission, consented or not, through first- and third-party clients, with
// openid-client as the relying party and real tokens. Then every token bound to the resource server is
// replayed at each of Gatehouse's own endpoints, which must refuse it and take Gatehouse-bound ones.
// Runs on embedded storage and on PostgreSQL + Redis.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { TokenVerifier } from 'livekit-server-sdk';
import { approveDevice, authorize, CALLBACK, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';

const LK = { url: 'wss://livekit.test', key: 'APItestkey', secret: 'lk-secret-'.padEnd(40, 'x') };
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const MCP = 'https://mcp.example.com/mcp';
const PASSWORD = 'a long passphrase for the model';

type Client = { client_id: string; client_secret?: string };
type Outcome = { scope: string } | { error: string; description?: RegExp };

const modes: [Mode, boolean][] = [['embedded', true], ['postgres', await servicesFor('postgres+redis')]];

describe.each(modes)('the authorization model (%s)', (mode, available) => {
  let gh: TestGatehouse;
  let first: Client, third: Client, speaker: Client, agent: Client, actor: Client, narrowService: Client, service: Client;
  const users = { reader: `reader-${mode}@example.com`, nobody: `nobody-${mode}@example.com` };
  const creds = (who: keyof typeof users) => ({ email: users[who], password: PASSWORD });
  /** Every token bound to MCP that a case produced: each is replayed at Gatehouse's own endpoints. */
  const mcpTokens: { from: string; token: string }[] = [];
  /** Gatehouse-bound user tokens: the same endpoints must take them. */
  const gatehouseTokens: Record<string, string> = {};

  const post = async (path: string, params: Record<string, string>, client?: Client, headers: Record<string, string> = {}) => {
    const auth: Record<string, string> = client?.client_secret ? { authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}` } : {};
    const body = new URLSearchParams({ ...(client && !client.client_secret ? { client_id: client.client_id } : {}), ...params });
    const res = await fetch(`${gh.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth, ...headers }, body });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, any> };
  };
  const token = (client: Client, params: Record<string, string>) => post('/token', params, client);
  const exchange = (client: Client, params: Record<string, string>) => token(client, { grant_type: TX, subject_token_type: AT, ...params });
  const connectionDetails = async (bearer: string, body: unknown = {}) => {
    const res = await fetch(`${gh.url}/livekit/connection-details`, { method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: await res.json() as Record<string, any> };
  };

  /** What a token response means for the table: the granted scope (checked against the JWT), or the error. */
  async function outcomeOf(r: { status: number; body: Record<string, any> }, from: string): Promise<Outcome> {
    if (r.status !== 200) return { error: r.body.error, description: r.body.error_description };
    const { payload } = await jwtVerify(r.body.access_token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: MCP, typ: 'at+jwt' });
    expect(payload.scope, from).toBe(r.body.scope);
    mcpTokens.push({ from, token: r.body.access_token });
    return { scope: String(payload.scope) };
  }
  const expectOutcome = (got: Outcome, want: Outcome, name: string) => {
    if ('scope' in want) expect(got, name).toEqual(want);
    else {
      expect(got, name).toMatchObject({ error: want.error });
      if (want.description) expect((got as { description?: string }).description, name).toMatch(want.description);
    }
  };

  /** Code + PKCE through openid-client; `tokenResource` names the resource at the token endpoint (RFC 8707 §2.2). */
  async function signIn(client: Client, who: keyof typeof users, opts: { scope?: string; resource?: string; tokenResource?: boolean; prompt?: string } = {}) {
    const config = await rpConfig(gh, client.client_id, client.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: opts.scope ?? 'openid', state, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      ...(opts.resource ? { resource: opts.resource } : {}), ...(opts.prompt ? { prompt: opts.prompt } : {}),
    });
    const { callbackUrl } = await authorize(gh, url, creds(who));
    try {
      const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state },
        opts.tokenResource && opts.resource ? { resource: opts.resource } : undefined);
      return { status: 200, body: tokens as unknown as Record<string, any> };
    } catch (err) {
      const e = err as { error?: string; error_description?: string; status?: number };
      if (!e.error) throw err;
      return { status: e.status ?? 400, body: { error: e.error, error_description: e.error_description } };
    }
  }

  /** RFC 8628: the device asks, the person approves in a browser; returns the device code. */
  async function deviceFlow(who: keyof typeof users, params: Record<string, string>) {
    const start = await post('/device/auth', params, speaker);
    expect(start.status, JSON.stringify(start.body)).toBe(200);
    await approveDevice(gh, start.body.user_code, creds(who));
    return start.body.device_code as string;
  }

  beforeAll(async () => {
    if (!available) return;
    gh = await startTestGatehouse({ mode, env: { LIVEKIT_URL: LK.url, LIVEKIT_API_KEY: LK.key, LIVEKIT_API_SECRET: LK.secret } });
    // tools:read is the default; tokens for MCP carry the user's roles and the permissions relevant to it.
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--scope', 'tools:write', '--default-scope', 'tools:read', '--claims', 'roles,permissions');
    await gh.cli('role', 'create', 'reader', '--permission', 'tools:read', '--permission', 'notes:read');
    await gh.cli('user', 'create', '--email', users.reader, '--password', PASSWORD, '--role', 'user', '--role', 'reader', '--verified');
    await gh.cli('user', 'create', '--email', users.nobody, '--password', PASSWORD, '--role', 'user', '--verified');
    const web = ['--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX];
    first = await gh.cli('client', 'create', '--name', 'First-party web', '--first-party', ...web);
    third = await gh.cli('client', 'create', '--name', 'Third-party web', ...web);
    speaker = await gh.cli('client', 'create', '--name', 'Speaker', '--type', 'public', '--grant', DEVICE, '--grant', 'refresh_token', '--grant', TX);
    const cc = ['--grant', 'client_credentials', '--grant', TX];
    agent = await gh.cli('client', 'create', '--name', 'Room agent', ...cc);
    actor = await gh.cli('client', 'create', '--name', 'Acting agent', ...cc);
    service = await gh.cli('client', 'create', '--name', 'Service', '--grant', 'client_credentials');
    narrowService = await gh.cli('client', 'create', '--name', 'Narrow service', '--grant', 'client_credentials');
    // A client's allowed scopes: its policy's --scope caps its own tokens as it caps its exchanges.
    await gh.cli('policy', 'client', 'set', narrowService.client_id, '--scope', 'tools:read');
    await gh.cli('policy', 'client', 'set', first.client_id, '--livekit', '--resource', MCP);
    await gh.cli('policy', 'client', 'set', speaker.client_id, '--livekit', '--resource', MCP);
    await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', MCP, '--agent-name', 'helper');
    await gh.cli('policy', 'client', 'set', actor.client_id, '--resource', MCP, '--act');
  }, 120_000);
  afterAll(async () => gh?.close());

  it.runIf(available)('authorization code: requested (or the default) ∩ resource ∩ the user\'s permissions ∩ consent', async () => {
    const cases: [string, Client, keyof typeof users, { scope?: string }, Outcome][] = [
      ['first-party, no resource scope asked: the default the user holds', first, 'reader', {}, { scope: 'tools:read' }],
      ['third-party, consented, asks for more than the user holds: narrowed', third, 'reader', { scope: 'openid tools:read tools:write' }, { scope: 'tools:read' }],
      ['third-party, user without the permission', third, 'nobody', { scope: 'openid tools:read' }, { error: 'invalid_scope', description: /roles do not hold tools:read/ }],
      ['first-party, user without the permission, default scope', first, 'nobody', {}, { error: 'invalid_scope', description: /roles do not hold tools:read/ }],
      ['first-party, a scope the user lacks', first, 'reader', { scope: 'openid tools:write' }, { error: 'invalid_scope', description: /roles do not hold tools:write/ }],
    ];
    for (const [name, client, who, opts, want] of cases) {
      const r = await signIn(client, who, { ...opts, resource: MCP, tokenResource: true });
      expectOutcome(await outcomeOf(r, `code: ${name}`), want, name);
    }
    // The claims the resource asked for: the user's roles and the permissions relevant to MCP (not notes:read).
    const claims = decodeJwt(mcpTokens[0].token);
    expect(claims).toMatchObject({ roles: ['reader', 'user'], permissions: ['tools:read'], aud: MCP });
  });

  it.runIf(available)('refresh: the same rule, with the permissions and consent of now', async () => {
    // First-party: a refresh token on a normal sign-in, without offline_access or prompt=consent.
    const login = await signIn(first, 'reader', { resource: MCP });
    expect(login.body.refresh_token, 'first-party refresh token').toEqual(expect.any(String));
    gatehouseTokens.firstParty = login.body.access_token;
    expect(login.body.access_token).not.toMatch(/^ey/); // no resource at the token endpoint: Gatehouse's own (opaque) token
    let r = await token(first, { grant_type: 'refresh_token', refresh_token: login.body.refresh_token, resource: MCP });
    expectOutcome(await outcomeOf(r, 'refresh: first-party'), { scope: 'tools:read' }, 'refresh first-party');
    // Third-party without offline_access consent: no refresh token at all.
    const plain = await signIn(third, 'reader', { resource: MCP });
    expect(plain.body.refresh_token).toBeUndefined();
    gatehouseTokens.thirdParty = plain.body.access_token;
    // Third-party after consent to offline_access (prompt=consent), but consent never covered MCP.
    const offline = await signIn(third, 'reader', { scope: 'openid offline_access', prompt: 'consent' });
    expect(offline.body.refresh_token, 'third-party refresh token after consent').toEqual(expect.any(String));
    r = await token(third, { grant_type: 'refresh_token', refresh_token: offline.body.refresh_token, resource: MCP });
    expectOutcome(await outcomeOf(r, 'refresh: not consented'), { error: 'invalid_target' }, 'third-party, resource never consented');
    // The permission taken away: the next refresh for MCP is refused, naming it.
    const holder = await signIn(third, 'reader', { scope: 'openid offline_access tools:read', resource: MCP, prompt: 'consent' });
    await gh.cli('role', 'update', 'reader', '--remove', 'tools:read');
    try {
      r = await token(third, { grant_type: 'refresh_token', refresh_token: holder.body.refresh_token, resource: MCP });
      expectOutcome(await outcomeOf(r, 'refresh: permission removed'), { error: 'invalid_scope', description: /roles do not hold tools:read/ }, 'permission removed');
    } finally {
      await gh.cli('role', 'update', 'reader', '--add', 'tools:read');
    }
  });

  it.runIf(available)('device flow: the same rule for the device (a third-party public client)', async () => {
    const cases: [keyof typeof users, Outcome][] = [
      ['reader', { scope: 'tools:read' }],
      ['nobody', { error: 'invalid_scope', description: /roles do not hold tools:read/ }],
    ];
    for (const [who, want] of cases) {
      const deviceCode = await deviceFlow(who, { scope: 'openid offline_access', resource: MCP });
      const r = await token(speaker, { grant_type: DEVICE, device_code: deviceCode, resource: MCP });
      expectOutcome(await outcomeOf(r, `device: ${who}`), want, `device ${who}`);
    }
    const deviceCode = await deviceFlow('reader', { scope: 'openid offline_access' });
    const r = await token(speaker, { grant_type: DEVICE, device_code: deviceCode });
    expect(r.status).toBe(200);
    gatehouseTokens.device = r.body.access_token;
  });

  it.runIf(available)("client credentials: requested (or the default) ∩ resource ∩ the client's allowed scopes", async () => {
    const cases: [string, Client, Record<string, string>, Outcome][] = [
      ['unrestricted client, no scope: the default', service, {}, { scope: 'tools:read' }],
      ['unrestricted client, both scopes', service, { scope: 'tools:read tools:write' }, { scope: 'tools:read tools:write' }],
      ['client allowed tools:read asks tools:write', narrowService, { scope: 'tools:write' }, { error: 'invalid_scope', description: /client is not allowed tools:write/ }],
      ['a scope the resource does not define', service, { scope: 'read' }, { error: 'invalid_scope', description: /does not define read/ }],
    ];
    for (const [name, client, params, want] of cases) {
      const r = await token(client, { grant_type: 'client_credentials', resource: MCP, ...params });
      expectOutcome(await outcomeOf(r, `client credentials: ${name}`), want, name);
    }
    // RFC 9068 / RFC 7662: a client's own token has sub = its client id, opaque ones at introspection too.
    expect(decodeJwt(mcpTokens.at(-1)!.token).sub).toBe(service.client_id);
    const opaque = await token(service, { grant_type: 'client_credentials' });
    const intro = await post('/token/introspection', { token: opaque.body.access_token }, service);
    expect(intro.body).toMatchObject({ active: true, client_id: service.client_id, sub: service.client_id });
  });

  it.runIf(available)('token exchange to MCP and LiveKit: the same rule for a login token; tokens never outlive their origin', async () => {
    const nobody = (await signIn(first, 'nobody')).body.access_token as string;
    const cases: [string, Client, string, Record<string, string>, Outcome][] = [
      ['first-party login token, no scope: the default', first, gatehouseTokens.firstParty, {}, { scope: 'tools:read' }],
      ['device token (README example)', speaker, gatehouseTokens.device, { scope: 'tools:read' }, { scope: 'tools:read' }],
      ['a scope the user lacks', first, gatehouseTokens.firstParty, { scope: 'tools:write' }, { error: 'invalid_scope', description: /roles do not hold tools:write/ }],
      ['user without the permission', first, nobody, {}, { error: 'invalid_scope', description: /roles do not hold tools:read/ }],
    ];
    for (const [name, client, subject, params, want] of cases) {
      const r = await exchange(client, { subject_token: subject, resource: MCP, ...params });
      expectOutcome(await outcomeOf(r, `exchange: ${name}`), want, name);
    }
    const origin = (await gh.gh.provider().AccessToken.find(gatehouseTokens.firstParty))!;
    const exchanged = decodeJwt(mcpTokens.at(-2)!.token);
    expect(exchanged.exp).toBeLessThanOrEqual(origin.exp!);
    expect(exchanged).toMatchObject({ gid: origin.grantId, acr: 'urn:gatehouse:acr:pwd', amr: ['pwd'], roles: ['reader', 'user'], permissions: ['tools:read'] });

    const lk = await exchange(first, { subject_token: gatehouseTokens.firstParty, requested_token_type: LIVEKIT });
    expect(lk.status, JSON.stringify(lk.body)).toBe(200);
    const room = await new TokenVerifier(LK.key, LK.secret).verify(lk.body.access_token);
    expect(room.exp).toBeLessThanOrEqual(origin.exp!);
  });

  it.runIf(available)('delegation: bounded by what the user consented to for the resource, and never exchanged again', async () => {
    const actorToken = (await token(actor, { grant_type: 'client_credentials' })).body.access_token as string;
    const consented = (await signIn(third, 'reader', { scope: 'openid tools:read', resource: MCP })).body.access_token as string;
    const consentedNobody = (await signIn(third, 'nobody', { scope: 'openid', resource: MCP })).body.access_token as string;
    const notConsented = (await signIn(third, 'reader')).body.access_token as string;
    const cases: [string, string, Outcome][] = [
      ['by policy, the user lacks the permission she consented to', consentedNobody, { error: 'invalid_scope', description: /roles do not hold tools:read/ }],
      ['by policy, the grant never covered MCP', notConsented, { error: 'invalid_request', description: /consent/ }],
      ['by policy, user consented to MCP at the third-party app', consented, { scope: 'tools:read' }],
    ];
    for (const [name, subject, want] of cases) {
      const r = await exchange(actor, { subject_token: subject, actor_token: actorToken, actor_token_type: AT, resource: MCP });
      expectOutcome(await outcomeOf(r, `delegation: ${name}`), want, name);
    }
    const delegated = mcpTokens.at(-1)!.token;
    expect(decodeJwt(delegated)).toMatchObject({ act: { sub: actor.client_id }, scope: 'tools:read' });
    const again = await exchange(actor, { subject_token: delegated, actor_token: actorToken, actor_token_type: AT, resource: MCP });
    expect([again.status, again.body.error]).toEqual([400, 'invalid_request']);

    // may_act: connection-details hands the dispatched agent a delegation token bounded by the same rule.
    const room = await connectionDetails(gatehouseTokens.firstParty, { room_config: { agents: [{ agent_name: 'helper' }] } });
    expect(room.status, JSON.stringify(room.body)).toBe(200);
    const attrs = (await new TokenVerifier(LK.key, LK.secret).verify(room.body.participantToken)).attributes ?? {};
    const delegation = attrs['gatehouse.delegation.helper'];
    expect(decodeJwt(delegation)).toMatchObject({ aud: gh.url, scope: 'tools:read', may_act: { sub: agent.client_id } });
    const agentActor = (await token(agent, { grant_type: 'client_credentials' })).body.access_token as string;
    const viaMayAct = await exchange(agent, { subject_token: delegation, actor_token: agentActor, actor_token_type: AT, resource: MCP });
    expectOutcome(await outcomeOf(viaMayAct, 'delegation: may_act'), { scope: 'tools:read' }, 'may_act');
    const wider = await exchange(agent, { subject_token: delegation, actor_token: agentActor, actor_token_type: AT, resource: MCP, scope: 'tools:write' });
    expect([wider.status, wider.body.error]).toEqual([400, 'invalid_scope']);
    // A user holding nothing of MCP's gets no delegation token for the agent.
    const nobody = (await signIn(first, 'nobody')).body.access_token as string;
    const bare = await connectionDetails(nobody, { room_config: { agents: [{ agent_name: 'helper' }] } });
    expect(bare.status).toBe(200);
    expect((await new TokenVerifier(LK.key, LK.secret).verify(bare.body.participantToken)).attributes?.['gatehouse.delegation.helper']).toBeUndefined();
  });

  it.runIf(available)("audience binding: every MCP token is refused at each of Gatehouse's own endpoints; Gatehouse's are taken", async () => {
    const froms = new Set(mcpTokens.map((t) => t.from.split(':')[0]));
    expect([...froms].sort()).toEqual(['client credentials', 'code', 'delegation', 'device', 'exchange', 'refresh']);
    const adminUsers = (bearer: string) => fetch(`${gh.url}/admin/api/users`, { headers: { authorization: `Bearer ${bearer}` } });
    for (const { from, token: mcp } of mcpTokens) {
      const cd = await connectionDetails(mcp);
      expect([cd.status, cd.body.error], `connection-details ← ${from}`).toEqual([401, 'invalid_token']);
      const ex = await exchange(first, { subject_token: mcp, requested_token_type: LIVEKIT });
      expect([ex.status, ex.body.error], `subject_token ← ${from}`).toEqual([400, 'invalid_request']);
      const me = await fetch(`${gh.url}/me`, { headers: { authorization: `Bearer ${mcp}` } });
      expect([me.status, ((await me.json()) as { error: string }).error], `userinfo ← ${from}`).toEqual([401, 'invalid_token']);
      const admin = await adminUsers(mcp);
      expect([admin.status, ((await admin.json()) as { error: string }).error], `admin API ← ${from}`).toEqual([401, 'invalid_token']);
      // The account pages work from the browser session only: a bearer token opens nothing.
      const account = await fetch(`${gh.url}/account/export`, { headers: { authorization: `Bearer ${mcp}` }, redirect: 'manual' });
      expect(account.status, `account ← ${from}`).not.toBe(200);
    }
    // Tokens bound to Gatehouse are taken where they belong.
    expect((await connectionDetails(gatehouseTokens.firstParty)).status).toBe(200);
    expect((await fetch(`${gh.url}/me`, { headers: { authorization: `Bearer ${gatehouseTokens.firstParty}` } })).status).toBe(200);
    expect((await exchange(speaker, { subject_token: gatehouseTokens.device, requested_token_type: LIVEKIT })).status).toBe(200);
  });
});

// POST /livekit/connection-details (livekit-client's TokenSource.endpoint) and the agent flow it
// enables: the user joins, the dispatched agent finds its delegation token in the participant
// attributes and exchanges it for an MCP token for exactly that user (examples/ end to end).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenVerifier } from 'livekit-server-sdk';
import { decodeJwt } from 'jose';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { expectNoTokensInAudit } from './helpers/audit.ts';
import { startMcpServer } from '../examples/mcp-server.ts';
import { runAgent } from '../examples/agent.ts';

/** The CLI prints the client record (clientId) plus the one-time client_secret. */
async function createClient(gh: { cli(...argv: string[]): Promise<any> }, ...argv: string[]): Promise<{ client_id: string; client_secret: string }> {
  const c = await gh.cli('client', 'create', ...argv);
  return { client_id: c.client_id ?? c.clientId, client_secret: c.client_secret };
}

const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APItestkey', LIVEKIT_API_SECRET: 'lk-secret-'.padEnd(40, 'x') };
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };
type Client = { client_id: string; client_secret: string };

/** Every LiveKit and bearer token the suite handled, to be looked for in the audit log. */
const seenTokens = new Set<string>();
async function details(gh: { url: string }, body: unknown, token?: string) {
  if (token) seenTokens.add(token);
  const res = await fetch(`${gh.url}/livekit/connection-details`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = await res.clone().json().catch(() => ({}));
  if (json.participantToken) {
    seenTokens.add(json.participantToken);
    const claims = decodeJwt(json.participantToken) as { attributes?: Record<string, string> };
    for (const [k, v] of Object.entries(claims.attributes ?? {})) if (k.startsWith('gatehouse.delegation.')) seenTokens.add(v);
  }
  return res;
}

describe('connection-details (bearer) and the agent flow', () => {
  let gh: TestGatehouse;
  let mcp: Awaited<ReturnType<typeof startMcpServer>>;
  let resource: string;
  let web: Client, agent: Client, stranger: Client;
  let bob: { token: string; sub: string };

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: LK });
    // The example MCP server's resource URI is its own URL + /mcp, registered as is.
    mcp = await startMcpServer({ issuer: gh.url });
    resource = mcp.resource;
    await gh.cli('resource', 'create', '--uri', resource, '--scope', 'tools:read', '--scope', 'tools:write');
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'user'");
    await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--name', 'Bob', '--role', 'user', '--verified');
    web = await createClient(gh, '--name', 'Voice web', '--redirect-uri', CALLBACK, '--first-party');
    agent = await createClient(gh, '--name', 'Voice agent', '--grant', 'client_credentials', '--grant', TX);
    stranger = await createClient(gh, '--name', 'Other agent', '--grant', 'client_credentials', '--grant', TX);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
    await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', resource, '--agent-name', 'voice-helper');
    await gh.cli('policy', 'client', 'set', stranger.client_id, '--resource', resource, '--act');
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: BOB, scope: 'openid email profile' });
    bob = { token: tokens.access_token, sub: tokens.claims()!.sub };
  }, 60_000);
  afterAll(async () => {
    await mcp?.close();
    await gh?.close();
  });

  it('answers livekit-client with a LiveKit token, agent dispatch and no-store', async () => {
    const res = await details(gh, {
      room_name: `user_${bob.sub}_support`,
      participant_name: 'ignored when the user has a name',
      participant_identity: 'ignored',
      participant_attributes: { locale: 'en' },
      room_config: { agents: [{ agent_name: 'voice-helper', metadata: '{"mode":"support"}' }] },
    }, bob.token);
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
    expect(body).toMatchObject({ serverUrl: LK.LIVEKIT_URL, roomName: `user_${bob.sub}_support`, participantName: 'Bob' });
    const claims = await new TokenVerifier(LK.LIVEKIT_API_KEY, LK.LIVEKIT_API_SECRET).verify(body.participantToken);
    expect(claims.sub).toBe(`user_${bob.sub}`);
    expect(claims.video).toMatchObject({ roomJoin: true, room: `user_${bob.sub}_support`, canPublish: true, canPublishData: true });
    expect((claims.roomConfig as any).agents).toMatchObject([{ agentName: 'voice-helper', metadata: '{"mode":"support"}' }]);
    expect(claims.attributes?.locale).toBe('en');
    const delegation = decodeJwt(claims.attributes!['gatehouse.delegation.voice-helper']);
    expect(delegation).toMatchObject({ sub: bob.sub, aud: gh.url, may_act: { sub: agent.client_id }, scope: 'tools:read' });
    expect(delegation.exp! - delegation.iat!).toBeLessThanOrEqual(300);
  });

  it('runs the example agent flow end to end: delegation token → MCP token → tool call', async () => {
    const res = await details(gh, { room_config: { agents: [{ agent_name: 'voice-helper' }] } }, bob.token);
    const claims = await new TokenVerifier(LK.LIVEKIT_API_KEY, LK.LIVEKIT_API_SECRET).verify((await res.json()).participantToken);
    const delegationToken = claims.attributes!['gatehouse.delegation.voice-helper'];

    const { whoami, mcpToken } = await runAgent({ issuer: gh.url, clientId: agent.client_id, clientSecret: agent.client_secret, delegationToken, resource });
    expect(whoami).toEqual({ user: bob.sub, client_id: agent.client_id, acting_agent: agent.client_id, scope: 'tools:read' });
    expect(decodeJwt(mcpToken.access_token).aud).toBe(resource);

    // The delegation token names only this agent: another agent, even one allowed to act, is refused…
    await expect(runAgent({ issuer: gh.url, clientId: stranger.client_id, clientSecret: stranger.client_secret, delegationToken, resource }))
      .rejects.toThrow(/invalid_request: .*may_act/);
    // …and nothing more than the user's permissions (tools:write) is granted.
    await expect(runAgent({ issuer: gh.url, clientId: agent.client_id, clientSecret: agent.client_secret, delegationToken, resource, scope: 'tools:write' }))
      .rejects.toThrow(/invalid_scope/);
    // Without the actor token the delegation token is refused.
    const bare = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${agent.client_id}:${agent.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TX, subject_token: delegationToken, subject_token_type: AT, resource }),
    });
    expect(bare.status).toBe(400);
    expect((await bare.json()).error).toBe('invalid_request');
    // The MCP server refuses a token for another audience.
    const wrong = await fetch(resource, { method: 'POST', headers: { authorization: `Bearer ${delegationToken}` }, body: '{}' });
    expect(wrong.status).toBe(401);
    seenTokens.add(mcpToken.access_token);

    // Each exchange above, allowed or refused, is in the audit log under the acting agent.
    const { rows } = await gh.deps.db.query<{ outcome: string; actor: string | null; client_id: string; subject: string | null; details: any }>(
      "SELECT outcome, actor, client_id, subject, details FROM audit_events WHERE type = 'token.exchange' ORDER BY id");
    expect(rows.map((r) => [r.outcome, r.client_id, r.actor, r.subject, r.details.error ?? null])).toEqual([
      ['success', agent.client_id, agent.client_id, bob.sub, null],
      ['failure', stranger.client_id, stranger.client_id, bob.sub, 'invalid_request'],
      ['failure', agent.client_id, agent.client_id, bob.sub, 'invalid_scope'],
      ['failure', agent.client_id, null, bob.sub, 'invalid_request'],
    ]);
    expect(rows[0].details).toMatchObject({ target: resource, scopes: ['tools:read'] });
  });

  it("the example MCP server holds a valid token to the tool's scope", async () => {
    // A token for the MCP server with tools:write only (the code flow, with resource=). Issue 14: this
    // used to sign Bob in, who does not hold tools:write, and got it anyway (the bug); the one scope rule
    // now needs a user whose roles hold it.
    await gh.cli('role', 'create', 'writer', '--permission', 'tools:write');
    const carol = { email: 'carol@example.com', password: 'carol has a long passphrase' };
    await gh.cli('user', 'create', '--email', carol.email, '--password', carol.password, '--name', 'Carol', '--role', 'writer', '--verified');
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: carol, resource, scope: 'openid tools:write' });
    seenTokens.add(tokens.access_token);
    expect(decodeJwt(tokens.access_token)).toMatchObject({ aud: resource, scope: 'tools:write' });
    const rpc = (method: string, params: unknown = {}) => fetch(resource, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    });
    // The token is good (tools/list answers) but lists only the tool it can call (add_note, tools:write)…
    const list = await rpc('tools/list');
    expect(list.status).toBe(200);
    expect((await list.json()).result.tools.map((t: { name: string }) => t.name)).toEqual(['add_note']);
    // …and calling whoami (tools:read) is 403 insufficient_scope naming the scope (RFC 6750 §3.1).
    const call = await rpc('tools/call', { name: 'whoami', arguments: {} });
    expect(call.status).toBe(403);
    expect(call.headers.get('www-authenticate')).toMatch(/^Bearer error="insufficient_scope", error_description="[^"]+", scope="tools:read", resource_metadata="[^"]+\/\.well-known\/oauth-protected-resource\/mcp"$/);
    expect(await call.json()).toMatchObject({ error: 'insufficient_scope', scope: 'tools:read' });
  });

  it('refuses a missing, invalid or delegated bearer token and rooms outside policy', async () => {
    let res = await details(gh, {});
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
    expect((await res.json()).error).toBe('invalid_token');
    res = await details(gh, {}, 'not-a-token');
    expect(res.status).toBe(401);
    res = await details(gh, { room_name: 'someone_elses_room' }, bob.token);
    expect([res.status, (await res.json()).error]).toEqual([403, 'invalid_target']);
    res = await details(gh, { room_name: 'admin' }, bob.token);
    expect(res.status).toBe(403);
    res = await details(gh, { participant_attributes: { 'gatehouse.delegation.voice-helper': 'forged' } }, bob.token);
    expect([res.status, (await res.json()).error]).toEqual([400, 'invalid_request']);
    const fresh = await details(gh, { room_config: { agents: [{ agent_name: 'voice-helper' }] } }, bob.token);
    const attrs = (await new TokenVerifier(LK.LIVEKIT_API_KEY, LK.LIVEKIT_API_SECRET).verify((await fresh.json()).participantToken)).attributes!;
    // Anyone in the room can read the delegation token; it must not let them join as the user.
    res = await details(gh, {}, attrs['gatehouse.delegation.voice-helper']);
    expect(res.status).toBe(401);
    const audited = await gh.deps.db.query<{ outcome: string }>("SELECT outcome FROM audit_events WHERE type = 'livekit.connection_details'");
    expect(audited.rows.some((r) => r.outcome === 'failure')).toBe(true);
    expect(audited.rows.some((r) => r.outcome === 'success')).toBe(true);
  });

  it('never writes a LiveKit, delegation or bearer token to the audit log', async () => {
    expect(seenTokens.size).toBeGreaterThan(5);
    await expectNoTokensInAudit(gh, seenTokens);
  });
});

describe('connection-details for guests', () => {
  let gh: TestGatehouse;
  beforeAll(async () => {
    gh = await startTestGatehouse({ env: { ...LK, LIVEKIT_GUESTS: 'true' } });
  }, 30_000);
  afterAll(async () => gh?.close());

  it('gives an anonymous guest a guest identity in a guest room, without data publishing', async () => {
    const res = await details(gh, { participant_name: 'Visitor' });
    const body = await res.json();
    expect(res.status, JSON.stringify(body)).toBe(200);
    expect(res.headers.get('cache-control')).toMatch(/no-store/);
    expect(body.participantName).toBe('Visitor');
    const claims = await new TokenVerifier(LK.LIVEKIT_API_KEY, LK.LIVEKIT_API_SECRET).verify(body.participantToken);
    expect(claims.sub).toMatch(/^guest_[A-Za-z0-9]+$/);
    expect(body.roomName).toMatch(/^guest_/);
    expect(claims.video).toMatchObject({ roomJoin: true, room: body.roomName, canPublishData: false });
    expect(JSON.parse(claims.metadata!)).toMatchObject({ user_id: null, session_type: 'guest' });
    const again = await (await details(gh, {})).json();
    expect(again.participantName).toBe('Guest');
    expect((await new TokenVerifier(LK.LIVEKIT_API_KEY, LK.LIVEKIT_API_SECRET).verify(again.participantToken)).sub).not.toBe(claims.sub);
  });

  it('keeps guests out of rooms outside the guest policy', async () => {
    const res = await details(gh, { room_name: 'user_abc_private' });
    expect([res.status, (await res.json()).error]).toEqual([403, 'invalid_target']);
  });
});

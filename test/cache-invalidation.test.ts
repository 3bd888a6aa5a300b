// Issue 16: clients, policies, resources and users' roles are cached in each process
// (src/store/changes.ts). Two Gatehouse processes on one PostgreSQL + Redis, both caches warm: a
// change made through A (its admin API) is obeyed by B on B's next request once the change
// notification has reached B, and by A on its very next request. Covered: a role losing a
// permission, a user disabled, a client's exchange policy, a client losing a grant type, a client
// deleted.
import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnGatehouse, stopProcess } from './helpers/process.ts';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const MCP = 'https://mcp.example.com/mcp';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase too' };

const run = await servicesFor('postgres+redis');

type Client = { client_id: string; client_secret: string };
const basic = (c: Client) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;

async function call(url: string, path: string, init: { method?: string; auth: string; form?: Record<string, string>; json?: unknown }) {
  const res = await fetch(`${url}${path}`, {
    method: init.method ?? 'POST',
    headers: { authorization: init.auth, 'content-type': init.json !== undefined ? 'application/json' : 'application/x-www-form-urlencoded' },
    body: init.json !== undefined ? JSON.stringify(init.json) : init.form ? new URLSearchParams(init.form) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, any> };
}

/** A counter from the node's /metrics (the test runs on loopback, which may read them). */
async function metric(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
const received = (url: string) => metric(url, 'gatehouse_cache_changes_received_total');

/** Wait (bounded) until `url` has received a change notification after `before`. */
async function notified(url: string, before: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    if ((await received(url)) > before) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${url} heard no change within 5 s`);
}

describe.skipIf(!run)('in-process caches on two processes (PostgreSQL + Redis)', () => {
  const procs: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  let a: string;
  let b: string;
  let web: Client;
  let agent: Client;
  let robot: Client;
  let aliceToken: string;
  let bobId: string;
  let bobToken: string;
  let admin: string;

  beforeAll(async () => {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(pg.drop, redis.cleanup);
    const env = {
      DATABASE_URL: pg.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
      DATA_ENCRYPTION_KEY: crypto.randomBytes(32).toString('base64url'),
      ADMIN_EMAIL: 'admin@example.com', ADMIN_PASSWORD: 'correct horse battery staple',
      LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APItest', LIVEKIT_API_SECRET: 'test-secret-'.padEnd(40, 'x'),
    };
    // Set-up through the CLI's commands in this process (fast), then two server processes on the data.
    const setup = await startTestGatehouse({ mode: 'postgres', env, databaseUrl: pg.url, redis: { url: redis.url, prefix: redis.prefix } });
    try {
      await setup.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
      await setup.cli('role', 'update', 'user', '--add', 'tools:read');
      await setup.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user', '--verified');
      bobId = (await setup.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--role', 'user', '--verified')).id;
      web = await setup.cli('client', 'create', '--name', 'web', '--redirect-uri', CALLBACK, '--first-party',
        '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX);
      agent = await setup.cli('client', 'create', '--name', 'agent', '--grant', 'client_credentials', '--grant', TX);
      robot = await setup.cli('client', 'create', '--name', 'provisioning', '--grant', 'client_credentials');
      await setup.cli('client', 'admin-api', robot.client_id, '--full');
      await setup.cli('policy', 'client', 'set', web.client_id, '--livekit', '--resource', MCP);
      await setup.cli('policy', 'client', 'set', agent.client_id, '--resource', MCP);
    } finally {
      await setup.stop();
    }
    // One issuer behind a load balancer (A's URL): B answers for what A issued.
    const portA = 20000 + crypto.randomInt(20000);
    const issuer = `http://127.0.0.1:${portA}`;
    const [pa, pb] = await Promise.all([spawnGatehouse({ ...env, PORT: String(portA) }), spawnGatehouse({ ...env, ISSUER: issuer })]);
    procs.push(pa.proc, pb.proc);
    a = pa.url;
    b = pb.url;
    const config = await rpConfig({ url: a }, web.client_id, web.client_secret);
    aliceToken = (await codeFlow({ url: a }, config, { creds: ALICE, resource: MCP, scope: 'openid tools:read', gatehouseToken: true })).tokens.access_token;
    bobToken = (await codeFlow({ url: a }, config, { creds: BOB, resource: MCP, scope: 'openid tools:read', gatehouseToken: true })).tokens.access_token;
    admin = (await call(a, '/token', { auth: basic(robot), form: { grant_type: 'client_credentials', resource: `${a}/admin/api`, scope: 'gatehouse:admin' } })).body.access_token;
    expect(admin).toBeTruthy();
  }, 240_000);

  afterAll(async () => {
    await Promise.all(procs.map(stopProcess));
    for (const c of cleanups) await c().catch(() => {});
  });

  const adminCall = (method: string, path: string, json: unknown) => call(a, `/admin/api${path}`, { method, auth: `Bearer ${admin}`, json });
  const mcpExchange = (url: string, token: string) => call(url, '/token', { auth: basic(web), form: { grant_type: TX, subject_token: token, subject_token_type: AT, resource: MCP, scope: 'tools:read' } });
  const livekitExchange = (url: string) => call(url, '/token', { auth: basic(web), form: { grant_type: TX, subject_token: aliceToken, subject_token_type: AT, requested_token_type: LIVEKIT } });
  const credentials = (url: string) => call(url, '/token', { auth: basic(agent), form: { grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' } });

  /** Two answers on each node: the second comes from the caches the first filled. */
  async function warm(send: (url: string) => ReturnType<typeof call>, cache: string) {
    for (const url of [a, b]) {
      const hits = await metric(url, `gatehouse_cache_lookups_total{cache="${cache}",result="hit"}`);
      for (let i = 0; i < 2; i++) expect((await send(url)).status).toBe(200);
      expect(await metric(url, `gatehouse_cache_lookups_total{cache="${cache}",result="hit"}`), `${url} answered from its ${cache} cache`).toBeGreaterThan(hits);
    }
  }

  it('a role losing a permission: the next exchange on either node is refused that scope', async () => {
    await warm((url) => mcpExchange(url, aliceToken), 'policy.user');
    const before = await received(b);
    expect((await adminCall('PATCH', '/roles/user', { remove: ['tools:read'] })).status).toBe(200);
    // A made the change: its very next request obeys it.
    expect((await mcpExchange(a, aliceToken)).body.error).toBe('invalid_scope');
    await notified(b, before);
    expect((await mcpExchange(b, aliceToken)).body.error).toBe('invalid_scope');
    // And back: the permission returns on both.
    const again = await received(b);
    expect((await adminCall('PATCH', '/roles/user', { add: ['tools:read'] })).status).toBe(200);
    expect((await mcpExchange(a, aliceToken)).status).toBe(200);
    await notified(b, again);
    expect((await mcpExchange(b, aliceToken)).status).toBe(200);
  });

  it("a client's LiveKit options: the next room token on either node carries the new roomConfig", async () => {
    const roomConfig = async (url: string) => {
      const r = await livekitExchange(url);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return decodeJwt(r.body.access_token as string).roomConfig as Record<string, unknown> | undefined;
    };
    await warm(livekitExchange, 'livekit.options');
    const before = await received(b);
    expect((await adminCall('PUT', `/livekit/options/clients/${web.client_id}`, { max_participants: 3 })).status).toBe(200);
    expect(await roomConfig(a)).toMatchObject({ maxParticipants: 3 });
    await notified(b, before);
    expect(await roomConfig(b)).toMatchObject({ maxParticipants: 3 });
    // Options removed: no roomConfig on either node.
    const again = await received(b);
    expect((await adminCall('DELETE', `/livekit/options/clients/${web.client_id}`, undefined)).status).toBe(204);
    expect(await roomConfig(a)).toBeUndefined();
    await notified(b, again);
    expect(await roomConfig(b)).toBeUndefined();
  });

  it("a client's exchange policy: LiveKit taken away is refused on either node's next request", async () => {
    await warm(livekitExchange, 'policy.client');
    const before = await received(b);
    expect((await adminCall('PUT', `/policies/clients/${web.client_id}`, { livekit: false, resources: [MCP] })).status).toBe(200);
    expect((await livekitExchange(a)).body).toMatchObject({ error: 'invalid_target', error_description: expect.stringMatching(/LiveKit/) });
    await notified(b, before);
    expect((await livekitExchange(b)).body).toMatchObject({ error: 'invalid_target', error_description: expect.stringMatching(/LiveKit/) });
  });

  it('a user disabled: the next exchange with their token is refused on either node', async () => {
    await warm((url) => mcpExchange(url, bobToken), 'policy.user');
    const before = await received(b);
    expect((await adminCall('PATCH', `/users/${bobId}`, { active: false })).status).toBe(200);
    // Disabling also ends the user's grants and revokes what was issued to them, so the refusal names
    // whichever check comes first: the token gone, revoked, or the user disabled.
    const refused = { status: 400, body: { error: 'invalid_request', error_description: expect.stringMatching(/not an active access token|revoked|disabled/) } };
    expect(await mcpExchange(a, bobToken)).toMatchObject(refused);
    await notified(b, before);
    expect(await mcpExchange(b, bobToken)).toMatchObject(refused);
  });

  it('a client losing a grant type, then deleted: refused on either node', async () => {
    await warm(credentials, 'clients.metadata');
    const before = await received(b);
    expect((await adminCall('PATCH', `/clients/${agent.client_id}`, { grant_types: [TX] })).status).toBe(200);
    // oidc-provider's answer to a grant type the client does not have.
    const refused = { status: 400, body: { error: 'invalid_request', error_description: 'requested grant type is not allowed for this client' } };
    expect(await credentials(a)).toMatchObject(refused);
    await notified(b, before);
    expect(await credentials(b)).toMatchObject(refused);

    const again = await received(b);
    expect((await adminCall('DELETE', `/clients/${agent.client_id}`, undefined)).status).toBe(204);
    expect((await credentials(a))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    await notified(b, again);
    expect((await credentials(b))).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
  });
});

describe('in-process caches in embedded mode (PGlite, one process)', () => {
  it('answers from memory, and a change through the CLI is obeyed by the next request', { timeout: 120_000 }, async () => {
    const gh = await startTestGatehouse({ mode: 'embedded' });
    try {
      await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
      await gh.cli('role', 'update', 'user', '--add', 'tools:read');
      await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user', '--verified');
      const web: Client = await gh.cli('client', 'create', '--name', 'web', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', TX);
      await gh.cli('policy', 'client', 'set', web.client_id, '--resource', MCP);
      const config = await rpConfig(gh, web.client_id, web.client_secret);
      const token = (await codeFlow(gh, config, { creds: ALICE, resource: MCP, scope: 'openid tools:read', gatehouseToken: true })).tokens.access_token;
      const exchange = () => call(gh.url, '/token', { auth: basic(web), form: { grant_type: TX, subject_token: token, subject_token_type: AT, resource: MCP, scope: 'tools:read' } });
      const hits = () => metric(gh.url, 'gatehouse_cache_lookups_total{cache="policy.client",result="hit"}');
      expect(await metric(gh.url, 'gatehouse_cache_listening')).toBe(1);
      expect((await exchange()).status).toBe(200);
      const before = await hits();
      expect((await exchange()).status).toBe(200);
      expect(await hits()).toBeGreaterThan(before);
      await gh.cli('policy', 'client', 'delete', web.client_id);
      expect((await exchange()).body).toMatchObject({ error: 'unauthorized_client' });
    } finally {
      await gh.stop();
    }
  });
});

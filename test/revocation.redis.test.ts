// Redis failure modes, against a redis-server this file starts on a spare port (no persistence):
// fail closed while it is down (introspection, exchange, refresh, userinfo and connection-details
// answer 503 temporarily_unavailable, never 200 for a revoked token; pages, discovery and JWKS keep
// working; /ready says so), recover without a restart, keep revocations across a Redis restart that
// comes back empty, and reach a second node at once.
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { Browser, CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, servicesFor } from './helpers/databases.ts';
import { flushWhileProbing, type Answer, type Probe } from './helpers/revocation-flush.ts';

const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const MCP = 'https://mcp.example.com/mcp';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };
type Client = { client_id: string; client_secret: string };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APIredistest', LIVEKIT_API_SECRET: 'lk-secret-'.padEnd(40, 'x') };

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

/** A throwaway redis-server without persistence: a restart comes back empty. */
function redisServer(port: number) {
  let proc: ChildProcess | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      for (let i = 0; i < 100; i++) {
        const ok = await new Promise<boolean>((r) => {
          const s = net.connect(port, '127.0.0.1', () => { s.end(); r(true); }).on('error', () => r(false));
        });
        if (ok) return;
        await sleep(50);
      }
      throw new Error('redis-server did not start');
    },
    async stop() {
      const p = proc;
      proc = undefined;
      if (!p || p.exitCode !== null) return;
      await new Promise<void>((r) => { p.once('exit', () => r()); p.kill('SIGKILL'); });
    },
  };
}

const run = await servicesFor('postgres');
const haveRedisServer = await new Promise<boolean>((r) => spawn('redis-server', ['--version'], { stdio: 'ignore' }).on('exit', (c) => r(c === 0)).on('error', () => r(false)));
if (process.env.REQUIRE_SERVICES === '1' && !haveRedisServer) throw new Error('REQUIRE_SERVICES=1 but redis-server is not installed');

describe.skipIf(!run || !haveRedisServer)('revocation with Redis going away (PostgreSQL + own redis-server)', () => {
  let redis: ReturnType<typeof redisServer>;
  let a: TestGatehouse;
  let b: TestGatehouse;
  let web: Client;
  let drop: () => Promise<void>;
  let dbUrl: string;

  const post = async (gh: TestGatehouse, path: string, params: Record<string, string>) => {
    const res = await fetch(`${gh.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
    });
    return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, any> };
  };
  const introspect = (gh: TestGatehouse, token: string) => post(gh, '/token/introspection', { token });
  const exchange = (gh: TestGatehouse, token: string) => post(gh, '/token', { grant_type: TX, subject_token_type: AT, subject_token: token, resource: MCP });
  const connectionDetails = async (gh: TestGatehouse, token: string) => {
    const res = await fetch(`${gh.url}/livekit/connection-details`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
    return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, any> };
  };

  async function tokens() {
    const config = await rpConfig(a, web.client_id, web.client_secret);
    // One session, one grant: `gate` is bound to Gatehouse (exchange, connection-details take it), `jwt`
    // is the MCP server's (issue 14: Gatehouse refuses it as a subject or bearer token).
    const browser = new Browser();
    const { tokens: g } = await codeFlow(a, config, { creds: ALICE, scope: 'openid', browser });
    const { tokens: t } = await codeFlow(a, config, { creds: ALICE, resource: MCP, scope: 'openid offline_access tools:read', browser });
    return { jwt: t.access_token, refresh: t.refresh_token!, opaque: '', gate: g.access_token };
  }

  beforeAll(async () => {
    redis = redisServer(await freePort());
    await redis.start();
    const pg = await createTestPgDatabase();
    drop = pg.drop;
    dbUrl = pg.url;
    const shared = { mode: 'postgres' as const, databaseUrl: pg.url, redis: { url: redis.url, prefix: 'gh:' } };
    // The wipe test probes one user's exchange from 12 workers for as long as the wipes last, far
    // past the per-user exchange limit (60 a minute), which would answer 429 instead of the
    // revocation decision under test. That limit is raised here; every other limit stays on.
    const env = { ...LK, RATE_LIMIT_EXCHANGE_USER: '100000/1m', RATE_LIMIT_TOKEN_IP: '100000/1m' };
    a = await startTestGatehouse({ ...shared, env });
    // One issuer behind a load balancer: B answers for tokens A issued.
    b = await startTestGatehouse({ ...shared, env: { ...env, ISSUER: a.url } });
    await a.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    await a.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'user'");
    await a.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user');
    const c = await a.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX);
    web = { client_id: c.client_id, client_secret: c.client_secret };
    await a.cli('policy', 'client', 'set', web.client_id, '--resource', MCP, '--livekit');
  }, 60_000);
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await redis?.stop();
    await drop?.();
  });

  it('a revocation on node A is refused on node B at once', async () => {
    const t = await tokens();
    expect((await introspect(b, t.jwt)).body.active).toBe(true);
    const start = process.hrtime.bigint();
    expect((await post(a, '/token/revocation', { token: t.jwt })).status).toBe(200);
    let ms = 0;
    for (let i = 0; i < 200; i++) {
      if ((await introspect(b, t.jwt)).body.active === false) {
        ms = Number(process.hrtime.bigint() - start) / 1e6;
        break;
      }
      await sleep(5);
    }
    console.log(`revocation on A refused on B after ${ms.toFixed(1)} ms (revoke request included)`);
    expect(ms).toBeGreaterThan(0);
    expect((await exchange(b, t.jwt)).body.error).toBe('invalid_request');
  });

  it('fails closed while Redis is down, keeps pages and keys up, and recovers without a restart', async () => {
    const live = await tokens();
    const revoked = await tokens();
    // An openid access token (opaque) for userinfo.
    const { tokens: forUserinfo } = await codeFlow(a, await rpConfig(a, web.client_id, web.client_secret), { creds: ALICE, scope: 'openid email' });
    const userinfo = async (gh: TestGatehouse) => {
      const res = await fetch(`${gh.url}/me`, { headers: { authorization: `Bearer ${forUserinfo.access_token}` } });
      return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, any> };
    };
    expect((await userinfo(b)).body.email).toBe(ALICE.email);
    expect((await post(a, '/token/revocation', { token: revoked.jwt })).status).toBe(200);
    await redis.stop();
    await sleep(300);

    for (const gh of [a, b]) {
      for (const token of [live.jwt, revoked.jwt]) {
        const i = await introspect(gh, token);
        expect(i.status, `${gh === a ? 'A' : 'B'} ${token === live.jwt ? 'live' : 'revoked'} ${JSON.stringify(i.body)}`).toBe(503);
        expect(i.body.error).toBe('temporarily_unavailable');
        // Exchange and connection-details take the Gatehouse-bound token of the same grant.
        const gate = token === live.jwt ? live.gate : revoked.gate;
        const x = await exchange(gh, gate);
        expect(x.status, JSON.stringify(x.body)).toBe(503);
        expect(x.body.error).toBe('temporarily_unavailable');
        expect(await connectionDetails(gh, gate)).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
      }
      const r = await post(gh, '/token', { grant_type: 'refresh_token', refresh_token: live.refresh });
      expect(r.status).toBe(503);
      expect(r.body.error).toBe('temporarily_unavailable');
      expect(await userinfo(gh)).toMatchObject({ status: 503, body: { error: 'temporarily_unavailable' } });
      expect((await fetch(`${gh.url}/.well-known/openid-configuration`)).status).toBe(200);
      expect((await fetch(`${gh.url}/jwks`)).status).toBe(200);
      const ready = await fetch(`${gh.url}/ready`);
      expect(ready.status).toBe(503);
      expect((await ready.json()).checks.revocation).toBe('unavailable');
    }
    const page = await fetch(`${a.url}/health`);
    expect(page.status).toBe(200);

    await redis.start(); // empty: no persistence
    const deadline = Date.now() + 15_000;
    let recovered = false;
    while (Date.now() < deadline) {
      const i = await introspect(b, live.jwt);
      // Never "active" for the revoked token, whatever the moment.
      expect((await introspect(a, revoked.jwt)).body.active).not.toBe(true);
      if (i.status === 200 && i.body.active === true) {
        recovered = true;
        break;
      }
      await sleep(100);
    }
    expect(recovered).toBe(true);
    // The restarted Redis came back empty; the revocation came back from PostgreSQL.
    expect(await introspect(a, revoked.jwt)).toMatchObject({ status: 200, body: { active: false } });
    expect(await introspect(b, revoked.jwt)).toMatchObject({ status: 200, body: { active: false } });
    expect((await exchange(b, revoked.jwt)).body.error).toBe('invalid_request');
    expect((await exchange(b, live.gate)).status).toBe(200);
    expect((await connectionDetails(b, live.gate)).status).toBe(200);
    expect((await connectionDetails(b, revoked.jwt)).status).toBe(401);
    expect((await userinfo(a)).body.email).toBe(ALICE.email);
    expect((await fetch(`${a.url}/ready`)).status).toBe(200);
  }, 45_000);

  it('a revoked token is never accepted while its Redis keys are wiped again and again, mid-reload too; refused normally once it stops', async () => {
    const bob = await a.cli('user', 'create', '--email', 'bob@example.com', '--password', ALICE.password, '--role', 'user');
    const config = await rpConfig(a, web.client_id, web.client_secret);
    const { tokens: forMcp } = await codeFlow(a, config, { creds: { email: bob.email, password: ALICE.password }, resource: MCP, scope: 'openid tools:read' });
    const { tokens: forUserinfo } = await codeFlow(a, config, { creds: { email: bob.email, password: ALICE.password }, scope: 'openid email' });
    const jwt = forMcp.access_token;
    expect((await introspect(b, jwt)).body.active).toBe(true);
    // Revoked first, so their rows are the first a reload writes (the ones a wipe mid-reload takes).
    expect((await post(a, '/token/revocation', { token: jwt })).status).toBe(200);
    // By user, without ending the session (as `revoke --user` would): userinfo then depends on the list alone.
    await a.deps.revocations.revoke('user', bob.id, 3600, { subject: bob.id, reason: 'test' });
    // Enough other revocations that a reload takes a while.
    const FILLER = 20_000;
    await a.deps.db.query(`INSERT INTO revocations (kind, id, reason, expires_at)
      SELECT 'jti', 'filler-' || g, 'filler', now() + interval '10 minutes' FROM generate_series(1, $1::int) g`, [FILLER]);
    const reloadStart = performance.now();
    await a.deps.revocations.reload({ force: true });
    console.log(`one reload of ${FILLER + 2} revocations: ${(performance.now() - reloadStart).toFixed(0)} ms`);

    const me = (gh: TestGatehouse) => async (): Promise<Answer> => {
      const res = await fetch(`${gh.url}/me`, { headers: { authorization: `Bearer ${forUserinfo.access_token}` } });
      return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, any> };
    };
    const probes: Probe[] = [a, b].flatMap((gh, n) => [
      { name: `introspection@${'AB'[n]}`, send: () => introspect(gh, jwt), accepted: (r) => r.body.active === true, refused: (r) => r.status === 200 && r.body.active === false },
      { name: `userinfo@${'AB'[n]}`, send: me(gh), accepted: (r) => r.status === 200, refused: (r) => r.status === 401 },
      { name: `exchange@${'AB'[n]}`, send: () => exchange(gh, jwt), accepted: (r) => r.status === 200, refused: (r) => r.status === 400 && r.body.error === 'invalid_request' },
    ]);
    const run = await flushWhileProbing({
      redisUrl: redis.url, prefix: 'gh:', probes, wipes: 14, gaps: [30, 80, 150, 300, 600, 1200, 2500], workers: 12, settleWithinMs: 30_000,
    });
    console.log(`wipes during probing (2 nodes, 1 process): ${JSON.stringify({ ...run, accepted: run.accepted.length, unexpected: run.unexpected.length })}`);
    expect(run.accepted, 'a revoked token was accepted').toEqual([]);
    expect(run.unexpected).toEqual([]);
    expect(run.midReload, 'no wipe fell inside a reload: the test did not reach the window').toBeGreaterThan(0);
    expect(run.settleMs, 'still 503 (or worse) 30 s after the last wipe').toBeGreaterThanOrEqual(0);
    await a.deps.db.query("DELETE FROM revocations WHERE reason = 'filler'");
  }, 120_000);

  it('refuses to start on a Redis that may evict keys, and starts once it may not', async () => {
    const { Redis } = await import('ioredis');
    const raw = new Redis(redis.url);
    try {
      await raw.config('SET', 'maxmemory', '512mb');
      await raw.config('SET', 'maxmemory-policy', 'volatile-lru');
      // Everything a node needs is there except a safe Redis: the start is refused, with the reason.
      const evicting = startTestGatehouse({ mode: 'postgres', databaseUrl: dbUrl, redis: { url: redis.url, prefix: 'evict:' } });
      await expect(evicting).rejects.toThrow(/maxmemory-policy volatile-lru.*noeviction/);
      await raw.config('SET', 'maxmemory-policy', 'noeviction');
      const safe = await startTestGatehouse({ mode: 'postgres', databaseUrl: dbUrl, redis: { url: redis.url, prefix: 'evict:' } });
      expect((await fetch(`${safe.url}/ready`)).status).toBe(200);
      await safe.close();
    } finally {
      await raw.config('SET', 'maxmemory', '0');
      await raw.config('SET', 'maxmemory-policy', 'noeviction');
      raw.disconnect();
    }
  }, 30_000);

  it('a revocation made while Redis is down is recorded durably and applies once it is back', async () => {
    const t = await tokens();
    await redis.stop();
    await sleep(200);
    const jti = decodeJwt(t.jwt).jti as string;
    expect(await a.cli('revoke', '--jti', jti)).toMatchObject({ revoked: 'jti', warning: expect.stringMatching(/durably/) });
    await redis.start();
    let status = 0;
    let body: Record<string, any> = {};
    for (let i = 0; i < 150 && status !== 200; i++) {
      ({ status, body } = await introspect(b, t.jwt));
      expect(body.active).not.toBe(true);
      if (status !== 200) await sleep(100);
    }
    expect(status).toBe(200);
    expect(body).toEqual({ active: false });
  }, 30_000);
});

// Dependency faults (issue 15): a Gatehouse on PostgreSQL + Redis reached through TCP proxies the
// test cuts (every connection dropped, new ones refused) and hangs (connections kept, nothing
// forwarded) while requests run. Every answer during the fault is 503 with Retry-After (JSON for
// APIs, a page for people), never a 500 or a request that hangs; /health stays 200 and /ready says
// 503 naming the dependency; once the proxy forwards again everything recovers without a restart,
// and every write that was acknowledged is there exactly once, whole (a user with its roles).
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/http/log.ts';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';

const run = await servicesFor('postgres+redis');

interface Answer { path: string; status: number; retryAfter: string | null; type: string; body: string; ms: number }

describe.runIf(run)('PostgreSQL and Redis outages', () => {
  let gh: TestGatehouse;
  let pgProxy: TcpProxy;
  let redisProxy: TcpProxy;
  let dropDb: () => Promise<void>;
  let cleanRedis: () => Promise<void>;
  let adminToken: string;
  let userToken: string;
  let agentBasic: string;
  let webBasic: string;
  const secrets: string[] = [];
  const logged: string[] = [];
  const acknowledged = new Set<string>();
  const attempted = new Set<string>();
  let seq = 0;

  beforeAll(async () => {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    dropDb = pg.drop;
    cleanRedis = redis.cleanup;
    const pgUrl = new URL(pg.url);
    pgProxy = await startTcpProxy(pgUrl.hostname, Number(pgUrl.port || 5432));
    const redisUrl = new URL(redis.url);
    redisProxy = await startTcpProxy(redisUrl.hostname, Number(redisUrl.port || 6379));
    gh = await startTestGatehouse({
      mode: 'postgres',
      databaseUrl: pgProxy.url(pg.url),
      redis: { url: redisProxy.url(redis.url), prefix: redis.prefix },
      // Short bounds, so a hung dependency answers quickly here (defaults: 5 s and 2 s).
      // The admin's token comes from a browser sign-in as ADMIN: the admin role's MFA policy is not under test.
      env: { DATABASE_TIMEOUT_MS: '1500', REDIS_TIMEOUT_MS: '500', MFA_REQUIRED_ROLES: 'none' },
      log: createLogger('warn', new Writable({ write(chunk, _enc, done) { logged.push(String(chunk)); done(); } })),
    });
    const basic = (c: { client_id: string; client_secret: string }) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
    const robot = await gh.cli('client', 'create', '--name', 'Robot', '--grant', 'client_credentials');
    await gh.cli('client', 'admin-api', robot.client_id, '--full');
    const agent = await gh.cli('client', 'create', '--name', 'Agent', '--grant', 'client_credentials');
    const web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
    agentBasic = basic(agent);
    webBasic = basic(web);
    secrets.push(robot.client_secret, agent.client_secret, web.client_secret);
    const t = await fetch(`${gh.url}/token`, {
      method: 'POST', headers: { authorization: basic(robot), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin gatehouse:admin:read' }),
    });
    adminToken = ((await t.json()) as { access_token: string }).access_token;
    userToken = (await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { scope: 'openid email' })).tokens.access_token;
    secrets.push(adminToken, userToken);
  });
  afterAll(async () => {
    await gh?.close();
    await pgProxy?.close();
    await redisProxy?.close();
    await dropDb?.();
    await cleanRedis?.();
  });

  async function call(path: string, init: RequestInit = {}): Promise<Answer> {
    const t0 = Date.now();
    // A hang detector, not a timing assertion: a request still open after 20 s is a hung request.
    const res = await fetch(`${gh.url}${path}`, { redirect: 'manual', signal: AbortSignal.timeout(20_000), ...init });
    const body = await res.text();
    return { path, status: res.status, retryAfter: res.headers.get('retry-after'), type: res.headers.get('content-type') ?? '', body, ms: Date.now() - t0 };
  }
  const form = (auth: string, body: Record<string, string>) => ({
    method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body),
  });
  /** One round of the load: reads and writes through every layer (oidc-provider, admin API, pages). */
  function round(): Promise<Answer>[] {
    const email = `fault-${++seq}@example.com`;
    attempted.add(email);
    const admin = { authorization: `Bearer ${adminToken}` };
    return [
      call('/token', form(agentBasic, { grant_type: 'client_credentials' })),
      call('/token/introspection', form(webBasic, { token: userToken })),
      call('/me', { headers: { authorization: `Bearer ${userToken}` } }),
      call('/admin/api/users?limit=5', { headers: admin }),
      call('/admin/api/users', { method: 'POST', headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify({ email, roles: ['user'] }) })
        .then((a) => { if (a.status === 201 || a.status === 200) acknowledged.add(email); return a; }),
      call(`/auth?${new URLSearchParams({ client_id: 'fault-web', response_type: 'code', scope: 'openid', redirect_uri: CALLBACK })}`, { headers: { accept: 'text/html' } }),
    ];
  }
  async function load(rounds: number): Promise<Answer[]> {
    const out: Answer[] = [];
    for (let i = 0; i < rounds; i++) out.push(...(await Promise.all(round())));
    return out;
  }
  async function untilReady(): Promise<number> {
    const t0 = Date.now();
    for (let i = 0; i < 200; i++) {
      if ((await call('/ready')).status === 200) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('did not become ready again');
  }
  function summary(answers: Answer[]) {
    const by: Record<string, number> = {};
    for (const a of answers) {
      const key = `${a.path.split('?')[0]} ${a.status}`;
      by[key] = (by[key] ?? 0) + 1;
    }
    return by;
  }
  /** What a fault may answer: 503 with Retry-After and a parsable body, or a success that needed nothing down. */
  function expectOnlyUnavailable(answers: Answer[], what: string) {
    const bad = answers.filter((a) => a.status >= 500 && (a.status !== 503 || !a.retryAfter));
    expect(bad.map((a) => `${a.path} ${a.status} ${a.body.slice(0, 120)}`), what).toEqual([]);
    for (const a of answers.filter((x) => x.status === 503)) {
      if (a.type.includes('json')) expect(JSON.parse(a.body).error, a.path).toBe('temporarily_unavailable');
      else expect(a.body, a.path).toMatch(/<html|<!DOCTYPE/i);
    }
  }

  it('works through the proxies', async () => {
    const answers = await load(2);
    expect(answers.filter((a) => a.status >= 500)).toEqual([]);
    expect((await call('/ready')).status).toBe(200);
  });

  for (const mode of ['refuse', 'hang'] as const) {
    it(`PostgreSQL ${mode === 'refuse' ? 'down' : 'hung'}: 503 + Retry-After, /health 200, /ready 503; then recovery`, async () => {
      pgProxy.cut(mode);
      const during = await load(3);
      const health = await call('/health');
      const ready = await call('/ready');
      pgProxy.restore();
      const recoveredIn = await untilReady();
      const after = await load(2);
      const slowest = Math.max(...during.map((a) => a.ms));
      console.log(`PostgreSQL ${mode}: ${during.length} requests during the fault ${JSON.stringify(summary(during))}, slowest ${slowest} ms; ready again ${recoveredIn} ms after the proxy reopened; after ${JSON.stringify(summary(after))}`);
      if (during.some((a) => a.status >= 500 && a.status !== 503)) console.log(logged.filter((l) => /"level":50/.test(l)).slice(-5).join('\n'));
      expectOnlyUnavailable(during, 'during');
      expect(during.filter((a) => a.status === 503).length).toBeGreaterThan(0);
      expect(health.status).toBe(200);
      expect(ready.status).toBe(503);
      expect(JSON.parse(ready.body).checks.database).toBe('unavailable');
      // People get a page that says to try again.
      const pages = during.filter((a) => a.path.startsWith('/auth'));
      expect(pages.map((a) => a.status)).toEqual(pages.map(() => 503));
      for (const p of pages) expect(p.body).toMatch(/try again/i);
      expect(after.filter((a) => a.status >= 500)).toEqual([]);
    });
  }

  for (const mode of ['refuse', 'hang'] as const) {
    it(`Redis ${mode === 'refuse' ? 'down' : 'hung'}: revocation-dependent answers 503 + Retry-After, the rest unaffected; then recovery`, async () => {
      redisProxy.cut(mode);
      const during = await load(3);
      const health = await call('/health');
      const ready = await call('/ready');
      redisProxy.restore();
      const recoveredIn = await untilReady();
      const after = await load(2);
      console.log(`Redis ${mode}: ${during.length} requests during the fault ${JSON.stringify(summary(during))}, slowest ${Math.max(...during.map((a) => a.ms))} ms; ready again ${recoveredIn} ms after the proxy reopened; after ${JSON.stringify(summary(after))}`);
      if (during.some((a) => a.status >= 500 && a.status !== 503)) console.log(logged.filter((l) => /"level":50/.test(l)).slice(-5).join('\n'));
      expectOnlyUnavailable(during, 'during');
      // Fail closed: a token's revocation status cannot be read, so it is not vouched for.
      expect(during.filter((a) => a.path === '/token/introspection').every((a) => a.status === 503)).toBe(true);
      expect(health.status).toBe(200);
      expect(ready.status).toBe(503);
      expect(JSON.parse(ready.body).checks.redis).toBe('unavailable');
      expect(after.filter((a) => a.status >= 500)).toEqual([]);
    });
  }

  it("logged the outages (driver errors included) without a token, secret or the users' emails", () => {
    const text = logged.join('');
    expect(text).toContain('dependency unavailable');
    for (const secret of [...secrets, ...attempted]) expect(text.includes(secret), secret.slice(0, 12)).toBe(false);
  });

  it('lost nothing acknowledged and wrote nothing twice or by halves', async () => {
    const rows = (await gh.deps.db.query<{ email: string; roles: number }>(
      'SELECT u.email, count(ur.role)::int AS roles FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id WHERE u.email = ANY($1) GROUP BY u.id, u.email',
      [[...attempted]],
    )).rows;
    console.log(`users: ${attempted.size} creations tried, ${acknowledged.size} acknowledged, ${rows.length} stored`);
    const stored = rows.map((r) => r.email);
    for (const email of acknowledged) expect(stored.filter((e) => e === email), email).toHaveLength(1);
    expect(new Set(stored).size).toBe(stored.length);
    // Each stored user has its role: the user and its role rows are one transaction.
    expect(rows.filter((r) => r.roles !== 1)).toEqual([]);
    expect(acknowledged.size).toBeGreaterThan(0);
  });
});

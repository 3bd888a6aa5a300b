// Limits hold across Gatehouse processes sharing Redis (issue 7): two real processes (`src/main.ts`)
// on one PostgreSQL + Redis; requests alternate between them and the limit counts them all.
// Needs PostgreSQL and Redis; under REQUIRE_SERVICES=1 their absence fails the run.
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnGatehouse, stopProcess } from './helpers/process.ts';
import { ADMIN } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';
import { loadConfig } from '../src/config/index.ts';
import { createRedisKv } from '../src/store/kv.ts';
import { createRateLimits, RateLimited } from '../src/http/rate-limit.ts';


const stop = stopProcess;

const run = await servicesFor('postgres+redis');

describe.skipIf(!run)('rate limits across two processes sharing Redis', () => {
  const procs: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  let a: { url: string };
  let b: { url: string };

  beforeAll(async () => {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(pg.drop, redis.cleanup);
    const env = {
      DATABASE_URL: pg.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
      ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, MFA_REQUIRED_ROLES: 'none',
      DATA_ENCRYPTION_KEY: Buffer.alloc(32, 9).toString('base64url'),
      RATE_LIMITS: 'on', RATE_LIMIT_TOKEN_IP: '4/1m', RATE_LIMIT_LOGIN_ACCOUNT: '3/15m', LOGIN_DELAY_MS: '0',
    };
    const first = await spawnGatehouse(env);
    procs.push(first.proc);
    const second = await spawnGatehouse(env);
    procs.push(second.proc);
    a = first;
    b = second;
  }, 50_000);
  afterAll(async () => {
    for (const p of procs) await stop(p);
    for (const c of cleanups) await c();
  });

  it('/token per IP counts requests at both processes', async () => {
    const post = (url: string) => fetch(`${url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
    });
    const statuses = [];
    for (const url of [a.url, b.url, a.url, b.url]) statuses.push((await post(url)).status);
    expect(statuses).not.toContain(429);
    const refusedA = await post(a.url);
    const refusedB = await post(b.url);
    expect([refusedA.status, refusedB.status]).toEqual([429, 429]);
    expect(Number(refusedB.headers.get('retry-after'))).toBeGreaterThan(0);
  });
});

describe.skipIf(!run)('lockout in Redis', () => {
  it('guesses are taken atomically across connections: of 25 parallel guesses exactly the limit pass; the lock is time-boxed and clears', async () => {
    const redis = await createTestRedisPrefix();
    const config = loadConfig({ RATE_LIMIT_LOGIN_ACCOUNT: '3/15m', LOCKOUT_DURATION: '1' });
    const kvA = createRedisKv(redis.url, redis.prefix);
    const kvB = createRedisKv(redis.url, redis.prefix);
    try {
      // Connected first: a lockout refuses (503) while its client is not ready.
      await Promise.all([kvA.ping(), kvB.ping()]);
      const a = createRateLimits(kvA, config);
      const b = createRateLimits(kvB, config);
      const outcomes = await Promise.all(Array.from({ length: 25 }, (_, i) => (i % 2 ? a : b).attempt('loginAccount', 'k').then((g) => g.count, (e) => e)));
      expect(outcomes.filter((o) => typeof o === 'number').sort()).toEqual([1, 2, 3]);
      const refused = outcomes.filter((o) => o instanceof RateLimited);
      expect(refused).toHaveLength(22);
      expect(refused.every((e) => e.status === 429 && Number(e.headers['Retry-After']) >= 1)).toBe(true);
      // A right guess while locked is refused too: the lock is not a counter of wrong ones.
      await expect(a.attempt('loginAccount', 'k')).rejects.toBeInstanceOf(RateLimited);
      await new Promise((r) => setTimeout(r, 1100));
      // LOCKOUT_DURATION over: the key is gone, the window starts afresh.
      const fresh = await b.attempt('loginAccount', 'k');
      expect(fresh.count).toBe(1);
      // A guess that passed is given back.
      await fresh.passed();
      expect((await a.attempt('loginAccount', 'k')).count).toBe(1);
      await b.clear('loginAccount', 'k');
      expect((await a.attempt('loginAccount', 'k')).count).toBe(1);
    } finally {
      await kvA.close();
      await kvB.close();
      await redis.cleanup();
    }
  });
});

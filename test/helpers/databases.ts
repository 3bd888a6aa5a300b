// Real services for tests: a uniquely named PostgreSQL database and Redis key prefix per use,
// dropped after. With REQUIRE_SERVICES=1 a missing service fails the run instead of skipping.
import crypto from 'node:crypto';
import pg from 'pg';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { createPgDb, createPgliteDb, type Db } from '../../src/store/db.ts';
import { createMemoryKv, createRedisKv, type Kv } from '../../src/store/kv.ts';
import { migrate } from '../../src/store/migrate.ts';

export const REQUIRE_SERVICES = process.env.REQUIRE_SERVICES === '1';
export const PG_ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const unique = () => `${process.pid}_${crypto.randomBytes(4).toString('hex')}`;

export async function pgAvailable(): Promise<boolean> {
  // A server that accepts the connection but never answers must not hang the probe either.
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 1000, query_timeout: 1000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

export async function redisAvailable(): Promise<boolean> {
  const r = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    await r.ping();
    return true;
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

/**
 * Whether suites needing these services should run. Under REQUIRE_SERVICES=1 an unreachable
 * service throws, so the run fails rather than silently skipping.
 */
export async function servicesFor(what: 'postgres' | 'redis' | 'postgres+redis'): Promise<boolean> {
  const needPg = what.includes('postgres');
  const needRedis = what.includes('redis');
  const [p, r] = await Promise.all([needPg ? pgAvailable() : true, needRedis ? redisAvailable() : true]);
  if (REQUIRE_SERVICES && !(p && r)) {
    throw new Error(`REQUIRE_SERVICES=1 but ${!p ? `PostgreSQL (${PG_ADMIN_URL})` : `Redis (${REDIS_URL})`} is unreachable`);
  }
  return p && r;
}

export async function createTestPgDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `gh_test_${unique()}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    // Identifiers cannot be parameters; the name is ours (digits, hex, underscores) and quoted.
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.href,
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      try {
        // WITH (FORCE) (PostgreSQL 13+) terminates the pool's leftover connections first.
        await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

export async function createTestRedisPrefix(): Promise<{ url: string; prefix: string; cleanup(): Promise<void> }> {
  const prefix = `gh_test_${unique()}:`;
  return {
    url: REDIS_URL,
    prefix,
    async cleanup() {
      const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
      r.on('error', () => {});
      try {
        let cursor = '0';
        do {
          const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
          cursor = next;
          if (keys.length) await r.del(...keys);
        } while (cursor !== '0');
      } finally {
        r.disconnect();
      }
    },
  };
}

/** Run one suite against in-memory PGlite and (when available / required) a fresh PostgreSQL database. */
export function describeEachDb(name: string, fn: (getDb: () => Db) => void) {
  describe(`${name} (pglite)`, () => {
    let db: Db;
    beforeAll(async () => {
      db = await createPgliteDb();
      await migrate(db);
    });
    afterAll(async () => db?.close());
    fn(() => db);
  });
  const available = servicesFor('postgres');
  describe(`${name} (postgres)`, async () => {
    const run = await available;
    let db: Db;
    let drop: (() => Promise<void>) | undefined;
    beforeAll(async () => {
      if (!run) return;
      const t = await createTestPgDatabase();
      drop = t.drop;
      db = createPgDb(t.url);
      await migrate(db);
    });
    afterAll(async () => {
      await db?.close();
      await drop?.();
    });
    if (run) fn(() => db);
    // A visible skip, so a run without PostgreSQL says what it did not test.
    else it.skip('PostgreSQL unavailable (set REQUIRE_SERVICES=1 to require it)', () => {});
  });
}

/** Run one suite against the in-process store and (when available / required) Redis. */
export function describeEachKv(name: string, fn: (getKv: () => Kv, prefix: () => string) => void) {
  describe(`${name} (memory)`, () => {
    let kv: Kv;
    beforeAll(() => {
      kv = createMemoryKv('mem:');
    });
    afterAll(async () => kv?.close());
    fn(() => kv, () => 'mem:');
  });
  const available = servicesFor('redis');
  describe(`${name} (redis)`, async () => {
    const run = await available;
    let kv: Kv;
    let t: Awaited<ReturnType<typeof createTestRedisPrefix>>;
    beforeAll(async () => {
      if (!run) return;
      t = await createTestRedisPrefix();
      kv = createRedisKv(t.url, t.prefix);
    });
    afterAll(async () => {
      await kv?.close();
      await t?.cleanup();
    });
    if (run) fn(() => kv, () => t.prefix);
    else it.skip('Redis unavailable (set REQUIRE_SERVICES=1 to require it)', () => {});
  });
}

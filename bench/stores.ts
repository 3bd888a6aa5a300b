// The store a bench server runs on: a fresh PostgreSQL database and Redis key prefix, or an embedded
// data folder; added to `env`, with what removes it pushed onto `cleanups`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestPgDatabase, createTestRedisPrefix } from '../test/helpers/databases.ts';

export async function prepareStore(mode: 'embedded' | 'postgres', env: Record<string, string>, cleanups: (() => Promise<void>)[], dirPrefix: string): Promise<void> {
  if (mode === 'postgres') {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(pg.drop, redis.cleanup);
    Object.assign(env, { DATABASE_URL: pg.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix });
  } else {
    env.DATA_DIR = fs.mkdtempSync(path.join(os.tmpdir(), dirPrefix));
    cleanups.push(async () => fs.rmSync(env.DATA_DIR, { recursive: true, force: true }));
  }
}

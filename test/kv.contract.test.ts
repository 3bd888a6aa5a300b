// The Kv contract (revocation, rate limits and pub/sub build on it) on the in-process store and Redis.
import { expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createMemoryKv, createRedisKv, type Kv } from '../src/store/kv.ts';
import { createTestRedisPrefix, describeEachKv, REDIS_URL } from './helpers/databases.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeEachKv('kv store', (getKv, prefix) => {
  it('gets, sets and deletes', async () => {
    const kv = getKv();
    expect(await kv.get('a')).toBeNull();
    await kv.set('a', '1');
    expect(await kv.get('a')).toBe('1');
    await kv.del('a');
    expect(await kv.get('a')).toBeNull();
  });

  it('expires keys after their TTL', async () => {
    const kv = getKv();
    await kv.set('ttl', 'x', 1);
    expect(await kv.get('ttl')).toBe('x');
    await sleep(1200);
    expect(await kv.get('ttl')).toBeNull();
  });

  it('increments with an expiry set at creation', async () => {
    const kv = getKv();
    expect(await kv.incr('n', 1)).toBe(1);
    expect(await kv.incr('n', 1)).toBe(2);
    await sleep(1200);
    expect(await kv.incr('n', 1)).toBe(1);
  });

  it('delivers published messages to subscribers', async () => {
    const kv = getKv();
    const got: string[] = [];
    const unsubscribe = await kv.subscribe('chan', (m) => got.push(m));
    await kv.publish('chan', 'hello');
    for (let i = 0; i < 20 && got.length === 0; i++) await sleep(25);
    expect(got).toEqual(['hello']);
    await unsubscribe();
    await kv.publish('chan', 'again');
    await sleep(100);
    expect(got).toEqual(['hello']);
  });

  it('keeps keys under its prefix', async () => {
    const kv = getKv();
    await kv.set('scoped', 'v', 30);
    await kv.incr('scoped-n', 30);
    if (kv.kind !== 'redis') return;
    const raw = new Redis(REDIS_URL);
    try {
      expect(await raw.get(`${prefix()}scoped`)).toBe('v');
      expect(await raw.get(`${prefix()}scoped-n`)).toBe('1');
      expect(await raw.ttl(`${prefix()}scoped-n`)).toBeGreaterThan(0);
      expect(await raw.get('scoped')).toBeNull();
    } finally {
      raw.disconnect();
    }
  });

  it('isolates stores with different prefixes, pub/sub included', async () => {
    const kv = getKv();
    const other = await otherStore(kv.kind);
    try {
      await kv.set('shared-name', 'mine');
      expect(await other.kv.get('shared-name')).toBeNull();
      const got: string[] = [];
      await other.kv.subscribe('chan-iso', (m) => got.push(m));
      await kv.publish('chan-iso', 'not for you');
      await sleep(100);
      expect(got).toEqual([]);
    } finally {
      await other.close();
    }
  });
});

/** A second store of the same kind under another prefix. */
async function otherStore(kind: Kv['kind']): Promise<{ kv: Kv; close(): Promise<void> }> {
  if (kind === 'memory') {
    const kv = createMemoryKv('other:');
    return { kv, close: () => kv.close() };
  }
  const t = await createTestRedisPrefix();
  const kv = createRedisKv(t.url, t.prefix);
  return {
    kv,
    async close() {
      await kv.close();
      await t.cleanup();
    },
  };
}

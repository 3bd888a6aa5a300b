// The Kv contract (revocation, rate limits and pub/sub build on it) on the in-process store and Redis.
import { expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { describeEachKv, REDIS_URL } from './helpers/databases.ts';

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
    if (kv.kind !== 'redis') return;
    const raw = new Redis(REDIS_URL);
    try {
      expect(await raw.get(`${prefix()}scoped`)).toBe('v');
      expect(await raw.get('scoped')).toBeNull();
    } finally {
      raw.disconnect();
    }
  });
});

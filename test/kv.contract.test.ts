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

  it('sets a key only when absent: of 20 parallel calls exactly one wins, until the key expires', async () => {
    const kv = getKv();
    const won = await Promise.all(Array.from({ length: 20 }, (_, i) => kv.setIfAbsent('gate', String(i), 300)));
    expect(won.filter(Boolean)).toHaveLength(1);
    expect(await kv.get('gate')).toBe(String(won.indexOf(true)));
    expect(await kv.setIfAbsent('gate', 'late', 300)).toBe(false);
    await sleep(400);
    expect(await kv.setIfAbsent('gate', 'after', 300)).toBe(true);
    expect(await kv.get('gate')).toBe('after');
  });

  it('take: of 20 racing callers exactly one gets the value, and the key is gone', async () => {
    const kv = getKv();
    await kv.set('once', 'secret', 30);
    const got = await Promise.all(Array.from({ length: 20 }, () => kv.take('once')));
    expect(got.filter((v) => v === 'secret')).toHaveLength(1);
    expect(got.filter((v) => v === null)).toHaveLength(19);
    expect(await kv.get('once')).toBeNull();
    expect(await kv.take('never-set')).toBeNull();
  });

  it('setMax keeps the larger number and the later expiry, whatever the order', async () => {
    const kv = getKv();
    const max = (key: string, value: number, ttlSeconds: number) => kv.setMax([{ key, value, ttlSeconds }]);
    await max('max', 100, 1);
    await max('max', 50, 30); // smaller value, later expiry
    expect(await kv.get('max')).toBe('100');
    await max('max', 200, 1); // larger value, earlier expiry
    expect(await kv.get('max')).toBe('200');
    await sleep(1300);
    expect(await kv.get('max'), 'the later expiry (30 s) was kept').toBe('200');
    await max('short', 1, 1);
    await sleep(1300);
    expect(await kv.get('short')).toBeNull();
    // Racing writers: the largest wins.
    await Promise.all([5, 9, 1, 7, 3].map((n) => max('race', n, 30)));
    expect(await kv.get('race')).toBe('9');
    // A batch: each entry merged on its own.
    await kv.setMax([{ key: 'race', value: 4, ttlSeconds: 30 }, { key: 'batch-a', value: 2, ttlSeconds: 30 }, { key: 'batch-b', value: 3, ttlSeconds: 30 }]);
    expect(await kv.mget(['race', 'batch-a', 'batch-b'])).toEqual(['9', '2', '3']);
    await kv.setMax([]);
  });

  it('setIf sets only while the guard holds the expected value', async () => {
    const kv = getKv();
    const gen = 'generation-1';
    await kv.set('gen', gen);
    expect(await kv.setIf('mark', 'yes', { key: 'gen', equals: gen })).toBe(true);
    expect(await kv.get('mark')).toBe('yes');
    await kv.set('gen', 'other');
    expect(await kv.setIf('mark', 'again', { key: 'gen', equals: gen })).toBe(false);
    await kv.del('gen');
    expect(await kv.setIf('mark', 'again', { key: 'gen', equals: gen })).toBe(false);
    expect(await kv.get('mark')).toBe('yes');
    expect(await kv.mget(['mark', 'gen', 'missing'])).toEqual(['yes', null, null]);
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

  it('leaves a channel when its last subscriber unsubscribes, and not before', async () => {
    const kv = getKv();
    const first: string[] = [];
    const second: string[] = [];
    const handler = (m: string) => first.push(m);
    const offFirst = await kv.subscribe('chan-leave', handler);
    // The same function subscribed twice is two subscriptions; each unsubscribe removes its own.
    const offAgain = await kv.subscribe('chan-leave', handler);
    const offSecond = await kv.subscribe('chan-leave', (m) => second.push(m));
    if (kv.kind === 'redis') expect(await redisSubscribers(kv, 'chan-leave')).toBe(1);

    await offFirst();
    await offFirst(); // idempotent: must not remove the other subscription of the same function
    expect(await kv.publish('chan-leave', 'one')).toBe(1);
    for (let i = 0; i < 20 && second.length === 0; i++) await sleep(25);
    expect(first).toEqual(['one']);
    expect(second).toEqual(['one']);

    await offAgain();
    await offSecond();
    // Nobody listens any more: the store has left the channel (Redis: UNSUBSCRIBE was sent), so a
    // publish reaches no one.
    if (kv.kind === 'redis') expect(await redisSubscribers(kv, 'chan-leave')).toBe(0);
    expect(await kv.publish('chan-leave', 'two')).toBe(0);
    await sleep(100);
    expect(second).toEqual(['one']);

    // And it can join again.
    const again: string[] = [];
    const off = await kv.subscribe('chan-leave', (m) => again.push(m));
    expect(await kv.publish('chan-leave', 'three')).toBe(1);
    for (let i = 0; i < 20 && again.length === 0; i++) await sleep(25);
    expect(again).toEqual(['three']);
    await off();
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

/** Redis's own count of connections subscribed to a channel (PUBSUB NUMSUB), asked on another connection. */
async function redisSubscribers(kv: Kv, channel: string): Promise<number> {
  const raw = new Redis(REDIS_URL);
  try {
    const [, n] = (await raw.pubsub('NUMSUB', `${kv.prefix}${channel}`)) as [string, number];
    return Number(n);
  } finally {
    raw.disconnect();
  }
}

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

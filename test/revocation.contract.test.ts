// One contract suite for the revocation store, run on the in-process store and on Redis (required
// under REQUIRE_SERVICES=1), each with the durable record on PGlite.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgliteDb, type Db } from '../src/store/db.ts';
import { migrate } from '../src/store/migrate.ts';
import { createRedisKv, type Kv, type MaxEntry } from '../src/store/kv.ts';
import { createRevocationStore, hotKey, jtiDigest, RevocationUnavailableError, type RevocationEvent, type RevocationService } from '../src/revocation/store.ts';
import { createLogger } from '../src/http/log.ts';
import { describeEachKv } from './helpers/databases.ts';

const log = createLogger('silent');
const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let db: Db;
beforeAll(async () => {
  db = await createPgliteDb();
  await migrate(db);
});
afterAll(async () => db?.close());

describeEachKv('revocation store', (getKv, prefix) => {
  let store: RevocationService;
  beforeAll(async () => {
    store = createRevocationStore(getKv(), { db, log });
    await store.start();
  });
  afterAll(async () => store?.close());
  const uid = () => `${prefix()}${Math.random().toString(36).slice(2)}`;

  it('answers nothing for a token nothing revokes', async () => {
    expect(await store.check({ jti: uid(), gid: uid(), sid: uid(), sub: uid(), iat: now() })).toBeUndefined();
    await expect(store.ready()).resolves.toBeUndefined();
  });

  it('revokes by jti, grant and session', async () => {
    const [jti, gid, sid] = [uid(), uid(), uid()];
    await store.revoke('jti', jti, 60);
    await store.revoke('grant', gid, 60);
    await store.revoke('session', sid, 60);
    expect(await store.check({ jti })).toBe('jti');
    expect(await store.check({ jti: uid(), gid })).toBe('grant');
    expect(await store.check({ gid: uid(), sid })).toBe('session');
    expect(await store.check({ jti: uid(), gid: uid(), sid: uid() })).toBeUndefined();
  });

  it('revokes by user everything issued at or before the cut-off, not after', async () => {
    const sub = uid();
    await store.revoke('user', sub, 60);
    expect(await store.check({ sub, iat: now() - 100 })).toBe('user');
    expect(await store.check({ sub, iat: now() })).toBe('user');
    expect(await store.check({ sub })).toBe('user'); // unknown iat: fail safe
    expect(await store.check({ sub, iat: now() + 2 })).toBeUndefined();
  });

  it('lets entries expire with the TTL of what they revoke', async () => {
    const jti = uid();
    await store.revoke('jti', jti, 1);
    expect(await store.check({ jti })).toBe('jti');
    await sleep(2100);
    expect(await store.check({ jti })).toBeUndefined();
  });

  it('keeps every revocation in the durable record', async () => {
    const gid = uid();
    await store.revoke('grant', gid, 120, { subject: 'user-1', reason: 'test' });
    const { rows } = await db.query<{ subject: string; reason: string; ttl: number }>(
      "SELECT subject, reason, extract(epoch FROM expires_at - now())::int AS ttl FROM revocations WHERE kind = 'grant' AND id = $1", [gid]);
    expect(rows[0]).toMatchObject({ subject: 'user-1', reason: 'test' });
    expect(rows[0].ttl).toBeGreaterThan(100);
  });

  it('fails closed when the hot store lost the lists, and answers again after reloading them', async () => {
    const kv = getKv();
    const gid = uid();
    await store.revoke('grant', gid, 120);
    // What a Redis restart without persistence looks like: the marker and the entries are gone.
    await kv.del('revoked:loaded');
    await kv.del(hotKey('grant', gid));
    await expect(store.check({ gid })).rejects.toBeInstanceOf(RevocationUnavailableError);
    await expect(store.ready()).rejects.toThrow();
    for (let i = 0; i < 50 && !(await kv.get('revoked:loaded')); i++) await sleep(20);
    expect(await store.check({ gid })).toBe('grant');
  });

  it('a flush in the middle of a reload never leaves the lists marked loaded without what it lost', async () => {
    const kv = getKv();
    const jti = uid();
    // The entry the flush takes is the first the reload writes (rows come back in insertion order).
    await db.query('DELETE FROM revocations');
    await store.revoke('jti', jti, 300);
    await db.query(`INSERT INTO revocations (kind, id, reason, expires_at)
      SELECT 'grant', $1 || g, 'filler', now() + interval '5 minutes' FROM generate_series(1, 2000) g`, [uid()]);
    let writes = 0;
    let flushes = 0;
    // What a reload sees of a Redis that restarts empty after its first 500 writes (and the next
    // reload likewise): everything acknowledged before is gone, the later writes and the marker land.
    const flushing: Kv = Object.assign(Object.create(kv) as Kv, {
      async setMax(entries: MaxEntry[]) {
        const before = writes;
        writes += entries.length;
        await kv.setMax(entries);
        if ([100, 2100].some((n) => before < n && writes >= n)) {
          flushes++;
          await Promise.all(['revoked:loaded', 'revoked:generation', hotKey('jti', jti)].map((k) => kv.del(k)));
        }
      },
    });
    const node = createRevocationStore(flushing, { db, log });
    await node.reload({ force: true }).catch(() => {}); // this attempt fails; the node tries again by itself
    // Every answer, at any moment: revoked or "cannot tell", never "not revoked".
    for (let i = 0; i < 100; i++) {
      const answer = await node.check({ jti }).catch((err) => err);
      if (answer === 'jti') break;
      expect(answer).toBeInstanceOf(RevocationUnavailableError);
      await sleep(50);
    }
    expect(await node.check({ jti })).toBe('jti');
    expect(await store.check({ jti })).toBe('jti');
    expect(flushes).toBe(2);
    console.log(`flush mid-reload (${getKv().kind}): ${writes} hot writes by the reloading node for 2001 rows, ${flushes} flushes inside its reloads`);
    await node.close();
    await db.query("DELETE FROM revocations WHERE reason = 'filler'");
  });

  it('a marker from another Redis (snapshot, promoted replica) does not count', async () => {
    const kv = getKv();
    const gid = uid();
    await store.revoke('grant', gid, 120);
    // A restart from an old snapshot: the marker survived, the entry did not.
    await kv.set('revoked:loaded', 'some-other-redis-run-id');
    await kv.del(hotKey('grant', gid));
    await expect(store.check({ gid })).rejects.toBeInstanceOf(RevocationUnavailableError);
    for (let i = 0; i < 50 && (await store.check({ gid }).catch(() => 'closed')) === 'closed'; i++) await sleep(20);
    expect(await store.check({ gid })).toBe('grant');
  });

  it('a reload never moves a user cut-off back or shortens an entry written after it read the durable record', async () => {
    const kv = getKv();
    const sub = uid();
    const gid = uid();
    await store.revoke('user', sub, 60);
    await store.revoke('grant', gid, 5);
    // A newer revocation reached the hot store after the reload read PostgreSQL.
    const later = now() + 50;
    await kv.set(hotKey('user', sub), String(later), 600);
    await kv.set(hotKey('grant', gid), '1', 600);
    await store.reload({ force: true });
    expect(await kv.get(hotKey('user', sub))).toBe(String(later));
    expect(await store.check({ sub, iat: later - 1 })).toBe('user');
    if (kv.redis) expect(await kv.redis.ttl(hotKey('grant', gid))).toBeGreaterThan(500);
  });

  it('a revocation whose hot write fails stops every node from answering until the lists are whole', async () => {
    const kv = getKv();
    const other = createRevocationStore(kv, { db, log });
    await other.start();
    let fail = true;
    const failing: Kv = Object.assign(Object.create(kv) as Kv, {
      async setMax(entries: MaxEntry[]) {
        if (fail) throw new Error('OOM command not allowed when used memory > maxmemory');
        return kv.setMax(entries);
      },
    });
    const node = createRevocationStore(failing, { db, log });
    await node.start();
    const jti = uid();
    expect(await node.revoke('jti', jti, 60)).toEqual({ hot: false });
    // The other node never says "not revoked"; both answer again once the writer reloaded.
    await expect(other.check({ jti })).rejects.toBeInstanceOf(RevocationUnavailableError);
    await expect(node.check({ jti })).rejects.toBeInstanceOf(RevocationUnavailableError);
    fail = false;
    for (const n of [other, node]) {
      // (the writer retries with backoff, up to 5 s apart)
      for (let i = 0; i < 150 && (await n.check({ jti }).catch(() => 'closed')) === 'closed'; i++) await sleep(50);
      expect(await n.check({ jti })).toBe('jti');
    }
    await node.close();
    await other.close();
  });

  it('tells every store on the same Kv (every node) about a revocation', async () => {
    const other = createRevocationStore(getKv(), { db, log });
    await other.start();
    const heard: RevocationEvent[] = [];
    other.onRevoked((e) => heard.push(e));
    const local: RevocationEvent[] = [];
    const off = store.onRevoked((e) => local.push(e));
    const sid = uid();
    await store.revoke('session', sid, 60, { subject: 'u', reason: 'logout' });
    for (let i = 0; i < 50 && heard.length === 0; i++) await sleep(10);
    expect(heard).toMatchObject([{ kind: 'session', id: sid, subject: 'u', reason: 'logout', local: false }]);
    expect(local).toMatchObject([{ kind: 'session', id: sid, local: true }]);
    expect(await other.check({ sid })).toBe('session');
    off();
    await other.close();
  });

  it('never keeps a usable token value in a key name', () => {
    expect(hotKey('jti', 'opaque-token-value')).not.toContain('opaque-token-value');
    expect(hotKey('grant', 'g1')).toBe('revoked:grant:g1');
  });

  it('sweeps expired durable records', async () => {
    await db.query("INSERT INTO revocations (kind, id, reason, expires_at) VALUES ('jti', 'old', 'test', now() - interval '1 hour')");
    expect(await store.sweep()).toBeGreaterThanOrEqual(1);
    expect((await db.query("SELECT 1 FROM revocations WHERE id = 'old'")).rows).toHaveLength(0);
  });
});

describe('revocation store on an unreachable Redis', () => {
  it('fails closed instead of queueing for Redis, and still records the revocation durably', async () => {
    const kv = createRedisKv('redis://127.0.0.1:1', 'unreachable:');
    const store = createRevocationStore(kv, { db, log });
    // A check that waited for the connection would never settle; the test's timeout is the bound.
    await store.start();
    await expect(store.check({ jti: 'x' })).rejects.toBeInstanceOf(RevocationUnavailableError);
    const r = await store.revoke('jti', 'while-down', 60);
    expect(r.hot).toBe(false);
    // A jti is stored as its digest (an opaque token's jti is the token).
    expect((await db.query('SELECT 1 FROM revocations WHERE id = $1', [jtiDigest('while-down')])).rows).toHaveLength(1);
    await store.close();
    await kv.close();
  });
});

// One contract suite for the revocation store, run on the in-process store and on Redis (required
// under REQUIRE_SERVICES=1), each with the durable record on PGlite.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPgliteDb, type Db } from '../src/store/db.ts';
import { migrate } from '../src/store/migrate.ts';
import { createRedisKv } from '../src/store/kv.ts';
import { createRevocationStore, hotKey, RevocationUnavailableError, type RevocationEvent, type RevocationService } from '../src/revocation/store.ts';
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
    expect((await db.query("SELECT 1 FROM revocations WHERE id = 'while-down'")).rows).toHaveLength(1);
    await store.close();
    await kv.close();
  });
});

// The oidc-provider adapter contract, run against every database: PGlite and (with
// REQUIRE_SERVICES=1 or when reachable) PostgreSQL.
import { expect, it } from 'vitest';
import { createAdapterFactory, sweepExpired } from '../src/oidc/adapter.ts';
import { describeEachDb } from './helpers/databases.ts';

describeEachDb('oidc adapter', (getDb) => {
  const adapter = (model: string) => new (createAdapterFactory(getDb()))(model);
  const rows = async (where: string, params: unknown[]) =>
    (await getDb().query<{ model: string; id: string }>(`SELECT model, id FROM oidc_payloads WHERE ${where} ORDER BY model, id`, params)).rows;

  it('round-trips a payload and indexes grant, uid and user code', async () => {
    const a = adapter('Session');
    await a.upsert('s1', { uid: 'u-1', accountId: 'acc', grantId: 'g-0' }, 60);
    expect(await a.find('s1')).toEqual({ uid: 'u-1', accountId: 'acc', grantId: 'g-0' });
    expect(await a.findByUid('u-1')).toMatchObject({ accountId: 'acc' });
    expect(await a.find('missing')).toBeUndefined();
    const [row] = (await getDb().query<{ grant_id: string; uid: string; expires_at: Date }>("SELECT grant_id, uid, expires_at FROM oidc_payloads WHERE model='Session' AND id='s1'")).rows;
    expect(row.grant_id).toBe('g-0');
    expect(row.uid).toBe('u-1');
    expect(row.expires_at.getTime()).toBeGreaterThan(Date.now() + 50_000);
  });

  it('finds a device code by user code', async () => {
    const a = adapter('DeviceCode');
    await a.upsert('d1', { userCode: 'ABCD-EFGH', grantId: 'g-d' }, 60);
    expect(await a.findByUserCode('ABCD-EFGH')).toMatchObject({ grantId: 'g-d' });
    expect(await a.findByUserCode('ZZZZ-ZZZZ')).toBeUndefined();
  });

  it('updates on a second upsert', async () => {
    const a = adapter('Interaction');
    await a.upsert('i1', { v: 1 }, 60);
    await a.upsert('i1', { v: 2 }, 60);
    expect(await a.find('i1')).toEqual({ v: 2 });
    expect(await rows("model = 'Interaction' AND id = 'i1'", [])).toHaveLength(1);
  });

  it('does not return expired rows, and the sweeper deletes them', async () => {
    const a = adapter('AuthorizationCode');
    await a.upsert('old', { grantId: 'g-old' }, 60);
    await getDb().query("UPDATE oidc_payloads SET expires_at = now() - interval '2 minutes' WHERE id = 'old'");
    expect(await a.find('old')).toBeUndefined();
    expect(await sweepExpired(getDb())).toBeGreaterThanOrEqual(1);
    expect(await rows("id = 'old'", [])).toHaveLength(0);
  });

  it('marks a consumed token with its consumption time', async () => {
    const a = adapter('AuthorizationCode');
    await a.upsert('c1', { grantId: 'g-c' }, 60);
    expect((await a.find('c1'))!.consumed).toBeUndefined();
    await a.consume('c1');
    const found = await a.find('c1');
    expect(found!.consumed).toBeGreaterThan(Date.now() / 1000 - 10);
  });

  it('destroys one row', async () => {
    const a = adapter('RefreshToken');
    await a.upsert('r-destroy', { grantId: 'g-x' }, 60);
    await a.destroy('r-destroy');
    expect(await a.find('r-destroy')).toBeUndefined();
  });

  it("revokes a grant's rows model by model, leaving other grants alone", async () => {
    for (const m of ['AccessToken', 'RefreshToken', 'AuthorizationCode']) {
      await adapter(m).upsert(`${m}-a`, { grantId: 'grant-a' }, 60);
      await adapter(m).upsert(`${m}-b`, { grantId: 'grant-b' }, 60);
    }
    for (const m of ['AccessToken', 'RefreshToken', 'AuthorizationCode']) await adapter(m).revokeByGrantId('grant-a');
    expect(await rows('grant_id = $1', ['grant-a'])).toEqual([]);
    expect(await rows('grant_id = $1', ['grant-b'])).toHaveLength(3);
  });

  it('reads clients through the client finder', async () => {
    const Adapter = createAdapterFactory(getDb(), { clientFinder: async (id) => (id === 'c' ? { client_id: 'c' } : undefined) });
    expect(await new Adapter('Client').find('c')).toEqual({ client_id: 'c' });
    expect(await new Adapter('Client').find('other')).toBeUndefined();
  });
});

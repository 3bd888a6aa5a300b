// The oidc-provider adapter contract, run against every database: PGlite and (with
// REQUIRE_SERVICES=1 or when reachable) PostgreSQL. Every test uses its own ids, since the
// tests of one database share its table; assertions check the rows as well as the adapter's answers.
import { expect, it } from 'vitest';
import { createAdapterFactory, sweepExpired } from '../src/oidc/adapter.ts';
import { describeEachDb } from './helpers/databases.ts';

interface Row {
  model: string;
  id: string;
  payload: Record<string, unknown>;
  grant_id: string | null;
  user_code: string | null;
  uid: string | null;
  expires_at: Date | null;
  consumed_at: Date | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeEachDb('oidc adapter', (getDb) => {
  const adapter = (model: string) => new (createAdapterFactory(getDb()))(model);
  const row = async (model: string, id: string) =>
    (await getDb().query<Row>('SELECT * FROM oidc_payloads WHERE model = $1 AND id = $2', [model, id])).rows[0];
  const rowsOfGrant = async (grantId: string) =>
    (await getDb().query<{ model: string; id: string }>(
      'SELECT model, id FROM oidc_payloads WHERE grant_id = $1 ORDER BY model, id', [grantId],
    )).rows;
  /** Move a row's expiry into the past, as if time had passed. */
  const expire = (id: string, ago: string) =>
    getDb().query(`UPDATE oidc_payloads SET expires_at = now() - $2::interval WHERE id = $1`, [id, ago]);

  it('round-trips a payload and mirrors grant, uid and expiry into columns', async () => {
    const a = adapter('Session');
    const payload = { uid: 'uid-rt', accountId: 'acc', authorizations: { app: { grantId: 'g-in-session' } } };
    await a.upsert('s-rt', payload, 60);
    expect(await a.find('s-rt')).toEqual(payload);
    expect(await a.find('missing')).toBeUndefined();
    // Another model with the same id is another row.
    expect(await adapter('Interaction').find('s-rt')).toBeUndefined();

    const r = await row('Session', 's-rt');
    expect(r.payload).toEqual(payload);
    expect(r.uid).toBe('uid-rt');
    expect(r.grant_id).toBeNull();
    expect(r.consumed_at).toBeNull();
    expect(r.expires_at!.getTime()).toBeGreaterThan(Date.now() + 50_000);
    expect(r.expires_at!.getTime()).toBeLessThan(Date.now() + 70_000);
  });

  it('stores a payload without expiresIn with no expiry', async () => {
    const a = adapter('Grant');
    await a.upsert('g-forever', { accountId: 'acc', clientId: 'app' });
    expect(await a.find('g-forever')).toMatchObject({ clientId: 'app' });
    expect((await row('Grant', 'g-forever')).expires_at).toBeNull();
  });

  it('updates on a second upsert, columns included', async () => {
    const a = adapter('Interaction');
    await a.upsert('i-up', { v: 1, grantId: 'g-up-1', uid: 'uid-up' }, 60);
    await a.upsert('i-up', { v: 2, grantId: 'g-up-2' }, 600);
    expect(await a.find('i-up')).toEqual({ v: 2, grantId: 'g-up-2' });
    const rows = (await getDb().query<Row>("SELECT * FROM oidc_payloads WHERE model = 'Interaction' AND id = 'i-up'")).rows;
    expect(rows).toHaveLength(1);
    expect(rows[0].grant_id).toBe('g-up-2');
    expect(rows[0].uid).toBeNull();
    expect(rows[0].expires_at!.getTime()).toBeGreaterThan(Date.now() + 500_000);
    expect(await a.findByUid('uid-up')).toBeUndefined();
  });

  it('finds a session by uid, within its model and lifetime', async () => {
    const a = adapter('Session');
    await a.upsert('s-uid', { uid: 'uid-find', accountId: 'acc-uid' }, 60);
    expect(await a.findByUid('uid-find')).toMatchObject({ accountId: 'acc-uid' });
    expect(await a.findByUid('uid-other')).toBeUndefined();
    expect(await adapter('Interaction').findByUid('uid-find')).toBeUndefined();
    await expire('s-uid', '1 second');
    expect(await a.findByUid('uid-find')).toBeUndefined();
  });

  it('finds a device code by user code, within its lifetime', async () => {
    const a = adapter('DeviceCode');
    await a.upsert('d-uc', { userCode: 'ABCD-EFGH', grantId: 'g-d', clientId: 'tv' }, 60);
    expect(await a.findByUserCode('ABCD-EFGH')).toMatchObject({ clientId: 'tv' });
    expect(await a.findByUserCode('ZZZZ-ZZZZ')).toBeUndefined();
    expect((await row('DeviceCode', 'd-uc')).user_code).toBe('ABCD-EFGH');
    await expire('d-uc', '1 second');
    expect(await a.findByUserCode('ABCD-EFGH')).toBeUndefined();
  });

  it('honours expiresIn: a row is not found once its lifetime has passed', async () => {
    const a = adapter('AccessToken');
    await a.upsert('at-short', { grantId: 'g-short' }, 1);
    expect(await a.find('at-short')).toMatchObject({ grantId: 'g-short' });
    await sleep(1_200);
    expect(await a.find('at-short')).toBeUndefined();
    // Already-expired lifetimes (oidc-provider re-saves a session at its end) are stored as expired.
    await a.upsert('at-zero', { grantId: 'g-short' }, 0);
    expect(await a.find('at-zero')).toBeUndefined();
  });

  it('marks a consumed token in the payload (epoch seconds) and in consumed_at', async () => {
    const a = adapter('AuthorizationCode');
    await a.upsert('c-consume', { grantId: 'g-c', scope: 'openid' }, 60);
    expect((await a.find('c-consume'))!.consumed).toBeUndefined();
    const before = Math.floor(Date.now() / 1000);
    await a.consume('c-consume');

    const found = await a.find('c-consume');
    expect(found).toMatchObject({ grantId: 'g-c', scope: 'openid' });
    expect(Number.isInteger(found!.consumed)).toBe(true);
    expect(found!.consumed).toBeGreaterThanOrEqual(before - 1);
    expect(found!.consumed).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 1);
    const r = await row('AuthorizationCode', 'c-consume');
    expect(r.consumed_at).toBeInstanceOf(Date);
    expect(r.payload.consumed).toBe(found!.consumed);
  });

  it('consumes a one-time artefact exactly once: of 20 parallel consumes one wins, the rest are refused', async () => {
    for (const [model, error] of [['AuthorizationCode', 'invalid_grant'], ['DeviceCode', 'invalid_grant'], ['RefreshToken', 'invalid_grant'], ['PushedAuthorizationRequest', 'invalid_request_uri']]) {
      const a = adapter(model);
      await a.upsert(`once-${model}`, { grantId: `g-once-${model}` }, 60);
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => a.consume(`once-${model}`)));
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(refused).toHaveLength(19);
      expect(new Set(refused.map((r) => r.reason.error))).toEqual(new Set([error]));
      // A lost race is reuse: the grant's tokens go (PAR requests belong to no grant and stay, spent).
      if (model === 'PushedAuthorizationRequest') expect((await row(model, `once-${model}`)).consumed_at).toBeInstanceOf(Date);
      else expect(await rowsOfGrant(`g-once-${model}`)).toEqual([]);
    }
  });

  it('keeps a token consumed when oidc-provider saves it again', async () => {
    const a = adapter('RefreshToken');
    await a.upsert('r-resave', { grantId: 'g-resave' }, 60);
    await a.consume('r-resave');
    const consumed = await a.find('r-resave');
    await a.upsert('r-resave', consumed!, 60);
    expect((await a.find('r-resave'))!.consumed).toBe(consumed!.consumed);
    expect((await row('RefreshToken', 'r-resave')).consumed_at).toBeInstanceOf(Date);
  });

  it('destroys one row and nothing else', async () => {
    const a = adapter('RefreshToken');
    await a.upsert('r-destroy', { grantId: 'g-destroy' }, 60);
    await a.upsert('r-keep', { grantId: 'g-destroy' }, 60);
    await adapter('AccessToken').upsert('r-destroy', { grantId: 'g-destroy' }, 60);
    await a.destroy('r-destroy');
    expect(await a.find('r-destroy')).toBeUndefined();
    expect(await row('RefreshToken', 'r-destroy')).toBeUndefined();
    expect(await a.find('r-keep')).toBeDefined();
    expect(await adapter('AccessToken').find('r-destroy')).toBeDefined();
  });

  it("revokes a grant's tokens across models with one call, leaving other grants alone", async () => {
    const tokenModels = ['AccessToken', 'RefreshToken', 'AuthorizationCode', 'DeviceCode'];
    for (const m of tokenModels) {
      await adapter(m).upsert(`${m}-a`, { grantId: 'grant-a' }, 60);
      await adapter(m).upsert(`${m}-b`, { grantId: 'grant-b' }, 60);
    }
    // A login in progress carries the grantId too; revoking the grant must not abort it.
    await adapter('Interaction').upsert('interaction-a', { grantId: 'grant-a' }, 60);

    // oidc-provider calls it only on the models the client's grant types allow.
    await adapter('AccessToken').revokeByGrantId('grant-a');

    expect(await rowsOfGrant('grant-a')).toEqual([{ model: 'Interaction', id: 'interaction-a' }]);
    expect(await rowsOfGrant('grant-b')).toHaveLength(tokenModels.length);
    for (const m of tokenModels) {
      expect(await adapter(m).find(`${m}-a`)).toBeUndefined();
      expect(await adapter(m).find(`${m}-b`)).toMatchObject({ grantId: 'grant-b' });
    }
  });

  it('sweeps rows expired beyond the grace and keeps the rest', async () => {
    const a = adapter('AuthorizationCode');
    await a.upsert('sw-old', { grantId: 'g-sweep' }, 60);
    await a.upsert('sw-recent', { grantId: 'g-sweep' }, 60);
    await a.upsert('sw-live', { grantId: 'g-sweep' }, 60);
    await adapter('Grant').upsert('sw-forever', { accountId: 'acc' });
    await expire('sw-old', '2 minutes');
    await expire('sw-recent', '10 seconds');

    expect(await a.find('sw-old')).toBeUndefined();
    expect(await a.find('sw-recent')).toBeUndefined();
    expect(await sweepExpired(getDb())).toBeGreaterThanOrEqual(1);
    expect(await row('AuthorizationCode', 'sw-old')).toBeUndefined();
    expect(await row('AuthorizationCode', 'sw-recent')).toBeDefined();
    expect(await row('AuthorizationCode', 'sw-live')).toBeDefined();
    expect(await row('Grant', 'sw-forever')).toBeDefined();
    expect(await sweepExpired(getDb())).toBe(0);
  });

  it('reads clients through the client finder when one is given', async () => {
    const Adapter = createAdapterFactory(getDb(), {
      clientFinder: async (id) => (id === 'c-found' ? { client_id: 'c-found' } : undefined),
    });
    await new Adapter('Client').upsert('c-stored', { client_id: 'c-stored' });
    expect(await new Adapter('Client').find('c-found')).toEqual({ client_id: 'c-found' });
    expect(await new Adapter('Client').find('c-stored')).toBeUndefined();
    // Without a finder, clients are payloads like any other model.
    expect(await adapter('Client').find('c-stored')).toEqual({ client_id: 'c-stored' });
  });
});

// Exactly once (issue 20): one authorization code, one refresh token, one device code and one PAR
// request_uri, each presented many times IN PARALLEL, over many rounds — to one process (embedded and
// PostgreSQL + Redis) and split across two processes on one PostgreSQL + Redis. Exactly one
// presentation wins; every other gets invalid_grant (invalid_request_uri for PAR); a lost race counts
// as reuse, so the grant's whole family is revoked (the winner's tokens die too, and the grant is on
// the revocation list that reaches exchanged tokens).
//
// Rate limits are off in this file: N parallel redemptions from one address are the point, and the
// token endpoint's per-IP limit would otherwise refuse some of them before they race.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import pg from 'pg';
import * as oidc from 'openid-client';
import { ADMIN, Browser, CALLBACK, authorize, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';
import { runCli, spawnGatehouse, stopProcess } from './helpers/process.ts';

const ROUNDS = 6;
const RACERS = 24;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };

const services = await servicesFor('postgres+redis');
const modes = ['embedded', ...(services ? ['postgres'] as const : [])] as const;

type Client = { client_id: string; client_secret: string };
type Query = (sql: string, params?: unknown[]) => Promise<{ rows: any[] }>;

/** Everything a race needs from a deployment: where to send each racer, and how to read rows. */
interface Target {
  urls: string[];
  issuer: string;
  web: Client;
  query: Query;
}

async function post(url: string, path: string, client: Client, params: Record<string, string>) {
  const res = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams(params),
  });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, any> };
}

/** Send `make(i)` RACERS times at once, spread over the target's processes; count the outcomes. */
async function race(t: Target, make: (url: string) => Promise<{ status: number; body: Record<string, any> }>) {
  const results = await Promise.all(Array.from({ length: RACERS }, (_, i) => make(t.urls[i % t.urls.length])));
  const winners = results.filter((r) => r.status === 200);
  const losers = results.filter((r) => r.status !== 200);
  return { winners, losers, errors: [...new Set(losers.map((r) => `${r.status} ${r.body.error}`))] };
}

/** Sign in through the pages and stop at the callback, before the code is redeemed. */
async function codeAtCallback(t: Target, browser = new Browser()) {
  const config = await rpConfig({ url: t.issuer }, t.web.client_id, t.web.client_secret);
  const verifier = oidc.randomPKCECodeVerifier();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: CALLBACK, scope: 'openid offline_access', prompt: 'consent',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
  });
  const { callbackUrl } = await authorize({ url: t.issuer }, url, ALICE, browser);
  return { code: callbackUrl.searchParams.get('code')!, verifier, browser };
}

const redeem = (t: Target, url: string, code: string, verifier: string) =>
  post(url, '/token', t.web, { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: CALLBACK });

async function refreshTokenOf(t: Target) {
  const { code, verifier } = await codeAtCallback(t);
  const r = await redeem(t, t.urls[0], code, verifier);
  expect(r.status).toBe(200);
  return r.body as { access_token: string; refresh_token: string };
}

const grantOf = async (t: Target, refreshToken: string) =>
  (await t.query(`SELECT grant_id FROM oidc_payloads WHERE model = 'RefreshToken' AND id = $1`, [refreshToken])).rows[0]?.grant_id as string;

/** After a lost race the family is gone: the winner's refresh token and access token are dead, the grant is revoked. */
async function expectFamilyRevoked(t: Target, grantId: string, winner: { access_token: string; refresh_token?: string }, reason: string) {
  if (winner.refresh_token) {
    const again = await post(t.urls[0], '/token', t.web, { grant_type: 'refresh_token', refresh_token: winner.refresh_token });
    expect(again).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
  }
  for (const url of t.urls) {
    const intro = await post(url, '/token/introspection', t.web, { token: winner.access_token });
    expect(intro).toMatchObject({ status: 200, body: { active: false } });
  }
  // The winner may still be storing its tokens while a loser deletes the grant's rows, so rows can
  // outlive the race; the durable revocation record is what refuses them (and what is reloaded
  // into a Redis that comes back empty).
  const revoked = await t.query(`SELECT reason FROM revocations WHERE kind = 'grant' AND id = $1`, [grantId]);
  expect(revoked.rows).toEqual([{ reason }]);
}

/** The races, for any deployment (one process or two). */
function races(target: () => Target) {
  it(`redeems one authorization code once, whatever the concurrency (${ROUNDS} rounds × ${RACERS} racers)`, async () => {
    const t = target();
    const tally: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const { code, verifier } = await codeAtCallback(t);
      const { winners, losers, errors } = await race(t, (url) => redeem(t, url, code, verifier));
      tally.push(winners.length);
      expect(winners).toHaveLength(1);
      expect(errors).toEqual(['400 invalid_grant']);
      expect(losers).toHaveLength(RACERS - 1);
      const grantId = await grantOf(t, winners[0].body.refresh_token);
      // The row may already be gone (the losers revoked the grant); the revocation list names it.
      const gid = grantId ?? (await t.query(`SELECT id FROM revocations WHERE kind = 'grant' AND reason = 'code_reuse' ORDER BY revoked_at DESC LIMIT 1`)).rows[0].id;
      await expectFamilyRevoked(t, gid, winners[0].body as any, 'code_reuse');
    }
    console.log(`authorization code: winners per round ${JSON.stringify(tally)} (${ROUNDS * RACERS} redemptions on ${t.urls.length} process(es))`);
  });

  it(`rotates one refresh token once, whatever the concurrency, and revokes the family (${ROUNDS} rounds × ${RACERS} racers)`, async () => {
    const t = target();
    const tally: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const first = await refreshTokenOf(t);
      const grantId = await grantOf(t, first.refresh_token);
      expect(grantId).toBeTruthy();
      const { winners, errors } = await race(t, (url) => post(url, '/token', t.web, { grant_type: 'refresh_token', refresh_token: first.refresh_token }));
      tally.push(winners.length);
      expect(winners).toHaveLength(1);
      expect(errors).toEqual(['400 invalid_grant']);
      await expectFamilyRevoked(t, grantId, winners[0].body as any, 'refresh_token_reuse');
      // The original access token went with the family.
      expect((await post(t.urls[0], '/token/introspection', t.web, { token: first.access_token })).body.active).toBe(false);
    }
    console.log(`refresh token: winners per round ${JSON.stringify(tally)} (${ROUNDS * RACERS} redemptions on ${t.urls.length} process(es))`);
  });

  it('a refresh token used once in sequence still rotates normally (no false reuse)', async () => {
    const t = target();
    let current = await refreshTokenOf(t);
    for (let i = 0; i < 5; i++) {
      const next = await post(t.urls[i % t.urls.length], '/token', t.web, { grant_type: 'refresh_token', refresh_token: current.refresh_token });
      expect(next.status).toBe(200);
      expect(next.body.refresh_token).not.toBe(current.refresh_token);
      current = next.body as any;
    }
    expect((await post(t.urls[0], '/token/introspection', t.web, { token: current.access_token })).body.active).toBe(true);
  });

  it('a rotation whose successor cannot be stored leaves the old refresh token working (nothing half-written)', async () => {
    const t = target();
    const first = await refreshTokenOf(t);
    // A fault in this test's own database: storing any refresh token fails while the flag row exists.
    await t.query(`CREATE TABLE IF NOT EXISTS gh_test_fault (on_ boolean)`);
    await t.query(`CREATE OR REPLACE FUNCTION gh_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF EXISTS (SELECT 1 FROM gh_test_fault) THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$`);
    await t.query(`DROP TRIGGER IF EXISTS gh_test_fault ON oidc_payloads`);
    await t.query(`CREATE TRIGGER gh_test_fault BEFORE INSERT ON oidc_payloads
      FOR EACH ROW WHEN (NEW.model = 'RefreshToken') EXECUTE FUNCTION gh_test_fault()`);
    await t.query(`INSERT INTO gh_test_fault VALUES (true)`);
    try {
      const failed = await post(t.urls[0], '/token', t.web, { grant_type: 'refresh_token', refresh_token: first.refresh_token });
      expect(failed.status).not.toBe(200);
      const row = (await t.query(`SELECT consumed_at FROM oidc_payloads WHERE model = 'RefreshToken' AND id = $1`, [first.refresh_token])).rows[0];
      expect(row.consumed_at).toBeNull();
    } finally {
      await t.query(`DELETE FROM gh_test_fault`);
    }
    // The fault is gone: the same token rotates, once.
    const retried = await post(t.urls[0], '/token', t.web, { grant_type: 'refresh_token', refresh_token: first.refresh_token });
    expect(retried.status).toBe(200);
    expect(retried.body.refresh_token).toBeTruthy();
  });

  it(`uses one PAR request_uri once, whatever the concurrency (${ROUNDS} rounds × ${RACERS} racers)`, async () => {
    const t = target();
    // A browser session with a grant for `openid`, so /auth answers at once (no pages) and the
    // racers meet at the consume.
    const { browser } = await codeAtCallback(t);
    const tally: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const verifier = oidc.randomPKCECodeVerifier();
      const pushed = await post(t.urls[0], '/request', t.web, {
        client_id: t.web.client_id, redirect_uri: CALLBACK, response_type: 'code', scope: 'openid',
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      });
      expect(pushed.status).toBe(201);
      const auth = `?client_id=${t.web.client_id}&request_uri=${encodeURIComponent(pushed.body.request_uri)}`;
      const outcomes = await Promise.all(Array.from({ length: RACERS }, async (_, i) => {
        const step = await browser.follow(`${t.urls[i % t.urls.length]}/auth${auth}`, t.issuer);
        const cb = new URL(step.url);
        return cb.searchParams.get('code') ? 'code' : cb.searchParams.get('error') ?? `page ${step.res.status}`;
      }));
      const codes = outcomes.filter((o) => o === 'code').length;
      tally.push(codes);
      expect(codes).toBe(1);
      expect([...new Set(outcomes.filter((o) => o !== 'code'))]).toEqual(['invalid_request_uri']);
    }
    console.log(`PAR request_uri: codes per round ${JSON.stringify(tally)}`);
  });
}

describe.each(modes)('exactly once, one process (%s)', (mode) => {
  let gh: TestGatehouse;
  let t: Target;
  let device: Client;

  beforeAll(async () => {
    // Signs in as ADMIN; the MFA policy is not what this suite races.
    gh = await startTestGatehouse({ mode, env: { RATE_LIMITS: 'off', MFA_REQUIRED_ROLES: 'none', DEVICE_POLL_INTERVAL: '2' } });
    await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user', '--verified');
    const web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--first-party');
    device = await gh.cli('client', 'create', '--name', 'Speaker', '--grant', DEVICE_GRANT, '--grant', 'refresh_token', '--first-party');
    t = { urls: [gh.url], issuer: gh.url, web, query: (sql, params) => gh.deps.db.query(sql, params) };
  });
  afterAll(async () => {
    await gh?.close();
  });

  races(() => t);

  it(`redeems one approved device code once: parallel polls get one token, the rest slow_down (${ROUNDS} rounds × ${RACERS} polls)`, async () => {
    const tally: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const started = await post(gh.url, '/device/auth', device, { scope: 'openid offline_access' });
      expect(started.status).toBe(200);
      // The person approves on another screen: code page, confirmation, sign-in, consent.
      const browser = new Browser();
      let step = await browser.follow(started.body.verification_uri_complete, gh.url);
      for (let i = 0; i < 5 && !/Device connected/.test(step.html ?? ''); i++) {
        const html = step.html!;
        const form = /name="password"/.test(html) ? formOf(html, '/login') : /\/confirm/.test(html) ? formOf(html, '/confirm') : formOf(html);
        const fields = /name="password"/.test(html) ? { ...form.fields, email: ALICE.email, password: ALICE.password } : form.fields;
        step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: fields });
      }
      const polls = await Promise.all(Array.from({ length: RACERS }, () =>
        post(gh.url, '/token', device, { grant_type: DEVICE_GRANT, device_code: started.body.device_code })));
      const winners = polls.filter((p) => p.status === 200);
      tally.push(winners.length);
      expect(step.html).toMatch(/Device connected/);
      expect(winners).toHaveLength(1);
      expect([...new Set(polls.filter((p) => p.status !== 200).map((p) => p.body.error))]).toEqual(['slow_down']);
    }
    console.log(`device code: tokens per round ${JSON.stringify(tally)}`);
  });
});

describe.skipIf(!services)('exactly once, two processes on one PostgreSQL + Redis', () => {
  const procs: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  let t: Target;
  let pool: pg.Pool;

  beforeAll(async () => {
    const db = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(db.drop, redis.cleanup);
    const env = {
      DATABASE_URL: db.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, RATE_LIMITS: 'off',
      ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password,
      DATA_ENCRYPTION_KEY: Buffer.alloc(32, 9).toString('base64url'),
    };
    const a = await spawnGatehouse(env);
    procs.push(a.proc);
    const cli = (...argv: string[]) => runCli(env, ...argv);
    cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user', '--verified');
    const web = cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--first-party');
    const b = await spawnGatehouse({ ...env, ISSUER: a.url });
    procs.push(b.proc);
    pool = new pg.Pool({ connectionString: db.url, max: 2 });
    cleanups.unshift(() => pool.end());
    t = { urls: [a.url, b.url], issuer: a.url, web, query: (sql, params) => pool.query(sql, params) };
  }, 120_000);
  afterAll(async () => {
    await Promise.all(procs.map(stopProcess));
    for (const c of cleanups) await c();
  });

  races(() => t);
});

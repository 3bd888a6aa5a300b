// Refresh rotation survives kill -9 (issue 20): a Gatehouse process on PostgreSQL + Redis is killed
// with SIGKILL while it rotates a user's refresh token, then started again. After every crash either
// the old token is unspent and still works, or it is spent and its successor is stored and works; a
// spent token without a successor (the family lost) must never happen.
//
// Killing at a random moment almost always lands before or after a rotation (it takes a few
// milliseconds), so half the tries make the moment certain: a trigger the test adds to its own
// database holds every refresh-token INSERT on an advisory lock the test owns, so the process is
// killed exactly while storing the successor; PostgreSQL then finishes or drops the statement it
// was sent. The other half kill at random moments. (A failure between spending and storing is
// injected deterministically in test/exactly-once.test.ts, on both engines.)
//
// PostgreSQL only: PGlite runs inside the Gatehouse process, so nothing outside can hold it
// mid-statement; the rotation is the same single statement on both engines (src/oidc/adapter.ts).
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import * as oidc from 'openid-client';
import { Browser, CALLBACK, authorize, rpConfig } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';
import { runCli, spawnGatehouse, stopProcess } from './helpers/process.ts';

const TRIES = 4;
const HOLD = 4242;
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };
const services = await servicesFor('postgres+redis');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RefreshRow { id: string; consumed_at: Date | null }

describe.skipIf(!services)('refresh rotation under kill -9 (PostgreSQL + Redis)', () => {
  const procs: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await Promise.all(procs.map(stopProcess));
    for (const c of cleanups) await c();
  });

  it(`keeps the token family through ${TRIES} crashes inside a rotation`, { timeout: 180_000 }, async () => {
    const db = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    const pool = new pg.Pool({ connectionString: db.url, max: 3 });
    cleanups.push(() => pool.end(), db.drop, redis.cleanup);
    const env = {
      DATABASE_URL: db.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
      // This test is about storage, not limits or second factors.
      RATE_LIMITS: 'off', MFA_REQUIRED_ROLES: 'none',
      ADMIN_EMAIL: 'admin@example.com', ADMIN_PASSWORD: 'correct horse battery staple',
      DATA_ENCRYPTION_KEY: Buffer.alloc(32, 5).toString('base64url'),
    };
    const cli = (...argv: string[]) => runCli(env, ...argv);
    cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user', '--verified');
    const web = cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--first-party');
    let gh = await spawnGatehouse(env);
    procs.push(gh.proc);
    const issuer = gh.url;
    const basic = `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`;
    const refresh = (url: string, token: string) => fetch(`${url}/token`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token }),
    });
    const rowsOf = async (grantId: string) =>
      (await pool.query<RefreshRow>(`SELECT id, consumed_at FROM oidc_payloads WHERE model = 'RefreshToken' AND grant_id = $1`, [grantId])).rows;
    /** Other sessions' statements still running in this database (the killed process's, finishing or rolling back). */
    const othersActive = async () => (await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()`,
    )).rows[0].n;

    const config = await rpConfig({ url: issuer }, web.client_id, web.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const authUrl = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid offline_access', prompt: 'consent',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const { callbackUrl } = await authorize({ url: issuer }, authUrl, ALICE, new Browser());
    let token = (await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier })).refresh_token!;
    const grantId = (await pool.query(`SELECT grant_id FROM oidc_payloads WHERE model = 'RefreshToken' AND id = $1`, [token])).rows[0].grant_id as string;
    // The fault hook, in this test's own database only.
    await pool.query(`CREATE FUNCTION gh_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock(${HOLD}); RETURN NEW; END $$`);
    await pool.query(`CREATE TRIGGER gh_test_hold BEFORE INSERT ON oidc_payloads
      FOR EACH ROW WHEN (NEW.model = 'RefreshToken') EXECUTE FUNCTION gh_test_hold()`);

    const outcomes = { caughtInside: 0, answeredBeforeKill: 0, oldStillValid: 0, successorStored: 0, familyLost: 0 };
    for (let i = 0; i < TRIES; i++) {
      const inside = i % 2 === 0;
      const lock = inside ? await pool.connect() : undefined;
      await lock?.query('SELECT pg_advisory_lock($1)', [HOLD]);
      const inFlight = refresh(gh.url, token).then(
        async (r) => (r.status === 200 ? ((await r.json()) as { refresh_token: string }).refresh_token : undefined),
        () => undefined,
      );
      if (lock) {
        // Wait until the rotation is held storing the successor, then kill there.
        for (let n = 0; n < 200; n++) {
          const waiting = await pool.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
          if (waiting.rowCount) break;
          await sleep(10);
        }
        outcomes.caughtInside++;
      } else {
        await sleep(Math.floor(Math.random() * 15));
      }
      gh.proc.kill("SIGKILL");
      await new Promise((r) => (gh.proc.signalCode ? r(null) : gh.proc.once('exit', r)));
      const answered = await inFlight;
      if (lock) {
        await lock.query('SELECT pg_advisory_unlock($1)', [HOLD]);
        lock.release();
      }
      // Let the dead process's statement finish or roll back before reading the outcome.
      for (let n = 0; n < 200 && (await othersActive()) > 0; n++) await sleep(10);

      const rows = await rowsOf(grantId);
      const old = rows.find((r) => r.id === token);
      let next: string | undefined;
      if (answered) {
        outcomes.answeredBeforeKill++;
        next = answered;
      } else if (old && !old.consumed_at) {
        outcomes.oldStillValid++;
        next = token;
      } else {
        next = rows.find((r) => r.id !== token && !r.consumed_at)?.id;
        if (next) outcomes.successorStored++;
        else outcomes.familyLost++;
      }
      expect(next, `try ${i}: the old token is spent and no successor is stored (rows: ${JSON.stringify(rows)})`).toBeDefined();
      gh = await spawnGatehouse({ ...env, ISSUER: issuer });
      procs.push(gh.proc);
      // Whatever the family's current token is, it works after the restart.
      const res = await refresh(gh.url, next!);
      expect(res.status, `try ${i}: ${await res.clone().text()}`).toBe(200);
      token = ((await res.json()) as { refresh_token: string }).refresh_token;
    }
    console.log(`kill -9 during refresh rotation, ${TRIES} tries: ${JSON.stringify(outcomes)}`);
    expect(outcomes.caughtInside).toBe(TRIES / 2);
    expect(outcomes.familyLost).toBe(0);
  });
});

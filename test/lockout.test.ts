// Brute-force protection on the login form (issue 7): N wrong passwords lock the account for
// LOCKOUT_DURATION (the right password fails meanwhile, works after); a device that signed in
// before is not locked out; a password reset ends the lockout; progressive delay; unknown emails
// cost what known ones do.
// Issue 20: guesses are counted before they are checked, so a burst of parallel wrong passwords (or
// second-factor codes) gets exactly the limit checked — embedded, on PostgreSQL + Redis, and across
// two processes sharing them — and a lockout whose Redis is unreachable refuses (503), never lets
// guesses through.
import net from 'node:net';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { generate } from 'otplib';
import { Browser, CALLBACK, formOf, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, REDIS_URL, servicesFor } from './helpers/databases.ts';
import { spawnGatehouse, stopProcess } from './helpers/process.ts';

const PAT = { email: 'pat@example.com', password: 'pat-has-a-long-password' };

/** A login page at `gh` for `config`'s client; returns a function that posts credentials to it. */
async function loginPage(gh: TestGatehouse, config: oidc.Configuration, browser = new Browser(), extra: Record<string, string> = {}) {
  const url = oidc.buildAuthorizationUrl(config, {
    ...extra,
    redirect_uri: CALLBACK, scope: 'openid', state: oidc.randomState(),
    code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
  });
  const first = await browser.follow(url.href, gh.url);
  let html = first.html!;
  return async function attempt(email: string, password: string) {
    const form = formOf(html, '/login');
    const started = performance.now();
    const step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email, password } });
    const ms = performance.now() - started;
    if (step.html) html = step.html;
    // Reached the client's callback: signed in.
    return { status: step.html === undefined ? 'ok' as const : step.res.status, html: step.html ?? '', retryAfter: step.res.headers.get('retry-after'), ms };
  };
}

describe('account lockout', () => {
  let gh: TestGatehouse;
  let config: oidc.Configuration;

  beforeAll(async () => {
    // Every attempt of this suite comes from one IP within a minute: the per-IP limit would cut in.
    gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_ACCOUNT: '3/15m', LOCKOUT_DURATION: '2', LOGIN_DELAY_MS: '0', RATE_LIMIT_LOGIN_IP: 'off' } });
    await gh.cli('user', 'create', '--email', PAT.email, '--password', PAT.password);
    const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
  });
  afterAll(async () => {
    await gh?.close();
  });

  it('N wrong passwords lock the account; the right password fails during the lockout and works after', async () => {
    const attempt = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) expect((await attempt(PAT.email, 'wrong password guess')).status).toBe(401);
    const locked = await attempt(PAT.email, PAT.password);
    expect(locked.status).toBe(429);
    expect(locked.html).toContain('Too many failed sign-in attempts');
    expect(Number(locked.retryAfter)).toBeGreaterThan(0);
    // Case and spaces do not make a fresh counter.
    expect((await attempt(` ${PAT.email.toUpperCase()}`, PAT.password)).status).toBe(429);
    await new Promise((r) => setTimeout(r, 2200));
    expect((await attempt(PAT.email, PAT.password)).status).toBe('ok');
    const { rows } = await gh.deps.db.query("SELECT 1 FROM audit_events WHERE type = 'login' AND details->>'reason' = 'locked'");
    expect(rows.length).toBe(2);
  });

  it('every spelling of an address (fullwidth, ß/SS, İ decomposed) shares its lockout and uniqueness; another address does not', async () => {
    const STRASSE = { email: 'Straße@example.com', password: 'strasse-has-a-long-password' };
    const ILKER = { email: 'İlker@example.com', password: 'ilker-has-a-long-password' };
    const PLAIN = { email: 'ilker@example.com', password: 'plain-ilker-has-a-long-password' };
    for (const u of [STRASSE, ILKER, PLAIN]) await gh.cli('user', 'create', '--email', u.email, '--password', u.password);
    // Admin create: a variant spelling is the same address, so it is taken.
    await expect(gh.cli('user', 'create', '--email', 'ＳＴＲＡＳＳＥ@example.com', '--password', STRASSE.password)).rejects.toThrow(/already exists/);
    const attempt = await loginPage(gh, config);
    for (const spelling of ['STRASSE@example.com', 'ｓｔｒａßｅ@ｅｘａｍｐｌｅ.com', ' strasse@EXAMPLE.com']) {
      expect((await attempt(spelling, 'wrong password guess')).status, spelling).toBe(401);
    }
    expect((await attempt(STRASSE.email, STRASSE.password)).status).toBe(429);
    // İ spelled as I + combining dot above: three guesses lock İlker's account...
    for (let i = 0; i < 3; i++) expect((await attempt('I\u0307lker@example.com', 'wrong password guess')).status).toBe(401);
    expect((await attempt(ILKER.email, ILKER.password)).status).toBe(429);
    // ...and not ilker@ with a plain i, which is another address with its own account and counter.
    expect((await attempt(PLAIN.email, PLAIN.password)).status).toBe('ok');
  });

  it('unknown emails are counted and locked the same way (no hint that the account does not exist)', async () => {
    const attempt = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) expect((await attempt('nobody@example.com', 'wrong password guess')).status).toBe(401);
    expect((await attempt('nobody@example.com', 'wrong password guess')).status).toBe(429);
  });

  it('a device that signed in before is not locked out, and its success clears the lockout', async () => {
    const owner = new Browser();
    expect((await (await loginPage(gh, config, owner))(PAT.email, PAT.password)).status).toBe('ok');
    const attacker = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) await attacker(PAT.email, 'wrong password guess');
    expect((await attacker(PAT.email, PAT.password)).status).toBe(429);
    // The owner's browser (its device cookie) still signs in (prompt=login: show the form again)...
    expect((await (await loginPage(gh, config, owner, { prompt: 'login' }))(PAT.email, PAT.password)).status).toBe('ok');
    // ...and that success ends the lockout for everyone.
    expect((await attacker(PAT.email, PAT.password)).status).toBe('ok');
  });

  it('a password reset ends the lockout', async () => {
    const attempt = await loginPage(gh, config);
    for (let i = 0; i < 3; i++) await attempt(PAT.email, 'wrong password guess');
    expect((await attempt(PAT.email, PAT.password)).status).toBe(429);
    const user = (await gh.deps.accounts.findUserByEmail(PAT.email))!;
    const fresh = 'pat-has-a-brand-new-password';
    await gh.deps.accounts.setPassword(user.id, fresh);
    expect((await attempt(PAT.email, fresh)).status).toBe('ok');
    PAT.password = fresh;
  });
});

describe('login timing', () => {
  it('delays repeated failures progressively', async () => {
    const gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_ACCOUNT: '10/15m', LOGIN_DELAY_MS: '150' } });
    try {
      const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK);
      const attempt = await loginPage(gh, await rpConfig(gh, client.client_id, client.client_secret));
      const times = [];
      for (let i = 0; i < 4; i++) times.push((await attempt('someone@example.com', 'wrong password guess')).ms);
      // 150, 300, 600, 1200 ms of delay on top of the password check: a lower bound only (a sleep is
      // never shorter; a loaded machine only makes it longer), so this checks the delay, not speed.
      expect(times[0]).toBeGreaterThanOrEqual(150);
      expect(times[3]).toBeGreaterThanOrEqual(1200);
    } finally {
      await gh.close();
    }
  });
  // Unknown emails cost one argon2 verification against DUMMY_HASH, made with the parameters real
  // hashes use (test/accounts.test.ts checks they match): a property of the code, not a timing.
});

// --- Issue 20: parallel guesses ---

const withServices = await servicesFor('postgres+redis');
const modes: { mode: Mode; run: boolean }[] = [
  { mode: 'embedded', run: true },
  { mode: 'postgres', run: withServices },
];
const BURST = 25;
/**
 * Production limits per account (5 guesses per 15 minutes) with a lockout short enough to see it
 * end, and long enough to outlast a burst on a loaded machine (it starts at the first refusal).
 */
const PARALLEL_ENV = {
  RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_ACCOUNT: '5/15m', RATE_LIMIT_MFA_ACCOUNT: '5/15m', LOCKOUT_DURATION: '12', LOGIN_DELAY_MS: '0',
  // The whole burst comes from one IP; the per-IP limit (30/min) would cut it short.
  RATE_LIMIT_LOGIN_IP: 'off',
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const count = (xs: unknown[], x: unknown) => xs.filter((y) => y === x).length;

/** Audit rows of sign-in failures by reason: invalid_credentials rows are the guesses argon2 checked. */
async function loginFailures(gh: TestGatehouse, email: string) {
  const { rows } = await gh.deps.db.query<{ reason: string; n: string }>(
    "SELECT details->>'reason' AS reason, count(*) AS n FROM audit_events WHERE type = 'login' AND outcome = 'failure' AND details->>'email' = $1 GROUP BY 1", [email]);
  return Object.fromEntries(rows.map((r) => [r.reason, Number(r.n)]));
}

/** Fire every attempt at once; returns the statuses in order. */
async function burst(attempts: (() => Promise<{ status: number | 'ok' }>)[]) {
  const started = performance.now();
  const statuses = (await Promise.all(attempts.map((a) => a()))).map((r) => r.status);
  return { statuses, ms: Math.round(performance.now() - started) };
}

/** Wait out the lockout a refusal announced (Retry-After seconds, plus a little). */
const waitOut = (retryAfter: string | null) => sleep(Number(retryAfter) * 1000 + 300);

describe.each(modes)('parallel guesses ($mode)', ({ mode, run }) => {
  const RAY = { email: `ray.${mode}@example.com`, password: 'ray-has-a-long-password' };
  const MIA = { email: `mia.${mode}@example.com`, password: 'mia-has-a-long-password' };
  let gh: TestGatehouse;
  let config: oidc.Configuration;
  let miaSecret: string;

  beforeAll(async () => {
    if (!run) return;
    gh = await startTestGatehouse({ mode, env: PARALLEL_ENV });
    await gh.cli('user', 'create', '--email', RAY.email, '--password', RAY.password);
    const mia = await gh.cli('user', 'create', '--email', MIA.email, '--password', MIA.password);
    miaSecret = gh.deps.mfa.newSecret();
    expect(await gh.deps.mfa.confirmFactor(mia.id, { name: 'Phone', secret: miaSecret, code: await generate({ secret: miaSecret }) })).toBeTruthy();
    const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
  });
  afterAll(async () => {
    await gh?.close();
  });

  it.skipIf(!run)(`${BURST} parallel wrong passwords: exactly 5 are checked (401), the rest 429; then the right password is 429 + Retry-After until the lockout ends`, async () => {
    const attempt = await loginPage(gh, config);
    const { statuses, ms } = await burst(Array.from({ length: BURST }, () => () => attempt(RAY.email, 'a wrong password guess')));
    console.log(`${mode}: ${BURST} parallel wrong passwords in ${ms} ms: ${count(statuses, 401)}×401, ${count(statuses, 429)}×429`);
    expect(count(statuses, 401)).toBe(5);
    expect(count(statuses, 429)).toBe(BURST - 5);
    // From outside: the audit log holds one invalid_credentials row per argon2 check, one locked row per refusal.
    expect(await loginFailures(gh, RAY.email)).toEqual({ invalid_credentials: 5, locked: BURST - 5 });
    const locked = await attempt(RAY.email, RAY.password);
    expect(locked.status).toBe(429);
    expect(locked.html).toContain('Too many failed sign-in attempts');
    expect(Number(locked.retryAfter)).toBeGreaterThan(0);
    expect(Number(locked.retryAfter)).toBeLessThanOrEqual(12);
    await waitOut(locked.retryAfter);
    expect((await attempt(RAY.email, RAY.password)).status).toBe('ok');
  });

  it.skipIf(!run)(`${BURST} parallel wrong second-factor codes: exactly 5 are checked (401), the rest 429; then the right code is 429 until the lockout ends`, async () => {
    const browser = new Browser();
    const attempt = await loginPage(gh, config, browser);
    const challenge = await attempt(MIA.email, MIA.password);
    expect(challenge.html).toContain('name="code"');
    const form = formOf(challenge.html, '/mfa');
    const post = async (code: string) => {
      const step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, code } });
      return { status: step.html === undefined ? 'ok' as const : step.res.status, retryAfter: step.res.headers.get('retry-after') };
    };
    const { statuses, ms } = await burst(Array.from({ length: BURST }, (_, i) => () => post(String(100000 + i))));
    console.log(`${mode}: ${BURST} parallel wrong TOTP codes in ${ms} ms: ${count(statuses, 401)}×401, ${count(statuses, 429)}×429`);
    expect(count(statuses, 401)).toBe(5);
    expect(count(statuses, 429)).toBe(BURST - 5);
    const { rows } = await gh.deps.db.query<{ n: string }>(
      "SELECT count(*) AS n FROM audit_events WHERE type = 'mfa' AND outcome = 'failure' AND details->>'method' = 'otp'");
    expect(Number(rows[0].n)).toBe(5);
    const locked = await post(await generate({ secret: miaSecret }));
    expect(locked.status).toBe(429);
    expect(Number(locked.retryAfter)).toBeGreaterThan(0);
    await waitOut(locked.retryAfter);
    // The next time step's code: the current one may have been used when the factor was confirmed.
    expect((await post(await generate({ secret: miaSecret, epoch: Math.floor(Date.now() / 1000) + 30 }))).status).toBe('ok');
  });
});

describe.skipIf(!withServices)('parallel guesses at two processes sharing PostgreSQL + Redis', () => {
  const LEE = { email: 'lee@example.com', password: 'lee-has-a-long-password' };
  const cleanups: (() => Promise<void>)[] = [];
  let gh: TestGatehouse;
  let other: { url: string; proc: ChildProcess };
  let client: { client_id: string; client_secret: string };

  beforeAll(async () => {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(pg.drop, redis.cleanup);
    const DATA_ENCRYPTION_KEY = Buffer.alloc(32, 5).toString('base64url');
    gh = await startTestGatehouse({ mode: 'postgres', databaseUrl: pg.url, redis, env: { ...PARALLEL_ENV, DATA_ENCRYPTION_KEY } });
    // The second is its own OS process (src/main.ts) on the same database and Redis prefix.
    other = await spawnGatehouse({ ...PARALLEL_ENV, DATA_ENCRYPTION_KEY, DATABASE_URL: pg.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, MFA_REQUIRED_ROLES: 'none' });
    await gh.cli('user', 'create', '--email', LEE.email, '--password', LEE.password);
    client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
  }, 60_000);
  afterAll(async () => {
    if (other) await stopProcess(other.proc);
    await gh?.close();
    for (const c of cleanups) await c();
  });

  it(`${BURST + 1} parallel wrong passwords alternating between the processes: exactly 5 are checked; the right password is then 429 at both`, async () => {
    const nodes = [gh, other];
    const configs = await Promise.all(nodes.map((n) => rpConfig(n, client.client_id, client.client_secret)));
    const pages = await Promise.all(nodes.map((n, i) => loginPage(n as TestGatehouse, configs[i])));
    const { statuses, ms } = await burst(Array.from({ length: BURST + 1 }, (_, i) => () => pages[i % 2](LEE.email, 'a wrong password guess')));
    console.log(`two processes: ${BURST + 1} parallel wrong passwords in ${ms} ms: ${count(statuses, 401)}×401, ${count(statuses, 429)}×429`);
    expect(count(statuses, 401)).toBe(5);
    expect(count(statuses, 429)).toBe(BURST + 1 - 5);
    expect(await loginFailures(gh, LEE.email)).toEqual({ invalid_credentials: 5, locked: BURST + 1 - 5 });
    for (const page of pages) {
      const locked = await page(LEE.email, LEE.password);
      expect(locked.status).toBe(429);
      expect(Number(locked.retryAfter)).toBeGreaterThan(0);
    }
  });
});

/** A TCP proxy to the shared Redis that the test can cut, leaving the shared Redis itself alone. */
async function redisProxy() {
  const target = new URL(REDIS_URL);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => s.destroy());
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    /** Stop accepting and drop every connection: Redis is unreachable for the clients behind the proxy. */
    async cut() {
      await new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
    },
    async restore() {
      await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    },
  };
}

describe.skipIf(!withServices)('lockout store unreachable (PostgreSQL + Redis through a proxy that is cut)', () => {
  const KIM = { email: 'kim@example.com', password: 'kim-has-a-long-password' };
  const JO = { email: 'jo@example.com', password: 'jo-has-a-long-password' };
  let gh: TestGatehouse;
  let joSecret: string;
  let proxy: Awaited<ReturnType<typeof redisProxy>>;
  let redis: Awaited<ReturnType<typeof createTestRedisPrefix>>;
  let config: oidc.Configuration;

  beforeAll(async () => {
    proxy = await redisProxy();
    redis = await createTestRedisPrefix();
    gh = await startTestGatehouse({ mode: 'postgres', redis: { url: proxy.url, prefix: redis.prefix }, env: PARALLEL_ENV });
    await gh.cli('user', 'create', '--email', KIM.email, '--password', KIM.password);
    const jo = await gh.cli('user', 'create', '--email', JO.email, '--password', JO.password);
    joSecret = gh.deps.mfa.newSecret();
    await gh.deps.mfa.confirmFactor(jo.id, { name: 'Phone', secret: joSecret, code: await generate({ secret: joSecret }) });
    const client = await gh.cli('client', 'create', '--name', 'App', '--redirect-uri', CALLBACK, '--first-party');
    config = await rpConfig(gh, client.client_id, client.client_secret);
  });
  afterAll(async () => {
    await proxy?.restore().catch(() => {});
    await gh?.close();
    await redis?.cleanup();
  });

  it('sign-in and second factor fail closed: 503 + Retry-After (a page saying so), nothing checked; sign-in works again once Redis is back', async () => {
    const attempt = await loginPage(gh, config);
    // Jo reaches the second-factor step while Redis is still there.
    const joBrowser = new Browser();
    const challenge = await (await loginPage(gh, config, joBrowser))(JO.email, JO.password);
    expect(challenge.html).toContain('name="code"');
    await proxy.cut();
    await sleep(200);
    const { statuses } = await burst(Array.from({ length: 10 }, (_, i) => () => attempt(KIM.email, i ? 'a wrong password guess' : KIM.password)));
    console.log(`Redis cut: 10 sign-ins answered ${count(statuses, 503)}×503`);
    expect(statuses).toEqual(Array(10).fill(503));
    const refused = await attempt(KIM.email, KIM.password);
    expect(refused.status).toBe(503);
    expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    expect(refused.html).toContain('Sign-in is unavailable for a moment');
    expect(refused.html).toContain('name="password"');
    expect(await loginFailures(gh, KIM.email)).toEqual({ limits_unavailable: 11 });
    const mfaForm = formOf(challenge.html, '/mfa');
    const mfa = await joBrowser.follow(new URL(mfaForm.action, gh.url).href, gh.url, { form: { ...mfaForm.fields, code: await generate({ secret: joSecret }) } });
    expect(mfa.res.status).toBe(503);
    expect(Number(mfa.res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(mfa.html).toContain('Sign-in is unavailable for a moment');
    await proxy.restore();
    let after: Awaited<ReturnType<typeof attempt>> | undefined;
    // ioredis reconnects on its own schedule (up to 2 s between tries).
    for (let i = 0; i < 40 && after?.status !== 'ok'; i++) {
      await sleep(250);
      after = await attempt(KIM.email, KIM.password);
    }
    expect(after?.status).toBe('ok');
  });
});

// Two Gatehouse processes on one PostgreSQL (and Redis): a code issued by one is redeemed at the
// other; both serve the same JWKS; a key rotated through the CLI is used by both. And: a restart in
// embedded mode keeps users, clients, keys and refresh tokens. And: a token revoked at one process is
// refused by the other (introspection and token exchange), with the propagation time printed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import pg from 'pg';
import { decodeProtectedHeader } from 'jose';
import { runCli, spawnGatehouse, stopProcess } from './helpers/process.ts';
import { ADMIN, Browser, CALLBACK, authorize, codeFlow, rpConfig, startTestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';
import { flushWhileProbing, type Answer, type Probe } from './helpers/revocation-flush.ts';


const stop = stopProcess;
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const MCP = 'https://mcp.example.com/mcp';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };

const cli = runCli;

const run = await servicesFor('postgres+redis');

describe.skipIf(!run)('two processes on one PostgreSQL + Redis', () => {
  const procs: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await Promise.all(procs.map(stop));
    for (const c of cleanups) await c();
  });

  /** A fresh database and Redis prefix (dropped after the suite), and the env both processes share. */
  async function sharedEnv(extra: Record<string, string>): Promise<Record<string, string>> {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(pg.drop, redis.cleanup);
    return {
      DATABASE_URL: pg.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix,
      ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, MFA_REQUIRED_ROLES: 'none',
      DATA_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64url'),
      ...extra,
    };
  }

  /** A and B behind one issuer, with Alice, an MCP resource and a web client allowed to exchange for it. */
  async function twoNodesWithAlice() {
    const env = await sharedEnv({ RATE_LIMITS: 'off' });
    const a = await spawnGatehouse(env);
    procs.push(a.proc);
    // The CLI writes straight to the shared database: both processes see what it creates.
    cli(env, 'resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    cli(env, 'role', 'update', 'user', '--add', 'tools:read');
    cli(env, 'user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user');
    const web = cli(env, 'client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX);
    cli(env, 'policy', 'client', 'set', web.client_id, '--resource', MCP);
    // One issuer behind a load balancer: B answers for tokens A issued.
    const b = await spawnGatehouse({ ...env, ISSUER: a.url });
    procs.push(b.proc);

    const post = async (url: string, path: string, params: Record<string, string>): Promise<Answer> => {
      const res = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}` },
        body: new URLSearchParams(params),
      });
      return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, any> };
    };
    const introspect = (url: string, token: string) => post(url, '/token/introspection', { token });
    const exchange = (url: string, token: string) => post(url, '/token', { grant_type: TX, subject_token_type: AT, subject_token: token, resource: MCP });
    const config = await rpConfig({ url: a.url }, web.client_id, web.client_secret);
    return { env, a, b, web, post, introspect, exchange, config };
  }

  describe('revocation', () => {
    // Both revocation tests use one pair of processes (spawning them and the CLI is the slow part).
    let pair: Awaited<ReturnType<typeof twoNodesWithAlice>>;
    beforeAll(async () => {
      pair = await twoNodesWithAlice();
    }, 400_000);

    it('a token revoked at A is refused at B (introspection and exchange); prints how long it took', { timeout: 120_000 }, async () => {
      const { a, b, post, introspect, exchange, config } = pair;
      const { tokens } = await codeFlow({ url: a.url }, config, { creds: ALICE, resource: MCP, scope: 'openid offline_access tools:read' });
      const token = tokens.access_token;
      // Before: B accepts the token A issued.
      expect((await introspect(b.url, token)).body).toMatchObject({ active: true, aud: MCP });
      // Issue 14: this used to exchange the MCP token itself at B. Its audience is the MCP server, so
      // every node refuses it as a subject_token; the revocation below is followed by introspection.
      expect((await exchange(b.url, token)).body.error_description).toMatch(/another audience/);

      const start = performance.now();
      expect((await post(a.url, '/token/revocation', { token })).status).toBe(200);
      let ms = -1;
      while (performance.now() - start < 5000) {
        if ((await introspect(b.url, token)).body.active === false) {
          ms = performance.now() - start;
          break;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      console.log(`two processes: revoked at A, refused at B after ${ms.toFixed(1)} ms (the revoke request included)`);
      expect(ms, 'B still says active 5 s after the revocation at A').toBeGreaterThanOrEqual(0);
      expect((await introspect(b.url, token)).body).toEqual({ active: false });
    });

    it('gives the same answers as one process while their Redis keys are wiped again and again: a revoked token is never accepted', { timeout: 300_000 }, async () => {
      const { env, a, b, post, introspect, exchange, config } = pair;
      const { tokens: forMcp } = await codeFlow({ url: a.url }, config, { creds: ALICE, resource: MCP, scope: 'openid tools:read' });
      const { tokens: forUserinfo } = await codeFlow({ url: a.url }, config, { creds: ALICE, scope: 'openid email' });
      const jwt = forMcp.access_token;
      expect((await introspect(b.url, jwt)).body.active).toBe(true);
      // Revoked first, so their rows are the first a reload writes. The opaque token by jti (the
      // operator's way: it stays stored, so only the list refuses it).
      expect((await post(a.url, '/token/revocation', { token: jwt })).status).toBe(200);
      cli(env, 'revoke', '--jti', forUserinfo.access_token);
      const FILLER = 20_000;
      const db = new pg.Client({ connectionString: env.DATABASE_URL });
      await db.connect();
      try {
        await db.query(`INSERT INTO revocations (kind, id, reason, expires_at)
          SELECT 'jti', 'filler-' || g, 'filler', now() + interval '10 minutes' FROM generate_series(1, $1::int) g`, [FILLER]);
      } finally {
        await db.end();
      }
      const me = (url: string) => async (): Promise<Answer> => {
        const res = await fetch(`${url}/me`, { headers: { authorization: `Bearer ${forUserinfo.access_token}` } });
        return { status: res.status, body: await res.json().catch(() => ({})) as Record<string, any> };
      };
      const probes: Probe[] = [a.url, b.url].flatMap((url, n) => [
        { name: `introspection@${'AB'[n]}`, send: () => introspect(url, jwt), accepted: (r) => r.body.active === true, refused: (r) => r.status === 200 && r.body.active === false },
        { name: `userinfo@${'AB'[n]}`, send: me(url), accepted: (r) => r.status === 200, refused: (r) => r.status === 401 },
        // The revoked opaque token: the MCP JWT would be refused as a subject_token for its audience alone (issue 14).
        { name: `exchange@${'AB'[n]}`, send: () => exchange(url, forUserinfo.access_token), accepted: (r) => r.status === 200, refused: (r) => r.status === 400 && r.body.error === 'invalid_request' },
      ]);
      const run = await flushWhileProbing({
        redisUrl: env.REDIS_URL, prefix: env.REDIS_KEY_PREFIX, probes, wipes: 14, gaps: [30, 80, 150, 300, 600, 1200, 2500], workers: 12, settleWithinMs: 45_000,
      });
      console.log(`wipes during probing (2 processes): ${JSON.stringify({ ...run, accepted: run.accepted.length, unexpected: run.unexpected.length })}`);
      expect(run.accepted, 'a revoked token was accepted').toEqual([]);
      expect(run.unexpected).toEqual([]);
      expect(run.midReload, 'no wipe fell inside a reload: the test did not reach the window').toBeGreaterThan(0);
      expect(run.settleMs, 'still 503 (or worse) 45 s after the last wipe').toBeGreaterThanOrEqual(0);
      // And the same answers from both once settled.
      for (const url of [a.url, b.url]) {
        expect(await introspect(url, jwt)).toEqual({ status: 200, body: { active: false } });
        expect((await me(url)()).status).toBe(401);
      }
    });
  });

  it("share codes, JWKS and key rotation", { timeout: 120_000 }, async () => {
    const env = await sharedEnv({ KEYS_REFRESH_SECONDS: '1' });
    const a = await spawnGatehouse(env);
    procs.push(a.proc);
    // Here each process keeps its own issuer URL, so openid-client can discover and sign in at
    // either; what they share is the database: codes, clients and keys.
    const b = await spawnGatehouse({ ...env });
    procs.push(b.proc);
    const client = cli(env, 'client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);

    const jwksA = await (await fetch(`${a.url}/jwks`)).json();
    const jwksB = await (await fetch(`${b.url}/jwks`)).json();
    expect(jwksB).toEqual(jwksA);

    // The code is issued at A (login there) and redeemed at B's token endpoint. The issuers differ
    // only by port here, so redeem with a raw request to B rather than through discovery.
    const configA = await rpConfig({ url: a.url }, client.client_id, client.client_secret);
    const verifier = oidc.randomPKCECodeVerifier();
    const { callbackUrl } = await authorize({ url: a.url }, oidc.buildAuthorizationUrl(configA, {
      redirect_uri: CALLBACK, scope: 'openid email', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    }), ADMIN);
    const res = await fetch(`${b.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: callbackUrl.searchParams.get('code')!, redirect_uri: CALLBACK, code_verifier: verifier }),
    });
    expect(res.status).toBe(200);
    const body = await res.json();
    expect(body.id_token).toBeTruthy();

    // Rotate through the CLI (its own process, straight to PostgreSQL): both servers pick it up.
    const rotated = cli(env, 'keys', 'rotate');
    const newRs = rotated.rotated.find((k: string) => k.startsWith('rs256'));
    for (const url of [a.url, b.url]) {
      let kid = '';
      for (let i = 0; i < 40 && kid !== newRs; i++) {
        await new Promise((r) => setTimeout(r, 250));
        const cfg = await rpConfig({ url }, client.client_id, client.client_secret);
        const { tokens } = await codeFlow({ url }, cfg, { scope: 'openid' });
        kid = decodeProtectedHeader(tokens.id_token!).kid!;
      }
      expect(kid).toBe(newRs);
      const jwks = await (await fetch(`${url}/jwks`)).json();
      // The old keys stay published next to the new ones.
      expect(jwks.keys.map((k: { kid: string }) => k.kid)).toEqual(expect.arrayContaining([...rotated.rotated, ...jwksA.keys.map((k: { kid: string }) => k.kid)]));
    }
  });
});

describe('embedded restart', () => {
  it('keeps users, clients, keys, refresh tokens and browser sessions', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-restart-'));
    try {
      // Signs in as ADMIN to test a restart, not the admin role's MFA requirement.
      const first = await startTestGatehouse({ dataDir, env: { MFA_REQUIRED_ROLES: 'none' } });
      const client = await first.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
      await first.cli('user', 'create', '--email', 'bob@example.com', '--password', 'bob-has-a-long-password');
      const config = await rpConfig(first, client.client_id, client.client_secret);
      const browser = new Browser();
      const { tokens } = await codeFlow(first, config, { browser, creds: { email: 'bob@example.com', password: 'bob-has-a-long-password' } });
      const jwks1 = await (await fetch(`${first.url}/jwks`)).json();
      const url = first.url;
      await first.close();

      const port = new URL(url).port;
      const second = await startTestGatehouse({ dataDir, env: { MFA_REQUIRED_ROLES: 'none', PORT: port, ISSUER: url } });
      try {
        expect(await (await fetch(`${second.url}/jwks`)).json()).toEqual(jwks1);
        const config2 = await rpConfig(second, client.client_id, client.client_secret);
        const refreshed = await oidc.refreshTokenGrant(config2, tokens.refresh_token!);
        expect(refreshed.access_token).toBeTruthy();
        const users = await second.cli('user', 'list');
        expect(users.map((u: { email: string }) => u.email)).toContain('bob@example.com');
        // The browser's sign-in survives too (sessions and the cookie keys that sign their cookies):
        // the next authorization request goes straight back to the client with a code.
        const again = await browser.follow(oidc.buildAuthorizationUrl(config2, {
          redirect_uri: CALLBACK, scope: 'openid', code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
        }).href, second.url);
        expect(again.url.startsWith(`${CALLBACK}?`)).toBe(true);
        expect(new URL(again.url).searchParams.get('code')).toBeTruthy();
      } finally {
        await second.close();
      }
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('the CLI while an embedded server runs', () => {
  it('sends commands over the control socket, and the running server sees the result', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-cli-'));
    const env = { DATA_DIR: dataDir, ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password };
    const server = await spawnGatehouse(env);
    try {
      expect(fs.statSync(path.join(dataDir, 'control.sock')).mode & 0o777).toBe(0o600);
      const user = cli(env, 'user', 'create', '--email', 'dora@example.com', '--password', 'dora-has-a-long-password');
      expect(user.email).toBe('dora@example.com');
      const client = cli(env, 'client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
      expect(client.client_secret).toBeTruthy();
      // The server migrated at start; `gatehouse migrate` reaches it over the socket and has nothing left to do.
      expect(cli(env, 'migrate')).toEqual({ applied: [] });
      // A bad command is an error exit with a message, not a stack trace.
      expect(() => cli(env, 'user', 'create', '--email', 'dora@example.com', '--password', 'dora-has-a-long-password')).toThrow(/already|taken|exists/i);
      const config = await rpConfig({ url: server.url }, client.client_id, client.client_secret);
      const { tokens } = await codeFlow({ url: server.url }, config, { scope: 'openid email', creds: { email: 'dora@example.com', password: 'dora-has-a-long-password' } });
      expect(tokens.claims()!.email).toBe('dora@example.com');
      // Graceful shutdown: SIGTERM closes the listener, the control socket and the database, then exits 0.
      await stop(server.proc);
      expect(server.proc.exitCode).toBe(0);
      expect(fs.existsSync(path.join(dataDir, 'control.sock'))).toBe(false);
      // The next CLI call finds no server and opens the data directory itself, which PGlite
      // allows only once the server has let go of it.
      expect(cli(env, 'user', 'list', '--json').map((u: { email: string }) => u.email)).toContain('dora@example.com');
    } finally {
      await stop(server.proc);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});

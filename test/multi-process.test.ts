// Two Gatehouse processes on one PostgreSQL (and Redis): a code issued by one is redeemed at the
// other; both serve the same JWKS; a key rotated through the CLI is used by both. And: a restart in
// embedded mode keeps users, clients, keys and refresh tokens.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { decodeProtectedHeader } from 'jose';
import { ROOT, TSX, spawnGatehouse, stopProcess } from './helpers/process.ts';
import { ADMIN, CALLBACK, authorize, codeFlow, rpConfig, startTestGatehouse } from './helpers/gatehouse.ts';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './helpers/databases.ts';


const stop = stopProcess;

const cli = (env: Record<string, string>, ...argv: string[]) => {
  const r = spawnSync(TSX, ['src/cli/main.ts', ...argv], { cwd: ROOT, env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gatehouse ${argv.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
};

const run = await servicesFor('postgres+redis');

describe.skipIf(!run)('two processes on one PostgreSQL + Redis', () => {
  const procs: ChildProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    await Promise.all(procs.map(stop));
    for (const c of cleanups) await c();
  });

  it("share codes, JWKS and key rotation", { timeout: 120_000 }, async () => {
    const pg = await createTestPgDatabase();
    const redis = await createTestRedisPrefix();
    cleanups.push(pg.drop, redis.cleanup);
    const env = {
      DATABASE_URL: pg.url, REDIS_URL: redis.url, REDIS_KEY_PREFIX: redis.prefix, KEYS_REFRESH_SECONDS: '1',
      ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, MFA_REQUIRED_ROLES: 'none',
      DATA_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64url'),
    };
    const a = await spawnGatehouse(env);
    procs.push(a.proc);
    // Both processes must share one issuer; B listens elsewhere but presents A's issuer URL.
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
  it('keeps users, clients, keys and refresh tokens', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-restart-'));
    try {
      const first = await startTestGatehouse({ dataDir });
      const client = await first.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
      await first.cli('user', 'create', '--email', 'bob@example.com', '--password', 'bob-has-a-long-password');
      const config = await rpConfig(first, client.client_id, client.client_secret);
      const { tokens } = await codeFlow(first, config, { creds: { email: 'bob@example.com', password: 'bob-has-a-long-password' } });
      const jwks1 = await (await fetch(`${first.url}/jwks`)).json();
      const url = first.url;
      await first.close();

      const port = new URL(url).port;
      const second = await startTestGatehouse({ dataDir, env: { PORT: port, ISSUER: url } });
      try {
        expect(await (await fetch(`${second.url}/jwks`)).json()).toEqual(jwks1);
        const config2 = await rpConfig(second, client.client_id, client.client_secret);
        const refreshed = await oidc.refreshTokenGrant(config2, tokens.refresh_token!);
        expect(refreshed.access_token).toBeTruthy();
        const users = await second.cli('user', 'list');
        expect(users.map((u: { email: string }) => u.email)).toContain('bob@example.com');
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
      // A bad command is an error exit with a message, not a stack trace.
      expect(() => cli(env, 'user', 'create', '--email', 'dora@example.com', '--password', 'dora-has-a-long-password')).toThrow(/already|taken|exists/i);
      const config = await rpConfig({ url: server.url }, client.client_id, client.client_secret);
      const { tokens } = await codeFlow({ url: server.url }, config, { scope: 'openid email', creds: { email: 'dora@example.com', password: 'dora-has-a-long-password' } });
      expect(tokens.claims()!.email).toBe('dora@example.com');
    } finally {
      await stop(server.proc);
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});

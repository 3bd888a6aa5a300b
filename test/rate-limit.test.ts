// Rate limits (issue 7) against a running Gatehouse: token exchange per user and per client,
// connection-details for guests vs users and per user, /token per IP, login posts per IP; 429 +
// Retry-After and one audit event.
// Across processes sharing Redis: test/rate-limit.redis.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { loadConfig } from '../src/config/index.ts';
import { createRateLimits, RateLimited } from '../src/http/rate-limit.ts';
import { createMemoryKv } from '../src/store/kv.ts';

const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APItestkey', LIVEKIT_API_SECRET: 'lk-secret-'.padEnd(40, 'x') };
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };
type Client = { client_id: string; client_secret: string };

const form = (url: string, body: Record<string, string>, client?: Client) => fetch(url, {
  method: 'POST',
  headers: {
    'content-type': 'application/x-www-form-urlencoded',
    ...(client ? { authorization: `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}` } : {}),
  },
  body: new URLSearchParams(body),
});
const details = (gh: { url: string }, token?: string) => fetch(`${gh.url}/livekit/connection-details`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
  body: '{}',
});

describe('the limiter module', () => {
  it('parses limits, refuses past them with Retry-After, and RATE_LIMITS=off turns everything off', async () => {
    const config = loadConfig({ RATE_LIMIT_EXCHANGE_USER: '2/1m', RATE_LIMIT_GUEST_IP: 'off' });
    expect(config.RATE_LIMIT_EXCHANGE_USER).toEqual({ points: 2, seconds: 60 });
    expect(config.RATE_LIMIT_REGISTER_IP).toEqual({ points: 10, seconds: 3600 });
    expect(() => loadConfig({ RATE_LIMIT_TOKEN_IP: 'lots' })).toThrow(/RATE_LIMIT_TOKEN_IP/);
    const limits = createRateLimits(createMemoryKv(), config);
    await limits.consume('exchangeUser', 'u1');
    await limits.consume('exchangeUser', 'u1');
    const err = await limits.consume('exchangeUser', 'u1').catch((e) => e);
    expect(err).toBeInstanceOf(RateLimited);
    expect(err.status).toBe(429);
    expect(Number(err.headers['Retry-After'])).toBeGreaterThan(0);
    await limits.consume('exchangeUser', 'u2');
    expect(limits.enabled('guestIp')).toBe(false);
    const off = createRateLimits(createMemoryKv(), loadConfig({ RATE_LIMITS: 'off', RATE_LIMIT_EXCHANGE_USER: '1/1m' }));
    for (let i = 0; i < 5; i++) await off.consume('exchangeUser', 'u1');
  });
});

describe('rate limits over HTTP', () => {
  let gh: TestGatehouse;
  let web: Client;
  let alice: { token: string; sub: string };
  let bob: { token: string };

  beforeAll(async () => {
    gh = await startTestGatehouse({
      env: { ...LK, LIVEKIT_GUESTS: 'true', RATE_LIMITS: 'on', RATE_LIMIT_LOGIN_IP: 'off', RATE_LIMIT_TOKEN_IP: 'off', LOGIN_DELAY_MS: '0' },
    });
    await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password);
    await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password);
    web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const a = await codeFlow(gh, config, { creds: ALICE, scope: 'openid' });
    const b = await codeFlow(gh, config, { creds: BOB, scope: 'openid' });
    alice = { token: a.tokens.access_token, sub: a.tokens.claims()!.sub };
    bob = { token: b.tokens.access_token };
  });
  afterAll(async () => {
    await gh?.close();
  });

  it('the 61st exchange in a minute for one user is 429 + Retry-After; the client still serves other users', async () => {
    const exchange = (token: string) => form(`${gh.url}/token`, { grant_type: TX, subject_token_type: AT, subject_token: token, requested_token_type: LIVEKIT }, web);
    for (let i = 0; i < 60; i++) {
      const res = await exchange(alice.token);
      expect(res.status, await res.text()).toBe(200);
    }
    const refused = await exchange(alice.token);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await refused.json()).error).toBe('slow_down');
    expect((await exchange(bob.token)).status).toBe(200);
    // One audit event for the window, not one per refused request.
    await exchange(alice.token);
    const { rows } = await gh.deps.db.query<{ subject: string; details: { limit: string } }>("SELECT subject, details FROM audit_events WHERE type = 'rate_limit'");
    expect(rows).toEqual([expect.objectContaining({ subject: alice.sub, details: { limit: 'exchangeUser' } })]);
  });

  it('guests are limited more tightly than users (10/min per IP vs 60/min per user)', async () => {
    for (let i = 0; i < 10; i++) expect((await details(gh)).status).toBe(200);
    const refused = await details(gh);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await refused.json()).error).toBe('slow_down');
    // A signed-in user from the same IP is not held back by the guest limit.
    for (let i = 0; i < 15; i++) expect((await details(gh, bob.token)).status).toBe(200);
  });
});

describe('/token per IP', () => {
  it('answers 429 slow_down with Retry-After past the limit', async () => {
    const gh = await startTestGatehouse({ env: { RATE_LIMITS: 'on', RATE_LIMIT_TOKEN_IP: '5/1m' } });
    try {
      for (let i = 0; i < 5; i++) expect((await form(`${gh.url}/token`, { grant_type: 'client_credentials' })).status).not.toBe(429);
      const res = await form(`${gh.url}/token`, { grant_type: 'client_credentials' });
      expect(res.status).toBe(429);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await res.json()).toMatchObject({ error: 'slow_down' });
    } finally {
      await gh.close();
    }
  });
});

describe('the other limits: login per IP, exchange per client, connection-details per user', () => {
  let gh: TestGatehouse;
  let web: Client;
  let config: Awaited<ReturnType<typeof rpConfig>>;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    gh = await startTestGatehouse({
      env: {
        ...LK, RATE_LIMITS: 'on', LOGIN_DELAY_MS: '0', RATE_LIMIT_TOKEN_IP: 'off',
        RATE_LIMIT_LOGIN_IP: '4/1m', RATE_LIMIT_EXCHANGE_CLIENT: '5/1m', RATE_LIMIT_CONNECTION_USER: '3/1m',
      },
    });
    await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password);
    await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password);
    web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', TX);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
    config = await rpConfig(gh, web.client_id, web.client_secret);
    // Two sign-ins: two of the four login posts this IP may make in the minute.
    tokens.alice = (await codeFlow(gh, config, { creds: ALICE, scope: 'openid' })).tokens.access_token;
    tokens.bob = (await codeFlow(gh, config, { creds: BOB, scope: 'openid' })).tokens.access_token;
  });
  afterAll(async () => {
    await gh?.close();
  });

  const limitRows = async (limit: string) => (await gh.deps.db.query<{ subject: string | null; client_id: string | null; ip: string | null }>(
    "SELECT subject, client_id, ip FROM audit_events WHERE type = 'rate_limit' AND details->>'limit' = $1", [limit])).rows;

  it('login form posts per IP: past the limit even the right password gets 429 + Retry-After, for any account', async () => {
    const browser = new Browser();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', state: oidc.randomState(),
      code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    });
    let html = (await browser.follow(url.href, gh.url)).html!;
    const post = async (email: string, password: string) => {
      const f = formOf(html, '/login');
      const step = await browser.follow(new URL(f.action, gh.url).href, gh.url, { form: { ...f.fields, email, password } });
      if (step.html) html = step.html;
      return step;
    };
    // Different accounts, so no account lockout is involved: only the IP's count.
    expect((await post('nobody-1@example.com', 'a wrong password')).res.status).toBe(401);
    expect((await post('nobody-2@example.com', 'a wrong password')).res.status).toBe(401);
    const refused = await post(ALICE.email, ALICE.password);
    expect(refused.res.status).toBe(429);
    expect(Number(refused.res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.html).toMatch(/too many/i);
    expect(await limitRows('loginIp')).toEqual([expect.objectContaining({ ip: expect.stringMatching(/127\.0\.0\.1/) })]);
  });

  it('token exchanges per client: past the limit the client is refused for every user (429 slow_down)', async () => {
    const exchange = (token: string) => form(`${gh.url}/token`, { grant_type: TX, subject_token_type: AT, subject_token: token, requested_token_type: LIVEKIT }, web);
    for (const who of ['alice', 'bob', 'alice', 'bob', 'alice']) {
      const res = await exchange(tokens[who]);
      expect(res.status, await res.text()).toBe(200);
    }
    for (const who of ['bob', 'alice']) {
      const refused = await exchange(tokens[who]);
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await refused.json()).error).toBe('slow_down');
    }
    expect(await limitRows('exchangeClient')).toEqual([expect.objectContaining({ client_id: web.client_id })]);
  });

  it('connection-details per user: the fourth call in the minute is 429; another user is still served', async () => {
    for (let i = 0; i < 3; i++) expect((await details(gh, tokens.alice)).status).toBe(200);
    const refused = await details(gh, tokens.alice);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await refused.json()).error).toBe('slow_down');
    expect((await details(gh, tokens.bob)).status).toBe(200);
    expect(await limitRows('connectionUser')).toHaveLength(1);
  });
});

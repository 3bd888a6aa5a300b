// Test harness: a real Gatehouse on a real port (fastify/demo style: build, use, always close),
// on in-memory PGlite or on a fresh PostgreSQL database (+ Redis prefix) per test file.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net, { type AddressInfo } from 'node:net';
import { CookieJar } from 'tough-cookie';
import * as oidc from 'openid-client';
import { startGatehouse, type RunningGatehouse } from '../../src/server.ts';
import { createLogger, type Logger } from '../../src/http/log.ts';
import { runCommand } from '../../src/admin/commands.ts';
import { describe, it } from 'vitest';
import { createTestPgDatabase, createTestRedisPrefix, servicesFor } from './databases.ts';

export type Mode = 'embedded' | 'postgres';

export interface TestGatehouse extends RunningGatehouse {
  cli(...argv: string[]): Promise<any>;
  /** Stops the server and drops what the test created (database, Redis keys, data dir). */
  close(): Promise<void>;
}

/**
 * One suite per store mode: embedded, and PostgreSQL + Redis when available (required under
 * REQUIRE_SERVICES=1; otherwise a visible skip says what was not tested).
 */
export function describeEachMode(name: string, fn: (mode: Mode) => void) {
  const available = servicesFor('postgres+redis');
  describe(`${name} (embedded)`, () => fn('embedded'));
  describe(`${name} (postgres)`, async () => {
    if (await available) fn('postgres');
    else it.skip('needs PostgreSQL and Redis (set REQUIRE_SERVICES=1 to require them)', () => {});
  });
}

export const ADMIN = { email: 'admin@example.com', password: 'correct horse battery staple' };

export async function startTestGatehouse(opts: { mode?: Mode; env?: Record<string, string>; dataDir?: string; databaseUrl?: string; redis?: { url: string; prefix: string }; log?: Logger } = {}): Promise<TestGatehouse> {
  const mode = opts.mode ?? 'embedded';
  const cleanups: (() => Promise<void>)[] = [];
  const env: Record<string, string> = {
    HOST: '127.0.0.1',
    LOG_LEVEL: 'silent',
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    KEYS_REFRESH_SECONDS: '1',
    // Production defaults otherwise (issue 20): rate limits, lockouts and the MFA policy are on. A
    // suite that needs one off passes it in `env`, with its reason beside it.
    ...opts.env,
  };
  if (mode === 'postgres') {
    if (opts.databaseUrl) env.DATABASE_URL = opts.databaseUrl;
    else {
      const pg = await createTestPgDatabase();
      env.DATABASE_URL = pg.url;
      cleanups.push(pg.drop);
    }
    if (opts.redis) {
      env.REDIS_URL = opts.redis.url;
      env.REDIS_KEY_PREFIX = opts.redis.prefix;
    } else {
      const r = await createTestRedisPrefix();
      env.REDIS_URL = r.url;
      env.REDIS_KEY_PREFIX = r.prefix;
      cleanups.push(r.cleanup);
    }
  } else if (opts.dataDir) {
    env.DATA_DIR = opts.dataDir;
  } else {
    env.DATA_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-test-'));
    cleanups.push(async () => fs.rmSync(env.DATA_DIR, { recursive: true, force: true }));
  }
  const running = await startGatehouse({
    env,
    port: opts.env?.PORT ? Number(opts.env.PORT) : 0,
    memoryDb: mode === 'embedded' && !opts.dataDir,
    log: opts.log ?? createLogger('silent'),
  });
  return {
    ...running,
    async cli(...argv: string[]) {
      return JSON.parse(JSON.stringify(await runCommand(running.deps, argv)));
    },
    async close() {
      await running.stop();
      for (const c of cleanups.reverse()) await c();
    },
  };
}

/** openid-client configuration for a client registered through the CLI. */
export async function rpConfig(gh: { url: string }, clientId: string, clientSecret?: string) {
  const config = await oidc.discovery(
    new URL(gh.url),
    clientId,
    clientSecret ? { client_secret: clientSecret } : undefined,
    clientSecret ? oidc.ClientSecretBasic(clientSecret) : oidc.None(),
    { execute: [oidc.allowInsecureRequests] },
  );
  return config;
}

/** A browser-ish HTTP client: a cookie jar and manual redirects, so each hop can be asserted. */
export class Browser {
  jar = new CookieJar();

  async request(url: string, init: { method?: string; form?: Record<string, string> | URLSearchParams; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { accept: 'text/html', ...init.headers };
    const cookie = await this.jar.getCookieString(url);
    if (cookie) headers.cookie = cookie;
    let body: string | undefined;
    if (init.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      // URLSearchParams for repeated fields (checkbox groups).
      body = (init.form instanceof URLSearchParams ? init.form : new URLSearchParams(init.form)).toString();
    }
    const res = await fetch(url, { method: init.method ?? (body ? 'POST' : 'GET'), headers, body, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) await this.jar.setCookie(c, url);
    return res;
  }

  /** Follow redirects until one leaves `origin` (the RP callback) or a page is returned. */
  async follow(url: string, origin: string, init?: Parameters<Browser['request']>[1]): Promise<{ url: string; res: Response; html?: string }> {
    let res = await this.request(url, init);
    let current = url;
    for (let i = 0; i < 15; i++) {
      const loc = res.headers.get('location');
      if (!loc || res.status < 300 || res.status >= 400) break;
      current = new URL(loc, current).href;
      if (!current.startsWith(origin)) return { url: current, res };
      res = await this.request(current);
    }
    return { url: current, res, html: await res.text() };
  }
}

export function formOf(html: string, actionContains?: string) {
  const forms = [...html.matchAll(/<form[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/g)];
  const form = forms.find((f) => !actionContains || f[1].includes(actionContains));
  if (!form) throw new Error(`no form${actionContains ? ` with action *${actionContains}*` : ''} in page:\n${html.slice(0, 2000)}`);
  const fields: Record<string, string> = {};
  for (const m of form[2].matchAll(/<input[^>]*>/g)) {
    const name = /name="([^"]+)"/.exec(m[0])?.[1];
    const value = /value="([^"]*)"/.exec(m[0])?.[1] ?? '';
    if (name && /type="hidden"/.test(m[0])) fields[name] = value.replace(/&amp;/g, '&');
  }
  return { action: form[1].replace(/&amp;/g, '&'), fields };
}

/**
 * Drive the authorization code flow through the login (and consent, if shown) pages.
 * Returns the callback URL the RP receives.
 */
export async function authorize(gh: { url: string }, authUrl: URL, creds: { email: string; password: string }, browser = new Browser()) {
  let step = await browser.follow(authUrl.href, gh.url);
  for (let i = 0; i < 4 && step.html !== undefined; i++) {
    const html = step.html;
    if (/name="password"/.test(html)) {
      const { action, fields } = formOf(html, '/login');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: creds.email, password: creds.password } });
    } else if (/\/confirm/.test(html)) {
      const { action, fields } = formOf(html, '/confirm');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: fields });
    } else {
      throw new Error(`unexpected page (${step.res.status}):\n${html.slice(0, 1500)}`);
    }
  }
  if (step.html !== undefined) throw new Error(`flow did not reach the client: ${step.res.status}`);
  return { callbackUrl: new URL(step.url), browser };
}

export const CALLBACK = 'http://127.0.0.1:8976/callback';

/**
 * Code + PKCE for a client: returns the token response. With `resource`, the token request names it
 * too (RFC 8707 §2.2) and the access token is that resource's; `gatehouseToken` leaves it out, so the
 * access token is bound to Gatehouse while the grant holds the consent for the resource.
 */
export async function codeFlow(gh: { url: string }, config: oidc.Configuration, opts: { scope?: string; resource?: string; gatehouseToken?: boolean; creds?: { email: string; password: string }; extra?: Record<string, string>; browser?: Browser } = {}) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const params: Record<string, string> = {
    redirect_uri: CALLBACK,
    scope: opts.scope ?? 'openid email profile roles offline_access',
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    prompt: 'consent',
    ...(opts.resource ? { resource: opts.resource } : {}),
    ...opts.extra,
  };
  if (!params.scope.includes('offline_access')) delete params.prompt;
  const authUrl = oidc.buildAuthorizationUrl(config, params);
  const { callbackUrl, browser } = await authorize(gh, authUrl, opts.creds ?? ADMIN, opts.browser);
  const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce },
    opts.resource && !opts.gatehouseToken ? { resource: opts.resource } : undefined);
  return { tokens, browser, callbackUrl };
}

/** Counts of parallel redemptions of one artefact (rounds × racers, winners, refused), printed by the test. */
export function raceTally(label: string) {
  const t = { rounds: 0, requests: 0, winners: 0, refused: 0 };
  return {
    round(racers: number, winners: number) {
      t.rounds++;
      t.requests += racers;
      t.winners += winners;
      t.refused += racers - winners;
    },
    print: () => console.log(`${label}: ${JSON.stringify(t)}`),
  };
}

/**
 * RFC 8628 as a person does it in a browser: enter the user code, confirm the device, sign in and
 * allow. Resolves once the "device connected" page shows.
 */
export async function approveDevice(gh: { url: string }, userCode: string, creds: { email: string; password: string }, browser = new Browser()) {
  let step = await browser.follow(`${gh.url}/device`, gh.url);
  let form = formOf(step.html!);
  step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, user_code: userCode } });
  form = formOf(step.html!);
  step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: form.fields });
  for (let i = 0; i < 4 && !/device connected/i.test(step.html ?? ''); i++) {
    const html = step.html ?? '';
    form = /name="password"/.test(html) ? formOf(html, '/login') : formOf(html, '/confirm');
    const fields = /name="password"/.test(html) ? { ...form.fields, email: creds.email, password: creds.password } : form.fields;
    step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: fields });
  }
  if (!/device connected/i.test(step.html ?? '')) throw new Error(`device sign-in did not finish (${step.res.status}):\n${(step.html ?? '').slice(0, 1500)}`);
}

/**
 * PORT and ISSUER for a Gatehouse at http://localhost:<a free port>: WebAuthn needs a host name for
 * the relying-party ID (browsers refuse IP addresses), so passkey tests cannot use 127.0.0.1.
 */
export async function localhostIssuer(): Promise<{ PORT: string; ISSUER: string }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return { PORT: String(port), ISSUER: `http://localhost:${port}` };
}

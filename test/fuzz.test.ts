// Hostile input against every route (issue 15): a generated table of routes × parameters × hostile
// values (NUL, controls, invalid UTF-8 percent-escapes, unpaired surrogates, 10 kB values,
// duplicated parameters, wrong content types, bad and hostile JSON, invalid UTF-8 bodies), in both
// store modes. Every answer must be < 500 and, when it is an error, a parsable one: JSON with an
// `error` code, or an HTML page. The counts of requests tried and 5xx seen are printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';

const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APIfuzzkey', LIVEKIT_API_SECRET: 'lk-fuzz-secret-'.padEnd(40, 'x') };
const RESOURCE = 'https://mcp.example.com/mcp';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';

/** Values as they go on the wire (already percent-encoded where that is the point). */
export const HOSTILE: Record<string, string> = {
  nul: '%00',
  'nul inside': 'ab%00cd',
  'control SOH': '%01',
  'escape sequence': '%1B%5B31m',
  'DEL': '%7F',
  'C1 NEL': '%C2%85',
  'invalid UTF-8': '%C3%28',
  'encoded surrogate': '%ED%A0%80',
  'bytes FF FE': '%FF%FE',
  'lone percent': '%',
  'bad escape': '%zz',
  'newline': 'a%0Ab',
  '10 kB': 'A'.repeat(10 * 1024),
};
/** Strings for JSON bodies (JSON.stringify writes them as \u escapes). */
const HOSTILE_JSON: Record<string, unknown> = {
  nul: 'a\u0000b', control: '\u0001\u001b[31m', 'lone surrogate': '\ud800', '10 kB': 'A'.repeat(10 * 1024),
  number: 12, array: ['x'], object: { a: 1 }, null: null, 'deep': JSON.parse('['.repeat(40) + ']'.repeat(40)),
};

interface Target {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** `:x` segments are fuzzed too */
  path: string;
  in: 'query' | 'form' | 'json';
  params: string[];
  base?: () => Record<string, unknown>;
  headers?: () => Record<string, string>;
}

interface Fixture {
  gh: TestGatehouse;
  webId: string;
  basicAgent: string;
  basicWeb: string;
  adminToken: string;
  userToken: string;
  interaction: { uid: string; cookie: string; csrf: string };
}

function targets(f: Fixture): Target[] {
  const agent = () => ({ authorization: f.basicAgent });
  const web = () => ({ authorization: f.basicWeb });
  const admin = () => ({ authorization: `Bearer ${f.adminToken}` });
  const user = () => ({ authorization: `Bearer ${f.userToken}` });
  const browser = () => ({ cookie: f.interaction.cookie, accept: 'text/html' });
  const csrf = () => ({ csrf: f.interaction.csrf });
  const uid = () => f.interaction.uid;
  return [
    // oidc-provider
    { method: 'GET', path: '/auth', in: 'query', params: ['client_id', 'response_type', 'redirect_uri', 'scope', 'state', 'nonce', 'code_challenge', 'prompt', 'login_hint', 'resource', 'connection', 'acr_values'],
      base: () => ({ client_id: f.webId, response_type: 'code', redirect_uri: CALLBACK, scope: 'openid', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' }), headers: () => ({ accept: 'text/html' }) },
    { method: 'POST', path: '/token', in: 'form', params: ['grant_type', 'scope', 'resource', 'code', 'redirect_uri', 'code_verifier', 'refresh_token', 'client_id'], base: () => ({ grant_type: 'client_credentials' }), headers: agent },
    { method: 'POST', path: '/token', in: 'form', params: ['subject_token', 'subject_token_type', 'requested_token_type', 'room', 'participant_name', 'participant_metadata', 'agent_name', 'audience', 'actor_token'],
      base: () => ({ grant_type: TX, subject_token: f.userToken, subject_token_type: AT, requested_token_type: 'urn:gatehouse:token-type:livekit' }), headers: agent },
    { method: 'POST', path: '/token', in: 'form', params: ['client_id', 'client_secret', 'grant_type'], base: () => ({ grant_type: 'client_credentials' }) },
    { method: 'POST', path: '/token/introspection', in: 'form', params: ['token', 'token_type_hint'], base: () => ({ token: f.userToken }), headers: web },
    { method: 'POST', path: '/token/revocation', in: 'form', params: ['token', 'token_type_hint'], base: () => ({ token: 'x' }), headers: web },
    { method: 'POST', path: '/request', in: 'form', params: ['response_type', 'redirect_uri', 'scope', 'state', 'code_challenge'], base: () => ({ response_type: 'code', redirect_uri: CALLBACK, scope: 'openid', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' }), headers: web },
    { method: 'POST', path: '/device/auth', in: 'form', params: ['client_id', 'scope', 'resource'], base: () => ({ client_id: f.webId, scope: 'openid' }) },
    { method: 'GET', path: '/device', in: 'query', params: ['user_code'], headers: () => ({ accept: 'text/html' }) },
    { method: 'POST', path: '/device', in: 'form', params: ['user_code', 'xsrf'], headers: () => ({ accept: 'text/html' }) },
    { method: 'GET', path: '/me', in: 'query', params: ['access_token'], headers: user },
    { method: 'POST', path: '/reg', in: 'json', params: ['client_name', 'redirect_uris', 'grant_types', 'token_endpoint_auth_method'], base: () => ({ redirect_uris: [CALLBACK] }) },
    { method: 'GET', path: '/session/end', in: 'query', params: ['post_logout_redirect_uri', 'id_token_hint', 'state', 'client_id', 'logout_hint'], headers: () => ({ accept: 'text/html' }) },
    { method: 'POST', path: '/session/end/confirm', in: 'form', params: ['xsrf', 'logout'], headers: () => ({ accept: 'text/html' }) },
    { method: 'GET', path: '/jwks', in: 'query', params: ['x'] },
    { method: 'GET', path: '/.well-known/openid-configuration', in: 'query', params: ['x'] },
    // sign-in pages
    { method: 'GET', path: '/interaction/:uid', in: 'query', params: ['x'], headers: browser },
    { method: 'POST', path: '/interaction/:uid/login', in: 'form', params: ['email', 'password', 'csrf'], base: () => ({ ...csrf(), email: 'nobody@example.com', password: 'not-a-password' }), headers: browser },
    { method: 'POST', path: '/interaction/:uid/confirm', in: 'form', params: ['csrf'], base: csrf, headers: browser },
    { method: 'POST', path: '/interaction/:uid/mfa', in: 'form', params: ['code', 'csrf'], base: csrf, headers: browser },
    { method: 'POST', path: '/interaction/:uid/federation', in: 'form', params: ['email', 'csrf'], base: csrf, headers: browser },
    { method: 'GET', path: '/federation/callback', in: 'query', params: ['state', 'code', 'error', 'error_description', 'iss'], headers: () => ({ accept: 'text/html' }) },
    { method: 'GET', path: '/federation/logged-out', in: 'query', params: ['state'], headers: () => ({ accept: 'text/html' }) },
    // account and admin pages
    { method: 'GET', path: '/account/sign-in', in: 'query', params: ['return_to'], headers: () => ({ accept: 'text/html' }) },
    { method: 'GET', path: '/account/callback', in: 'query', params: ['code', 'state', 'iss'], headers: () => ({ accept: 'text/html' }) },
    { method: 'POST', path: '/account/password', in: 'form', params: ['current', 'password', 'csrf'], headers: () => ({ accept: 'text/html' }) },
    { method: 'POST', path: '/account/devices/:id/revoke', in: 'form', params: ['csrf'] },
    { method: 'GET', path: '/admin/users', in: 'query', params: ['q', 'offset'], headers: () => ({ accept: 'text/html' }) },
    { method: 'POST', path: '/admin/users/new', in: 'form', params: ['email', 'name', 'role', 'csrf'], headers: () => ({ accept: 'text/html' }) },
    // admin API
    { method: 'GET', path: '/admin/api/users', in: 'query', params: ['limit', 'offset'], headers: admin },
    { method: 'GET', path: '/admin/api/users/:id', in: 'query', params: ['x'], headers: admin },
    { method: 'POST', path: '/admin/api/users', in: 'json', params: ['email', 'password', 'name', 'roles'], base: () => ({ email: `fuzz-${Math.random().toString(36).slice(2)}@example.com` }), headers: admin },
    { method: 'PATCH', path: '/admin/api/users/:id', in: 'json', params: ['active', 'roles'], headers: admin },
    { method: 'POST', path: '/admin/api/roles', in: 'json', params: ['name', 'permissions', 'description'], base: () => ({ name: `fuzz${Math.random().toString(36).slice(2, 8)}` }), headers: admin },
    { method: 'POST', path: '/admin/api/clients', in: 'json', params: ['name', 'redirect_uris', 'grant_types', 'scope', 'backchannel_logout_uri'], base: () => ({ name: 'fuzz' }), headers: admin },
    { method: 'POST', path: '/admin/api/resources', in: 'json', params: ['uri', 'name', 'scopes'], headers: admin },
    { method: 'DELETE', path: '/admin/api/resources', in: 'query', params: ['uri'], headers: admin },
    { method: 'PUT', path: '/admin/api/policies/roles/:role', in: 'json', params: ['rooms', 'publish'], headers: admin },
    { method: 'PUT', path: '/admin/api/policies/clients/:id', in: 'json', params: ['resources', 'agent_name', 'scopes'], headers: admin },
    { method: 'POST', path: '/admin/api/connections', in: 'json', params: ['name', 'issuer', 'client_id', 'domains', 'role_map'], headers: admin },
    { method: 'POST', path: '/admin/api/revocations', in: 'json', params: ['user', 'grant', 'session', 'jti', 'ttl'], headers: admin },
    { method: 'GET', path: '/admin/api/audit', in: 'query', params: ['type', 'subject', 'limit', 'since'], headers: admin },
    // LiveKit
    { method: 'POST', path: '/livekit/connection-details', in: 'json', params: ['room_name', 'participant_name', 'participant_metadata', 'participant_attributes', 'room_config', 'device_id'], headers: user },
    { method: 'PUT', path: '/admin/api/livekit/options/roles/:role', in: 'json', params: ['room_prefix', 'max_participants', 'empty_timeout', 'departure_timeout'], headers: admin },
    { method: 'POST', path: '/livekit/webhook', in: 'json', params: ['event', 'room'], headers: () => ({ authorization: 'not-a-signature' }) },
    { method: 'GET', path: '/livekit/sessions', in: 'query', params: ['limit'], headers: user },
    { method: 'GET', path: '/account/devices', in: 'query', params: ['x'], headers: user },
    // health
    { method: 'GET', path: '/health', in: 'query', params: ['x'] },
  ];
}

interface Sent { label: string; status: number; problem?: string; ms?: number }

/** One request; the answer judged: < 500, and an error that parses. */
async function send(gh: TestGatehouse, t: Target, opts: { path?: string; query?: string; body?: string | Buffer; contentType?: string; label: string }): Promise<Sent> {
  const url = `${gh.url}${opts.path ?? t.path}${opts.query !== undefined ? `?${opts.query}` : ''}`;
  const headers: Record<string, string> = { ...t.headers?.() };
  if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? (t.in === 'json' ? 'application/json' : 'application/x-www-form-urlencoded');
  let res: Response;
  const t0 = Date.now();
  try {
    res = await fetch(url, { method: t.method, headers, body: opts.body as BodyInit | undefined, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    return { label: opts.label, status: 0, problem: `no answer: ${(err as Error).message}` };
  }
  const text = await res.text();
  const sent: Sent = { label: opts.label, status: res.status, ms: Date.now() - t0 };
  if (res.status >= 500) sent.problem = `${res.status}: ${text.slice(0, 200)}`;
  else if (res.status >= 400) {
    const type = res.headers.get('content-type') ?? '';
    if (type.includes('json')) {
      try {
        if (typeof JSON.parse(text).error !== 'string') sent.problem = `JSON error without "error": ${text.slice(0, 200)}`;
      } catch {
        sent.problem = `unparsable JSON: ${text.slice(0, 200)}`;
      }
    } else if (type.includes('html')) {
      if (!/<html|<!DOCTYPE/i.test(text)) sent.problem = `not a page: ${text.slice(0, 200)}`;
    } else if (res.status !== 405 || text) sent.problem = `error with content-type "${type}": ${text.slice(0, 200)}`;
  }
  return sent;
}

const enc = (v: unknown) => encodeURIComponent(String(v));
const form = (o: Record<string, unknown>) => Object.entries(o).map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');

/** Every hostile request for one target. */
function requestsFor(t: Target): { path?: string; query?: string; body?: string | Buffer; contentType?: string; label: string }[] {
  const out: ReturnType<typeof requestsFor> = [];
  const base = () => t.base?.() ?? {};
  const put = (extra: string, label: string) => {
    const b = form(base());
    const text = b ? `${b}&${extra}` : extra;
    out.push(t.in === 'query' || t.method === 'GET' || t.method === 'DELETE' && t.in !== 'json' ? { query: text, label } : t.in === 'form' ? { body: text, label } : { body: JSON.stringify(base()), query: extra, label });
  };
  // Every value on the first parameter and path segment; NUL and a rotating few on the others, so
  // each value meets many parameters while the table stays quick.
  const some = <T>(all: [string, T][], i: number, n: number): [string, T][] => (i === 0 ? all : [all[0], ...Array.from({ length: n }, (_, k) => all[1 + ((i * n + k) % (all.length - 1))])]);
  t.params.forEach((p, i) => {
    if (t.in === 'json') {
      for (const [name, v] of some(Object.entries(HOSTILE_JSON), i, 3)) out.push({ body: JSON.stringify({ ...base(), [p]: v }), label: `${p}=${name}` });
      return;
    }
    for (const [name, v] of some(Object.entries(HOSTILE), i, 4)) put(`${enc(p)}=${v}`, `${p}=${name}`);
    put(`${enc(p)}=a&${enc(p)}=b`, `${p} twice`);
  });
  put('x%00y=1', 'NUL in a name');
  put(`${'n'.repeat(300)}=1`, 'long name');
  for (const segment of t.path.match(/:\w+/g) ?? []) {
    for (const [name, v] of Object.entries(HOSTILE)) out.push({ path: t.path.replace(segment, v), ...(t.in === 'json' ? { body: '{}' } : {}), label: `${segment}=${name}` });
  }
  if (t.method !== 'GET') {
    out.push({ body: Buffer.from([0x61, 0x3d, 0xff, 0xfe, 0x00]), label: 'invalid UTF-8 body' });
    out.push({ body: 'grant_type=x', contentType: 'text/plain', label: 'wrong content type' });
    out.push({ body: '{"a": ', contentType: 'application/json', label: 'bad JSON' });
    out.push({ body: '{"a": "\\u0000"}', contentType: 'application/json', label: 'NUL in JSON' });
    out.push({ body: '{"a": "\\ud800"}', contentType: 'application/json', label: 'lone surrogate in JSON' });
    out.push({ body: 'a=1', contentType: 'application/json', label: 'form sent as JSON' });
    out.push({ body: '{"a":1}', contentType: 'application/x-www-form-urlencoded', label: 'JSON sent as form' });
  }
  return out;
}

async function fixture(gh: TestGatehouse): Promise<Fixture> {
  const basic = (c: { client_id: string; client_secret: string }) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
  await gh.cli('resource', 'create', '--uri', RESOURCE, '--scope', 'tools:read');
  const web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', 'urn:ietf:params:oauth:grant-type:device_code');
  const agent = await gh.cli('client', 'create', '--name', 'Agent', '--grant', 'client_credentials', '--grant', TX);
  await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
  await gh.cli('policy', 'client', 'set', agent.client_id, '--livekit', '--resource', RESOURCE);
  const robot = await gh.cli('client', 'create', '--name', 'Robot', '--grant', 'client_credentials');
  await gh.cli('client', 'admin-api', robot.client_id, '--full');
  const tokenRes = await fetch(`${gh.url}/token`, {
    method: 'POST', headers: { authorization: basic(robot), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: `${gh.url}/admin/api`, scope: 'gatehouse:admin gatehouse:admin:read' }),
  });
  const adminToken = ((await tokenRes.json()) as { access_token: string }).access_token;
  const config = await rpConfig(gh, web.client_id, web.client_secret);
  const { tokens } = await codeFlow(gh, config, { scope: 'openid email' });
  // A pending sign-in, with its cookies and CSRF token, for the interaction routes.
  const browser = new Browser();
  const page = await browser.follow(`${gh.url}/auth?${new URLSearchParams({ client_id: web.client_id, response_type: 'code', scope: 'openid', redirect_uri: CALLBACK, code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })}`, gh.url);
  const { action, fields } = formOf(page.html!, '/login');
  const uid = /\/interaction\/([^/]+)\//.exec(action)![1];
  return {
    gh, webId: web.client_id, basicAgent: basic(agent), basicWeb: basic(web), adminToken, userToken: tokens.access_token,
    interaction: { uid, cookie: await browser.jar.getCookieString(`${gh.url}/interaction/${uid}/login`), csrf: fields.csrf ?? '' },
  };
}

/** Run the whole table with a few requests in flight; returns every answer. */
async function fuzz(f: Fixture): Promise<Sent[]> {
  const jobs: (() => Promise<Sent>)[] = [];
  for (const t of targets(f)) {
    const path = () => t.path.replace(':uid', f.interaction.uid).replace(/:\w+/g, 'nonexistent');
    for (const r of requestsFor(t)) {
      jobs.push(() => send(f.gh, t, { ...r, path: r.path ? r.path.replace(/:\w+/g, 'nonexistent') : path(), label: `${t.method} ${t.path} ${r.label}` }));
    }
  }
  const results: Sent[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: 6 }, async () => {
    while (next < jobs.length) results.push(await jobs[next++]());
  }));
  return results;
}

const modes: Mode[] = ['embedded', 'postgres'];
for (const mode of modes) {
  describe(`hostile input, every route (${mode})`, async () => {
    const run = mode === 'embedded' || (await servicesFor('postgres+redis'));
    let gh: TestGatehouse;
    let f: Fixture;
    beforeAll(async () => {
      if (!run) return;
      // Thousands of requests from one IP, signed in as ADMIN: the limits and the MFA policy would answer first.
      gh = await startTestGatehouse({ mode, env: { ...LK, MFA_REQUIRED_ROLES: 'none', RATE_LIMITS: 'off' } });
      f = await fixture(gh);
    });
    afterAll(async () => gh?.close());

    it.runIf(run)('answers every hostile request below 500 with a parsable error', { timeout: 300_000 }, async () => {
      const started = Date.now();
      const results = await fuzz(f);
      const fiveXX = results.filter((r) => r.status >= 500 || r.status === 0);
      const problems = results.filter((r) => r.problem);
      console.log(`fuzz (${mode}): ${results.length} requests tried, ${fiveXX.length} 5xx or no answer, ${problems.length} problems, ${Date.now() - started} ms`);
      console.log('slowest:', [...results].sort((a, b) => (b.ms ?? 0) - (a.ms ?? 0)).slice(0, 8).map((r) => `${r.label} ${r.ms} ms`).join('; '));
      expect(problems.map((r) => `${r.label} → ${r.problem}`)).toEqual([]);
      expect(results.length).toBeGreaterThan(800);
      // Still serving after all that.
      expect((await fetch(`${gh.url}/health`)).status).toBe(200);
    });
  });
}

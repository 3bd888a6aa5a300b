// In-call approvals (issue 19): a voice agent starts a CIBA backchannel request for the user it
// serves; the user sees it on /account/approvals (told live through server-sent events), approves or
// denies with the binding message in view; the agent's poll gets a token that acts for the user
// (act = the agent), bounded by the resource and the user's permissions, once. On the embedded
// store and on PostgreSQL + Redis.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { Browser, formOf, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';
import { selfSignedLocalhost } from './helpers/client-auth.ts';

const CIBA = 'urn:openid:params:grant-type:ciba';
const MCP = 'https://bank-tools.example.com/mcp';
const ALICE = { email: 'alice@example.com', password: 'alice has a long passphrase' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const services = await servicesFor('postgres+redis');
const modes = ['embedded', ...(services ? ['postgres'] as const : [])] as const;

describe.each(modes)('CIBA in-call approvals (%s)', (mode) => {
  let gh: TestGatehouse;
  let agent: { client_id: string; client_secret: string };
  let alice: string;
  const browser = new Browser();
  const pushes: Record<string, unknown>[] = [];
  // The app's push service: receives the webhook Gatehouse sends for each pending approval.
  const push = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      pushes.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });

  const post = async (path: string, params: Record<string, string>, as = agent) => {
    const res = await fetch(`${gh.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${as.client_id}:${as.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(params),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };
  const ask = (extra: Record<string, string> = {}, as = agent) =>
    post('/backchannel', { scope: 'openid tools:transfer', resource: MCP, login_hint: ALICE.email, binding_message: 'Transfer 20 EUR to Bob', ...extra }, as);
  const poll = (authReqId: string, as = agent) => post('/token', { grant_type: CIBA, auth_req_id: authReqId }, as);

  // A ping-mode agent's notification endpoint (CIBA Core §10.2; https, §4): records each ping;
  // answers 500 to the next `failNext` of them.
  const tlsFiles = selfSignedLocalhost();
  const pings: { authorization?: string; body: Record<string, unknown> }[] = [];
  let failNext = 0;
  let pingAgent: { client_id: string; client_secret: string };
  const notifications = https.createServer({ key: tlsFiles.key, cert: tlsFiles.cert }, (req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      pings.push({ authorization: req.headers.authorization, body: JSON.parse(body) });
      if (failNext > 0) {
        failNext--;
        res.writeHead(500).end();
      } else res.writeHead(204).end();
    });
  });
  /** The ping audit event of one approval, once the background retries have ended. */
  async function pingAudit(since: number) {
    for (let i = 0; i < 200; i++) {
      const rows = (await gh.deps.db.query<{ outcome: string; client_id: string; details: any }>(
        "SELECT outcome, client_id, details FROM audit_events WHERE type = 'ciba.ping' AND id > $1 ORDER BY id", [since])).rows;
      if (rows.length) return rows;
      await sleep(50);
    }
    throw new Error('no ciba.ping audit event');
  }
  const lastAuditId = async () => Number((await gh.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0) AS id FROM audit_events')).rows[0].id);

  /** Alice's approvals page, signing in on the way. */
  async function approvals() {
    let step = await browser.follow(`${gh.url}/account/approvals`, gh.url);
    if (step.html && /name="password"/.test(step.html)) {
      const { action, fields } = formOf(step.html, '/login');
      step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, email: ALICE.email, password: ALICE.password } });
    }
    expect(step.res.status).toBe(200);
    return step.html!;
  }
  const answer = async (html: string, decision: 'approve' | 'deny') => {
    const { action, fields } = formOf(html, `/${decision}`);
    return browser.request(new URL(action, gh.url).href, { form: fields });
  };

  beforeAll(async () => {
    // Polls faster than the interval get slow_down: the tests wait out a one-second interval.
    await new Promise<void>((r) => push.listen(0, '127.0.0.1', r));
    const CIBA_WEBHOOK_URL = `http://127.0.0.1:${(push.address() as AddressInfo).port}/push`;
    gh = await startTestGatehouse({ mode, env: { DEVICE_POLL_INTERVAL: '1', RATE_LIMITS: 'off', CIBA_WEBHOOK_URL, BACKCHANNEL_CA_FILE: tlsFiles.ca } });
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read', '--scope', 'tools:transfer');
    await gh.cli('role', 'create', 'banking', '--permission', 'tools:transfer');
    alice = (await gh.cli('user', 'create', '--email', ALICE.email, '--password', ALICE.password, '--role', 'user', '--role', 'banking', '--verified')).id;
    agent = await gh.cli('client', 'create', '--name', 'Bank voice agent', '--grant', CIBA, '--grant', 'client_credentials');
    await new Promise<void>((r) => notifications.listen(0, '127.0.0.1', r));
    pingAgent = await gh.cli('client', 'create', '--name', 'Pinged agent', '--grant', CIBA,
      '--ciba-notification-endpoint', `https://localhost:${(notifications.address() as AddressInfo).port}/ciba`);
  });
  afterAll(async () => {
    await gh?.close();
    await new Promise<void>((r) => push.close(() => r()));
    await new Promise<void>((r) => notifications.close(() => r()));
    tlsFiles.remove();
  });

  it('advertises the backchannel endpoint, poll and ping delivery', async () => {
    const d = (await (await fetch(`${gh.url}/.well-known/openid-configuration`)).json()) as Record<string, any>;
    expect(d.backchannel_authentication_endpoint).toBe(`${gh.url}/backchannel`);
    expect(d.backchannel_token_delivery_modes_supported).toEqual(['poll', 'ping']);
    expect(d.grant_types_supported).toContain(CIBA);
  });

  it('an approved request gives the agent one token that acts for the user, within what she holds', async () => {
    const started = await ask();
    expect(started.status).toBe(200);
    expect(started.body).toMatchObject({ auth_req_id: expect.any(String), expires_in: expect.any(Number), interval: 1 });
    expect((await poll(started.body.auth_req_id)).body.error).toBe('authorization_pending');

    const html = await approvals();
    expect(html).toContain('Bank voice agent');
    expect(html).toContain('Transfer 20 EUR to Bob');
    expect(html).not.toContain(started.body.auth_req_id);
    const res = await answer(html, 'approve');
    expect(res.status).toBe(302);
    expect(await approvals()).toContain('Nothing is waiting for your approval');

    await sleep(1100);
    const token = await poll(started.body.auth_req_id);
    expect(token.status).toBe(200);
    const { payload } = await jwtVerify(token.body.access_token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience: MCP });
    expect(payload).toMatchObject({ sub: alice, client_id: agent.client_id, scope: 'tools:transfer', act: { sub: agent.client_id } });
    expect(payload.amr).toContain('pwd');
    // Once: the same auth_req_id again is refused.
    await sleep(1100);
    expect((await poll(started.body.auth_req_id)).body.error).toBe('invalid_grant');
    // The push webhook heard of it, without the auth_req_id (a credential of the agent's).
    expect(pushes).toContainEqual(expect.objectContaining({ type: 'ciba.pending', user_id: alice, client_id: agent.client_id, binding_message: 'Transfer 20 EUR to Bob', approval_url: `${gh.url}/account/approvals` }));
    expect(JSON.stringify(pushes)).not.toContain(started.body.auth_req_id);
    const rows = (await gh.deps.db.query(`SELECT type FROM audit_events WHERE type LIKE 'ciba.%' ORDER BY id`)).rows.map((r: any) => r.type);
    expect(rows).toEqual(expect.arrayContaining(['ciba.request', 'ciba.approve']));
  });

  it("an approval grants a resource's scopes only as the one scope rule allows: none named, none consented", async () => {
    // The request names no scope of the resource: the approvals page showed none, so approving
    // cannot consent to any (the rule's defaults would be scopes the user never saw).
    const started = await ask({ scope: 'openid' });
    expect(started.status).toBe(200);
    const refused = await answer(await approvals(), 'approve');
    expect(refused.status).toBe(400);
    // The rule's defaults (all the resource's scopes), narrowed to what she holds, then to none.
    expect(await refused.text()).toMatch(/cannot be approved \(the user has not consented to tools:transfer at /);
    // Still waiting: the user can deny it instead, and the agent then gets access_denied.
    expect((await answer(await approvals(), 'deny')).status).toBe(302);
    await sleep(1100);
    expect((await poll(started.body.auth_req_id)).body.error).toBe('access_denied');
  });

  it('a denied request is access_denied for the agent', async () => {
    const started = await ask({ binding_message: 'Close account 42' });
    const html = await approvals();
    expect(html).toContain('Close account 42');
    await answer(html, 'deny');
    await sleep(1100);
    expect(await poll(started.body.auth_req_id)).toMatchObject({ status: 400, body: { error: 'access_denied' } });
  });

  it('ping mode: the answer is announced at the notification endpoint with the bearer token, then fetched by poll', async () => {
    const since = await lastAuditId();
    // CIBA Core §7.1: a ping client must send its notification token.
    expect((await ask({ binding_message: 'No token' }, pingAgent)).body.error).toBe('invalid_request');
    const started = await ask({ binding_message: 'Pay the rent', client_notification_token: 'ntok-approve-0123456789' }, pingAgent);
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    pings.length = 0;
    await answer(await approvals(), 'approve');
    expect(pings).toEqual([{ authorization: 'Bearer ntok-approve-0123456789', body: { auth_req_id: started.body.auth_req_id } }]);
    const token = await poll(started.body.auth_req_id, pingAgent);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body.token_type).toBe('Bearer');
    expect(await pingAudit(since)).toMatchObject([{ outcome: 'success', client_id: pingAgent.client_id, details: { attempts: 1 } }]);
    // Denied: announced the same way; the poll then says access_denied.
    const denied = await ask({ binding_message: 'Pay twice', client_notification_token: 'ntok-deny-0123456789' }, pingAgent);
    pings.length = 0;
    await answer(await approvals(), 'deny');
    expect(pings).toEqual([{ authorization: 'Bearer ntok-deny-0123456789', body: { auth_req_id: denied.body.auth_req_id } }]);
    expect(await poll(denied.body.auth_req_id, pingAgent)).toMatchObject({ status: 400, body: { error: 'access_denied' } });
  });

  it('ping mode: a failing notification endpoint is retried briefly, each outcome audited, and the answer stands', async () => {
    let since = await lastAuditId();
    const started = await ask({ binding_message: 'Retry me', client_notification_token: 'ntok-retry-0123456789' }, pingAgent);
    pings.length = 0;
    failNext = 2;
    expect((await answer(await approvals(), 'approve')).status).toBe(302);
    expect(await pingAudit(since)).toMatchObject([{ outcome: 'success', details: { attempts: 3 } }]);
    expect(pings.map((p) => p.body.auth_req_id)).toEqual([started.body.auth_req_id, started.body.auth_req_id, started.body.auth_req_id]);
    expect((await poll(started.body.auth_req_id, pingAgent)).status).toBe(200);

    since = await lastAuditId();
    const unheard = await ask({ binding_message: 'Nobody listens', client_notification_token: 'ntok-lost-0123456789' }, pingAgent);
    failNext = 100;
    expect((await answer(await approvals(), 'approve')).status).toBe(302);
    const [row] = await pingAudit(since);
    failNext = 0;
    expect(row).toMatchObject({ outcome: 'failure', details: { attempts: 4, error: expect.stringMatching(/500/) } });
    // Never the notification token (a credential of the agent's) in the audit log.
    const log = JSON.stringify((await gh.deps.db.query('SELECT details FROM audit_events')).rows);
    expect(log).not.toContain('ntok-');
    // The agent can still fetch its token by polling.
    expect((await poll(unheard.body.auth_req_id, pingAgent)).status).toBe(200);
  });

  it('polling faster than the interval is slow_down', async () => {
    const started = await ask({ binding_message: 'Check balance' });
    await sleep(1100);
    const polls = await Promise.all([poll(started.body.auth_req_id), poll(started.body.auth_req_id), poll(started.body.auth_req_id)]);
    expect(polls.map((p) => p.body.error).sort()).toEqual(['authorization_pending', 'slow_down', 'slow_down']);
  });

  it('refuses an unknown user, an unreadable binding message and a login_hint_token that is not one', async () => {
    expect((await ask({ login_hint: 'nobody@example.com' })).body.error).toBe('unknown_user_id');
    // A control character is refused at the edge, before CIBA; an over-long message by CIBA's own check.
    expect((await ask({ binding_message: 'line\nbreak' })).body.error).toBe('invalid_request');
    expect((await ask({ binding_message: 'x'.repeat(121) })).body.error).toBe('invalid_binding_message');
    const r = await post('/backchannel', { scope: 'openid', login_hint_token: 'not-a-token' });
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('invalid_request');
  });

  it('tells the approvals page live (server-sent events) when a request arrives', async () => {
    await approvals();
    const cookie = await browser.jar.getCookieString(`${gh.url}/account/approvals/events`);
    const controller = new AbortController();
    const events = await fetch(`${gh.url}/account/approvals/events`, { headers: { cookie }, signal: controller.signal });
    expect(events.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = events.body!.getReader();
    let seen = '';
    const read = (async () => {
      while (!seen.includes('event: pending')) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += new TextDecoder().decode(value);
      }
    })();
    await sleep(200);
    await ask({ binding_message: 'Live one' });
    await Promise.race([read, sleep(10_000)]);
    controller.abort();
    expect(seen).toContain('event: pending');
  });
});

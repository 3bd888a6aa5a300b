// Issue 7, item 3: the acr/amr of the session travel into tokens minted by token exchange, and a
// resource (`resource create --require-mfa`) or a LiveKit role policy (`policy role set --require-mfa`)
// refuses a password-only subject with RFC 9470's insufficient_user_authentication until the user
// steps up with acr_values. Real server, openid-client as the RP, TOTP codes from otplib.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { generate } from 'otplib';
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose';
import { TokenVerifier } from 'livekit-server-sdk';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { expectNoTokensInAudit } from './helpers/audit.ts';
import { servicesFor } from './helpers/databases.ts';

const ACR_PWD = 'urn:gatehouse:acr:pwd';
const ACR_MFA = 'urn:gatehouse:acr:mfa';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const LK = { url: 'wss://livekit.test', key: 'APImfakey', secret: 'lk-mfa-secret-'.padEnd(40, 'x') };
const BANK = 'https://bank.example.com/mcp'; // registered with --require-mfa
const NOTES = 'https://notes.example.com/mcp'; // no MFA requirement
const SAM = { email: 'sam.teller@example.com', password: 'sam the teller has a long password' };
const VAULT = 'vault-1'; // admitted only by the teller role, whose LiveKit policy requires MFA

type Client = { client_id: string; client_secret: string };

const modes: { mode: Mode; run: boolean }[] = [
  { mode: 'embedded', run: true },
  { mode: 'postgres', run: await servicesFor('postgres+redis') },
];

describe.each(modes)('token exchange and MFA ($mode)', ({ mode, run }) => {
  if (!run) {
    it.skip('needs PostgreSQL and Redis (set REQUIRE_SERVICES=1 to require them)', () => {});
    return;
  }
  let gh: TestGatehouse;
  let web: Client;
  let agent: Client;
  let config: oidc.Configuration;
  let samSub: string;
  /** Sam's tokens from a password-only sign-in, then after step-up: a JWT for BANK and an opaque one. */
  const pwd = { jwt: '', opaque: '' };
  const mfa = { jwt: '', opaque: '' };
  const seenTokens = new Set<string>();
  let browser: Browser;

  const basic = (c: Client) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
  async function exchange(client: Client, params: Record<string, string>) {
    const res = await fetch(`${gh.url}/token`, {
      method: 'POST',
      headers: { authorization: basic(client), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: TX, subject_token_type: AT, ...params }),
    });
    const body = await res.json() as Record<string, any>;
    for (const t of [params.subject_token, params.actor_token, body.access_token]) if (t) seenTokens.add(t);
    return { status: res.status, body };
  }
  async function connectionDetails(bearer: string, body: Record<string, unknown>) {
    const res = await fetch(`${gh.url}/livekit/connection-details`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await res.json() as Record<string, any>;
    if (json.participantToken) seenTokens.add(json.participantToken);
    return { res, body: json };
  }
  const lastAuditId = async () => Number((await gh.deps.db.query<{ id: number }>('SELECT coalesce(max(id), 0) AS id FROM audit_events')).rows[0].id);
  // Exchange and connection-details audit writes do not hold up the response: poll for the rows.
  const exchangeRows = async (since: number) => (await gh.deps.db.query<{ outcome: string; subject: string | null; client_id: string; details: any }>(
    "SELECT outcome, subject, client_id, details FROM audit_events WHERE type = 'token.exchange' AND id > $1 ORDER BY id", [since])).rows;
  const verifyResourceToken = async (token: string, audience: string) =>
    (await jwtVerify(token, createRemoteJWKSet(new URL(`${gh.url}/jwks`)), { issuer: gh.url, audience, typ: 'at+jwt' })).payload;
  const keep = (tokens: { access_token: string; refresh_token?: string; id_token?: string }) => {
    for (const t of [tokens.access_token, tokens.refresh_token, tokens.id_token]) if (t) seenTokens.add(t);
    return tokens.access_token;
  };

  beforeAll(async () => {
    gh = await startTestGatehouse({ mode, env: { LIVEKIT_URL: LK.url, LIVEKIT_API_KEY: LK.key, LIVEKIT_API_SECRET: LK.secret } });
    await gh.cli('resource', 'create', '--uri', BANK, '--scope', 'tools:read', '--require-mfa');
    await gh.cli('resource', 'create', '--uri', NOTES, '--scope', 'tools:read');
    await gh.cli('role', 'update', 'user', '--add', 'tools:read');
    await gh.cli('role', 'create', 'teller', '--permission', 'tools:read');
    await gh.cli('policy', 'role', 'set', 'teller', '--room', 'vault-*', '--publish', '--subscribe', '--require-mfa');
    samSub = (await gh.cli('user', 'create', '--email', SAM.email, '--password', SAM.password, '--name', 'Sam', '--role', 'user', '--role', 'teller', '--verified')).id;
    web = await gh.cli('client', 'create', '--name', 'Bank web', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', TX);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit', '--resource', BANK, '--resource', NOTES);
    agent = await gh.cli('client', 'create', '--name', 'Teller agent', '--grant', 'client_credentials', '--grant', TX);
    await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', BANK, '--agent-name', 'teller-agent');
    config = await rpConfig(gh, web.client_id, web.client_secret);
  }, 60_000);
  afterAll(async () => gh?.close());

  it('stores the MFA requirements set through the CLI', async () => {
    const { rows } = await gh.deps.db.query<{ uri: string; require_mfa: boolean }>('SELECT uri, require_mfa FROM resource_servers ORDER BY uri');
    expect(rows).toEqual([{ uri: BANK, require_mfa: true }, { uri: NOTES, require_mfa: false }]);
    expect((await gh.cli('resource', 'list')).map((r: { uri: string; require_mfa: boolean }) => [r.uri, r.require_mfa])).toEqual([[BANK, true], [NOTES, false]]);
    const roles = await gh.cli('policy', 'role', 'list');
    expect(roles.find((r: { role: string }) => r.role === 'teller')).toMatchObject({ room_patterns: ['vault-*'], require_mfa: true });
    expect(roles.find((r: { role: string }) => r.role === 'user')).toMatchObject({ require_mfa: false });
    await expect(gh.cli('resource', 'require-mfa', '--uri', 'https://nowhere.example.com/mcp')).rejects.toThrow(/no resource/);
  });

  it('an authorization request naming the MFA resource asks for a second factor at sign-in', async () => {
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid tools:read', resource: BANK, state: oidc.randomState(),
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const fresh = new Browser();
    const login = await fresh.follow(url.href, gh.url);
    const form = formOf(login.html!, '/login');
    const next = await fresh.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, email: SAM.email, password: SAM.password } });
    // Sam has no authenticator yet: the password is not enough for this resource, so enrolment follows.
    expect(next.res.status).toBe(200);
    expect(next.html).toContain('Set up two-step verification');
    expect(next.url).toMatch(/\/interaction\/[^/]+\/mfa$/);
  });

  it('a password-only subject is refused for the MFA resource (400 insufficient_user_authentication, audited)', async () => {
    // A token for the other resource: signing in for it needs no second factor.
    // The subject is Gatehouse's own token (an MCP token is refused as a subject for its audience).
    const signedIn = await codeFlow(gh, config, { creds: SAM, resource: NOTES, gatehouseToken: true, scope: 'openid tools:read' });
    browser = signedIn.browser;
    expect(signedIn.tokens.claims()).toMatchObject({ sub: samSub, acr: ACR_PWD, amr: ['pwd'] });
    pwd.jwt = keep(signedIn.tokens);

    const since = await lastAuditId();
    const { status, body } = await exchange(web, { subject_token: pwd.jwt, resource: BANK });
    expect(status).toBe(400);
    expect(body).toEqual({
      error: 'insufficient_user_authentication',
      error_description: expect.stringMatching(/requires multi-factor authentication/),
      acr_values: ACR_MFA,
    });
    await expect.poll(() => exchangeRows(since)).toEqual([{
      outcome: 'failure', subject: samSub, client_id: web.client_id,
      details: expect.objectContaining({ error: 'insufficient_user_authentication', target: BANK, target_type: 'resource', acr: ACR_PWD }),
    }]);
  });

  it('a resource without require_mfa takes the password-only subject; its token carries acr/amr pwd', async () => {
    const { status, body } = await exchange(web, { subject_token: pwd.jwt, resource: NOTES });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(await verifyResourceToken(body.access_token, NOTES)).toMatchObject({ sub: samSub, acr: ACR_PWD, amr: ['pwd'], scope: 'tools:read' });
  });

  it('resource require-mfa switches the requirement on and off (audited), and the exchange follows', async () => {
    expect(await gh.cli('resource', 'require-mfa', NOTES)).toEqual({ uri: NOTES, require_mfa: true });
    let r = await exchange(web, { subject_token: pwd.jwt, resource: NOTES });
    expect([r.status, r.body.error]).toEqual([400, 'insufficient_user_authentication']);
    expect(await gh.cli('resource', 'require-mfa', '--uri', NOTES, '--off')).toEqual({ uri: NOTES, require_mfa: false });
    r = await exchange(web, { subject_token: pwd.jwt, resource: NOTES });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const { rows } = await gh.deps.db.query<{ subject: string; details: { require_mfa: boolean } }>(
      "SELECT subject, details FROM audit_events WHERE type = 'admin.resource.require_mfa' ORDER BY id");
    expect(rows.map((x) => [x.subject, x.details.require_mfa])).toEqual([[NOTES, true], [NOTES, false]]);
  });

  it('a LiveKit role policy requiring MFA refuses the password-only subject, for its rooms only', async () => {
    // An opaque access token (no resource): its acr comes from what oidc-provider stored with it.
    const signedIn = await codeFlow(gh, config, { creds: SAM, scope: 'openid', browser });
    pwd.opaque = keep(signedIn.tokens);
    expect(pwd.opaque.split('.')).toHaveLength(1);

    const since = await lastAuditId();
    const refused = await exchange(web, { subject_token: pwd.opaque, requested_token_type: LIVEKIT, room: VAULT });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: 'insufficient_user_authentication', error_description: expect.stringMatching(/vault-1.*multi-factor/), acr_values: ACR_MFA });
    // The user role's own rooms need no second factor; the metadata says how the user signed in.
    const own = await exchange(web, { subject_token: pwd.opaque, requested_token_type: LIVEKIT, room: `user_${samSub}_chat` });
    expect(own.status, JSON.stringify(own.body)).toBe(200);
    expect(JSON.parse((await new TokenVerifier(LK.key, LK.secret).verify(own.body.access_token)).metadata!)).toMatchObject({ user_id: samSub, acr: ACR_PWD });
    await expect.poll(async () => (await exchangeRows(since)).map((r) => [r.outcome, r.details.target_type, r.details.room, r.details.error ?? null])).toEqual([
      ['failure', 'livekit', VAULT, 'insufficient_user_authentication'],
      ['success', 'livekit', `user_${samSub}_chat`, null],
    ]);

    // connection-details is a protected resource: RFC 9470's 401 with the acr_values to ask for.
    const details = await connectionDetails(pwd.opaque, { room_name: VAULT });
    expect(details.res.status).toBe(401);
    expect(details.res.headers.get('www-authenticate')).toMatch(/^Bearer error="insufficient_user_authentication", .*acr_values="urn:gatehouse:acr:mfa"$/);
    expect(details.body.error).toBe('insufficient_user_authentication');
    const detailsRows = async () => (await gh.deps.db.query<{ outcome: string; subject: string; details: any }>(
      "SELECT outcome, subject, details FROM audit_events WHERE type = 'livekit.connection_details' AND id > $1 ORDER BY id", [since])).rows;
    await expect.poll(detailsRows).toEqual([{ outcome: 'failure', subject: samSub, details: expect.objectContaining({ room: VAULT, error: 'insufficient_user_authentication' }) }]);
  });

  it('after step-up with acr_values (TOTP), the new token exchanges and the MCP token carries acr mfa and amr otp', async () => {
    // Same browser, so the session is signed in: only the missing factor is asked for (here, enrolment).
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid tools:read', resource: BANK, acr_values: ACR_MFA, state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const enrol = await browser.follow(url.href, gh.url);
    expect(enrol.html).not.toContain('name="password"');
    expect(enrol.html).toContain('Set up two-step verification');
    const secret = /id="totp-secret"[^>]*>([^<]+)</.exec(enrol.html!)![1].replace(/\s/g, '');
    const codes = await submitForm(enrol.html!, '/mfa/enrol', { code: await generate({ secret }), name: 'Phone' });
    const done = await submitForm(codes.html!, '/mfa/continue', {});
    const tokens = await oidc.authorizationCodeGrant(config, new URL(done.url), { pkceCodeVerifier: verifier, expectedState: state });
    expect(tokens.claims()).toMatchObject({ acr: ACR_MFA, amr: ['pwd', 'otp', 'mfa'] });
    mfa.jwt = keep(tokens);

    const since = await lastAuditId();
    const { status, body } = await exchange(web, { subject_token: mfa.jwt, resource: BANK });
    expect(status, JSON.stringify(body)).toBe(200);
    const claims = await verifyResourceToken(body.access_token, BANK);
    expect(claims).toMatchObject({ sub: samSub, aud: BANK, client_id: web.client_id, acr: ACR_MFA, scope: 'tools:read' });
    expect(claims.amr).toEqual(expect.arrayContaining(['pwd', 'otp']));
    await expect.poll(() => exchangeRows(since)).toEqual([expect.objectContaining({ outcome: 'success', details: expect.objectContaining({ target: BANK, acr: ACR_MFA }) })]);
    // The password-only token is still what it was: stepping up upgraded the session, not old tokens.
    expect((await exchange(web, { subject_token: pwd.jwt, resource: BANK })).body.error).toBe('insufficient_user_authentication');
  });

  it('after step-up the LiveKit role policy admits the room (token exchange and connection-details)', async () => {
    // The session is MFA now: a new authorization goes straight through.
    mfa.opaque = keep((await codeFlow(gh, config, { creds: SAM, scope: 'openid', browser })).tokens);
    const { status, body } = await exchange(web, { subject_token: mfa.opaque, requested_token_type: LIVEKIT, room: VAULT });
    expect(status, JSON.stringify(body)).toBe(200);
    const lk = await new TokenVerifier(LK.key, LK.secret).verify(body.access_token);
    expect(lk.video).toEqual({ roomJoin: true, room: VAULT, canPublish: true, canSubscribe: true, canPublishData: false });
    expect(JSON.parse(lk.metadata!)).toMatchObject({ user_id: samSub, roles: ['teller', 'user'], acr: ACR_MFA });

    const details = await connectionDetails(mfa.opaque, { room_name: VAULT });
    expect(details.res.status, JSON.stringify(details.body)).toBe(200);
    expect(details.body.roomName).toBe(VAULT);
  });

  it("an agent's delegation token carries the user's acr: MFA resource only when the user stepped up", async () => {
    const actor = (await (await fetch(`${gh.url}/token`, {
      method: 'POST', headers: { authorization: basic(agent), 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials' }),
    })).json()).access_token as string;
    seenTokens.add(actor);
    const delegationFor = async (bearer: string) => {
      const { res, body } = await connectionDetails(bearer, { room_name: `user_${samSub}_call`, room_config: { agents: [{ agent_name: 'teller-agent' }] } });
      expect(res.status, JSON.stringify(body)).toBe(200);
      const token = (decodeJwt(body.participantToken) as { attributes: Record<string, string> }).attributes['gatehouse.delegation.teller-agent'];
      seenTokens.add(token);
      return token;
    };
    const stepped = await delegationFor(mfa.opaque);
    expect(decodeJwt(stepped)).toMatchObject({ sub: samSub, acr: ACR_MFA, may_act: { sub: agent.client_id } });
    const ok = await exchange(agent, { subject_token: stepped, actor_token: actor, actor_token_type: AT, resource: BANK });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(await verifyResourceToken(ok.body.access_token, BANK)).toMatchObject({ sub: samSub, acr: ACR_MFA, act: { sub: agent.client_id } });

    const weak = await delegationFor(pwd.opaque);
    expect(decodeJwt(weak)).toMatchObject({ acr: ACR_PWD, amr: ['pwd'] });
    const refused = await exchange(agent, { subject_token: weak, actor_token: actor, actor_token_type: AT, resource: BANK });
    expect([refused.status, refused.body.error, refused.body.acr_values]).toEqual([400, 'insufficient_user_authentication', ACR_MFA]);
  });

  it('never writes a token to the audit log', async () => {
    expect(seenTokens.size).toBeGreaterThan(10);
    await expectNoTokensInAudit(gh, seenTokens);
  });

  async function submitForm(html: string, action: string, fields: Record<string, string>) {
    const form = formOf(html, action);
    return browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, ...fields } });
  }
});

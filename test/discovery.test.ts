// Discovery tells only the truth (issue 14). The table below has one case per advertised value of
// /.well-known/openid-configuration (and the identical /.well-known/oauth-authorization-server):
// each case USES that value end to end with a real relying party (openid-client, oauth4webapi, or
// hand-made requests where a test needs a particular header or alg) and checks what the RP gets.
// The first test compares the table with the document both ways, so advertising something new
// without a case here fails the suite, and so does a case for something no longer advertised.
// Runs on PGlite and on PostgreSQL + Redis (clients, codes, sessions and used jtis live there).
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import * as oauth from 'oauth4webapi';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { generate } from 'otplib';
import { TokenVerifier } from 'livekit-server-sdk';
import { ADMIN, Browser, CALLBACK, authorize, codeFlow, formOf, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';
import { assertion, clientKey, jwksOf, postForm, selfSignedLocalhost, startJwksServer, type Auth, type KeyAlg } from './helpers/client-auth.ts';

const modes: { mode: Mode; run: boolean }[] = [
  { mode: 'embedded', run: true },
  { mode: 'postgres', run: await servicesFor('postgres+redis') },
];
const MCP = 'https://mcp.example.com/mcp';
const BYE = 'http://127.0.0.1:8976/bye';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const ACR_PWD = 'urn:gatehouse:acr:pwd';
const ACR_MFA = 'urn:gatehouse:acr:mfa';
const BACKCHANNEL_EVENT = 'http://schemas.openid.net/event/backchannel-logout';
const CIBA = 'urn:openid:params:grant-type:ciba';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const LIVEKIT = 'urn:gatehouse:token-type:livekit';
const LK = { url: 'wss://livekit.test', key: 'APIdiscovery', secret: 'lk-discovery-secret-'.padEnd(40, 'x') };
const MAYA = { email: 'maya@example.com', password: 'maya has a long passphrase' };

type Case = () => Promise<void>;
/** A field whose value is a list: one case per member. Any other field: one case. */
type Table = Record<string, Case | Record<string, Case>>;

describe.each(modes)('discovery tells the truth ($mode)', ({ mode, run }) => {
  if (!run) {
    it.skip('needs PostgreSQL and Redis (set REQUIRE_SERVICES=1 to require them)', () => {});
    return;
  }
  let gh: TestGatehouse;
  let doc: Record<string, any>;
  let docs: Awaited<ReturnType<typeof startJwksServer>>;
  let rp: http.Server;
  let rpUrl: string;
  const logoutTokens: string[] = [];
  // A CIBA ping client's notification endpoint (https, with its own CA: BACKCHANNEL_CA_FILE).
  const pingTls = selfSignedLocalhost();
  const pings: { authorization?: string; body: string }[] = [];
  let pingServer: https.Server;
  let pingUrl: string;
  let web: { client_id: string; client_secret: string };
  let webConfig: oidc.Configuration;

  beforeAll(async () => {
    rp = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        logoutTokens.push(new URLSearchParams(body).get('logout_token') ?? '');
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => rp.listen(0, '127.0.0.1', resolve));
    rpUrl = `http://127.0.0.1:${(rp.address() as AddressInfo).port}/backchannel-logout`;
    docs = await startJwksServer();
    pingServer = https.createServer({ key: pingTls.key, cert: pingTls.cert }, (req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => { pings.push({ authorization: req.headers.authorization, body }); res.writeHead(204).end(); });
    });
    await new Promise<void>((resolve) => pingServer.listen(0, '127.0.0.1', resolve));
    pingUrl = `https://localhost:${(pingServer.address() as AddressInfo).port}/ciba`;
    // Every optional feature on, so every field it adds is in the document and in this table. It signs
    // in as ADMIN many times a minute from one IP: the MFA policy and the limits have their own suites.
    gh = await startTestGatehouse({
      mode,
      env: { MFA_REQUIRED_ROLES: 'none', RATE_LIMITS: 'off', LIVEKIT_URL: LK.url, LIVEKIT_API_KEY: LK.key, LIVEKIT_API_SECRET: LK.secret, REGISTRATION: 'open', CIMD_ALLOWED_HOSTS: docs.host, CIMD_CA_FILE: docs.ca, CIMD_ALLOW_PRIVATE_ADDRESSES: 'true', BACKCHANNEL_CA_FILE: pingTls.ca },
    });
    doc = await (await fetch(`${gh.url}/.well-known/openid-configuration`)).json();
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'admin'");
    await gh.cli('user', 'create', '--email', MAYA.email, '--password', MAYA.password, '--verified');
    web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK, '--post-logout-redirect-uri', BYE,
      '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX, '--backchannel-logout-uri', rpUrl);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
    webConfig = await rpConfig(gh, web.client_id, web.client_secret);
  }, 120_000);
  afterAll(async () => {
    await gh?.close();
    await docs?.close();
    await new Promise<void>((resolve) => rp?.close(() => resolve()));
    await new Promise<void>((resolve) => (pingServer ? pingServer.close(() => resolve()) : resolve()));
    pingTls.remove();
  }, 30_000);

  // --- helpers: the RP's side of each flow ---

  /** One full sign-in, shared by the cases that only read its result. */
  let loginOnce: ReturnType<typeof codeFlow> | undefined;
  const signedIn = () => (loginOnce ??= codeFlow(gh, webConfig, { scope: 'openid email profile roles offline_access' }));
  const jwks = () => createRemoteJWKSet(new URL(doc.jwks_uri));
  const confidential = async (name: string, ...argv: string[]) => gh.cli('client', 'create', '--name', name, '--grant', 'client_credentials', ...argv);
  const clientCredentials = async (auth: Auth, extra: Record<string, string> = {}, headers: Record<string, string> = {}) => {
    const r = await postForm(doc.token_endpoint, auth, { grant_type: 'client_credentials', ...extra }, headers);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body;
  };
  const introspect = async (token: string) =>
    (await postForm(doc.introspection_endpoint, { method: 'client_secret_basic', clientId: web.client_id, secret: web.client_secret }, { token })).body;

  /** The authorization request by hand, for the parameters openid-client would not send. */
  async function authorizeWith(params: Record<string, string>, config = webConfig, creds = ADMIN) {
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: CALLBACK, scope: 'openid', state, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', ...params,
    });
    return { verifier, state, url, creds };
  }
  /** The error the RP receives at its redirect URI for a refused authorization request. */
  async function authorizationError(params: Record<string, string>) {
    const { url } = await authorizeWith(params);
    const res = await fetch(url, { redirect: 'manual' });
    const location = new URL(res.headers.get('location') ?? '', gh.url);
    expect(location.href.startsWith(CALLBACK), location.href).toBe(true);
    return Object.fromEntries(new URLSearchParams(location.search || location.hash.slice(1)));
  }

  /** A client with one key of `alg`, authenticating with an assertion signed by it. */
  async function privateKeyJwtWorks(alg: KeyAlg) {
    const key = await clientKey(alg);
    const c = await confidential(`key ${alg}`, '--jwks', JSON.stringify(jwksOf(key)));
    const body = await clientCredentials({ method: 'jwt', clientId: c.client_id, assertion: await assertion(c.client_id, key, { aud: doc.issuer }) });
    expect(await introspect(body.access_token)).toMatchObject({ active: true, client_id: c.client_id });
  }

  /** A DPoP proof (RFC 9449 §4.2) signed with `alg`. */
  async function dpopWorks(alg: 'ES256' | 'Ed25519' | 'EdDSA') {
    const { privateKey, publicKey } = await generateKeyPair(alg === 'ES256' ? 'ES256' : 'Ed25519', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const proof = (htu: string, htm = 'POST', extra: Record<string, string> = {}) => new SignJWT({ htm, htu, jti: crypto.randomUUID(), ...extra })
      .setProtectedHeader({ typ: 'dpop+jwt', alg, jwk }).setIssuedAt().sign(privateKey);
    const c = await confidential(`dpop ${alg}`);
    const auth: Auth = { method: 'client_secret_basic', clientId: c.client_id, secret: c.client_secret };
    const body = await clientCredentials(auth, {}, { dpop: await proof(doc.token_endpoint) });
    expect(body.token_type).toBe('DPoP');
    expect((await introspect(body.access_token)).cnf).toEqual({ jkt: await calculateJwkThumbprint(jwk) });
    // The same proof twice is a replay (RFC 9449 §11.1); oidc-provider answers invalid_grant.
    const once = await proof(doc.token_endpoint);
    expect((await postForm(doc.token_endpoint, auth, { grant_type: 'client_credentials' }, { dpop: once })).status).toBe(200);
    const again = await postForm(doc.token_endpoint, auth, { grant_type: 'client_credentials' }, { dpop: once });
    expect([again.status, again.body.error], JSON.stringify(again.body)).toEqual([400, 'invalid_grant']);
    // A user's DPoP-bound token at userinfo: with a proof it works, as a bearer token it does not.
    const key = await clientKey('ES256');
    const spa = await gh.cli('client', 'create', '--name', `dpop spa ${alg}`, '--redirect-uri', CALLBACK, '--jwks', JSON.stringify(jwksOf(key)), '--first-party');
    const config = await oidc.discovery(new URL(gh.url), spa.client_id, {}, oidc.PrivateKeyJwt({ key: key.privateKey, kid: key.kid }), { execute: [oidc.allowInsecureRequests] });
    const pair = await generateKeyPair(alg === 'ES256' ? 'ES256' : 'Ed25519');
    const a = await authorizeWith({}, config);
    const { callbackUrl } = await authorize(gh, a.url, ADMIN);
    const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: a.verifier, expectedState: a.state }, undefined, { DPoP: oidc.getDPoPHandle(config, pair) });
    expect(tokens.token_type.toLowerCase()).toBe('dpop');
    const info = await oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()!.sub, { DPoP: oidc.getDPoPHandle(config, pair) });
    expect(info.sub).toBe(tokens.claims()!.sub);
    const bearer = await fetch(doc.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    expect(bearer.status).toBe(401);
  }

  /** The device authorization grant (RFC 8628) through the pages a person uses on a phone. */
  /** An enterprise IdP's ID-JAG (its keys held inline by the connection) redeemed for an MCP token. */
  async function idJagRedeemed() {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const c = await gh.cli('client', 'create', '--name', 'ID-JAG client', '--grant', JWT_BEARER);
    await gh.cli('role', 'create', 'mcp-user', '--permission', 'tools:read');
    await gh.cli('connection', 'create', 'enterprise', '--issuer', 'https://idp.enterprise.example', '--client-id', 'gatehouse', '--id-jag', 'on',
      '--id-jag-jwks', JSON.stringify({ keys: [await exportJWK(publicKey)] }), '--id-jag-client', c.client_id, '--id-jag-resource', MCP, '--default-role', 'mcp-user');
    const jag = await new SignJWT({ client_id: c.client_id, resource: MCP, scope: 'tools:read', email: 'ent@enterprise.example', email_verified: true })
      .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt' }).setIssuer('https://idp.enterprise.example').setSubject('e-1')
      .setAudience(doc.issuer).setJti(crypto.randomUUID()).setIssuedAt().setExpirationTime('5m').sign(privateKey);
    const r = await postForm(doc.token_endpoint, { method: 'client_secret_basic', clientId: c.client_id, secret: c.client_secret }, { grant_type: JWT_BEARER, assertion: jag });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await jwtVerify(r.body.access_token, jwks(), { audience: MCP })).payload.scope).toBe('tools:read');
  }
  let idJagOnce: Promise<void> | undefined;

  async function deviceFlow() {
    const device = await gh.cli('client', 'create', '--name', 'Speaker', '--grant', DEVICE, '--grant', 'refresh_token');
    const config = await rpConfig(gh, device.client_id, device.client_secret);
    const start = await oidc.initiateDeviceAuthorization(config, { scope: 'openid' });
    expect(start.verification_uri).toBe(`${gh.url}/device`);
    const browser = new Browser();
    let step = await browser.follow(start.verification_uri_complete!, gh.url);
    for (let i = 0; i < 6 && step.html && !/device connected/i.test(step.html); i++) {
      const html = step.html;
      const [action, extra] = /name="password"/.test(html) ? ['/login', { email: ADMIN.email, password: ADMIN.password }]
        : /name="confirm"/.test(html) ? ['/device', {}] : /\/confirm/.test(html) ? ['/confirm', {}]
          : /document\.forms\[0\]\.submit\(\)/.test(html) ? ['/device', {}] : ['', {}]; // oidc-provider's auto-posting page
      if (!action) throw new Error(`unexpected device page:\n${html.slice(0, 1500)}`);
      const form = formOf(html, action);
      step = await browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, ...extra } });
    }
    expect(step.html).toMatch(/connected/i);
    const tokens = await oidc.pollDeviceAuthorizationGrant(config, start);
    expect(tokens.claims()!.sub).toEqual(expect.any(String));
  }

  /** Sign in through acr_values=mfa: enrol a TOTP authenticator on the way, get acr mfa. */
  async function mfaStepUp() {
    const browser = new Browser();
    const a = await authorizeWith({ acr_values: ACR_MFA }, webConfig);
    const submit = async (html: string, action: string, fields: Record<string, string>) => {
      const form = formOf(html, action);
      return browser.follow(new URL(form.action, gh.url).href, gh.url, { form: { ...form.fields, ...fields } });
    };
    let step = await browser.follow(a.url.href, gh.url);
    step = await submit(step.html!, '/login', MAYA);
    const secret = /id="totp-secret"[^>]*>([^<]+)</.exec(step.html!)![1].replace(/\s/g, '');
    step = await submit(step.html!, '/mfa/enrol', { code: await generate({ secret }), name: 'Phone' });
    step = await submit(step.html!, '/mfa/continue', {});
    if (step.html !== undefined) step = await submit(step.html, '/confirm', {});
    const tokens = await oidc.authorizationCodeGrant(webConfig, new URL(step.url), { pkceCodeVerifier: a.verifier, expectedState: a.state });
    expect(tokens.claims()).toMatchObject({ acr: ACR_MFA, amr: ['pwd', 'otp', 'mfa'] });
  }

  async function claimPresent(claim: string) {
    const { tokens } = await signedIn();
    const claims = { ...tokens.claims(), ...(await oidc.fetchUserInfo(webConfig, tokens.access_token, tokens.claims()!.sub)) };
    expect(claims, claim).toHaveProperty(claim);
    expect(claims[claim], claim).not.toBeNull();
  }

  async function endSession() {
    const { tokens, browser } = await codeFlow(gh, webConfig, { scope: 'openid' });
    const before = logoutTokens.length;
    const url = oidc.buildEndSessionUrl(webConfig, { id_token_hint: tokens.id_token!, post_logout_redirect_uri: BYE });
    expect(url.href.startsWith(doc.end_session_endpoint)).toBe(true);
    const confirm = await browser.follow(url.href, gh.url);
    const { action, fields } = formOf(confirm.html!, '/session/end/confirm');
    const done = await browser.follow(new URL(action, gh.url).href, gh.url, { form: { ...fields, logout: 'yes' } });
    expect(done.url.startsWith(BYE)).toBe(true);
    // Signed out: a silent request now needs a login.
    const silent = await authorizeWith({ prompt: 'none' });
    const res = await browser.request(silent.url.href);
    expect(new URL(res.headers.get('location')!).searchParams.get('error')).toBe('login_required');
    return { tokens, before };
  }

  async function backchannelLogout() {
    const { tokens, before } = await endSession();
    await expect.poll(() => logoutTokens.length).toBeGreaterThan(before);
    const { payload } = await jwtVerify(logoutTokens.at(-1)!, jwks(), { issuer: doc.issuer, audience: web.client_id, typ: 'logout+jwt' });
    expect(payload.events).toEqual({ [BACKCHANNEL_EVENT]: {} });
    return { payload, tokens };
  }

  async function registeredClient(metadata: Record<string, unknown> = {}) {
    return oidc.dynamicClientRegistration(new URL(gh.url), { client_name: 'Registered', redirect_uris: [CALLBACK], ...metadata }, undefined, { execute: [oidc.allowInsecureRequests] });
  }

  /** CIBA (issue 19): an agent asks, the person approves on /account/approvals, the agent's poll gets a token. */
  async function cibaApproval(opts: { ping?: boolean } = {}) {
    const agent = await gh.cli('client', 'create', '--name', 'Voice agent', '--grant', CIBA, ...(opts.ping ? ['--ciba-notification-endpoint', pingUrl] : []));
    const auth: Auth = { method: 'client_secret_basic', clientId: agent.client_id, secret: agent.client_secret };
    const started = await postForm(doc.backchannel_authentication_endpoint, auth, {
      scope: 'openid', login_hint: ADMIN.email, binding_message: 'Discovery check', ...(opts.ping ? { client_notification_token: 'discovery-ping-token' } : {}),
    });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const browser = new Browser();
    let step = await browser.follow(`${gh.url}/account/approvals`, gh.url);
    const login = formOf(step.html!, '/login');
    step = await browser.follow(new URL(login.action, gh.url).href, gh.url, { form: { ...login.fields, email: ADMIN.email, password: ADMIN.password } });
    expect(step.html).toContain('Discovery check');
    const approve = formOf(step.html!, '/approve');
    expect((await browser.request(new URL(approve.action, gh.url).href, { form: approve.fields })).status).toBe(302);
    // Ping mode (CIBA Core §10.2): told before the approval page answers, then the token by poll.
    if (opts.ping) expect(pings).toContainEqual({ authorization: 'Bearer discovery-ping-token', body: JSON.stringify({ auth_req_id: started.body.auth_req_id }) });
    const token = await postForm(doc.token_endpoint, auth, { grant_type: CIBA, auth_req_id: started.body.auth_req_id });
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    return token.body;
  }

  const table: Table = {
    backchannel_authentication_endpoint: async () => {
      expect(doc.backchannel_authentication_endpoint).toBe(`${gh.url}/backchannel`);
      expect((await cibaApproval()).id_token).toEqual(expect.any(String));
    },
    backchannel_token_delivery_modes_supported: {
      poll: async () => { expect((await cibaApproval()).access_token).toEqual(expect.any(String)); },
      ping: async () => { expect((await cibaApproval({ ping: true })).access_token).toEqual(expect.any(String)); },
    },
    backchannel_user_code_parameter_supported: async () => {
      expect(doc.backchannel_user_code_parameter_supported).toBe(false);
      const agent = await gh.cli('client', 'create', '--name', 'Agent with a user code', '--grant', CIBA);
      const r = await postForm(doc.backchannel_authentication_endpoint, { method: 'client_secret_basic', clientId: agent.client_id, secret: agent.client_secret }, { scope: 'openid', login_hint: ADMIN.email, user_code: '1234' });
      expect(r.body.error).toBe('invalid_request');
    },
    issuer: async () => {
      expect(doc.issuer).toBe(gh.url);
      expect((await signedIn()).tokens.claims()!.iss).toBe(doc.issuer);
    },
    authorization_endpoint: async () => {
      expect(oidc.buildAuthorizationUrl(webConfig, {}).href.startsWith(doc.authorization_endpoint)).toBe(true);
      expect((await signedIn()).callbackUrl.searchParams.get('code')).toEqual(expect.any(String));
    },
    token_endpoint: async () => {
      const c = await confidential('token endpoint');
      expect((await clientCredentials({ method: 'client_secret_basic', clientId: c.client_id, secret: c.client_secret })).access_token).toEqual(expect.any(String));
    },
    jwks_uri: async () => {
      const { tokens } = await signedIn();
      expect((await jwtVerify(tokens.id_token!, jwks(), { issuer: doc.issuer, audience: web.client_id })).payload.sub).toBe(tokens.claims()!.sub);
    },
    userinfo_endpoint: async () => {
      const { tokens } = await signedIn();
      expect(await oidc.fetchUserInfo(webConfig, tokens.access_token, tokens.claims()!.sub)).toMatchObject({ email: ADMIN.email });
    },
    introspection_endpoint: async () => {
      const { tokens } = await signedIn();
      expect(await introspect(tokens.access_token)).toMatchObject({ active: true, client_id: web.client_id, sub: tokens.claims()!.sub });
    },
    revocation_endpoint: async () => {
      const { tokens } = await codeFlow(gh, webConfig);
      await oidc.tokenRevocation(webConfig, tokens.refresh_token!);
      await expect(oidc.refreshTokenGrant(webConfig, tokens.refresh_token!)).rejects.toMatchObject({ error: 'invalid_grant' });
    },
    end_session_endpoint: async () => { await endSession(); },
    registration_endpoint: async () => {
      const config = await registeredClient();
      const { tokens } = await codeFlow(gh, config, { scope: 'openid email' });
      expect(tokens.claims()).toMatchObject({ aud: config.clientMetadata().client_id, email: ADMIN.email });
    },
    pushed_authorization_request_endpoint: async () => {
      const a = await authorizeWith({});
      const url = await oidc.buildAuthorizationUrlWithPAR(webConfig, Object.fromEntries(a.url.searchParams));
      expect([...url.searchParams.keys()].sort()).toEqual(['client_id', 'request_uri']);
      const { callbackUrl } = await authorize(gh, url, ADMIN);
      const tokens = await oidc.authorizationCodeGrant(webConfig, callbackUrl, { pkceCodeVerifier: a.verifier, expectedState: a.state });
      expect(tokens.claims()!.iss).toBe(doc.issuer);
    },
    device_authorization_endpoint: deviceFlow,
    client_id_metadata_document_supported: async () => {
      expect(doc.client_id_metadata_document_supported).toBe(true);
      const clientId = docs.serve((url) => ({ client_id: url, client_name: 'Metadata document app', redirect_uris: [CALLBACK], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'], response_types: ['code'] }));
      const { tokens } = await codeFlow(gh, await rpConfig(gh, clientId), { scope: 'openid' });
      expect(tokens.claims()!.aud).toBe(clientId);
    },

    response_types_supported: {
      code: async () => {
        expect((await signedIn()).tokens.access_token).toEqual(expect.any(String));
        // Not offered, so refused: implicit and hybrid (OAuth 2.1; RFC 9700 §2.1.2).
        for (const responseType of ['id_token', 'token', 'code id_token', 'code token', 'id_token token', 'none']) {
          expect((await authorizationError({ response_type: responseType, nonce: 'n' })).error, responseType).toBe('unsupported_response_type');
        }
        const reg = await fetch(doc.registration_endpoint, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ redirect_uris: [CALLBACK], response_types: ['code id_token'], grant_types: ['authorization_code'] }),
        });
        expect(reg.status).toBe(400);
        expect(await reg.json()).toMatchObject({ error: 'invalid_client_metadata', error_description: expect.stringMatching(/implicit and hybrid/) });
      },
    },
    response_modes_supported: {
      query: async () => {
        const { callbackUrl } = await signedIn();
        expect(callbackUrl.searchParams.get('code')).toEqual(expect.any(String));
      },
      fragment: async () => {
        const a = await authorizeWith({ response_mode: 'fragment' });
        const { callbackUrl } = await authorize(gh, a.url, ADMIN);
        expect(callbackUrl.search).toBe('');
        // What a browser app does: read the fragment, then redeem the code.
        const params = oauth.validateAuthResponse({ issuer: doc.issuer, authorization_response_iss_parameter_supported: true } as oauth.AuthorizationServer,
          { client_id: web.client_id }, new URLSearchParams(callbackUrl.hash.slice(1)), a.state);
        const tokens = await oidc.authorizationCodeGrant(webConfig, new URL(`${CALLBACK}?${params.toString()}`), { pkceCodeVerifier: a.verifier, expectedState: a.state });
        expect(tokens.claims()!.iss).toBe(doc.issuer);
      },
      form_post: async () => {
        const a = await authorizeWith({ response_mode: 'form_post' });
        const browser = new Browser();
        let step = await browser.follow(a.url.href, gh.url);
        const login = formOf(step.html!, '/login');
        step = await browser.follow(new URL(login.action, gh.url).href, gh.url, { form: { ...login.fields, ...ADMIN } });
        if (step.html && /\/confirm/.test(step.html)) {
          const { action, fields } = formOf(step.html, '/confirm');
          step = await browser.follow(new URL(action, gh.url).href, gh.url, { form: fields });
        }
        // The page auto-posts a form to the redirect URI; the RP receives that POST.
        const form = /<form[^>]*action="([^"]+)"[\s\S]*?<\/form>/.exec(step.html!)!;
        expect(form[1]).toBe(CALLBACK);
        const fields = new URLSearchParams([...form[0].matchAll(/<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)].map((m) => [m[1], m[2]]));
        expect(fields.has('code')).toBe(true);
        const post = new Request(CALLBACK, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: fields });
        const tokens = await oidc.authorizationCodeGrant(webConfig, post, { pkceCodeVerifier: a.verifier, expectedState: a.state });
        expect(tokens.claims()!.iss).toBe(doc.issuer);
      },
    },
    authorization_response_iss_parameter_supported: async () => {
      expect(doc.authorization_response_iss_parameter_supported).toBe(true);
      expect((await signedIn()).callbackUrl.searchParams.get('iss')).toBe(doc.issuer);
    },
    grant_types_supported: {
      authorization_code: async () => { expect((await signedIn()).tokens.id_token).toEqual(expect.any(String)); },
      refresh_token: async () => {
        const { tokens } = await codeFlow(gh, webConfig);
        const next = await oidc.refreshTokenGrant(webConfig, tokens.refresh_token!);
        expect(next.refresh_token).not.toBe(tokens.refresh_token);
        expect(next.claims()!.sub).toBe(tokens.claims()!.sub);
      },
      client_credentials: async () => {
        const c = await confidential('client credentials');
        const config = await rpConfig(gh, c.client_id, c.client_secret);
        const { access_token } = await oidc.clientCredentialsGrant(config);
        expect(await introspect(access_token)).toMatchObject({ active: true, client_id: c.client_id });
      },
      [DEVICE]: deviceFlow,
      [JWT_BEARER]: () => (idJagOnce ??= idJagRedeemed()),
      [CIBA]: async () => { expect((await cibaApproval()).token_type).toBe('Bearer'); },
      [TX]: async () => {
        // A user's login token into a LiveKit room token (RFC 8693), as a web frontend does.
        const { tokens } = await signedIn();
        const r = await oidc.genericGrantRequest(webConfig, TX, { subject_token: tokens.access_token, subject_token_type: AT, requested_token_type: LIVEKIT });
        expect(r).toMatchObject({ issued_token_type: LIVEKIT, token_type: 'n_a' });
        const claims = await new TokenVerifier(LK.key, LK.secret).verify(r.access_token);
        expect(claims.sub).toBe(`user_${tokens.claims()!.sub}`);
      },
    },
    code_challenge_methods_supported: {
      S256: async () => {
        expect((await signedIn()).tokens.access_token).toEqual(expect.any(String));
        const refused = await authorizationError({ code_challenge_method: 'plain', code_challenge: 'x'.repeat(43) });
        expect(refused.error).toBe('invalid_request');
      },
    },
    token_endpoint_auth_methods_supported: {
      client_secret_basic: async () => {
        const c = await confidential('basic');
        await clientCredentials({ method: 'client_secret_basic', clientId: c.client_id, secret: c.client_secret });
      },
      client_secret_post: async () => {
        const c = await confidential('post', '--auth-method', 'client_secret_post');
        await clientCredentials({ method: 'client_secret_post', clientId: c.client_id, secret: c.client_secret });
      },
      client_secret_jwt: async () => {
        const c = await confidential('secret jwt', '--auth-method', 'client_secret_jwt');
        const config = await oidc.discovery(new URL(gh.url), c.client_id, {}, oidc.ClientSecretJwt(c.client_secret), { execute: [oidc.allowInsecureRequests] });
        expect((await oidc.clientCredentialsGrant(config)).access_token).toEqual(expect.any(String));
      },
      private_key_jwt: async () => {
        const key = await clientKey('ES256');
        const c = await confidential('private key jwt', '--jwks', JSON.stringify(jwksOf(key)));
        const config = await oidc.discovery(new URL(gh.url), c.client_id, {}, oidc.PrivateKeyJwt({ key: key.privateKey, kid: key.kid }), { execute: [oidc.allowInsecureRequests] });
        expect((await oidc.clientCredentialsGrant(config)).access_token).toEqual(expect.any(String));
      },
      none: async () => {
        const spa = await gh.cli('client', 'create', '--name', 'SPA', '--type', 'public', '--redirect-uri', CALLBACK, '--first-party');
        const { tokens } = await codeFlow(gh, await rpConfig(gh, spa.client_id), { scope: 'openid' });
        expect(tokens.claims()!.aud).toBe(spa.client_id);
      },
    },
    token_endpoint_auth_signing_alg_values_supported: {
      HS256: async () => {
        const c = await confidential('hs256', '--auth-method', 'client_secret_jwt');
        await clientCredentials({ method: 'jwt', clientId: c.client_id, assertion: await assertion(c.client_id, { secret: c.client_secret }, { aud: doc.issuer, alg: 'HS256' }) });
      },
      RS256: () => privateKeyJwtWorks('RS256'),
      PS256: () => privateKeyJwtWorks('PS256'),
      ES256: () => privateKeyJwtWorks('ES256'),
      Ed25519: () => privateKeyJwtWorks('Ed25519'),
      EdDSA: () => privateKeyJwtWorks('EdDSA'),
    },
    id_token_signing_alg_values_supported: {
      RS256: async () => {
        const { tokens } = await signedIn();
        expect(decodeProtectedHeader(tokens.id_token!).alg).toBe('RS256');
      },
      ES256: async () => {
        const config = await registeredClient({ id_token_signed_response_alg: 'ES256' });
        const { tokens } = await codeFlow(gh, config, { scope: 'openid' });
        expect(decodeProtectedHeader(tokens.id_token!).alg).toBe('ES256');
        await jwtVerify(tokens.id_token!, jwks(), { issuer: doc.issuer, algorithms: ['ES256'] });
      },
    },
    dpop_signing_alg_values_supported: {
      ES256: () => dpopWorks('ES256'),
      Ed25519: () => dpopWorks('Ed25519'),
      EdDSA: () => dpopWorks('EdDSA'),
    },
    scopes_supported: {
      openid: async () => { expect((await signedIn()).tokens.id_token).toEqual(expect.any(String)); },
      offline_access: async () => {
        expect((await signedIn()).tokens.refresh_token).toEqual(expect.any(String));
        expect((await codeFlow(gh, webConfig, { scope: 'openid' })).tokens.refresh_token).toBeUndefined();
      },
      email: async () => { expect((await signedIn()).tokens.claims()).toMatchObject({ email: ADMIN.email, email_verified: expect.any(Boolean) }); },
      profile: async () => { expect((await signedIn()).tokens.claims()).toHaveProperty('name'); },
      roles: async () => { expect((await signedIn()).tokens.claims()).toMatchObject({ roles: ['admin'], permissions: expect.arrayContaining(['tools:read']) }); },
    },
    claims_supported: Object.fromEntries(['sub', 'acr', 'amr', 'auth_time', 'sid', 'email', 'email_verified', 'name', 'roles', 'permissions', 'iss']
      .map((claim) => [claim, () => claimPresent(claim)])),
    claim_types_supported: {
      // Claims are in the ID token and userinfo themselves (not aggregated or distributed).
      normal: async () => {
        const { tokens } = await signedIn();
        expect(decodeJwt(tokens.id_token!)).not.toHaveProperty('_claim_sources');
        expect(tokens.claims()!.email).toBe(ADMIN.email);
      },
    },
    subject_types_supported: {
      public: async () => {
        const other = await gh.cli('client', 'create', '--name', 'Other', '--redirect-uri', CALLBACK, '--first-party');
        const { tokens } = await codeFlow(gh, await rpConfig(gh, other.client_id, other.client_secret), { scope: 'openid' });
        expect(tokens.claims()!.sub).toBe((await signedIn()).tokens.claims()!.sub);
      },
    },
    acr_values_supported: {
      [ACR_PWD]: async () => {
        const { tokens } = await codeFlow(gh, webConfig, { scope: 'openid', extra: { acr_values: ACR_PWD } });
        expect(tokens.claims()).toMatchObject({ acr: ACR_PWD, amr: ['pwd'] });
      },
      [ACR_MFA]: mfaStepUp,
    },
    claims_parameter_supported: async () => {
      // false: the claims request parameter is not honoured, so it cannot widen what a scope gives.
      expect(doc.claims_parameter_supported).toBe(false);
      const { tokens } = await codeFlow(gh, webConfig, { scope: 'openid', extra: { claims: JSON.stringify({ id_token: { email: { essential: true } } }) } });
      expect(tokens.claims()).not.toHaveProperty('email');
    },
    request_uri_parameter_supported: async () => {
      // false: a request_uri the client hosts is refused (PAR's own request_uri is the only kind).
      expect(doc.request_uri_parameter_supported).toBe(false);
      expect((await authorizationError({ request_uri: 'https://rp.example.com/request.jwt' })).error).toBe('request_uri_not_supported');
    },
    authorization_grant_profiles_supported: {
      'urn:ietf:params:oauth:grant-profile:id-jag': () => (idJagOnce ??= idJagRedeemed()),
    },
    identity_chaining_requested_token_types_supported: {
      // The user's ID token into an ID-JAG for another authorization server (docs/id-jag.md).
      [ID_JAG]: async () => {
        await gh.cli('policy', 'id-jag', 'set', web.client_id, '--audience', 'https://as.example/', '--target-client-id', 'web-at-as', '--resource', 'https://mcp.as.example/');
        const { tokens } = await signedIn();
        const r = await oidc.genericGrantRequest(webConfig, TX, {
          subject_token: tokens.id_token!, subject_token_type: 'urn:ietf:params:oauth:token-type:id_token', requested_token_type: ID_JAG,
          audience: 'https://as.example/', resource: 'https://mcp.as.example/',
        });
        expect(r).toMatchObject({ issued_token_type: ID_JAG, token_type: 'n_a' });
        const { payload, protectedHeader } = await jwtVerify(r.access_token, jwks(), { issuer: doc.issuer, audience: 'https://as.example/' });
        expect([protectedHeader.typ, payload.sub, payload.client_id]).toEqual(['oauth-id-jag+jwt', tokens.claims()!.sub, 'web-at-as']);
      },
    },
    backchannel_logout_supported: async () => {
      expect(doc.backchannel_logout_supported).toBe(true);
      const { payload, tokens } = await backchannelLogout();
      expect(payload.sub).toBe(tokens.claims()!.sub);
    },
    backchannel_logout_session_supported: async () => {
      expect(doc.backchannel_logout_session_supported).toBe(true);
      const { payload, tokens } = await backchannelLogout();
      expect(payload.sid).toBe(tokens.claims()!.sid);
    },
  };

  const rows = Object.entries(table).flatMap(([field, c]) =>
    typeof c === 'function' ? [{ field, value: '(the field)', run: c }] : Object.entries(c).map(([value, run]) => ({ field, value, run })));

  it('advertises exactly what this table tests, at both well-known paths', async () => {
    expect(await (await fetch(`${gh.url}/.well-known/oauth-authorization-server`)).json()).toEqual(doc);
    expect(Object.keys(doc).sort()).toEqual(Object.keys(table).sort());
    for (const [field, c] of Object.entries(table)) {
      if (typeof c === 'function') {
        expect(Array.isArray(doc[field]), `${field} is a list: give each member a case`).toBe(false);
      } else {
        expect([...doc[field]].sort(), field).toEqual(Object.keys(c).sort());
      }
    }
  });

  it.each(rows)('$field: $value works end to end', async ({ run: use }) => {
    await use();
  }, 60_000);
});

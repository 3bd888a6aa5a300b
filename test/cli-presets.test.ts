// `client create --preset` (issue 18): each preset makes a client that works the way its kind of
// client is used (seen at /auth, /device/auth, /token/introspection), flags override a preset, and
// mistakes get a fix. The `gatehouse` process itself: tables for get/list, --json, exit codes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { runCli, runCliRaw, spawnGatehouse, stopProcess } from './helpers/process.ts';

const MCP = 'https://tools.example.test/mcp';
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const DEVICE = 'urn:ietf:params:oauth:grant-type:device_code';
const APP = 'https://app.example.test/callback';
const CHALLENGE = { code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256' };

describe('client presets', () => {
  let gh: TestGatehouse;

  /** Where /auth sends the browser: the login page (303 to /interaction/...), or an error. */
  const authorize = async (clientId: string, redirectUri: string, extra: Record<string, string> = CHALLENGE) => {
    const q = new URLSearchParams({ client_id: clientId, redirect_uri: redirectUri, response_type: 'code', scope: 'openid', state: 's', ...extra });
    const res = await fetch(`${gh.url}/auth?${q}`, { redirect: 'manual' });
    return { status: res.status, location: res.headers.get('location') ?? '' };
  };
  const post = async (p: string, params: Record<string, string>, auth?: { client_id: string; client_secret: string }) => {
    const res = await fetch(`${gh.url}${p}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(auth ? { authorization: `Basic ${Buffer.from(`${auth.client_id}:${auth.client_secret}`).toString('base64')}` } : {}) },
      body: new URLSearchParams(params),
    });
    return { status: res.status, body: (await res.json()) as Record<string, any> };
  };

  beforeAll(async () => {
    gh = await startTestGatehouse();
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
  }, 120_000);
  afterAll(async () => gh?.close());

  it('spa: a public client that must use PKCE, with rotating refresh tokens', async () => {
    const spa = await gh.cli('client', 'create', '--preset', 'spa', '--name', 'SPA', '--redirect-uri', APP);
    expect(spa).toMatchObject({ type: 'public', preset: 'spa', metadata: { token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] } });
    expect(spa.client_secret).toBeUndefined();
    expect((await authorize(spa.client_id, APP)).location).toMatch(/^\/interaction\//);
    // Without a code challenge the browser goes back to the app with an error, not to a login.
    const noPkce = await authorize(spa.client_id, APP, {});
    expect(noPkce.location).toMatch(/^https:\/\/app\.example\.test\/callback\?error=invalid_request&error_description=[^&]*PKCE/);
  });

  it('native: loopback redirects match on any port (RFC 8252 §7.3) and private-use schemes work', async () => {
    const app = await gh.cli('client', 'create', '--preset', 'native', '--name', 'Desktop', '--redirect-uri', 'http://127.0.0.1/callback', '--redirect-uri', 'com.example.desktop:/callback');
    expect(app).toMatchObject({ type: 'public', metadata: { application_type: 'native', token_endpoint_auth_method: 'none' } });
    expect((await authorize(app.client_id, 'http://127.0.0.1:53124/callback')).location).toMatch(/^\/interaction\//);
    expect((await authorize(app.client_id, 'com.example.desktop:/callback')).location).toMatch(/^\/interaction\//);
    expect((await authorize(app.client_id, 'http://127.0.0.1:53124/other')).status).toBe(400);
    // A private-use scheme on a web client is refused with the fix (oidc-provider would refuse the client later).
    await expect(gh.cli('client', 'create', '--preset', 'spa', '--name', 'x', '--redirect-uri', 'com.example.x:/cb')).rejects.toThrow(/for native apps: create the client with --preset native/);
  });

  it('web and mcp-server: confidential with client_secret_basic; the server introspects with its secret', async () => {
    const web = await gh.cli('client', 'create', '--preset', 'web', '--name', 'Portal', '--redirect-uri', APP);
    expect(web).toMatchObject({ type: 'confidential', metadata: { token_endpoint_auth_method: 'client_secret_basic', grant_types: ['authorization_code', 'refresh_token'] } });
    expect(web.client_secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await authorize(web.client_id, APP, {})).location).toMatch(/^\/interaction\//);

    const server = await gh.cli('client', 'create', '--preset', 'mcp-server', '--name', 'Tools server');
    expect(server).toMatchObject({ type: 'confidential', metadata: { grant_types: ['client_credentials'], redirect_uris: [], response_types: [] } });
    const own = await post('/token', { grant_type: 'client_credentials' }, server);
    expect(own.status).toBe(200);
    const seen = await post('/token/introspection', { token: own.body.access_token }, server);
    expect(seen.body).toMatchObject({ active: true, client_id: server.client_id });
  });

  it('agent: client credentials and token exchange, with an exchange policy that lets it act for users', async () => {
    const agent = await gh.cli('client', 'create', '--preset', 'agent', '--name', 'Voice agent', '--resource', MCP, '--agent-name', 'voice-helper');
    expect(agent.metadata.grant_types).toEqual(['client_credentials', TX]);
    expect(agent.exchange_policy).toEqual({ client_id: agent.client_id, livekit: false, resources: [MCP], scopes: null, may_act: true, agent_name: 'voice-helper' });
    expect(await gh.cli('policy', 'client', 'get', agent.client_id)).toEqual(agent.exchange_policy);
    expect((await post('/token', { grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' }, agent)).status).toBe(200);
    // An unknown resource is refused before anything is created.
    await expect(gh.cli('client', 'create', '--preset', 'agent', '--name', 'Lost agent', '--resource', 'https://none.example.test')).rejects.toThrow(/not registered \(gatehouse resource create/);
    expect((await gh.cli('client', 'list')).map((c: { name: string }) => c.name)).not.toContain('Lost agent');
  });

  it('device: a public client of the device flow; explicit flags override a preset', async () => {
    const speaker = await gh.cli('client', 'create', '--preset', 'device', '--name', 'Speaker');
    expect(speaker).toMatchObject({ type: 'public', metadata: { grant_types: [DEVICE, 'refresh_token'] } });
    const started = await post('/device/auth', { client_id: speaker.client_id, scope: 'openid' });
    expect(started.status).toBe(200);
    expect(started.body.user_code).toBeTruthy();

    const confidentialSpa = await gh.cli('client', 'create', '--preset', 'spa', '--type', 'confidential', '--name', 'BFF', '--redirect-uri', APP);
    expect(confidentialSpa).toMatchObject({ type: 'confidential', metadata: { token_endpoint_auth_method: 'client_secret_basic' } });
    expect(confidentialSpa.client_secret).toBeTruthy();
    const postAuth = await gh.cli('client', 'create', '--preset', 'web', '--auth-method', 'client_secret_post', '--grant', 'authorization_code', '--name', 'Post', '--redirect-uri', APP);
    expect(postAuth.metadata).toMatchObject({ token_endpoint_auth_method: 'client_secret_post', grant_types: ['authorization_code'] });
  });

  it('mistakes get the fix: a close option or preset, and an example of the command', async () => {
    await expect(gh.cli('client', 'create', '--preset', 'spx', '--name', 'x')).rejects.toThrow(/unknown preset spx; did you mean spa\?/);
    await expect(gh.cli('client', 'create', '--preset', 'spa', '--name', 'x')).rejects.toThrow(/--preset spa needs --redirect-uri, e\.g\. gatehouse client create --preset spa/);
    await expect(gh.cli('client', 'create', '--preset', 'web')).rejects.toThrow(/--name is required, e\.g\. gatehouse client create --preset web --name/);
    const typo = gh.cli('client', 'create', '--name', 'x', '--redirect', APP);
    await expect(typo).rejects.toThrow(/unknown option --redirect; did you mean --redirect-uri\?\nusage:\n {2}client create --name N/);
    await expect(gh.cli('client', 'updte', 'x')).rejects.toThrow(/unknown command "client updte x"; did you mean "client update"\?/);
    await expect(gh.cli('resource', 'create', '--uri')).rejects.toThrow(/--uri needs a value/);
    await expect(gh.cli('user', 'create', '--name', 'Alice')).rejects.toThrow(/--email is required, e\.g\. gatehouse user create --email alice@example\.com/);
    await expect(gh.cli('connection', 'create', 'acme', '--issuer', 'https://login.acme.test')).rejects.toThrow(/--client-id is required .*e\.g\. gatehouse connection create acme/);
  });

});

// The command line as its own process, reaching a running embedded server over its control socket
// (a server in this process could not answer: runCli waits synchronously).
describe('the gatehouse command line', () => {
  let dataDir: string;
  let env: Record<string, string>;
  let server: { url: string; proc: ChildProcess } | undefined;

  beforeAll(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-cli-out-'));
    env = { DATA_DIR: dataDir, ADMIN_EMAIL: 'admin@example.com', ADMIN_PASSWORD: 'correct horse battery staple' };
    server = await spawnGatehouse(env);
  }, 120_000);
  afterAll(async () => {
    if (server) await stopProcess(server.proc);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('prints get/list as aligned tables, --json for scripts, and exit codes by kind of failure', async () => {
    const made = runCli(env, 'client', 'create', '--preset', 'spa', '--name', 'Table app', '--redirect-uri', APP);
    const listed = runCliRaw(env, 'client', 'list');
    expect(listed.status).toBe(0);
    const lines = listed.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^CLIENT ID +NAME +TYPE +GRANT TYPES +ORIGIN +REDIRECT URIS$/);
    const row = lines.find((l) => l.startsWith(made.client_id))!;
    expect(row).toMatch(/ Table app +public +authorization_code, refresh_token +cli +https:\/\/app\.example\.test\/callback$/);
    // Columns line up: each header starts where its values start.
    expect(row.indexOf('Table app')).toBe(lines[0].indexOf('NAME'));
    expect(row.indexOf('public')).toBe(lines[0].indexOf('TYPE'));

    const json = runCli(env, 'client', 'get', made.client_id, '--json');
    expect(json).toMatchObject({ client_id: made.client_id, name: 'Table app', first_party: false, created_at: expect.any(String) });
    const shown = runCliRaw(env, 'client', 'get', made.client_id);
    expect(shown.stdout).toMatch(new RegExp(`^client_id +${made.client_id}$`, 'm'));
    expect(shown.stdout).toMatch(/^metadata\.redirect_uris +https:\/\/app\.example\.test\/callback$/m);

    const typo = runCliRaw(env, 'user', 'list', '--limt', '5');
    expect(typo).toMatchObject({ status: 2, stdout: '' });
    expect(typo.stderr).toMatch(/^gatehouse: unknown option --limt; did you mean --limit\?$/m);
    expect(runCliRaw(env, 'client', 'get', 'gh_nope')).toMatchObject({ status: 3, stderr: expect.stringMatching(/no client gh_nope/) });
    expect(runCliRaw(env, 'user', 'create', '--email', 'admin@example.com')).toMatchObject({ status: 4, stderr: expect.stringMatching(/already exists/) });
  }, 120_000);
});

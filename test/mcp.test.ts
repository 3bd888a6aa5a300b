// An MCP host built on the official MCP TypeScript SDK reaches a Gatehouse-protected MCP server with
// no manual client set-up: the server's 401 names its RFC 9728 metadata, which names Gatehouse; the
// SDK discovers Gatehouse's metadata, registers itself (RFC 7591), runs the code flow with PKCE and
// `resource`, and the person signs in and consents in real Chromium. The tool then sees the right
// user and scopes.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { decodeJwt } from 'jose';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { startMcpServer } from '../examples/mcp-server.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.REQUIRE_SERVICES === '1') throw new Error(`Chromium not found at ${CHROMIUM}`);
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];
const DAVE = { email: 'dave@example.com', password: 'dave has a long passphrase' };

/** An MCP host's OAuth state, in memory; redirectToAuthorization signs in through Chromium. */
class BrowserOAuthProvider implements OAuthClientProvider {
  client?: OAuthClientInformationMixed;
  saved?: OAuthTokens;
  verifier = '';
  authorizationUrls: URL[] = [];
  consentText = '';
  code?: string;

  constructor(private readonly browser: Browser, private readonly callback: { url: string; next(): Promise<URL> }) {}

  get redirectUrl() {
    return this.callback.url;
  }
  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: 'SDK test host',
      redirect_uris: [this.callback.url],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() {
    return this.client;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.client = info;
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens) {
    this.saved = tokens;
  }
  saveCodeVerifier(v: string) {
    this.verifier = v;
  }
  codeVerifier() {
    return this.verifier;
  }
  async redirectToAuthorization(url: URL) {
    this.authorizationUrls.push(url);
    const page = await this.browser.newPage();
    try {
      const arrived = this.callback.next();
      await page.goto(url.href);
      await page.getByLabel(/email/i).fill(DAVE.email);
      await page.getByLabel(/password/i).fill(DAVE.password);
      await page.getByRole('button', { name: /sign in/i }).click();
      await page.getByRole('button', { name: /allow/i }).waitFor();
      this.consentText = (await page.locator('main').innerText()).replace(/\s+/g, ' ');
      await page.getByRole('button', { name: /allow/i }).click();
      const callback = await arrived;
      this.code = callback.searchParams.get('code') ?? undefined;
    } finally {
      await page.close();
    }
  }
}

describe.skipIf(!haveChromium)('MCP host (official SDK) → example MCP server protected by Gatehouse', () => {
  let gh: TestGatehouse;
  let browser: Browser;
  let mcp: Awaited<ReturnType<typeof startMcpServer>>;
  let rp: http.Server;
  let callbackUrl: string;
  let waiting: ((u: URL) => void) | undefined;
  let dave: string;

  beforeAll(async () => {
    gh = await startTestGatehouse();
    mcp = await startMcpServer({ issuer: gh.url });
    await gh.cli('resource', 'create', '--uri', mcp.resource, '--name', 'Example tools', '--scope', 'tools:read');
    // Dave's role holds tools:read: the one scope rule (issue 14) grants a user only what their roles hold.
    await gh.cli('role', 'update', 'user', '--add', 'tools:read');
    dave = (await gh.cli('user', 'create', '--email', DAVE.email, '--password', DAVE.password, '--name', 'Dave', '--role', 'user', '--verified')).id;
    rp = http.createServer((req, res) => {
      if (req.url!.startsWith('/callback')) waiting?.(new URL(req.url!, callbackUrl));
      res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>You can close this window</h1>');
    });
    await new Promise<void>((r) => rp.listen(0, '127.0.0.1', r));
    callbackUrl = `http://127.0.0.1:${(rp.address() as AddressInfo).port}/callback`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    rp?.close();
    await mcp?.close();
    await gh?.close();
  });

  it('the MCP server answers 401 naming its resource metadata, which names Gatehouse', async () => {
    const res = await fetch(mcp.resource, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(401);
    const challenge = res.headers.get('www-authenticate')!;
    // RFC 6750 §3.1: no credentials, so no error code — just where to get some.
    expect(challenge).toMatch(/^Bearer resource_metadata="/);
    expect(challenge).not.toMatch(/error=/);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)![1];
    const prm = await (await fetch(metadataUrl)).json();
    expect(prm).toMatchObject({ resource: mcp.resource, authorization_servers: [gh.url], scopes_supported: ['tools:read', 'tools:write'] });
  });

  it('discovers, registers, signs in with PKCE + resource, and calls a tool as the right user', async () => {
    const provider = new BrowserOAuthProvider(browser, { url: callbackUrl, next: () => new Promise<URL>((r) => { waiting = r; }) });

    // First connection: no token → 401 → discovery → registration → browser sign-in.
    const first = new Client({ name: 'sdk-test-host', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(mcp.resource), { authProvider: provider });
    await expect(first.connect(transport)).rejects.toThrow(UnauthorizedError);

    // It registered itself dynamically: a public client, visible to admins with its origin.
    expect(provider.client?.client_id).toMatch(/^gh_/);
    const listed = (await gh.cli('client', 'list')).find((c: any) => c.client_id === provider.client!.client_id);
    expect(listed).toMatchObject({ origin: 'registration', type: 'public', name: 'SDK test host' });

    // The authorization request went to Gatehouse, with PKCE S256 and the resource.
    const auth = provider.authorizationUrls[0];
    expect(auth.origin + auth.pathname).toBe(`${gh.url}/auth`);
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('resource')).toBe(mcp.resource);
    // Consent named the resource and what the tools may do, in words.
    expect(provider.consentText).toContain('SDK test host');
    expect(provider.consentText).toContain(new URL(mcp.resource).host);
    expect(provider.consentText).toContain('Read tools');

    expect(provider.code).toEqual(expect.any(String));
    await transport.finishAuth(provider.code!);
    const at = decodeJwt(provider.saved!.access_token);
    expect(at).toMatchObject({ aud: mcp.resource, sub: dave, client_id: provider.client!.client_id, scope: 'tools:read' });

    // Second connection with the token: the tool sees Dave and the granted scope.
    const client = new Client({ name: 'sdk-test-host', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(mcp.resource), { authProvider: provider }));
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(['whoami']);
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(result.structuredContent).toEqual({ user: dave, client_id: provider.client!.client_id, acting_agent: null, scope: 'tools:read' });
    await client.close();
  });
});

// The example MCP server (examples/mcp-server.ts) checks tokens with the SDK helper
// (src/sdk/verify.ts): a token for its resource works; once revoked at Gatehouse it is refused with
// 401 and a challenge naming the server's RFC 9728 metadata (after the verifier's introspection
// cache, 1 s here, runs out); when Gatehouse cannot answer, a token it has not seen is refused (503).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { startMcpServer } from '../examples/mcp-server.ts';

const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };
const CACHE_SECONDS = 1;

describe('example MCP server with revocation checks', () => {
  let gh: TestGatehouse;
  let mcp: Awaited<ReturnType<typeof startMcpServer>>;
  let web: { client_id: string; client_secret: string };
  let bob: string;
  let ghClosed = false;

  beforeAll(async () => {
    gh = await startTestGatehouse();
    // The MCP server's own credentials, which it introspects with.
    const rs = await gh.cli('client', 'create', '--name', 'MCP example', '--grant', 'client_credentials');
    mcp = await startMcpServer({ issuer: gh.url, clientId: rs.client_id, clientSecret: rs.client_secret, cacheSeconds: CACHE_SECONDS });
    await gh.cli('resource', 'create', '--uri', mcp.resource, '--name', 'Example tools', '--scope', 'tools:read');
    await gh.cli('role', 'update', 'user', '--add', 'tools:read');
    bob = (await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--role', 'user')).id;
    web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
  }, 60_000);
  afterAll(async () => {
    await mcp?.close();
    if (!ghClosed) await gh?.close();
  });

  /** Bob signs in at Gatehouse for the MCP server's resource: a JWT access token with aud = the resource. */
  async function tokenForMcp() {
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config, { creds: BOB, resource: mcp.resource, scope: 'openid tools:read' });
    return tokens.access_token;
  }
  const whoami = (token: string) => fetch(mcp.resource, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'whoami', arguments: {} } }),
  });

  it('serves a live token, refuses it once revoked at Gatehouse, and names its metadata in the 401', async () => {
    const token = await tokenForMcp();
    const ok = await whoami(token);
    expect(ok.status).toBe(200);
    expect((await ok.json()).result.structuredContent).toMatchObject({ user: bob, client_id: web.client_id, scope: 'tools:read' });

    const revoked = await fetch(`${gh.url}/token/revocation`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token }),
    });
    expect(revoked.status).toBe(200);
    const start = performance.now();
    // The verifier reuses its last introspection answer for up to CACHE_SECONDS: poll until refused
    // (the bound is only there so a broken check fails instead of hanging; the time is printed, not asserted).
    let res = await whoami(token);
    while (res.status === 200 && performance.now() - start < CACHE_SECONDS * 1000 + 10_000) {
      await new Promise((r) => setTimeout(r, 100));
      res = await whoami(token);
    }
    console.log(`example MCP server refused the revoked token ${(performance.now() - start).toFixed(0)} ms after the revocation (cache ${CACHE_SECONDS} s)`);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: 'invalid_token', error_description: expect.stringMatching(/revoked/) });
    const challenge = res.headers.get('www-authenticate')!;
    expect(challenge).toMatch(/^Bearer error="invalid_token"/);
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)![1];
    expect(await (await fetch(metadataUrl)).json()).toMatchObject({ resource: mcp.resource, authorization_servers: [gh.url], scopes_supported: ['tools:read', 'tools:write'] });

    // Another of Bob's tokens still works: only the revoked one is refused.
    expect((await whoami(await tokenForMcp())).status).toBe(200);
  });

  it('refuses a token for another resource', async () => {
    await gh.cli('resource', 'create', '--uri', 'https://other.example.com/mcp', '--scope', 'tools:read');
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    const { tokens } = await codeFlow(gh, config, { creds: BOB, resource: 'https://other.example.com/mcp', scope: 'openid tools:read' });
    const res = await whoami(tokens.access_token);
    expect(res.status).toBe(401);
    expect((await res.json()).error_description).toMatch(/aud/);
  });

  it('fails closed: with Gatehouse unreachable, a token it has not vouched for is refused with 503', async () => {
    const token = await tokenForMcp();
    await gh.close();
    ghClosed = true;
    // The signing keys are still cached, so the JWT itself verifies; introspection cannot answer.
    const res = await whoami(token);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: 'temporarily_unavailable' });
  });
});

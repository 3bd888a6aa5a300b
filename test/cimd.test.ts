// Client ID Metadata Documents: a client_id that is an https URL on an allowed host is fetched and
// used with no registration; everything else is refused before or during the fetch (host not
// allowed, private address, oversized, slow, or a document asking for more than policy allows).
// The documents are served by a local TLS server with a throw-away certificate for `localhost`.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as oidc from 'openid-client';
import { ADMIN, authorize, CALLBACK, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';
import { isSpecialUseAddress } from '../src/oidc/cimd.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-cimd-'));
const haveOpenssl = (() => {
  try {
    execFileSync('openssl', ['version']);
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!haveOpenssl)('client ID metadata documents', () => {
  let docs: https.Server;
  let origin: string;
  let host: string;
  const fetched: string[] = [];
  let gh: TestGatehouse;
  let strict: TestGatehouse;

  const doc = (name: string, extra: Record<string, unknown> = {}) => ({
    client_id: `${origin}/${name}.json`,
    client_name: `CIMD ${name}`,
    redirect_uris: [CALLBACK],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    ...extra,
  });

  async function authorizeStatus(target: TestGatehouse, clientId: string) {
    const url = new URL(`${target.url}/auth`);
    url.search = new URLSearchParams({
      client_id: clientId, redirect_uri: CALLBACK, response_type: 'code', scope: 'openid', state: 's',
      code_challenge: crypto.createHash('sha256').update('v'.repeat(43)).digest('base64url'), code_challenge_method: 'S256',
    }).toString();
    const res = await fetch(url, { redirect: 'manual', headers: { accept: 'text/html' } });
    return { status: res.status, location: res.headers.get('location') ?? '', body: await res.text() };
  }

  beforeAll(async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    docs = https.createServer({ key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) }, (req, res) => {
      fetched.push(req.url!);
      const send = (body: unknown) => res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' }).end(JSON.stringify(body));
      switch (req.url) {
        case '/good.json': return send(doc('good'));
        case '/big.json': return send(doc('big', { client_name: 'x'.repeat(8 * 1024) }));
        case '/slow.json': return void setTimeout(() => send(doc('slow')), 2500);
        case '/greedy.json': return send(doc('greedy', { grant_types: ['authorization_code', 'client_credentials'] }));
        case '/trusted.json': return send(doc('trusted', { first_party: true }));
        case '/scoped.json': return send(doc('scoped', { scope: 'openid tools:write admin' }));
        case '/evil-redirect.json': return send(doc('evil-redirect', { redirect_uris: ['http://attacker.example.com/cb'] }));
        default: res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => docs.listen(0, '127.0.0.1', r));
    const port = (docs.address() as AddressInfo).port;
    host = `localhost:${port}`;
    origin = `https://${host}`;
    // Signs in as ADMIN to test metadata-document clients, not the admin role's MFA requirement.
    const env = { MFA_REQUIRED_ROLES: 'none', CIMD_ALLOWED_HOSTS: `${host},127.0.0.1:${port}`, CIMD_CA_FILE: path.join(dir, 'cert.pem'), CIMD_TIMEOUT_MS: '1000' };
    gh = await startTestGatehouse({ env: { ...env, CIMD_ALLOW_PRIVATE_ADDRESSES: 'true' } });
    strict = await startTestGatehouse({ env });
  });
  afterAll(async () => {
    await gh?.close();
    await strict?.close();
    docs?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each(['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'])('advertises the feature at %s when hosts are allowed', async (path) => {
    const meta = await (await fetch(`${gh.url}${path}`)).json();
    expect(meta.client_id_metadata_document_supported).toBe(true);
    expect(meta.code_challenge_methods_supported).toEqual(['S256']);
    expect(meta.authorization_response_iss_parameter_supported).toBe(true);
  });

  it('uses a document on an allowed host as the client, with no registration, and caches it', async () => {
    const clientId = `${origin}/good.json`;
    const config = new oidc.Configuration(
      await oidc.discovery(new URL(gh.url), clientId, undefined, oidc.None(), { execute: [oidc.allowInsecureRequests] }).then((c) => c.serverMetadata()),
      clientId, undefined, oidc.None(),
    );
    oidc.allowInsecureRequests(config);
    const verifier = oidc.randomPKCECodeVerifier();
    const url = oidc.buildAuthorizationUrl(config, { redirect_uri: CALLBACK, scope: 'openid', state: 'st', code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' });
    const { callbackUrl } = await authorize(gh, url, ADMIN);
    const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, { pkceCodeVerifier: verifier, expectedState: 'st' });
    expect(tokens.claims()?.aud).toBe(clientId);
    // Fetched once, then served from the cache (max-age=300).
    expect(fetched.filter((u) => u === '/good.json')).toHaveLength(1);
    // Not written to the clients table: it lives at its URL.
    expect((await gh.cli('client', 'list')).find((c: any) => c.client_id === clientId)).toBeUndefined();
  });

  it('refuses a host that is not allowed, without fetching', async () => {
    const before = fetched.length;
    const r = await authorizeStatus(gh, 'https://not-allowed.example.com/client.json');
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/invalid_client/);
    expect(fetched.length).toBe(before);
  });

  it.each([
    ['an oversized document', 'big'],
    ['a slow document', 'slow'],
    ['a document granting itself client_credentials', 'greedy'],
    ['a document declaring itself first-party', 'trusted'],
    ['a document granting itself scopes beyond OpenID ones', 'scoped'],
    ['a document with a non-loopback http redirect URI', 'evil-redirect'],
  ])('refuses %s', async (_name, file) => {
    const r = await authorizeStatus(gh, `${origin}/${file}.json`);
    expect(r.status).toBe(400);
    expect(r.body).toMatch(/invalid_client/);
  });

  it('refuses hosts that resolve to private or loopback addresses unless explicitly allowed', async () => {
    const before = fetched.length;
    const named = await authorizeStatus(strict, `${origin}/good.json`);
    expect(named.status).toBe(400);
    expect(named.body).toMatch(/invalid_client/);
    const literal = await authorizeStatus(strict, `https://127.0.0.1:${new URL(origin).port}/good.json`);
    expect(literal.status).toBe(400);
    // Refused at connect time: the document server never saw a request.
    expect(fetched.length).toBe(before);
  });
});

describe('the SSRF guard on document fetches', () => {
  // The HTTP test above reaches loopback only; these are the other ranges a document URL (or its DNS
  // answer) must never reach, the cloud metadata address first among them.
  it.each([
    ['169.254.169.254', 'link-local (cloud metadata)'],
    ['::ffff:a9fe:a9fe', 'link-local, IPv4-mapped (as new URL() writes [::ffff:169.254.169.254])'],
    ['::ffff:10.0.0.1', 'private, IPv4-mapped'],
    ['10.1.2.3', 'private 10/8'],
    ['172.16.5.4', 'private 172.16/12'],
    ['192.168.1.1', 'private 192.168/16'],
    ['100.64.0.1', 'CGNAT'],
    ['127.0.0.2', 'loopback'],
    ['0.0.0.0', 'this network'],
    ['::1', 'IPv6 loopback'],
    ['::', 'IPv6 unspecified'],
    ['fe80::1', 'IPv6 link-local'],
    ['fd12:3456::1', 'IPv6 unique local'],
    ['ff02::1', 'IPv6 multicast'],
    ['not-an-address', 'not an address'],
  ])('refuses %s (%s)', (address) => {
    expect(isSpecialUseAddress(address)).toBe(true);
  });

  it.each(['8.8.8.8', '172.32.0.1', '2606:4700:4700::1111', '::ffff:808:808'])('lets public %s through', (address) => {
    expect(isSpecialUseAddress(address)).toBe(false);
  });
});

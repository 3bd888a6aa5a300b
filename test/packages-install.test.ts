// What a user installs: each client package is packed (`npm pack`, which builds it), installed from
// the tarball into an empty folder, type-checked there as a user's TypeScript would, and run there
// against a running Gatehouse.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const RESOURCE = 'https://api.example.com/tools';
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };
const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APItestkey', LIVEKIT_API_SECRET: 'lk-secret-'.padEnd(40, 'x') };

/** `npm pack` of a workspace package into dir; returns the tarball's path and its file list. */
async function pack(workspace: string, dir: string) {
  const { stdout } = await run('npm', ['pack', '--json', '-w', workspace, '--pack-destination', dir], { cwd: ROOT, maxBuffer: 10 << 20 });
  const [info] = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  return { tarball: path.join(dir, info.filename), files: info.files.map((f) => f.path).sort() };
}

/** An empty project with the tarball installed from the registry's point of view (its dependencies fetched as usual). */
async function installInto(tarball: string) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-user-'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', tarball], { cwd: dir, maxBuffer: 10 << 20 });
  return dir;
}

/** tsc's complaints about a user's TypeScript file in the project (empty: it type-checks). */
async function typecheckIn(dir: string, lines: string[]) {
  fs.writeFileSync(path.join(dir, 'check.ts'), lines.join('\n'));
  const tsc = await run('node', [TSC, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--lib', 'es2022,dom', 'check.ts'], { cwd: dir })
    .catch((e: { stdout: string }) => ({ stdout: e.stdout }));
  return tsc.stdout;
}

/** Packs a workspace package, checks the tarball holds JS and declarations but no sources, installs it into an empty project. */
async function packAndInstall(workspace: string, into: string, expected: string[]) {
  const { tarball, files } = await pack(workspace, into);
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'CHANGELOG.md', ...expected]));
  expect(files.filter((f) => f.startsWith('src/') || f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
  return installInto(tarball);
}

describe('client packages install from their npm pack tarball and work there', () => {
  let gh: TestGatehouse;
  const dirs: string[] = [];
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-pack-'));
    dirs.push(d);
    return d;
  };

  beforeAll(async () => {
    gh = await startTestGatehouse({ env: LK });
    await gh.cli('resource', 'create', '--uri', RESOURCE, '--scope', 'tools:read');
    await gh.cli('role', 'update', 'user', '--add', 'tools:read');
    await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--role', 'user');
  });
  afterAll(async () => {
    await gh?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('@gatehouse/verify: JS and type declarations only; verifies a Gatehouse token and refuses a revoked one in a fresh project', async () => {
    const dir = await packAndInstall('packages/verify', tmp(), ['dist/index.js', 'dist/index.d.ts', 'dist/verifier.js', 'dist/verifier.d.ts']);
    dirs.push(dir);
    expect(fs.readdirSync(path.join(dir, 'node_modules')).sort()).toEqual(expect.arrayContaining(['@gatehouse', 'jose']));
    // Only jose comes along: no MCP SDK, no web framework.
    expect(fs.existsSync(path.join(dir, 'node_modules/@modelcontextprotocol'))).toBe(false);

    expect(await typecheckIn(dir, [
      "import { createTokenVerifier, TokenRejectedError, type AccessTokenClaims } from '@gatehouse/verify';",
      "const v = createTokenVerifier({ issuer: 'https://id.example.com', audience: 'https://api.example.com/' });",
      "const c: AccessTokenClaims = await v.verify('x').catch((e: TokenRejectedError) => { throw e.status; });",
      'export const sub: string = c.sub;',
    ])).toBe('');

    const web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
    const rs = await gh.cli('client', 'create', '--name', 'API', '--grant', 'client_credentials');
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: BOB, resource: RESOURCE, scope: 'openid tools:read' });
    fs.writeFileSync(path.join(dir, 'verify.mjs'), [
      "import { createTokenVerifier } from '@gatehouse/verify';",
      'const { ISSUER, RS_ID, RS_SECRET, TOKEN } = process.env;',
      "const v = createTokenVerifier({ issuer: ISSUER, audience: 'https://api.example.com/tools', clientId: RS_ID, clientSecret: RS_SECRET, cacheSeconds: 0 });",
      'try { console.log(JSON.stringify(await v.verify(TOKEN))); } catch (e) { console.log(JSON.stringify({ status: e.status, error: e.error, message: e.message })); }',
    ].join('\n'));
    const env = { ...process.env, ISSUER: gh.url, RS_ID: rs.client_id, RS_SECRET: rs.client_secret, TOKEN: tokens.access_token };
    const ok = JSON.parse((await run('node', ['verify.mjs'], { cwd: dir, env })).stdout);
    expect(ok).toMatchObject({ iss: gh.url, aud: RESOURCE, client_id: web.client_id, scope: 'tools:read' });

    await fetch(`${gh.url}/token/revocation`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tokens.access_token }),
    });
    const refused = JSON.parse((await run('node', ['verify.mjs'], { cwd: dir, env })).stdout);
    expect(refused).toEqual({ status: 401, error: 'invalid_token', message: 'token has been revoked' });
  }, 180_000);

  it('@gatehouse/web: JS and type declarations, no React pulled in; sign-in URL with PKCE and a LiveKit token source work from a fresh project', async () => {
    const dir = await packAndInstall('packages/web', tmp(), ['dist/index.js', 'dist/index.d.ts', 'dist/react.js', 'dist/react.d.ts', 'dist/livekit.js']);
    dirs.push(dir);
    expect(fs.existsSync(path.join(dir, 'node_modules/oauth4webapi'))).toBe(true);
    // React is an optional peer: not installed for users who do not use the hook.
    expect(fs.existsSync(path.join(dir, 'node_modules/react'))).toBe(false);
    expect(await typecheckIn(dir, [
      "import { createGatehouseAuth, livekitTokenSource, type ConnectionDetails } from '@gatehouse/web';",
      "const auth = createGatehouseAuth({ issuer: 'https://id.example.com', clientId: 'c', redirectUri: 'https://app.example.com/' });",
      'const details: ConnectionDetails = await livekitTokenSource(auth)({ roomName: "r", agentName: "a" });',
      'export const room: string = details.roomName;',
    ])).toBe('');

    const web = await gh.cli('client', 'create', '--name', 'Web', '--redirect-uri', CALLBACK);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit');
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: BOB, scope: 'openid profile' });
    fs.writeFileSync(path.join(dir, 'web.mjs'), [
      "import { createGatehouseAuth, livekitTokenSource } from '@gatehouse/web';",
      'const { ISSUER, CLIENT_ID, TOKEN } = process.env;',
      'const kept = new Map(); let sentTo;',
      "const auth = createGatehouseAuth({ issuer: ISSUER, clientId: CLIENT_ID, redirectUri: 'http://127.0.0.1:8976/callback', allowInsecureRequests: true,",
      '  storage: { getItem: (k) => kept.get(k) ?? null, setItem: (k, v) => kept.set(k, v), removeItem: (k) => kept.delete(k) }, navigate: (u) => { sentTo = u; } });',
      'await auth.signIn();',
      'const details = await livekitTokenSource({ getAccessToken: async () => TOKEN }, { issuer: ISSUER, deviceId: "laptop" })({ participantName: "ignored" });',
      'console.log(JSON.stringify({ sentTo, pending: Object.keys(JSON.parse(kept.get("gatehouse.signin"))), details }));',
    ].join('\n'));
    const out = JSON.parse((await run('node', ['web.mjs'], { cwd: dir, env: { ...process.env, ISSUER: gh.url, CLIENT_ID: web.client_id, TOKEN: tokens.access_token } })).stdout);
    const sentTo = new URL(out.sentTo);
    expect(sentTo.origin + sentTo.pathname).toBe(`${gh.url}/auth`);
    expect(Object.fromEntries(['client_id', 'code_challenge_method', 'response_type'].map((k) => [k, sentTo.searchParams.get(k)]))).toEqual({ client_id: web.client_id, code_challenge_method: 'S256', response_type: 'code' });
    expect(out.pending.sort()).toEqual(['nonce', 'state', 'verifier']);
    expect(out.details).toMatchObject({ serverUrl: LK.LIVEKIT_URL, roomName: expect.any(String), participantToken: expect.any(String) });
    // One identity per device (deviceId → device_id).
    expect(decodeJwt(out.details.participantToken).sub).toBe(`user_${tokens.claims()!.sub}_laptop`);
  }, 180_000);
});

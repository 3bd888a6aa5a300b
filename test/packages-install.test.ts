// What a user installs: each client package is packed (`npm pack`, which builds it), installed from
// the tarball into an empty folder, type-checked there as a user's TypeScript would, and run there
// against a running Gatehouse.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type TestGatehouse } from './helpers/gatehouse.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const RESOURCE = 'https://api.example.com/tools';
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };

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

describe('client packages install from their npm pack tarball and work there', () => {
  let gh: TestGatehouse;
  const dirs: string[] = [];
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-pack-'));
    dirs.push(d);
    return d;
  };

  beforeAll(async () => {
    gh = await startTestGatehouse();
    await gh.cli('resource', 'create', '--uri', RESOURCE, '--scope', 'tools:read');
    await gh.cli('role', 'update', 'user', '--add', 'tools:read');
    await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--role', 'user');
  });
  afterAll(async () => {
    await gh?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('@gatehouse/verify: JS and type declarations only; verifies a Gatehouse token and refuses a revoked one in a fresh project', async () => {
    const { tarball, files } = await pack('packages/verify', tmp());
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'CHANGELOG.md', 'dist/index.js', 'dist/index.d.ts', 'dist/verifier.js', 'dist/verifier.d.ts']));
    expect(files.filter((f) => f.startsWith('src/') || f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    const dir = await installInto(tarball);
    dirs.push(dir);
    expect(fs.readdirSync(path.join(dir, 'node_modules')).sort()).toEqual(expect.arrayContaining(['@gatehouse', 'jose']));
    // Only jose comes along: no MCP SDK, no web framework.
    expect(fs.existsSync(path.join(dir, 'node_modules/@modelcontextprotocol'))).toBe(false);

    fs.writeFileSync(path.join(dir, 'check.ts'), [
      "import { createTokenVerifier, TokenRejectedError, type AccessTokenClaims } from '@gatehouse/verify';",
      "const v = createTokenVerifier({ issuer: 'https://id.example.com', audience: 'https://api.example.com/' });",
      "const c: AccessTokenClaims = await v.verify('x').catch((e: TokenRejectedError) => { throw e.status; });",
      'export const sub: string = c.sub;',
    ].join('\n'));
    const tsc = await run('node', [TSC, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--lib', 'es2022,dom', 'check.ts'], { cwd: dir })
      .catch((e: { stdout: string }) => ({ stdout: e.stdout, failed: true }));
    expect(tsc.stdout).toBe('');

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
});

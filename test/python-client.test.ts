// The Python package (clients/python) against a running Gatehouse, embedded and on PostgreSQL + Redis:
// this file starts Gatehouse and the example MCP server, registers clients and policy, signs a user
// in and joins them to a room (for the agent's delegation token), then runs pytest with the URLs and
// credentials in the environment; pytest's exit code is the verdict. It also installs the package
// from its directory into an empty virtualenv and runs the example agent from there.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse, type Mode, type TestGatehouse } from './helpers/gatehouse.ts';
import { servicesFor } from './helpers/databases.ts';
import { startMcpServer } from '../examples/mcp-server.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
// Debian's interpreter, with python3-jwt and python3-pytest (a python3 earlier on PATH may lack them).
const PYTHON = process.env.PYTHON ?? (fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
const havePython = await run(PYTHON, ['-c', 'import jwt, pytest, cryptography']).then(() => true, () => false);
if (!havePython && process.env.REQUIRE_SERVICES === '1') throw new Error(`${PYTHON} with PyJWT, pytest and cryptography is required (apt-get install python3-jwt python3-pytest python3-cryptography)`);

const postgres = await servicesFor('postgres+redis');
const modes: Mode[] = postgres ? ['embedded', 'postgres'] : ['embedded'];
const LK = { LIVEKIT_URL: 'wss://livekit.test', LIVEKIT_API_KEY: 'APItestkey', LIVEKIT_API_SECRET: 'lk-secret-'.padEnd(40, 'x') };
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const BOB = { email: 'bob@example.com', password: 'bob has a long passphrase' };
const AGENT_NAME = 'voice-helper';

/** A Gatehouse with the clients, policy and user the Python tests expect; the environment pytest gets. */
async function setUp(mode: Mode) {
  const gh = await startTestGatehouse({ mode, env: LK });
  const mcp = await startMcpServer({ issuer: gh.url });
  await gh.cli('resource', 'create', '--uri', mcp.resource, '--scope', 'tools:read', '--scope', 'tools:write', '--scope', 'tools:admin');
  await gh.cli('role', 'update', 'user', '--add', 'tools:read');
  await gh.cli('user', 'create', '--email', BOB.email, '--password', BOB.password, '--name', 'Bob', '--role', 'user', '--verified');
  const web = await gh.cli('client', 'create', '--name', 'Voice web', '--redirect-uri', CALLBACK, '--first-party', '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', TX);
  const agent = await gh.cli('client', 'create', '--name', 'Voice agent', '--grant', 'client_credentials', '--grant', TX);
  const rs = await gh.cli('client', 'create', '--name', 'MCP server', '--grant', 'client_credentials');
  await gh.cli('policy', 'client', 'set', web.client_id, '--livekit', '--resource', mcp.resource);
  await gh.cli('policy', 'client', 'set', agent.client_id, '--resource', mcp.resource, '--agent-name', AGENT_NAME);
  const config = await rpConfig(gh, web.client_id, web.client_secret);
  // The subject of resource exchanges: Bob's own token (audience Gatehouse) from a sign-in that also
  // consented to the MCP server. Issue 14: a token for the MCP server itself is refused as a subject_token.
  const forMcp = await codeFlow(gh, config, { creds: BOB, resource: mcp.resource, scope: 'openid tools:read', gatehouseToken: true });
  // …and his session token (audience Gatehouse), which LiveKit exchanges and connection-details take.
  const { tokens } = await codeFlow(gh, config, { creds: BOB, scope: 'openid email profile' });
  // Bob joins a room with the agent dispatched: his participant token carries the delegation token.
  const res = await fetch(`${gh.url}/livekit/connection-details`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tokens.access_token}` },
    body: JSON.stringify({ room_config: { agents: [{ agent_name: AGENT_NAME }] } }),
  });
  expect(res.status).toBe(200);
  const attributes = (decodeJwt((await res.json()).participantToken) as { attributes: Record<string, string> }).attributes;
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    GATEHOUSE_ISSUER: gh.url,
    GH_WEB_ID: web.client_id, GH_WEB_SECRET: web.client_secret,
    GH_USER_TOKEN: tokens.access_token, GH_USER_RESOURCE_TOKEN: forMcp.tokens.access_token, GH_USER_SUB: tokens.claims()!.sub,
    GH_AGENT_ID: agent.client_id, GH_AGENT_SECRET: agent.client_secret, GH_AGENT_NAME: AGENT_NAME,
    GH_ATTRIBUTES: JSON.stringify(attributes),
    GH_RS_ID: rs.client_id, GH_RS_SECRET: rs.client_secret,
    GH_RESOURCE: mcp.resource,
    ...LK,
  };
  return { gh, mcp, env };
}

describe.skipIf(!havePython).each(modes)('Python package gatehouse against Gatehouse (%s)', (mode) => {
  let s: Awaited<ReturnType<typeof setUp>>;
  beforeAll(async () => {
    s = await setUp(mode);
  });
  afterAll(async () => {
    await s?.mcp.close();
    await s?.gh.close();
  });

  it('pytest clients/python passes against this Gatehouse', async () => {
    const result = await run(PYTHON, ['-m', 'pytest', 'clients/python', '-q', '-p', 'no:cacheprovider'], { cwd: ROOT, env: s.env, maxBuffer: 10 << 20, timeout: 300_000 })
      .then((r) => ({ code: 0, out: r.stdout + r.stderr }), (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }));
    console.log(`pytest (${mode}):\n${result.out.trim().split('\n').slice(-15).join('\n')}`);
    expect(result.code).toBe(0);
    expect(result.out).toMatch(/\d+ passed/);
    expect(result.out).not.toMatch(/skipped|failed|error/);
  }, 300_000);
});

describe.skipIf(!havePython)('Python package gatehouse, installed', () => {
  let s: Awaited<ReturnType<typeof setUp>>;
  beforeAll(async () => {
    s = await setUp('embedded');
  });
  afterAll(async () => {
    await s?.mcp.close();
    await s?.gh.close();
  });

  it('installs from its directory into an empty virtualenv, and the example agent runs from there', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gh-py-'));
    try {
      // System site packages: PyJWT and cryptography come from Debian; no index is asked (--no-index).
      await run(PYTHON, ['-m', 'venv', '--system-site-packages', path.join(dir, 'venv')]);
      const py = path.join(dir, 'venv/bin/python');
      // Build from a copy so the repository gets no build/ or egg-info folders.
      fs.cpSync(path.join(ROOT, 'clients/python'), path.join(dir, 'src'), { recursive: true, filter: (p) => !/__pycache__|\.egg-info|\/build$/.test(p) });
      await run(py, ['-m', 'pip', 'install', '--quiet', '--no-index', '--no-build-isolation', path.join(dir, 'src')], { cwd: dir, timeout: 240_000 });
      fs.rmSync(path.join(dir, 'src'), { recursive: true, force: true });
      const where = await run(py, ['-c', 'import gatehouse; print(gatehouse.__file__, gatehouse.__version__)'], { cwd: dir });
      expect(where.stdout).toMatch(new RegExp(`^${dir}/venv/lib/python3[.0-9]*/site-packages/gatehouse/__init__.py 0\\.1\\.0`));
      const agentEnv = { ...s.env, AGENT_CLIENT_ID: s.env.GH_AGENT_ID, AGENT_CLIENT_SECRET: s.env.GH_AGENT_SECRET, AGENT_NAME, PARTICIPANT_ATTRIBUTES: s.env.GH_ATTRIBUTES, MCP_RESOURCE: s.mcp.resource };
      const out = await run(py, [path.join(ROOT, 'clients/python/examples/agent.py')], { cwd: dir, env: agentEnv });
      expect(JSON.parse(out.stdout)).toEqual({ user: s.env.GH_USER_SUB, client_id: s.env.GH_AGENT_ID, acting_agent: s.env.GH_AGENT_ID, scope: 'tools:read' });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});

// `npm run bench`: token exchange (LiveKit and MCP) next to plain client_credentials, on one
// in-process Gatehouse (embedded: in-memory PGlite + in-process store), with autocannon.
// Prints req/s and p99 latency for each, and the ratio exchange / client_credentials.
//
//   BENCH_DURATION=10 BENCH_CONNECTIONS=20 npm run bench
//
// client_credentials is asked for the same resource, so both sides sign one ES256 JWT; the exchange
// additionally verifies the subject token, checks revocation, reads policy and the user.
import autocannon from 'autocannon';
import { CALLBACK, codeFlow, rpConfig, startTestGatehouse } from '../test/helpers/gatehouse.ts';

/** The CLI prints the client record (clientId) plus the one-time client_secret. */
async function createClient(gh: { cli(...argv: string[]): Promise<any> }, ...argv: string[]): Promise<{ client_id: string; client_secret: string }> {
  const c = await gh.cli('client', 'create', ...argv);
  return { client_id: c.client_id ?? c.clientId, client_secret: c.client_secret };
}

const DURATION = Number(process.env.BENCH_DURATION ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const MCP = 'https://mcp.example.com/mcp';
const USER = { email: 'bench@example.com', password: 'a long benchmark passphrase' };

async function main() {
  const gh = await startTestGatehouse({
    env: { LIVEKIT_URL: 'wss://livekit.bench', LIVEKIT_API_KEY: 'APIbench', LIVEKIT_API_SECRET: 'bench-secret-'.padEnd(40, 'x') },
  });
  try {
    await gh.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    await gh.deps.db.query("UPDATE roles SET permissions = permissions || ARRAY['tools:read'] WHERE name = 'user'");
    await gh.cli('user', 'create', '--email', USER.email, '--password', USER.password, '--role', 'user', '--verified');
    const web = await createClient(gh, '--name', 'bench web', '--redirect-uri', CALLBACK, '--first-party',
      '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', 'client_credentials', '--grant', TX);
    await gh.cli('policy', 'client', 'set', web.client_id, '--livekit', '--resource', MCP);
    const { tokens } = await codeFlow(gh, await rpConfig(gh, web.client_id, web.client_secret), { creds: USER, resource: MCP, scope: 'openid tools:read' });
    const sub = tokens.claims()!.sub;

    const auth = `Basic ${Buffer.from(`${web.client_id}:${web.client_secret}`).toString('base64')}`;
    const form = (p: Record<string, string>) => new URLSearchParams(p).toString();
    const scenarios = {
      client_credentials: form({ grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' }),
      mcp_exchange: form({ grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, resource: MCP }),
      livekit_exchange: form({ grant_type: TX, subject_token: tokens.access_token, subject_token_type: AT, requested_token_type: 'urn:gatehouse:token-type:livekit', room: `user_${sub}_bench` }),
    };

    const run = (body: string, duration: number) => autocannon({
      url: `${gh.url}/token`,
      method: 'POST',
      headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' },
      body,
      connections: CONNECTIONS,
      duration,
    });
    for (const [name, body] of Object.entries(scenarios)) {
      // Fail loudly before measuring if the request itself is wrong.
      const probe = await fetch(`${gh.url}/token`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body });
      if (probe.status !== 200) throw new Error(`${name}: ${probe.status} ${await probe.text()}`);
      // Warm every path up first, so the scenario measured first is not the one paying for the JIT.
      await run(body, 1);
    }
    const results: Record<string, { rps: number; p99: number; errors: number }> = {};
    for (const [name, body] of Object.entries(scenarios)) {
      const r = await run(body, DURATION);
      results[name] = { rps: r.requests.average, p99: r.latency.p99, errors: r.non2xx + r.errors };
    }

    const base = results.client_credentials;
    console.log(`\nGatehouse token endpoint, ${CONNECTIONS} connections, ${DURATION}s each (embedded mode, one process)\n`);
    console.log(`${'scenario'.padEnd(20)} ${'req/s'.padStart(9)} ${'p99 ms'.padStart(8)} ${'errors'.padStart(7)} ${'req/s ratio'.padStart(12)} ${'p99 ratio'.padStart(10)}`);
    for (const [name, r] of Object.entries(results)) {
      console.log(`${name.padEnd(20)} ${r.rps.toFixed(0).padStart(9)} ${r.p99.toFixed(1).padStart(8)} ${String(r.errors).padStart(7)} ${(r.rps / base.rps).toFixed(2).padStart(12)} ${(r.p99 / base.p99).toFixed(2).padStart(10)}`);
    }
    console.log('\nratio = scenario / client_credentials');
  } finally {
    await gh.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

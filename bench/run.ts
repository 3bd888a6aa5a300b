// `npm run bench` [-- --quick] [-- --mode embedded|postgres]: Gatehouse's token paths against a bare
// oidc-provider in the same run, each in its own process.
//
//   server processes (Gatehouse, the floor)  pinned to core 0 (taskset, where available)
//   load generator (autocannon, bench/load.ts) pinned to core 1, one long-lived process
//   this orchestrator                          sets up data, starts/stops processes, prints the table
//
// The floor is oidc-provider alone (memory adapter) doing client credentials with ES256 JWT access
// tokens: the library underneath, with nothing of ours on top. Each round runs the floor and then
// every Gatehouse path once (A/B alternating), and the table shows medians over the rounds, so a
// burst of other load on the machine hits both sides. A run with any non-200 answer (or socket error)
// is not a result: it is printed and the bench fails. Rate limits are off (RATE_LIMITS=off): the
// bench measures the work of a request, not the limiter saying no.
//
//   BENCH_DURATION (s, default 5; quick 2)   BENCH_CONNECTIONS (default 20)   BENCH_ROUNDS (default 3; quick 1)
//   BENCH_PATHS=refresh,code  only the paths whose names contain one of these
//   BENCH_RATE (req/s, default 1000; 0 skips)  client credentials and the two exchanges once more at
//                             this fixed rate, with the floor at the same rate: latency where the
//                             server is not saturated (issue 16: p99 ≤ 10 ms at 1,000 req/s)
//   BENCH_CPU_PROF=<dir>      the Gatehouse server writes a CPU profile (node --cpu-prof) there
//   BENCH_SCALE=0             skip the scale-out column: in PostgreSQL mode the same data is also served by
//                             two processes (bench/cluster.ts), measured in the same rounds, A/B
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import readline from 'node:readline';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { decodeJwt } from 'jose';
import { Browser, CALLBACK, codeFlow, formOf, rpConfig, startTestGatehouse } from '../test/helpers/gatehouse.ts';
import { prepareStore } from './stores.ts';
import type { LoadResult, LoadSpec } from './load.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const MODES = (argv.includes('--mode') ? [argv[argv.indexOf('--mode') + 1]] : ['embedded', 'postgres']) as ('embedded' | 'postgres')[];
const DURATION = Number(process.env.BENCH_DURATION ?? (QUICK ? 2 : 5));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (QUICK ? 1 : 3));
const TX = 'urn:ietf:params:oauth:grant-type:token-exchange';
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const MCP = 'https://mcp.example.com/mcp';
const USER = { email: 'bench@example.com', password: 'a long benchmark passphrase' };
const LIVEKIT = { LIVEKIT_URL: 'wss://livekit.bench', LIVEKIT_API_KEY: 'APIbench', LIVEKIT_API_SECRET: 'bench-secret-'.padEnd(40, 'x') };

const HAS_TASKSET = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.availableParallelism() >= 2;
const pinned = (core: number, cmd: string[]) => (HAS_TASKSET ? ['taskset', '-c', String(core), ...cmd] : cmd);
const freePort = () => 20000 + crypto.randomInt(20000);
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;
const formType = { 'content-type': 'application/x-www-form-urlencoded' };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const rssMb = (pid: number) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};
/** The workers' RSS (a cluster's primary only hands out connections), or the process's own. */
const serverRssMb = (pid: number) => {
  const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return children.length ? children.map(rssMb).join(' + ') : String(rssMb(pid));
};
/**
 * CPU time (user + system, ms) a server process and its children (a cluster's workers) have used so
 * far, from /proc/<pid>/stat. Unlike req/s it does not move when something else on the machine takes
 * the core, so CPU per request is the sturdier comparison on a busy machine.
 */
const TICK_MS = 1000 / (Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100);
const cpuMs = (pid: number): number => {
  const own = (p: number) => {
    const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14 and 15)
  };
  const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return own(pid) + children.reduce((n, c) => n + own(c), 0);
};
/** A load run with the server's CPU time per answered request (ms) beside it. */
type Measured = LoadResult & { cpu: number };
async function measured(load: Load, spec: LoadSpec, pid: number): Promise<Measured> {
  const before = cpuMs(pid);
  const r = await load.run(spec);
  return { ...r, cpu: (cpuMs(pid) - before) / Math.max(1, r.requests) };
}
const SCALE = process.env.BENCH_SCALE !== '0';
const RATE = Number(process.env.BENCH_RATE ?? 1000);
/** The paths issue 16 sets a latency goal for, run once more at RATE. */
const FIXED_RATE_PATHS = ['client credentials', 'exchange → LiveKit', 'exchange → MCP'];
const FLOOR = 'floor: bare oidc-provider, client credentials';
/** How many processes the scale-out column runs, and the cores they are pinned to. */
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
// With 3 cores or more: one core more than the single process (core 1 stays the load generator's).
// With 2: both on core 0, the single process's budget, so the column shows what a second process
// costs, not what it adds (given the load generator's core, it starves the load generator instead).
const WORKER_CORES = process.env.BENCH_WORKER_CORES ?? (os.availableParallelism() >= 3 ? '0,2' : '0,0');

/** Start a server process (pinned to core 0) and wait until `ready` says it answers. */
async function startProcess(cmd: string[], env: Record<string, string>, ready: () => Promise<boolean>): Promise<ChildProcess> {
  const [bin, ...args] = pinned(0, cmd);
  const proc = spawn(bin, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  for (let i = 0; i < 240; i++) {
    if (proc.exitCode !== null) throw new Error(`${cmd.join(' ')} exited: ${stderr}`);
    if (await ready().catch(() => false)) return proc;
    await new Promise((r) => setTimeout(r, 250));
  }
  proc.kill();
  throw new Error(`${cmd.join(' ')} did not become ready: ${stderr}`);
}
const stop = (p: ChildProcess) => new Promise<void>((r) => {
  if (p.exitCode !== null || p.signalCode !== null) return r();
  p.once('exit', () => r());
  p.kill('SIGTERM');
});

/** The load generator: one process on core 1, specs in on stdin, results out on stdout. */
function startLoad() {
  const [bin, ...args] = pinned(1, [process.execPath, '--import', 'tsx', 'bench/load.ts', '--serve']);
  const proc = spawn(bin, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  return {
    async run(spec: LoadSpec): Promise<LoadResult> {
      proc.stdin!.write(`${JSON.stringify(spec)}\n`);
      const { value, done } = await lines.next();
      if (done) throw new Error('load generator exited');
      return JSON.parse(value);
    },
    close: () => { proc.stdin!.end(); return stop(proc); },
  };
}
type Load = ReturnType<typeof startLoad>;

async function post(url: string, auth: string, params: Record<string, string>) {
  const res = await fetch(url, { method: 'POST', headers: { authorization: auth, ...formType }, body: new URLSearchParams(params) });
  const body = await res.json() as Record<string, any>;
  if (res.status !== 200) throw new Error(`${url} ${params.grant_type ?? ''}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/** The floor process and the one spec it is measured with. */
async function startFloor() {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess([process.execPath, '--import', 'tsx', 'bench/floor.ts', String(port), 'floor', 'floor-secret', MCP], {},
    async () => (await fetch(`${url}/.well-known/openid-configuration`)).ok);
  const auth = basic('floor', 'floor-secret');
  await post(`${url}/token`, auth, { grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' });
  const spec: LoadSpec = { kind: 'static', url: `${url}/token`, connections: CONNECTIONS, duration: DURATION, headers: { authorization: auth, ...formType },
    body: new URLSearchParams({ grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' }).toString() };
  return { proc, spec };
}

/** The argon2-only ceiling for password sign-in (bench/argon2-ceiling.ts). */
async function startCeiling() {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess([process.execPath, '--import', 'tsx', 'bench/argon2-ceiling.ts', String(port)], {},
    async () => (await fetch(url, { method: 'POST' })).ok);
  const spec: LoadSpec = { kind: 'static', url, connections: CONNECTIONS, duration: DURATION, body: '' };
  return { proc, spec };
}
type Baselines = { floor: Awaited<ReturnType<typeof startFloor>>; ceiling: Awaited<ReturnType<typeof startCeiling>> };
/** Paths measured against the argon2 ceiling instead of the floor. */
const LOGIN = 'password sign-in (×argon2 ceiling)';

interface FixedRate { rps: number; p50: number; p99: number; bad: number }
interface ModeResult {
  label: string;
  /** At BENCH_RATE: the floor, then the FIXED_RATE_PATHS measured. */
  fixed?: Record<string, FixedRate>;
  paths: Record<string, { rps: number; p50: number; p99: number; ratio: number; bad: number; sql: number; cpu: number; cpuRatio: number }>;
  rssIdle: string;
  rssAfter: string;
  floorRps: number;
  floorCpu: number;
  ceilingRps?: number;
  ceilingCpu?: number;
}

/** Data for one mode: written in-process (CLI commands), then served by a separate server process. */
async function benchMode(mode: 'embedded' | 'postgres', { floor, ceiling }: Baselines, load: Load): Promise<ModeResult[]> {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const cleanups: (() => Promise<void>)[] = [];
  const env: Record<string, string> = {
    ...LIVEKIT, ISSUER: url, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', RATE_LIMITS: 'off', MFA_REQUIRED_ROLES: 'none',
    ADMIN_EMAIL: 'admin@example.com', ADMIN_PASSWORD: 'correct horse battery staple',
    // Long enough that the tokens made at set-up outlive every round.
    ACCESS_TOKEN_TTL: '3600', LIVEKIT_DELEGATION_TTL: '900',
    DATA_ENCRYPTION_KEY: crypto.randomBytes(32).toString('base64url'),
  };
  const procs: ChildProcess[] = [];
  try {
    await prepareStore(mode, env, cleanups, 'gh-bench-');
    // Set-up through the CLI's commands in this process; the server process starts after, on the same data.
    const setup = await startTestGatehouse({ mode, env: { ...env, PORT: '0' }, dataDir: env.DATA_DIR, databaseUrl: env.DATABASE_URL,
      redis: env.REDIS_URL ? { url: env.REDIS_URL, prefix: env.REDIS_KEY_PREFIX } : undefined });
    let web: { client_id: string; client_secret: string }, agent: typeof web;
    try {
      await setup.cli('resource', 'create', '--uri', MCP, '--scope', 'tools:read');
      await setup.cli('role', 'update', 'user', '--add', 'tools:read');
      await setup.cli('user', 'create', '--email', USER.email, '--password', USER.password, '--role', 'user', '--verified');
      web = await setup.cli('client', 'create', '--name', 'bench web', '--redirect-uri', CALLBACK, '--first-party',
        '--grant', 'authorization_code', '--grant', 'refresh_token', '--grant', 'client_credentials', '--grant', TX);
      agent = await setup.cli('client', 'create', '--name', 'bench agent', '--grant', 'client_credentials', '--grant', TX);
      await setup.cli('policy', 'client', 'set', web.client_id, '--livekit', '--resource', MCP);
      await setup.cli('policy', 'client', 'set', agent.client_id, '--resource', MCP, '--agent-name', 'voice-helper');
    } finally {
      await setup.stop();
    }

    // BENCH_CPU_PROF=<dir>: the Gatehouse server writes V8 CPU profiles there when it stops (one per
    // thread: the main thread's is the big one; the other is the loader's).
    const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_CPU_PROF)}`] : [];
    const proc = await startProcess([process.execPath, ...prof, 'bin/gatehouse.js', 'serve'], env, async () => (await fetch(`${url}/ready`)).ok);
    procs.push(proc);
    // Scale-out: the same data (and issuer) served by WORKERS processes on another port, measured beside it.
    const servers: { label: string; url: string; proc: ChildProcess }[] = [{ label: mode, url, proc }];
    if (mode === 'postgres' && SCALE) {
      const clusterUrl = `http://127.0.0.1:${freePort()}`;
      const cluster = await startProcess([process.execPath, ...prof, '--import', 'tsx', 'bench/cluster.ts', String(WORKERS)],
        { ...env, PORT: new URL(clusterUrl).port, BENCH_WORKER_CORES: HAS_TASKSET ? WORKER_CORES : '' }, async () => (await fetch(`${clusterUrl}/ready`)).ok);
      procs.push(cluster);
      servers.push({ label: `postgres, ${WORKERS} processes`, url: clusterUrl, proc: cluster });
    }
    await new Promise((r) => setTimeout(r, 2000));
    const rssIdle = servers.map((s) => serverRssMb(s.proc.pid!));

    // Tokens, through the running server: one signed-in browser, a refresh chain per connection.
    const gh = { url };
    const config = await rpConfig(gh, web.client_id, web.client_secret);
    // Each refresh chain has its own session, hence its own grant: a chain that breaks (a rotation
    // cut off when a run stops counts as reuse, which revokes the grant) takes no other chain with it.
    const chains = async () => {
      const rts: string[] = [];
      for (let i = 0; i < CONNECTIONS; i++) rts.push((await codeFlow(gh, config, { creds: USER, resource: MCP, scope: 'openid tools:read offline_access' })).tokens.refresh_token!);
      return rts;
    };
    const browser = new Browser();
    // A JWT for the MCP resource (what a resource server introspects), and the user's token bound to
    // Gatehouse itself (what exchange and connection-details take: audience binding refuses the other).
    const userJwt = (await codeFlow(gh, config, { creds: USER, resource: MCP, scope: 'openid tools:read', browser })).tokens.access_token;
    const userAt = (await codeFlow(gh, config, { creds: USER, resource: MCP, scope: 'openid tools:read', browser, gatehouseToken: true })).tokens.access_token;
    const refreshTokens = await chains();
    const sub = decodeJwt(userJwt).sub!;
    const webAuth = basic(web.client_id, web.client_secret);
    const agentAuth = basic(agent.client_id, agent.client_secret);
    const details = await fetch(`${url}/livekit/connection-details`, { method: 'POST', headers: { authorization: `Bearer ${userAt}`, 'content-type': 'application/json' },
      body: JSON.stringify({ room_config: { agents: [{ agent_name: 'voice-helper' }] } }) });
    if (details.status !== 200) throw new Error(`connection-details: ${details.status} ${await details.text()}`);
    const delegation = (decodeJwt((await details.json()).participantToken) as any).attributes['gatehouse.delegation.voice-helper'] as string;
    const actor = (await post(`${url}/token`, agentAuth, { grant_type: 'client_credentials' })).access_token as string;
    const verifier = crypto.randomBytes(32).toString('base64url');
    const authPath = `/auth?${new URLSearchParams({ client_id: web.client_id, response_type: 'code', redirect_uri: CALLBACK, scope: 'openid',
      code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', state: 'bench' })}`;
    const cookie = await browser.jar.getCookieString(`${url}/auth`);
    // Password sign-in: a browser without a session, once on the sign-in page for its CSRF cookie and field.
    const signIn = new Browser();
    const page = await signIn.follow(`${url}${authPath}`, url);
    const csrf = formOf(page.html ?? '', '/login').fields._csrf;
    if (!csrf) throw new Error(`sign-in page without a CSRF field: ${page.res.status}`);
    const csrfCookie = await signIn.jar.getCookieString(`${url}/interaction/x`);

    const pathsAt = (url: string): Record<string, LoadSpec> => {
      const token = (headers: Record<string, string>, params: Record<string, string>, at = '/token'): LoadSpec => ({
        kind: 'static', url: `${url}${at}`, connections: CONNECTIONS, duration: DURATION, headers: { ...headers, ...formType }, body: new URLSearchParams(params).toString(),
      });
      return {
        'client credentials': token({ authorization: webAuth }, { grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' }),
        'refresh (rotating)': { kind: 'refresh', url, connections: CONNECTIONS, duration: DURATION, headers: { authorization: webAuth }, refreshTokens },
        'authorize + code redemption': { kind: 'code', url, connections: CONNECTIONS, duration: DURATION, headers: { authorization: webAuth }, authPath, cookie, verifier, redirectUri: CALLBACK },
        'exchange → LiveKit': token({ authorization: webAuth }, { grant_type: TX, subject_token: userAt, subject_token_type: AT, requested_token_type: 'urn:gatehouse:token-type:livekit', room: `user_${sub}_bench` }),
        'exchange → MCP': token({ authorization: webAuth }, { grant_type: TX, subject_token: userAt, subject_token_type: AT, resource: MCP }),
        'delegation exchange (agent)': token({ authorization: agentAuth }, { grant_type: TX, subject_token: delegation, subject_token_type: AT, actor_token: actor, actor_token_type: AT, resource: MCP }),
        'connection-details': { kind: 'static', url: `${url}/livekit/connection-details`, connections: CONNECTIONS, duration: DURATION,
          headers: { authorization: `Bearer ${userAt}`, 'content-type': 'application/json' }, body: '{}' },
        'introspection': token({ authorization: webAuth }, { token: userJwt }, '/token/introspection'),
        [LOGIN]: { kind: 'login', url, connections: CONNECTIONS, duration: DURATION, authPath, cookie: csrfCookie,
          form: { email: USER.email, password: USER.password, _csrf: csrf } },
      };
    };
    const only = process.env.BENCH_PATHS?.split(',');
    const names = Object.keys(pathsAt(url)).filter((name) => !only || only.some((o) => name.includes(o)));
    const specs = servers.map((s) => pathsAt(s.url));

    // Warm-up (and a check that every path answers as expected) before anything is measured; the
    // refresh chains and codes it spends are replaced by the ones it makes.
    for (const [i, s] of servers.entries()) {
      for (const name of names) {
        // Each server's warm-up spends its own refresh chains (the first one's are spent by now).
        if (i > 0 && specs[i][name].kind === 'refresh') specs[i][name].refreshTokens = await chains();
        const r = await load.run({ ...specs[i][name], duration: 2 });
        // Nothing back in the warm-up is the machine's load, not a wrong request; a wrong status is.
        if (r.bad > (r.requests === 0 ? 1 : 0)) throw new Error(`${s.label} ${name}: warm-up saw ${JSON.stringify(r.statuses)}`);
      }
    }
    // SQL statements per request, from the server's own count (/metrics; one process's, which is
    // the share of the work any process does): the one number here the machine's load does not move.
    const statements = async (at: string) => Number(/^gatehouse_db_statements_total (\d+)/m.exec(await (await fetch(`${at}/metrics`)).text())?.[1] ?? NaN);
    const samples = servers.map(() => Object.fromEntries(names.map((k) => [k, [] as Measured[]])));
    const sqlSamples = servers.map(() => Object.fromEntries(names.map((k) => [k, [] as number[]])));
    const floorSamples: Measured[] = [];
    const ceilingSamples: Measured[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      floorSamples.push(await measured(load, floor.spec, floor.proc.pid!));
      if (names.includes(LOGIN)) ceilingSamples.push(await measured(load, ceiling.spec, ceiling.proc.pid!));
      for (const name of names) {
        // A/B: each path on one process, then on several, back to back.
        for (const [i, s] of servers.entries()) {
          const spec = specs[i][name];
          // The refresh chains moved on in the last run: fresh chains for each.
          if (spec.kind === 'refresh') spec.refreshTokens = await chains();
          const before = await statements(s.url);
          const r = await measured(load, spec, s.proc.pid!);
          samples[i][name].push(r);
          // A cluster answers /metrics from whichever worker takes the connection: no total to divide.
          sqlSamples[i][name].push(s.proc === proc ? ((await statements(s.url)) - before) / Math.max(1, r.requests) : NaN);
        }
      }
    }
    // Latency at a fixed rate (the single process): the floor first, then each path, once each.
    const fixed: Record<string, FixedRate> = {};
    const fixedNames = names.filter((n) => FIXED_RATE_PATHS.includes(n));
    if (RATE > 0 && fixedNames.length) {
      const at = async (name: string, spec: LoadSpec) => {
        const r = await load.run({ ...spec, rate: RATE });
        fixed[name] = { rps: r.rps, p50: r.p50, p99: r.p99, bad: r.bad };
      };
      await at(FLOOR, floor.spec);
      for (const name of fixedNames) await at(name, specs[0][name]);
    }
    return servers.map((s, i) => {
      const out: ModeResult['paths'] = {};
      for (const name of names) {
        const ss = samples[i][name];
        const bad = ss.reduce((n, x) => n + x.bad, 0);
        if (bad) console.error(`${s.label} ${name}: unexpected answers ${JSON.stringify(ss.map((x) => x.statuses))}`);
        const base = name === LOGIN ? ceilingSamples : floorSamples;
        out[name] = { rps: median(ss.map((x) => x.rps)), p50: median(ss.map((x) => x.p50)), p99: median(ss.map((x) => x.p99)),
          ratio: median(ss.map((x, j) => x.rps / base[j].rps)), bad, sql: median(sqlSamples[i][name]),
          cpu: median(ss.map((x) => x.cpu)), cpuRatio: median(ss.map((x, j) => base[j].cpu / x.cpu)) };
      }
      return { label: s.label, paths: out, fixed: i === 0 && Object.keys(fixed).length ? fixed : undefined, rssIdle: rssIdle[i], rssAfter: serverRssMb(s.proc.pid!), floorRps: median(floorSamples.map((x) => x.rps)), floorCpu: median(floorSamples.map((x) => x.cpu)),
        ceilingRps: ceilingSamples.length ? median(ceilingSamples.map((x) => x.rps)) : undefined,
        ceilingCpu: ceilingSamples.length ? median(ceilingSamples.map((x) => x.cpu)) : undefined };
    });
  } finally {
    for (const p of procs) await stop(p);
    for (const c of cleanups.reverse()) await c().catch((err) => console.error(`cleanup: ${err}`));
  }
}

async function main() {
  const load = startLoad();
  const floor = await startFloor();
  const ceiling = await startCeiling();
  const results: ModeResult[] = [];
  try {
    // The baselines warm up as the servers do (2 s each): a cold floor is a slow floor, which
    // flatters every ratio measured against it.
    await load.run({ ...floor.spec, duration: 2 });
    await load.run({ ...ceiling.spec, duration: 2 });
    for (const mode of MODES) results.push(...await benchMode(mode, { floor, ceiling }, load));
  } finally {
    await stop(floor.proc);
    await stop(ceiling.proc);
    await load.close();
  }
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`\nGatehouse bench — ${new Date().toISOString().slice(0, 16)}Z, ${os.availableParallelism()} × ${cpu}, Node ${process.version}, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  console.log(`${HAS_TASKSET ? 'servers on core 0, autocannon on core 1' : 'no taskset: processes not pinned'}; ${CONNECTIONS} connections, ${DURATION} s × ${ROUNDS} round(s), medians; rate limits off\n`);
  const cols = (f: (r: ModeResult) => string) => results.map(f).join(' | ');
  const us = (ms: number) => (ms * 1000).toFixed(0);
  console.log(`| path | ${cols((r) => `${r.label} req/s | ×floor | p50/p99 ms | CPU µs/req (×floor) | SQL/req`)} |`);
  console.log(`|---|${results.map(() => '---:|---:|---:|---:|---:').join('|')}|`);
  console.log(`| floor: bare oidc-provider, client credentials | ${cols((r) => `${r.floorRps.toFixed(0)} | 1.00 | | ${us(r.floorCpu)} | `)} |`);
  if (results.some((r) => r.ceilingRps)) console.log(`| ceiling: argon2id verification alone | ${cols((r) => `${r.ceilingRps?.toFixed(0) ?? ''} | 1.00 | | ${r.ceilingCpu === undefined ? '' : us(r.ceilingCpu)} | `)} |`);
  for (const name of Object.keys(results[0].paths)) {
    console.log(`| ${name} | ${cols((m) => { const r = m.paths[name]; return `${r.rps.toFixed(0)}${r.bad ? ` (${r.bad} bad)` : ''} | ${r.ratio.toFixed(2)} | ${r.p50.toFixed(0)}/${r.p99.toFixed(0)} | ${us(r.cpu)} (${r.cpuRatio.toFixed(2)}) | ${Number.isNaN(r.sql) ? '' : r.sql.toFixed(1)}`; })} |`);
  }
  console.log(`| server RSS idle → after load (MB) | ${cols((r) => `${r.rssIdle} → ${r.rssAfter} | | | | `)} |`);
  const one = results.find((r) => r.label === 'postgres');
  const several = results.find((r) => r.label.startsWith('postgres, '));
  if (one && several) {
    console.log(`\nscale-out, ${several.label} over one (req/s, same rounds): ${Object.keys(one.paths).map((n) => `${n} ${(several.paths[n].rps / one.paths[n].rps).toFixed(2)}×`).join('; ')}`);
    console.log(`(the ${WORKERS} processes pinned to cores ${HAS_TASKSET ? WORKER_CORES : 'none'}${HAS_TASKSET && os.availableParallelism() < 3 ? ': on 2 cores, the single process\'s core, so this is the cost of a second process, not its gain' : ''}; PostgreSQL and Redis run on the same machine, unpinned)`);
  }
  const withFixed = results.filter((r) => r.fixed);
  if (withFixed.length) {
    console.log(`\nat a fixed ${RATE} req/s (${CONNECTIONS} connections, ${DURATION} s, once; one process):\n`);
    console.log(`| path | ${withFixed.map((r) => `${r.label} req/s | p50/p99 ms`).join(' | ')} |`);
    console.log(`|---|${withFixed.map(() => '---:|---:').join('|')}|`);
    for (const name of Object.keys(withFixed[0].fixed!)) {
      console.log(`| ${name} | ${withFixed.map((r) => { const f = r.fixed![name]; return f ? `${f.rps.toFixed(0)}${f.bad ? ` (${f.bad} bad)` : ''} | ${f.p50.toFixed(0)}/${f.p99.toFixed(0)}` : ' | '; }).join(' | ')} |`);
    }
  }
  console.log('\nauthorize + code redemption: GET /auth (signed-in session) → 303 with a code, then POST /token; counted per code.');
  console.log(`password sign-in: GET /auth → 303 to the sign-in page, then POST email + password → 303; counted per sign-in, ratio to the argon2 ceiling.`);
  if (results.some((r) => Object.values(r.paths).some((p) => p.bad) || Object.values(r.fixed ?? {}).some((f) => f.bad))) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

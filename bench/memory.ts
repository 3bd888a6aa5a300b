// `npm run bench:memory` [-- --mode embedded|postgres] [-- --source]: how long Gatehouse takes to
// start, and how much memory it holds, started the way `npm start` starts it, in its own process.
//
// For each store mode: start on fresh data (first start) and stop, start again on the same data
// (second start); time from spawn to the first 200 from /health, and the CPU time the server used
// until then (on a busy machine the wall time mostly measures the others). Then, on the second start: RSS
// (VmRSS, /proc/<pid>/status) 2 s after ready; after a load burst (BENCH_MEMORY_REQUESTS requests,
// default 4000, half client credentials and half discovery, 20 connections); and after 30 s idle
// (BENCH_MEMORY_IDLE).
// The CLI is timed once per mode too (`gatehouse client list`, wall clock; hyperfine is better).
//
//   --source   run src/main.ts through tsx (how `npm start` ran before the compiled start)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import autocannon from 'autocannon';
import { prepareStore } from './stores.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const SOURCE = argv.includes('--source');
const MODES = (argv.includes('--mode') ? [argv[argv.indexOf('--mode') + 1]] : ['embedded', 'postgres']) as ('embedded' | 'postgres')[];
const BURST = Number(process.env.BENCH_MEMORY_REQUESTS ?? 4000);
const IDLE = Number(process.env.BENCH_MEMORY_IDLE ?? 30);
const MCP = 'https://mcp.example.com/mcp';
const SERVER = SOURCE ? [process.execPath, '--import', 'tsx', 'src/main.ts'] : [process.execPath, 'bin/gatehouse.js', 'serve'];
const CLI = SOURCE ? [process.execPath, '--import', 'tsx', 'src/cli/main.ts'] : [process.execPath, 'bin/gatehouse.js'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssMb = (pid: number) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};

/** CPU time (user + system) the process has used, in ms: what a start costs whatever else runs. */
const cpuMs = (pid: number) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in clock ticks (100 per second)
};

async function start(env: Record<string, string>, url: string): Promise<{ proc: ChildProcess; ms: number; cpu: number }> {
  const t0 = performance.now();
  const proc = spawn(SERVER[0], SERVER.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`gatehouse exited: ${stderr}`);
    if (performance.now() - t0 > 120_000) {
      proc.kill();
      throw new Error(`gatehouse did not answer /health: ${stderr}`);
    }
    const ok = await fetch(`${url}/health`).then((r) => r.status === 200, () => false);
    if (ok) return { proc, ms: Math.round(performance.now() - t0), cpu: cpuMs(proc.pid!) };
    await sleep(20);
  }
}

const stop = (p: ChildProcess) => new Promise<void>((r) => {
  if (p.exitCode !== null || p.signalCode !== null) return r();
  p.once('exit', () => r());
  p.kill('SIGTERM');
});

function cli(env: Record<string, string>, ...args: string[]) {
  const t0 = performance.now();
  const r = spawnSync(CLI[0], [...CLI.slice(1), ...args, '--json'], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gatehouse ${args.join(' ')}: ${r.stderr}`);
  return { out: JSON.parse(r.stdout), ms: Math.round(performance.now() - t0) };
}

async function burst(url: string, auth: string) {
  const form = new URLSearchParams({ grant_type: 'client_credentials', resource: MCP, scope: 'tools:read' }).toString();
  // A fixed number of requests, not a duration: on a busy machine a duration would make the load, and so the memory after it, vary.
  const run = (opts: autocannon.Options) => autocannon({ connections: 20, amount: BURST / 2, timeout: 10, ...opts });
  const tokens = await run({ url: `${url}/token`, method: 'POST', headers: { authorization: auth, 'content-type': 'application/x-www-form-urlencoded' }, body: form });
  const discovery = await run({ url: `${url}/.well-known/openid-configuration` });
  const bad = (r: autocannon.Result) => r.non2xx + r.errors + r.timeouts;
  return { requests: tokens.requests.total + discovery.requests.total, bad: bad(tokens) + bad(discovery) };
}

interface Row { mode: string; first: number; second: number; secondCpu: number; cli: number; idle: number; after: number; rested: number; requests: number; bad: number }

async function measure(mode: 'embedded' | 'postgres'): Promise<Row> {
  const port = 20000 + crypto.randomInt(20000);
  const url = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = {
    ISSUER: url, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', RATE_LIMITS: 'off',
    ADMIN_EMAIL: 'admin@example.com', ADMIN_PASSWORD: 'correct horse battery staple',
    DATA_ENCRYPTION_KEY: crypto.randomBytes(32).toString('base64url'),
  };
  const cleanups: (() => Promise<void>)[] = [];
  let proc: ChildProcess | undefined;
  try {
    await prepareStore(mode, env, cleanups, 'gh-memory-');
    const first = await start(env, url);
    await stop(first.proc);
    const second = await start(env, url);
    proc = second.proc;
    // In embedded mode the CLI's commands go to the running server over its control socket.
    cli(env, 'resource', 'create', '--uri', MCP, '--scope', 'tools:read');
    const agent = cli(env, 'client', 'create', '--name', 'memory bench', '--grant', 'client_credentials').out as { client_id: string; client_secret: string };
    const list = cli(env, 'client', 'list');
    await sleep(2000);
    const idle = rssMb(proc.pid!);
    const load = await burst(url, `Basic ${Buffer.from(`${agent.client_id}:${agent.client_secret}`).toString('base64')}`);
    const after = rssMb(proc.pid!);
    await sleep(IDLE * 1000);
    const rested = rssMb(proc.pid!);
    return { mode, first: first.ms, second: second.ms, secondCpu: second.cpu, cli: list.ms, idle, after, rested, ...load };
  } finally {
    if (proc) await stop(proc);
    for (const c of cleanups) await c().catch(() => {});
  }
}

const rows: Row[] = [];
for (const mode of MODES) rows.push(await measure(mode));
const load = os.loadavg().map((l) => l.toFixed(1)).join(' ');
console.log(`Gatehouse start and memory — ${new Date().toISOString().slice(0, 16)}Z, ${os.cpus().length} × ${os.cpus()[0]?.model.split(' ').slice(0, 2).join(' ')}, Node ${process.version}, load average ${load}`);
console.log(`started as: ${SERVER.slice(1).join(' ')}; burst of ${BURST} requests over 20 connections, idle ${IDLE} s\n`);
console.log('| mode | first start | second start (CPU) | `client list` | RSS idle | after burst | after idle | burst requests (bad) |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.mode} | ${r.first} ms | ${r.second} ms (${r.secondCpu} ms) | ${r.cli} ms | ${r.idle} MB | ${r.after} MB | ${r.rested} MB | ${r.requests} (${r.bad}) |`);
}
if (rows.some((r) => r.bad > 0)) {
  console.error('some burst requests failed: the numbers after the burst are not a result');
  process.exit(1);
}

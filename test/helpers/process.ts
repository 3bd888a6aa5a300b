// Gatehouse as its own OS process, started as `npm start` starts it (`node bin/gatehouse.js serve`),
// for the tests that need more than one process or a real restart; and the `gatehouse` CLI the same
// way. bin/gatehouse.js rebuilds dist/ first when src/ is newer than it (scripts/build.mjs), so these
// processes run the code under test, never an old build.
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const TSX = path.join(ROOT, 'node_modules/.bin/tsx');
/** The `gatehouse` command; runs in this node process (no wrapper), so a signal reaches the server itself. */
const GATEHOUSE = path.join(ROOT, 'bin/gatehouse.js');

/**
 * Start `gatehouse serve` on a random port with `env` added, and wait until /ready answers 200. The
 * issuer is the process's own URL unless `env.ISSUER` names another (nodes behind one load balancer).
 */
export async function spawnGatehouse(env: Record<string, string>): Promise<{ url: string; proc: ChildProcess }> {
  const port = env.PORT ? Number(env.PORT) : 20000 + Math.floor(Math.random() * 20000);
  const url = `http://127.0.0.1:${port}`;
  const proc = spawn(process.execPath, [GATEHOUSE, 'serve'], {
    cwd: ROOT,
    env: { ...process.env, ...env, PORT: String(port), HOST: '127.0.0.1', ISSUER: env.ISSUER ?? url, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  for (let i = 0; i < 240; i++) { // up to a minute: a fresh data directory migrates first, on a busy machine
    if (proc.exitCode !== null) throw new Error(`gatehouse exited: ${stderr}`);
    try {
      if ((await fetch(`${url}/ready`, { signal: AbortSignal.timeout(2000) })).ok) return { url, proc };
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  proc.kill();
  throw new Error(`gatehouse did not become ready: ${stderr}`);
}

/** SIGTERM and wait for the exit. */
export const stopProcess = (p: ChildProcess) =>
  new Promise<void>((r) => {
    // A process killed by a signal has signalCode set and exitCode null.
    if (p.exitCode !== null || p.signalCode !== null) return r();
    p.once('exit', () => r());
    p.kill('SIGTERM');
  });

/** The `gatehouse` CLI as its own process with `env`: its exit status and what it printed. */
export function runCliRaw(env: Record<string, string>, ...argv: string[]) {
  const r = spawnSync(process.execPath, [GATEHOUSE, ...argv], { cwd: ROOT, env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The `gatehouse` CLI as its own process with `env`; returns its JSON output (`get`/`list` need --json). */
export function runCli(env: Record<string, string>, ...argv: string[]) {
  const r = runCliRaw(env, ...argv);
  if (r.status !== 0) throw new Error(`gatehouse ${argv.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

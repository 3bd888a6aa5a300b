// Scale-out for the bench: N Gatehouse processes sharing one port through node:cluster (the primary
// accepts connections and hands them round-robin to the workers; each worker is `bin/gatehouse.js serve`,
// the compiled server `npm start` runs). Every worker is a full, stateless node on the same PostgreSQL + Redis, as
// separate machines behind a load balancer would be. Started by bench/run.ts, pinned like the other
// servers; BENCH_WORKER_CORES="0,1" pins worker i to the i-th core of that list (taskset).
//
//   node --import tsx bench/cluster.ts <workers>
import cluster from 'node:cluster';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const workers = Number(process.argv[2] ?? 2);
// "0,1": worker 0 on core 0, worker 1 on core 1; "0-1": every worker on either.
const cores = process.env.BENCH_WORKER_CORES?.split(',').filter(Boolean) ?? [];

// The workers run compiled, like `npm start`; only the primary (this file) goes through tsx.
cluster.setupPrimary({ exec: path.resolve(import.meta.dirname, '../bin/gatehouse.js'), args: ['serve'],
  execArgv: process.execArgv.filter((a, i, all) => a !== '--import' && all[i - 1] !== '--import') });
let stopping = false;
for (let i = 0; i < workers; i++) {
  const w = cluster.fork();
  if (cores.length) spawnSync('taskset', ['-pc', cores[i % cores.length], String(w.process.pid)], { stdio: 'ignore' });
}
cluster.on('exit', (w, code, signal) => {
  if (stopping) {
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    return;
  }
  process.stderr.write(`bench cluster: worker ${w.process.pid} exited (${signal ?? code})\n`);
  process.exit(1);
});
process.on('SIGTERM', () => {
  stopping = true;
  for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
});

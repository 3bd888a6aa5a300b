// Summarise a V8 CPU profile (node --cpu-prof): self time per function and per package/source file,
// the biggest first.
//
//   npx tsx bench/profile-summary.ts <file.cpuprofile> [top]                 the whole profile
//   npx tsx bench/profile-summary.ts <file> --busy                            share of busy samples per 0.5 s
//   npx tsx bench/profile-summary.ts <file> --from 15.2 --to 19.8 [--rps 1586] [top]
//
// A bench profile covers the server's whole life (start, set-up, the pauses between runs), so read
// it over one path's run: --busy shows where the loads were, --from/--to (seconds since the profile
// began) cut to one, and --rps (that run's req/s) prints microseconds per request instead of shares.
import fs from 'node:fs';

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[]; startTime: number }
const args = process.argv.slice(2);
const flag = (name: string) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : undefined);
const file = args[0];
const positional = args.slice(1).filter((a, i, all) => !a.startsWith('--') && !(all[i - 1] ?? '').startsWith('--'));
const top = Number(positional[0] ?? 25);
const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
let t = prof.startTime;
const at = prof.timeDeltas.map((d) => ((t += d) - prof.startTime) / 1e6);
const idle = (id: number) => byId.get(id)!.callFrame.functionName === '(idle)';

if (args.includes('--busy')) {
  const buckets = new Map<number, [number, number]>();
  prof.samples.forEach((s, i) => {
    const k = Math.floor(at[i] * 2) / 2;
    const b = buckets.get(k) ?? [0, 0];
    b[idle(s) ? 1 : 0]++;
    buckets.set(k, b);
  });
  for (const [k, [busy, still]] of buckets) console.log(`${k.toFixed(1).padStart(6)} s  busy ${((100 * busy) / (busy + still)).toFixed(0).padStart(3)}%`);
  process.exit(0);
}

const from = flag('--from') ?? 0;
const to = flag('--to') ?? Infinity;
const rps = flag('--rps');
const hits = new Map<number, number>();
let total = 0;
prof.samples.forEach((s, i) => {
  if (at[i] < from || at[i] >= to) return;
  hits.set(s, (hits.get(s) ?? 0) + 1);
  total++;
});
const byFn = new Map<string, number>();
const byFile = new Map<string, number>();
for (const n of prof.nodes) {
  const h = hits.get(n.id) ?? 0;
  // Idle samples count in the total (shares are of the time in the window) but are listed as nothing.
  if (!h || n.callFrame.functionName === '(idle)') continue;
  const url = n.callFrame.url.replace(/^file:\/\//, '').replace(/.*\/node_modules\//, 'node_modules/').replace(/.*\/(src|bench)\//, '$1/');
  const where = url || '(native)';
  const fn = `${n.callFrame.functionName || '(anonymous)'} ${where}:${n.callFrame.lineNumber + 1}`;
  byFn.set(fn, (byFn.get(fn) ?? 0) + h);
  const pkg = /^node_modules\/((@[^/]+\/)?[^/]+)/.exec(where)?.[1] ?? where;
  byFile.set(pkg, (byFile.get(pkg) ?? 0) + h);
}
// A sample stands for (window length / samples) of time; per request that is share × 1e6 / rps µs.
const value = (v: number) => (rps ? `${((v / total) * (1e6 / rps)).toFixed(1).padStart(6)} µs` : `${((100 * v) / total).toFixed(1).padStart(5)}%`);
const print = (title: string, m: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${value(v)}  ${k}`);
};
const span = Number.isFinite(to) ? ` from ${from} s to ${to} s` : '';
print(`self time by package / file (${total} samples${span}${rps ? `, per request at ${rps} req/s` : ''})`, byFile);
print('self time by function', byFn);

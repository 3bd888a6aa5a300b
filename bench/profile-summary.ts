// Summarise a V8 CPU profile (node --cpu-prof): self time per function and per package/source file,
// the biggest first. `npx tsx bench/profile-summary.ts <file.cpuprofile> [top]`
import fs from 'node:fs';

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
const [file, topArg] = process.argv.slice(2);
const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[] };
const top = Number(topArg ?? 25);
const hits = new Map<number, number>();
for (const s of prof.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
const total = prof.samples.length;
const byFn = new Map<string, number>();
const byFile = new Map<string, number>();
for (const n of prof.nodes) {
  const h = hits.get(n.id) ?? 0;
  if (!h) continue;
  const url = n.callFrame.url.replace(/^file:\/\//, '').replace(/.*\/node_modules\//, 'node_modules/').replace(/.*\/(src|bench)\//, '$1/');
  const where = url || '(native)';
  const fn = `${n.callFrame.functionName || '(anonymous)'} ${where}:${n.callFrame.lineNumber + 1}`;
  byFn.set(fn, (byFn.get(fn) ?? 0) + h);
  const pkg = /^node_modules\/((@[^/]+\/)?[^/]+)/.exec(where)?.[1] ?? where;
  byFile.set(pkg, (byFile.get(pkg) ?? 0) + h);
}
const print = (title: string, m: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
};
print(`self time by package / file (${total} samples)`, byFile);
print('self time by function', byFn);

// Compiles src/ to dist/src/ (one .js per .ts, the same tree, relative imports rewritten to .js) with
// esbuild, which strips types without checking them (`npm run typecheck` checks them). It runs on
// `npm install` / `npm ci` (the `prepare` script) and is plain JavaScript so that it needs no build
// itself. bin/gatehouse.js calls ensureBuilt() before every start: a dist/ older than src/ is
// rebuilt first (a fraction of a second), so `npm start` never runs code older than the checkout.
//
//   node scripts/build.mjs   build now (what `npm run build` and `prepare` do)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SRC = path.join(ROOT, 'src');
const DIST = path.join(ROOT, 'dist');
const STAMP = path.join(DIST, '.built-at');
const LOCK = path.join(DIST, '.building');
/** Not compiled, read at run time relative to the code: linked into dist/ so dist/src/x resolves ../../views as src/x does. */
const LINKED = ['views', 'public', 'migrations'];

/** Newest modification time among src/'s files and folders (a folder's changes when a file is added, removed or renamed) and this script. */
function newestInput() {
  let newest = fs.statSync(fileURLToPath(import.meta.url)).mtimeMs;
  const walk = (dir) => {
    newest = Math.max(newest, fs.statSync(dir).mtimeMs);
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  walk(SRC);
  return newest;
}

/** dist/ was built from the src/ that is here now (or there is no src/, as in a package with dist/ only). */
export function isFresh() {
  if (!fs.existsSync(path.join(DIST, 'src/cli/main.js'))) return false;
  if (!fs.existsSync(SRC)) return true;
  let builtAt;
  try {
    builtAt = Number(fs.readFileSync(STAMP, 'utf8'));
  } catch {
    return false;
  }
  return newestInput() < builtAt;
}

function sourceFiles(dir, out = []) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sourceFiles(p, out);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every import stays an import (nothing is bundled); `./x.ts` becomes `./x.js`. */
const keepImports = {
  name: 'keep-imports',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point') return undefined;
      const rel = args.path.startsWith('.') && args.path.endsWith('.ts');
      return { path: rel ? `${args.path.slice(0, -3)}.js` : args.path, external: true };
    });
  },
};

/** Build into a fresh folder, then swap it in for dist/src, so a reader never sees half a build. */
export async function build() {
  const startedAt = Date.now();
  const { build: esbuild } = await import('esbuild');
  const next = path.join(DIST, `.next-${process.pid}`);
  fs.rmSync(next, { recursive: true, force: true });
  await esbuild({
    entryPoints: sourceFiles(SRC),
    outdir: path.join(next, 'src'),
    outbase: SRC,
    bundle: true,
    plugins: [keepImports],
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    logLevel: 'warning',
  });
  const old = path.join(DIST, `.old-${process.pid}`);
  if (fs.existsSync(path.join(DIST, 'src'))) fs.renameSync(path.join(DIST, 'src'), old);
  fs.renameSync(path.join(next, 'src'), path.join(DIST, 'src'));
  fs.rmSync(next, { recursive: true, force: true });
  fs.rmSync(old, { recursive: true, force: true });
  for (const dir of LINKED) {
    const link = path.join(DIST, dir);
    fs.rmSync(link, { recursive: true, force: true });
    fs.symlinkSync(path.join('..', dir), link);
  }
  fs.writeFileSync(STAMP, String(startedAt));
}

/** One build at a time (tests and terminals may start several processes at once): a lock folder. */
async function withLock(fn) {
  fs.mkdirSync(DIST, { recursive: true });
  for (let waited = 0; ; waited += 50) {
    try {
      fs.mkdirSync(LOCK);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      // A lock left by a build that died (it takes about a second) is taken over.
      const age = Date.now() - fs.statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs;
      if (age > 60_000) fs.rmSync(LOCK, { recursive: true, force: true });
      else if (waited > 30_000) throw new Error('another build of dist/ has held dist/.building for 30 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(LOCK, { recursive: true, force: true });
  }
}

/**
 * Make dist/ current: true when it is (built now or before), false when it cannot be built (e.g. a
 * read-only install), with the reason on stderr; the caller then runs the sources through tsx.
 */
export async function ensureBuilt() {
  if (isFresh()) return true;
  try {
    await withLock(async () => {
      if (!isFresh()) await build(); // another process may have built it while this one waited
    });
    return true;
  } catch (err) {
    process.stderr.write(`gatehouse: cannot build dist/ (${err.message.split('\n')[0]}); running the TypeScript sources through tsx\n`);
    return false;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await withLock(build);
}

#!/usr/bin/env node
// `gatehouse` (and `npm start`, which is `gatehouse serve`): runs the compiled JavaScript in dist/,
// rebuilding it first when src/ has changed since it was built (scripts/build.mjs), so it never runs
// code older than the checkout. When dist/ cannot be built (e.g. a read-only install) it runs the
// TypeScript sources through tsx instead, as it did before there was a build.
import module from 'node:module';
import { ensureBuilt } from '../scripts/build.mjs';

// Node 22.1+: V8 keeps the code it compiles for our modules and node_modules in a cache on disk
// (in the temporary folder), so every start after the first skips most of the compiling. Node 20 has
// no such cache; there this does nothing.
module.enableCompileCache?.();

const argv = process.argv.slice(2);
let cli;
if (await ensureBuilt()) {
  ({ cli } = await import('../dist/src/cli/main.js'));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ cli } = await import('../src/cli/main.ts'));
}
await cli(argv);

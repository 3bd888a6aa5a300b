#!/usr/bin/env node
// `gatehouse` (and `npm start`, which is `gatehouse serve`): runs the compiled JavaScript in dist/,
// rebuilding it first when src/ has changed since it was built (scripts/build.mjs), so it never runs
// code older than the checkout. When dist/ cannot be built (e.g. a read-only install) it runs the
// TypeScript sources through tsx instead, as it did before there was a build.
import { ensureBuilt } from '../scripts/build.mjs';

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

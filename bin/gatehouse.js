#!/usr/bin/env node
// Runs the TypeScript sources through tsx, so `npx gatehouse ...` works without a build step.
import { register } from 'tsx/esm/api';

register();
const { cli } = await import('../src/cli/main.ts');
await cli(process.argv.slice(2));

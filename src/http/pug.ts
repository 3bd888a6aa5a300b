// pug, loaded when the first page is rendered rather than at start: with the Babel parser it
// compiles templates with, it is a sixth of the code Gatehouse would otherwise load at start, which
// a server answering only tokens, and every CLI command, never needs (issue 16). pug is CommonJS, so
// the first render loads it synchronously, once.
import { createRequire } from 'node:module';
import type Pug from 'pug';

let loaded: typeof Pug | undefined;

export function pug(): typeof Pug {
  return (loaded ??= createRequire(import.meta.url)('pug') as typeof Pug);
}

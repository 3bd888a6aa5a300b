// Argument parsing shared by every admin command module (commands.ts, policy-commands.ts,
// connection-commands.ts). Kept apart from commands.ts so the command modules it imports can throw
// the same CommandError without an import cycle.
import { parseArgs } from 'node:util';

/** An operator mistake: the CLI prints the message and exits 2; the control socket answers 400. */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandError';
  }
}

export const many = { type: 'string', multiple: true } as const;
export const one = { type: 'string' } as const;
export const flag = { type: 'boolean' } as const;

/** node:util parseArgs, strict, with its errors as CommandError. */
export function parse<T extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CommandError((err as Error).message);
  }
}

/** "a,b c" and repeated flags both work for list options. */
export const splitList = (v: string[] | undefined) => (v ?? []).flatMap((s) => s.split(/[\s,]+/)).filter(Boolean);

// Argument parsing shared by every admin command module (commands.ts, policy-commands.ts,
// connection-commands.ts). Kept apart from commands.ts so the command modules it imports can throw
// the same CommandError without an import cycle.
import { parseArgs } from 'node:util';
import type { Audit } from '../audit/index.ts';

/** An operator mistake: the CLI prints the message and exits 2; the control socket answers 400. */
export class CommandError extends Error {
  /** The HTTP status the admin API answers with: 404 for "no such ...", 409 for a conflict, else 400. */
  readonly status: number;
  constructor(message: string, status?: number) {
    super(message);
    this.name = 'CommandError';
    this.status = status ?? (/^no (such )?[\w-]+( policy)? /i.test(message) ? 404 : /already|taken|exists|in use/i.test(message) ? 409 : 400);
  }
}

export const many = { type: 'string', multiple: true } as const;
export const one = { type: 'string' } as const;
export const flag = { type: 'boolean' } as const;

/**
 * Bind each string option to the argument after it (`--client-secret -x…` → `--client-secret=-x…`):
 * generated secrets and ids are base64url and may start with "-", which parseArgs would otherwise
 * call ambiguous.
 */
function bindValues(args: string[], options: Record<string, { type: 'string' | 'boolean' }>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const m = /^--([A-Za-z0-9-]+)$/.exec(args[i]);
    if (args[i] === '--') return [...out, ...args.slice(i)];
    if (m && options[m[1]]?.type === 'string' && i + 1 < args.length) {
      out.push(`${args[i]}=${args[i + 1]}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** node:util parseArgs, strict, with its errors as CommandError. */
export function parse<T extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(args: string[], options: T) {
  try {
    return parseArgs({ args: bindValues(args, options), options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CommandError((err as Error).message);
  }
}

/** "a,b c" and repeated flags both work for list options. */
export const splitList = (v: string[] | undefined) => (v ?? []).flatMap((s) => s.split(/[\s,]+/)).filter(Boolean);

/**
 * Who runs a command: the CLI (an operator at the machine, or over the control socket) unless the
 * admin API says otherwise (`user:<id>` or `client:<id>`, from the bearer token it verified).
 */
export interface CommandActor {
  actor?: string;
}

/** The audit event of an admin command, under its actor. */
export async function adminAudit(deps: { audit: Audit } & CommandActor, type: string, subject: string | null, details: Record<string, unknown> = {}) {
  await deps.audit.record({ type, actor: deps.actor ?? 'cli', subject, details });
}

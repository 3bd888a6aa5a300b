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

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const here = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = here;
    }
  }
  return row[b.length];
}

/** The known word closest to `word` (a typo, or a prefix of it), if one is close enough. */
export function closest(word: string, known: string[]): string | undefined {
  const prefixed = known.filter((k) => k.startsWith(word) && word.length >= 3);
  if (prefixed.length === 1) return prefixed[0];
  const scored = known.map((k) => ({ k, d: distance(word, k) })).sort((x, y) => x.d - y.d);
  return scored[0] && scored[0].d <= Math.max(1, Math.floor(word.length / 3)) ? scored[0].k : undefined;
}

/** node:util parseArgs, strict, with its errors as CommandError and a suggestion for an unknown option. */
export function parse<T extends Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>(args: string[], options: T) {
  try {
    return parseArgs({ args: bindValues(args, options), options, allowPositionals: true, strict: true });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const unknown = /^Unknown option '(-{1,2})([^'=]+)/.exec((err as Error).message);
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
      const guess = closest(unknown[2], Object.keys(options));
      throw new CommandError(`unknown option ${unknown[1]}${unknown[2]}${guess ? `; did you mean --${guess}?` : ''}`);
    }
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const name = /'?(--[A-Za-z0-9-]+)/.exec((err as Error).message)?.[1];
      throw new CommandError(name ? `${name} needs a value` : (err as Error).message);
    }
    throw new CommandError((err as Error).message);
  }
}

/** on|off for a setting an update can switch either way (also true/false, yes/no, 1/0). */
export function onOff(v: string | undefined, option: string): boolean | undefined {
  if (v === undefined) return undefined;
  if (['on', 'true', 'yes', '1'].includes(v)) return true;
  if (['off', 'false', 'no', '0'].includes(v)) return false;
  throw new CommandError(`--${option} takes on or off`);
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

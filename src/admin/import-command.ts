// `gatehouse user import FILE` and POST /admin/api/users/import (issue 18): the operator's door to
// src/accounts/import.ts. The file is read by the process that has it — the gatehouse command
// line opens FILE, the admin API reads its request body — and reaches the import as a stream, never
// as a path: the server opens no file an argument names (as with --jwks). In embedded mode with a
// server running, the command line streams the file over the control socket (POST /import).
import type http from 'node:http';
import type { Context } from 'koa';
import { HttpError } from '../http/errors.ts';
import { createUserImport, formatOfFileName, ImportFileError, type ImportFormat } from '../accounts/import.ts';
import type { Db } from '../store/db.ts';
import type { Audit } from '../audit/index.ts';
import { revokeUser, type UserRevocationDeps } from '../revocation/accounts.ts';
import { ADMIN_API_PATH } from './api-scopes.ts';
import { adminAudit, CommandError, flag, one, parse, type CommandActor } from './args.ts';

/** What the import needs, declared here (STYLE.md §4): its store, the audit log, and revocation. */
export type ImportCommandDeps = { db: Db; audit: Audit } & UserRevocationDeps & CommandActor;

export const IMPORT_USAGE = [
  '  user import FILE [--format jsonl|csv] [--dry-run] [--update]   (users from another system, with their ids and',
  '                password hashes: bcrypt, argon2, scrypt, PBKDF2; --update applies lines that differ; docs/migrate.md)',
];

/** POST here with the file as the body (src/admin/api.ts); the only route whose body is not capped by BODY_LIMIT. */
export const USER_IMPORT_PATH = `${ADMIN_API_PATH}/users/import`;

export const IMPORT_OPTIONS = { format: one, 'dry-run': flag, update: flag } as const;

/** The options of `user import` and the file it names (read by the caller, never here). */
export function importArguments(args: string[]) {
  const { values, positionals } = parse(args, IMPORT_OPTIONS);
  const file = positionals[0];
  if (positionals.length > 1) throw new CommandError('user import takes one FILE');
  if (values.format !== undefined && values.format !== 'jsonl' && values.format !== 'csv') throw new CommandError('--format is jsonl or csv');
  const format = (values.format as ImportFormat | undefined) ?? (file ? formatOfFileName(file) : undefined);
  return { file, format, dryRun: Boolean(values['dry-run']), update: Boolean(values.update) };
}

/** Import from `input` (the file's bytes); the report, audited by its counts (never its contents). */
export async function runUserImport(deps: ImportCommandDeps, args: string[], input: AsyncIterable<string | Buffer>) {
  const { file, format, dryRun, update } = importArguments(args);
  if (!format) throw new CommandError(`cannot tell the format of ${file ?? 'the input'}: name it .jsonl or .csv, or give --format jsonl|csv`);
  let report;
  try {
    report = await createUserImport(deps.db).importUsers(input, format, {
      dryRun,
      update,
      // A line that changed a password or disabled an account ends what the account held (as
      // `user set-password` and `user disable` do).
      afterCredentialsChange: (userId, reason) => revokeUser(userId, reason, deps),
    });
  } catch (err) {
    if (err instanceof ImportFileError) throw new CommandError(err.message);
    throw err;
  }
  if (!dryRun) {
    const { created, updated, unchanged, differs, refused, lines } = report;
    await adminAudit(deps, 'admin.user.import', null, { format, update, lines, created, updated, unchanged, differs, refused });
  }
  return report;
}

/** Commands for src/admin/commands.ts: reached with argv only, so there is no file to read. */
export const importCommands = {
  async 'user import'() {
    throw new CommandError('user import reads its FILE in the gatehouse command line (npx gatehouse user import FILE), or takes the file as the body of POST /admin/api/users/import');
  },
};

/**
 * POST /admin/api/users/import: the body is the file — `Content-Type: application/x-ndjson` (or
 * application/jsonl) or `text/csv`, or `?format=` — with `?dry_run=true` and `?update=true`.
 */
export async function importFromRequest(deps: ImportCommandDeps, ctx: Context) {
  const format = typeof ctx.query.format === 'string' ? ctx.query.format
    : ctx.is('text/csv') ? 'csv' : ctx.is('application/x-ndjson', 'application/jsonl', 'application/json-lines', 'application/x-jsonlines') ? 'jsonl' : undefined;
  if (!format) throw new HttpError(415, 'invalid_request', 'send the file as application/x-ndjson (JSON lines) or text/csv, or name it with ?format=jsonl|csv');
  const yes = (v: unknown) => v === 'true' || v === '1';
  const args = [`--format=${format}`, ...(yes(ctx.query.dry_run) ? ['--dry-run'] : []), ...(yes(ctx.query.update) ? ['--update'] : [])];
  return runUserImport(deps, args, ctx.req);
}

/** The control socket's POST /import: argv in a header, the file as the body. */
export async function serveControlImport(deps: ImportCommandDeps, req: http.IncomingMessage): Promise<{ status: number; body: unknown }> {
  let argv: unknown;
  try {
    argv = JSON.parse(decodeURIComponent(String(req.headers['x-gatehouse-argv'] ?? '[]')));
  } catch {
    argv = undefined;
  }
  if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string')) return { status: 400, body: { error: 'x-gatehouse-argv must be a URI-encoded JSON array of strings' } };
  try {
    return { status: 200, body: { result: await runUserImport(deps, argv, req) } };
  } catch (err) {
    if (err instanceof CommandError) return { status: 400, body: { error: err.message } };
    throw err;
  }
}

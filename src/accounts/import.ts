// Users brought over from a home-grown auth set-up (issue 18): one file, JSON lines or CSV, read as
// a stream; each line validated, then applied in its own transaction, so a bad line never leaves a
// half-written user and a stop halfway leaves every line before it complete. Reruns are
// idempotent: a line that matches its account is "unchanged"; one that differs is reported, and
// applied only with `update`. Knows no HTTP and no CLI (src/admin/import-command.ts is the door).
//
// Ids are kept: Gatehouse's user id is the `sub` of every token, and users.id is text, so the old
// system's id (an integer, an ObjectId, a UUID) becomes `sub` as it is and whatever was keyed by
// it (rows in the app's own tables, room names, an MCP server's data) keeps working.
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { Db, Queryable } from '../store/db.ts';
import { emailKey, parseEmail } from './email.ts';
import { importableHashKind, UnsupportedHashError } from './legacy-hashes.ts';

export type ImportFormat = 'jsonl' | 'csv';

export const IMPORT_FIELDS = ['id', 'email', 'email_verified', 'name', 'roles', 'password_hash', 'active', 'created_at'] as const;
type Field = (typeof IMPORT_FIELDS)[number];

/**
 * An id Gatehouse can use as `sub` everywhere it goes: LiveKit identities (`user_<sub>`) and the
 * room names made from them allow these characters (src/exchange/policy.ts ROOM_NAME).
 */
export const IMPORT_ID = /^[A-Za-z0-9][A-Za-z0-9_.:=@-]{0,127}$/;
/** A longer line is refused unread: no user record is anywhere near it. */
export const MAX_LINE_CHARS = 64 * 1024;
/** The report lists this many refusals and differences; past that it counts them. */
export const REPORT_LIST_LIMIT = 1000;

export interface ImportedUser {
  id?: string;
  email: string;
  name: string | null;
  emailVerified: boolean;
  active: boolean;
  roles: string[];
  passwordHash: string | null;
  createdAt?: Date;
}

export interface ImportOptions {
  dryRun?: boolean;
  /** Lines that differ from their account are applied (otherwise reported as `differs`). */
  update?: boolean;
  /** After a committed line that changed a password or disabled an account: end what it held. */
  afterCredentialsChange?: (userId: string, reason: 'password_change' | 'account_disabled') => Promise<void>;
}

export interface ImportReport {
  dry_run: boolean;
  update: boolean;
  lines: number;
  created: number;
  updated: number;
  unchanged: number;
  /** Differ from the account and were left as they are (rerun with update to apply). */
  differs: number;
  refused: number;
  /** Line number and reason; never a hash, a password or the line's content. */
  refusals: { line: number; id?: string; reason: string }[];
  /** The fields that differ (differs) or changed (updated), by line. */
  changes: { line: number; id: string; outcome: 'updated' | 'differs'; fields: string[] }[];
  not_listed?: number;
  /** The file could not be read past this line (broken CSV quoting): the lines before it count. */
  stopped?: { line: number; reason: string };
}

/** One line the import will not apply, and why (shown to the operator). */
export class LineRefused extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'LineRefused';
  }
}

/** The file as a whole cannot be imported (a CSV header naming unknown columns). Nothing was applied. */
export class ImportFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImportFileError';
  }
}

type RawLine = { line: number; fields: Record<string, unknown> } | { line: number; error: string } | { line: number; fatal: string };

async function* textLines(input: AsyncIterable<string | Buffer>): AsyncGenerator<{ line: number; text: string } | { line: number; error: string }> {
  const decoder = new StringDecoder('utf8');
  const tooLongError = `the line is longer than ${MAX_LINE_CHARS} characters`;
  let pending = '';
  let line = 0;
  // A line past the bound is counted to its end without being kept.
  let tooLong = false;
  function* drain(s: string, final: boolean) {
    let start = 0;
    for (let nl = s.indexOf('\n'); nl >= 0; nl = s.indexOf('\n', start)) {
      const piece = tooLong ? '' : pending + s.slice(start, nl);
      const refused = tooLong || piece.length > MAX_LINE_CHARS;
      pending = '';
      tooLong = false;
      start = nl + 1;
      line++;
      yield refused ? { line, error: tooLongError } : { line, text: piece.replace(/\r$/, '') };
    }
    if (!tooLong) pending += s.slice(start);
    if (pending.length > MAX_LINE_CHARS) {
      tooLong = true;
      pending = '';
    }
    if (final && (pending || tooLong)) {
      line++;
      yield tooLong ? { line, error: tooLongError } : { line, text: pending };
    }
  }
  for await (const chunk of input) yield* drain(typeof chunk === 'string' ? chunk : decoder.write(chunk), false);
  yield* drain(decoder.end(), true);
}

async function* jsonLines(input: AsyncIterable<string | Buffer>): AsyncGenerator<RawLine> {
  for await (const l of textLines(input)) {
    if ('error' in l) {
      yield l;
      continue;
    }
    const text = l.line === 1 ? l.text.replace(/^\uFEFF/, '') : l.text;
    if (!text.trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // The parser's message quotes the line; the line may hold a hash.
      yield { line: l.line, error: 'not valid JSON' };
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) yield { line: l.line, error: 'a line is one JSON object' };
    else yield { line: l.line, fields: value as Record<string, unknown> };
  }
}

async function* csvLines(input: AsyncIterable<string | Buffer>): AsyncGenerator<RawLine> {
  const { parse: parseCsv } = await import('csv-parse');
  const source = Readable.from(input);
  // A record csv-parse cannot read is skipped and reported by its line; the rest go on. A quote
  // inside an unquoted field is taken as a character (relax_quotes), as spreadsheets write it.
  const parser = source.pipe(parseCsv({ bom: true, skip_empty_lines: true, relax_column_count: true, skip_records_with_error: true, relax_quotes: true, info: true, max_record_size: MAX_LINE_CHARS }));
  // pipe() does not pass a failing source on (a request body cut off): the parser must end too.
  source.on('error', (err) => parser.destroy(err));
  const skipped: { line: number; code: string }[] = [];
  let last = 0;
  parser.on('skip', (err: { lines?: number; code?: string }) => {
    const line = err.lines ?? 0;
    if (skipped.at(-1)?.line !== line) skipped.push({ line, code: err.code ?? 'parse error' });
  });
  // csv-parse's messages can quote the field; its code and line say enough.
  const flush = function* (upTo: number): Generator<RawLine> {
    while (skipped.length && skipped[0].line <= upTo) {
      const { line, code } = skipped.shift()!;
      // An unclosed quote swallows the rest of the file: nothing after it can be read. It opened on
      // the line after the last record read (csv-parse names the line where the file ended).
      yield code === 'CSV_QUOTE_NOT_CLOSED' ? { line: last + 1, fatal: 'a quoted CSV field is not closed' } : { line, error: `the line cannot be read as CSV (${code})` };
    }
  };
  let header: string[] | undefined;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      yield* flush(info.lines - 1);
      last = info.lines;
      if (!header) {
        header = record.map((h) => h.trim());
        const unknown = header.filter((h) => !(IMPORT_FIELDS as readonly string[]).includes(h));
        if (unknown.length) throw new ImportFileError(`unknown CSV column${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (the columns are ${IMPORT_FIELDS.join(', ')})`);
        if (!header.includes('email')) throw new ImportFileError('the CSV header has no email column');
        continue;
      }
      if (record.length !== header.length) {
        yield { line: info.lines, error: `the line has ${record.length} fields, the header ${header.length}` };
        continue;
      }
      // An empty CSV field is an absent value.
      yield { line: info.lines, fields: Object.fromEntries(header.map((h, i) => [h, record[i]]).filter(([, v]) => v !== '')) };
    }
    yield* flush(Infinity);
  } catch (err) {
    if (err instanceof ImportFileError) throw err;
    const e = err as { code?: string; lines?: number };
    yield { line: e.lines ?? last + 1, fatal: `the CSV cannot be read here (${e.code ?? 'the input ended with an error'})` };
  } finally {
    parser.destroy();
    source.destroy();
  }
}

/** The lines of an import file, as fields or as a reason the line cannot be read. */
export function readImportFile(input: AsyncIterable<string | Buffer>, format: ImportFormat): AsyncGenerator<RawLine> {
  return format === 'csv' ? csvLines(input) : jsonLines(input);
}

/** `users.csv` → csv, `users.jsonl` / `.ndjson` / `.json` → jsonl; undefined when the name does not say. */
export function formatOfFileName(name: string): ImportFormat | undefined {
  if (/\.csv$/i.test(name)) return 'csv';
  if (/\.(jsonl|ndjson|json)$/i.test(name)) return 'jsonl';
  return undefined;
}

const refuse = (reason: string): never => {
  throw new LineRefused(reason);
};

// One line of text PostgreSQL can store as given: no control characters (NUL included), no unpaired
// surrogates (a JSON \ud800 escape), and not a file's invalid UTF-8 (read as U+FFFD).
const NOT_TEXT = /[\p{Cc}\ud800-\udfff\ufffd]/u;

function text(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') return refuse(`${field} must be a string`);
  if (NOT_TEXT.test(v)) return refuse(`${field} must be one line of valid UTF-8 text without control characters`);
  return v;
}

function bool(v: unknown, field: Field, fallback: boolean): boolean {
  if (v === undefined || v === null || v === '') return fallback;
  if (typeof v === 'boolean') return v;
  if (v === 1 || v === 0) return v === 1;
  // CSV spellings, PostgreSQL's COPY (t/f) included.
  const s = typeof v === 'string' ? v.trim().toLowerCase() : '';
  if (['true', 't', '1', 'yes', 'y'].includes(s)) return true;
  if (['false', 'f', '0', 'no', 'n'].includes(s)) return false;
  return refuse(`${field} must be true or false`);
}

/** One line's fields as a user to import, or LineRefused naming the first problem. */
export function validateLine(fields: Record<string, unknown>): ImportedUser {
  const unknown = Object.keys(fields).filter((k) => !(IMPORT_FIELDS as readonly string[]).includes(k));
  if (unknown.length) refuse(`unknown field${unknown.length > 1 ? 's' : ''} ${unknown.slice(0, 5).join(', ')} (the fields are ${IMPORT_FIELDS.join(', ')})`);

  let id: string | undefined;
  if (typeof fields.id === 'number') {
    if (!Number.isSafeInteger(fields.id) || fields.id < 0) refuse('id must be a non-negative integer or a string');
    id = String(fields.id);
  } else {
    id = text(fields.id, 'id')?.trim();
  }
  if (id !== undefined && !IMPORT_ID.test(id)) refuse('id must be 1–128 letters, digits or _ . : = @ -, starting with a letter or digit');

  const rawEmail = text(fields.email, 'email');
  if (rawEmail === undefined) refuse('email is missing');
  const email = parseEmail(rawEmail);
  if (!email) return refuse('email is not an address');

  const name = text(fields.name, 'name')?.trim() || null;
  if (name && name.length > 256) refuse('name is longer than 256 characters');

  let roles: string[] = ['user'];
  if (fields.roles !== undefined && fields.roles !== null && fields.roles !== '') {
    const list = Array.isArray(fields.roles) ? fields.roles : typeof fields.roles === 'string' ? fields.roles.split(/[\s,;]+/) : refuse('roles must be a list of role names');
    if (!list.every((r): r is string => typeof r === 'string')) refuse('roles must be a list of role names');
    list.forEach((r) => text(r, 'roles'));
    roles = [...new Set(list.map((r) => r.trim()).filter(Boolean))].sort();
    if (roles.length > 100) refuse('more than 100 roles');
  }

  const passwordHash = text(fields.password_hash, 'password_hash')?.trim() || null;
  if (passwordHash) {
    try {
      importableHashKind(passwordHash);
    } catch (err) {
      if (err instanceof UnsupportedHashError) refuse(`password_hash: ${err.message}`);
      throw err;
    }
  }

  let createdAt: Date | undefined;
  const created = text(fields.created_at, 'created_at');
  if (created !== undefined) {
    createdAt = new Date(created);
    if (Number.isNaN(createdAt.getTime())) refuse('created_at is not a date (ISO 8601, e.g. 2025-03-01T12:00:00Z)');
  }

  return {
    ...(id !== undefined ? { id } : {}),
    email: email.address,
    name,
    emailVerified: bool(fields.email_verified, 'email_verified', false),
    active: bool(fields.active, 'active', true),
    roles,
    passwordHash,
    ...(createdAt ? { createdAt } : {}),
  };
}

/**
 * The digest kept of an imported hash (user_imports.password_hash_sha256): it recognises the same
 * hash in a rerun after Gatehouse replaced it at the user's first sign-in. It cannot check a
 * password (the salt is not in it).
 */
const digestOf = (hash: string) => crypto.createHash('sha256').update(hash).digest('hex');

interface ExistingUser {
  id: string;
  email: string;
  email_key: string;
  name: string | null;
  active: boolean;
  email_verified: boolean;
  password_hash: string | null;
  roles: string[];
  password_hash_sha256: string | null;
  is_admin: boolean;
}

/** The accounts with the line's id and with its address (one, two or none), in one query. */
async function findExisting(q: Queryable, id: string | undefined, key: string, lock: boolean) {
  const { rows } = await q.query<ExistingUser>(
    `SELECT u.id, u.email, u.email_key, u.name, u.active, u.email_verified, u.password_hash, i.password_hash_sha256,
            ARRAY(SELECT role FROM user_roles WHERE user_id = u.id ORDER BY role) AS roles,
            EXISTS (SELECT 1 FROM user_roles WHERE user_id = u.id AND role = 'admin') AS is_admin
       FROM users u LEFT JOIN user_imports i ON i.user_id = u.id
      WHERE u.id = $1 OR u.email_key = $2${lock ? ' FOR UPDATE OF u' : ''}`,
    [id ?? null, key],
  );
  return { byId: id === undefined ? undefined : rows.find((r) => r.id === id), byEmail: rows.find((r) => r.email_key === key) };
}

/** What differs between the account and the line. A line without a hash never removes a password. */
function differences(current: ExistingUser, u: ImportedUser): string[] {
  const fields: string[] = [];
  if (current.email !== u.email) fields.push('email');
  if ((current.name ?? null) !== u.name) fields.push('name');
  if (current.email_verified !== u.emailVerified) fields.push('email_verified');
  if (current.active !== u.active) fields.push('active');
  if ([...current.roles].sort().join(' ') !== u.roles.join(' ')) fields.push('roles');
  // The same hash, or the hash this account was imported with and has since replaced (rehashed at
  // sign-in, or a new password set in Gatehouse): the password is what Gatehouse has.
  if (u.passwordHash && current.password_hash !== u.passwordHash && current.password_hash_sha256 !== digestOf(u.passwordHash)) fields.push('password_hash');
  return fields;
}

type Outcome =
  | { outcome: 'created'; id: string }
  | { outcome: 'unchanged'; id: string }
  | { outcome: 'differs' | 'updated'; id: string; fields: string[] };

/** What a line would do to the accounts found for it, or LineRefused. */
function decide(found: { byId?: ExistingUser; byEmail?: ExistingUser }, u: ImportedUser, update: boolean): { outcome: 'create' } | { outcome: 'unchanged'; current: ExistingUser } | { outcome: 'differs' | 'update'; current: ExistingUser; fields: string[] } {
  const { byId, byEmail } = found;
  if (byEmail && byId && byEmail.id !== byId.id) refuse(`the address is account ${byEmail.id}'s (the same address once normalised), not ${byId.id}'s`);
  if (byEmail && !byId && u.id) refuse(`the address is account ${byEmail.id}'s (the same address once normalised); no account has id ${u.id}`);
  const current = byId ?? byEmail;
  if (!current) return { outcome: 'create' };
  const fields = differences(current, u);
  if (!fields.length) return { outcome: 'unchanged', current };
  return { outcome: update ? 'update' : 'differs', current, fields };
}

function isUniqueViolation(err: unknown) {
  return (err as { code?: string })?.code === '23505';
}

export function createUserImport(db: Db) {
  // Role names are checked against this, read once per import and again only for a name it lacks.
  let knownRoles: Set<string> | undefined;
  async function assertRoles(roles: string[]) {
    const missing = () => roles.filter((r) => !knownRoles!.has(r));
    if (!knownRoles || missing().length) knownRoles = new Set((await db.query<{ name: string }>('SELECT name FROM roles')).rows.map((r) => r.name));
    const unknown = missing();
    if (unknown.length) refuse(`unknown role${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (gatehouse role create NAME makes one)`);
  }

  async function assertKeepsAnAdmin(q: Queryable, current: ExistingUser, u: ImportedUser) {
    if (!current.is_admin || !current.active || (u.active && u.roles.includes('admin'))) return;
    const { rows } = await q.query(
      "SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id AND r.role = 'admin' WHERE u.active AND u.id <> $1 LIMIT 1",
      [current.id],
    );
    if (!rows.length) refuse('the line would leave Gatehouse with no active administrator');
  }

  /** The account, its roles and its import record in one statement: all of it or, on a conflict, none. */
  async function insert(u: ImportedUser, key: string): Promise<string> {
    const id = u.id ?? crypto.randomUUID();
    await db.query(
      `WITH made AS (
         INSERT INTO users (id, email, email_key, name, password_hash, email_verified, active, created_at, password_changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8::timestamptz, now()), CASE WHEN $5::text IS NULL THEN NULL ELSE now() END)
         RETURNING id),
       given AS (INSERT INTO user_roles (user_id, role) SELECT made.id, r FROM made, unnest($9::text[]) AS r)
       INSERT INTO user_imports (user_id, password_hash_sha256) SELECT made.id, $10 FROM made`,
      [id, u.email, key, u.name, u.passwordHash, u.emailVerified, u.active, u.createdAt ?? null, u.roles, u.passwordHash ? digestOf(u.passwordHash) : null],
    );
    return id;
  }

  async function update(q: Queryable, current: ExistingUser, u: ImportedUser, key: string, fields: string[]) {
    const password = fields.includes('password_hash');
    await q.query(
      `UPDATE users SET email = $2, email_key = $3, name = $4, email_verified = $5, active = $6, updated_at = now()
         ${password ? ', password_hash = $7, password_changed_at = now()' : ''} WHERE id = $1`,
      [current.id, u.email, key, u.name, u.emailVerified, u.active, ...(password ? [u.passwordHash] : [])],
    );
    if (fields.includes('roles')) {
      await q.query('DELETE FROM user_roles WHERE user_id = $1', [current.id]);
      await q.query('INSERT INTO user_roles (user_id, role) SELECT $1, unnest($2::text[])', [current.id, u.roles]);
    }
    await q.query(
      `INSERT INTO user_imports (user_id, password_hash_sha256) VALUES ($1, $2)
       ON CONFLICT (user_id) DO UPDATE SET password_hash_sha256 = COALESCE(EXCLUDED.password_hash_sha256, user_imports.password_hash_sha256), updated_at = now()`,
      [current.id, u.passwordHash ? digestOf(u.passwordHash) : null],
    );
  }

  /**
   * One validated line against the database. A dry run only reads. A new account is one statement;
   * a change is one transaction that reads the account again under a row lock and decides again,
   * so what it writes is decided on what is there.
   */
  async function applyLine(u: ImportedUser, opts: ImportOptions): Promise<Outcome> {
    const key = emailKey(u.email);
    await assertRoles(u.roles);
    const first = decide(await findExisting(db, u.id, key, false), u, Boolean(opts.update));
    if (first.outcome === 'unchanged' || first.outcome === 'differs') return first.outcome === 'differs' ? { outcome: 'differs', id: first.current.id, fields: first.fields } : { outcome: 'unchanged', id: first.current.id };
    try {
      if (first.outcome === 'create') return { outcome: 'created', id: opts.dryRun ? (u.id ?? '(new)') : await insert(u, key) };
      if (opts.dryRun) {
        await assertKeepsAnAdmin(db, first.current, u);
        return { outcome: 'updated', id: first.current.id, fields: first.fields };
      }
      return await db.transaction(async (tx): Promise<Outcome> => {
        const now = decide(await findExisting(tx, u.id, key, true), u, true);
        if (now.outcome === 'create') refuse('the account went away while the line was applied; run the import again');
        if (now.outcome !== 'update') return { outcome: 'unchanged', id: (now as { current: ExistingUser }).current.id };
        await assertKeepsAnAdmin(tx, now.current, u);
        await update(tx, now.current, u, key, now.fields);
        return { outcome: 'updated', id: now.current.id, fields: now.fields };
      });
    } catch (err) {
      // Another import or a sign-up made the account between our read and our write.
      if (isUniqueViolation(err)) refuse('the id or address was taken while the line was applied; run the import again');
      throw err;
    }
  }

  /** Read, validate and apply every line of `input`, in order; the report says what became of each. */
  async function importUsers(input: AsyncIterable<string | Buffer>, format: ImportFormat, opts: ImportOptions = {}): Promise<ImportReport> {
    knownRoles = undefined;
    const report: ImportReport = {
      dry_run: Boolean(opts.dryRun), update: Boolean(opts.update), lines: 0,
      created: 0, updated: 0, unchanged: 0, differs: 0, refused: 0, refusals: [], changes: [],
    };
    let unlisted = 0;
    const list = <T>(to: T[], entry: T) => (to.length < REPORT_LIST_LIMIT ? to.push(entry) : unlisted++);
    // Two lines for one account would make a dry run and a real run disagree: the second is refused.
    const seenIds = new Map<string, number>();
    const seenKeys = new Map<string, number>();
    for await (const raw of readImportFile(input, format)) {
      if ('fatal' in raw) {
        report.stopped = { line: raw.line, reason: raw.fatal };
        break;
      }
      report.lines++;
      // The line's id, when it is one, names the line in the report.
      const rawId = 'fields' in raw ? raw.fields.id : undefined;
      let id = (typeof rawId === 'string' || typeof rawId === 'number') && IMPORT_ID.test(String(rawId)) ? String(rawId) : undefined;
      try {
        if ('error' in raw) refuse(raw.error);
        const u = validateLine((raw as { fields: Record<string, unknown> }).fields);
        const key = emailKey(u.email);
        const twin = (u.id !== undefined ? seenIds.get(u.id) : undefined) ?? seenKeys.get(key);
        if (twin !== undefined) refuse(`line ${twin} has the same ${seenKeys.get(key) === twin ? 'address (once normalised)' : 'id'}`);
        if (u.id !== undefined) seenIds.set(u.id, raw.line);
        seenKeys.set(key, raw.line);
        const result = await applyLine(u, opts);
        report[result.outcome]++;
        if (result.outcome === 'updated' || result.outcome === 'differs') list(report.changes, { line: raw.line, id: result.id, outcome: result.outcome, fields: result.fields });
        if (result.outcome === 'updated' && !opts.dryRun && opts.afterCredentialsChange) {
          if (result.fields.includes('password_hash')) await opts.afterCredentialsChange(result.id, 'password_change');
          else if (result.fields.includes('active') && !u.active) await opts.afterCredentialsChange(result.id, 'account_disabled');
        }
      } catch (err) {
        if (!(err instanceof LineRefused)) throw err;
        report.refused++;
        list(report.refusals, { line: raw.line, ...(id !== undefined ? { id } : {}), reason: err.message });
      }
    }
    if (unlisted) report.not_listed = unlisted;
    return report;
  }

  return { importUsers };
}

export type UserImport = ReturnType<typeof createUserImport>;

// Numbered SQL files in migrations/, applied in order, each in its own transaction and recorded
// in schema_migrations. The same files run on PostgreSQL and PGlite. A failure throws; callers exit non-zero.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db, Queryable } from './db.ts';
import { keyStoredEmails } from '../accounts/email.ts';

export const MIGRATIONS_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

export class MigrationError extends Error {
  constructor(file: string, cause: unknown) {
    super(`migration ${file} failed: ${(cause as Error)?.message ?? cause}`);
    this.name = 'MigrationError';
  }
}

/**
 * Data changes SQL cannot make the same way on every PostgreSQL and PGlite, run right after their
 * file, in its transaction: the file and its step commit together or not at all.
 */
export const CODE_STEPS: Record<string, (tx: Queryable) => Promise<void>> = {
  // Unicode normalisation and case folding as the code does them (no locale, no ICU needed).
  '010_email_key.sql': keyStoredEmails,
};

export async function migrate(db: Db, dir = MIGRATIONS_DIR, steps = CODE_STEPS): Promise<string[]> {
  await db.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
  const done = new Set(
    (await db.query<{ version: string }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version),
  );
  const files = fs.readdirSync(dir).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  for (const file of files) {
    if (done.has(file)) continue;
    const sql = fs.readFileSync(path.join(dir, file), 'utf8');
    try {
      await db.transaction(async (tx) => {
        // Several processes may start at once on one PostgreSQL: take a transaction-scoped lock.
        if (db.kind === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(724310)');
        const again = await tx.query('SELECT 1 FROM schema_migrations WHERE version = $1', [file]);
        if (again.rowCount > 0) return;
        for (const stmt of splitSql(sql)) await tx.query(stmt);
        await steps[file]?.(tx);
        await tx.query('INSERT INTO schema_migrations (version) VALUES ($1)', [file]);
        applied.push(file);
      });
    } catch (err) {
      throw new MigrationError(file, err);
    }
  }
  return applied;
}

/**
 * Split on semicolons at line ends, except inside a dollar-quoted body (`$$ … $$`, a function's),
 * whose statements end in semicolons of their own.
 */
export function splitSql(sql: string): string[] {
  const out: string[] = [];
  let current = '';
  for (const [i, part] of sql.replace(/^\s*--.*$/gm, '').split('$$').entries()) {
    if (i % 2 === 1) {
      current += `$$${part}$$`;
      continue;
    }
    const pieces = part.split(/;\s*$/m);
    current += pieces[0];
    for (const piece of pieces.slice(1)) {
      out.push(current);
      current = piece;
    }
  }
  out.push(current);
  return out.map((s) => s.trim()).filter(Boolean);
}

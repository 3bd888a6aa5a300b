// The migration runner: numbered SQL files applied in order, each in its own transaction and
// recorded in schema_migrations, on PGlite and (with REQUIRE_SERVICES=1) PostgreSQL; and
// `gatehouse migrate` / start-up exit non-zero, naming the file, when one fails.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createPgDb, createPgliteDb, type Db } from '../src/store/db.ts';
import { migrate, MigrationError, MIGRATIONS_DIR } from '../src/store/migrate.ts';
import { createTestPgDatabase, servicesFor } from './helpers/databases.ts';
import { ROOT } from './helpers/process.ts';

const tmpDirs: string[] = [];
const tmpDir = (prefix: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A migrations folder holding exactly these files. */
function migrationsDir(files: Record<string, string>): string {
  const dir = tmpDir('gh-migrations-');
  for (const [name, sql] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), sql);
  return dir;
}

const versions = async (db: Db) =>
  (await db.query<{ version: string }>('SELECT version FROM schema_migrations ORDER BY version')).rows.map((r) => r.version);
const tableExists = async (db: Db, name: string) =>
  (await db.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [name])).rows[0].t !== null;

const engines: { name: string; run: boolean; open(): Promise<{ db: Db; drop(): Promise<void> }> }[] = [
  { name: 'pglite', run: true, open: async () => ({ db: await createPgliteDb(), drop: async () => {} }) },
  {
    name: 'postgres',
    run: await servicesFor('postgres'),
    async open() {
      const t = await createTestPgDatabase();
      return { db: createPgDb(t.url), drop: t.drop };
    },
  },
];

describe.each(engines)('migrate ($name)', ({ run, open }) => {
  if (!run) {
    it.skip('PostgreSQL unavailable (set REQUIRE_SERVICES=1 to require it)', () => {});
    return;
  }
  let current: { db: Db; drop(): Promise<void> } | undefined;
  const fresh = async () => (current = await open()).db;
  afterEach(async () => {
    await current?.db.close();
    await current?.drop();
    current = undefined;
  });

  it("applies the repository's migrations once, in order, and records each", async () => {
    const db = await fresh();
    const files = fs.readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
    expect(files.length).toBeGreaterThan(0);
    expect(await migrate(db)).toEqual(files);
    expect(await versions(db)).toEqual(files);
    for (const table of ['users', 'clients', 'oidc_payloads', 'signing_keys', 'audit_events']) expect(await tableExists(db, table), table).toBe(true);
    // A second run (the next start, or `gatehouse migrate`) applies nothing.
    expect(await migrate(db)).toEqual([]);
    expect(await versions(db)).toEqual(files);
  });

  it('applies files in numeric order, and ignores files that are not numbered SQL', async () => {
    const db = await fresh();
    const dir = migrationsDir({
      '002_second.sql': 'INSERT INTO mig_order (n) VALUES (2);',
      '001_first.sql': '-- a comment line\nCREATE TABLE mig_order (n int);\nINSERT INTO mig_order (n) VALUES (1);',
      'README.md': 'not SQL',
      'draft.sql': 'THIS IS NOT SQL;',
    });
    expect(await migrate(db, dir)).toEqual(['001_first.sql', '002_second.sql']);
    expect((await db.query<{ n: number }>('SELECT n FROM mig_order ORDER BY n')).rows.map((r) => r.n)).toEqual([1, 2]);
  });

  it('rolls a failing file back whole, records nothing for it, and names it; fixed, only it runs', async () => {
    const db = await fresh();
    const ok = 'CREATE TABLE mig_a (id int);';
    const dir = migrationsDir({
      '001_ok.sql': ok,
      // The first statement succeeds, the second fails: the transaction must take both back.
      '002_bad.sql': 'CREATE TABLE mig_b (id int);\nINSERT INTO mig_missing VALUES (1);',
      '003_after.sql': 'CREATE TABLE mig_c (id int);',
    });
    const err = await migrate(db, dir).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as Error).message).toMatch(/^migration 002_bad\.sql failed: .*mig_missing/);
    expect(await versions(db)).toEqual(['001_ok.sql']);
    expect(await tableExists(db, 'mig_a')).toBe(true);
    expect(await tableExists(db, 'mig_b')).toBe(false);
    // Nothing after the failure ran.
    expect(await tableExists(db, 'mig_c')).toBe(false);

    fs.writeFileSync(path.join(dir, '002_bad.sql'), 'CREATE TABLE mig_b (id int);');
    expect(await migrate(db, dir)).toEqual(['002_bad.sql', '003_after.sql']);
    expect(await versions(db)).toEqual(['001_ok.sql', '002_bad.sql', '003_after.sql']);
  });

  it('010 keys stored e-mails with the one normalisation and keeps every account when two became one address', async () => {
    const db = await fresh();
    // The schema before 010, with users the old rules (unique lower(email)) let in.
    const before = Object.fromEntries(fs.readdirSync(MIGRATIONS_DIR).filter((f) => /^00\d_.+\.sql$/.test(f)).map((f) => [f, fs.readFileSync(path.join(MIGRATIONS_DIR, f), 'utf8')]));
    await migrate(db, migrationsDir(before));
    const users = [
      ['u1', 'Alice@Example.com', '2020-01-01'],
      ['u2', 'Straße@example.com', '2020-01-02'],
      ['u3', 'STRASSE@example.com', '2020-01-03'], // younger, plain ASCII: gives way to u2
      ['u4', 'ａｌｉｃｅ@example.com', '2020-01-04'], // fullwidth: the same address as u1, younger
      ['u5', 'İlker@example.com', '2020-01-05'],
    ];
    for (const [id, email, at] of users) await db.query('INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)', [id, email, at]);
    // 010 and every migration after it (011 onwards belong to other features).
    expect(await migrate(db)).toEqual(fs.readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.sql$/.test(f) && f >= '010').sort());
    const { rows } = await db.query<{ id: string; email: string; email_key: string }>('SELECT id, email, email_key FROM users ORDER BY id');
    expect(rows).toEqual([
      { id: 'u1', email: 'Alice@Example.com', email_key: 'alice@example.com' },
      { id: 'u2', email: 'Straße@example.com', email_key: 'strasse@example.com' },
      { id: 'u3', email: 'STRASSE@example.com', email_key: 'conflict:u3' },
      { id: 'u4', email: 'ａｌｉｃｅ@example.com', email_key: 'conflict:u4' },
      { id: 'u5', email: 'İlker@example.com', email_key: 'i\u0307lker@example.com' },
    ]);
    // lower() had made İlker and ilker one address on this locale; the key makes them two.
    await db.query("INSERT INTO users (id, email, email_key) VALUES ('u6', 'ilker@example.com', 'ilker@example.com')");
    const audit = await db.query<{ subject: string; details: { kept_by: string } }>("SELECT subject, details FROM audit_events WHERE type = 'account.email_conflict' ORDER BY subject");
    expect(audit.rows.map((r) => [r.subject, r.details.kept_by])).toEqual([['u3', 'u2'], ['u4', 'u1']]);
    // The stored key is the one unique, required column; lower(email) is gone.
    await expect(db.query("INSERT INTO users (id, email, email_key) VALUES ('u7', 'x@example.com', 'alice@example.com')")).rejects.toThrow(/unique|duplicate/i);
    await expect(db.query("INSERT INTO users (id, email) VALUES ('u8', 'y@example.com')")).rejects.toThrow(/null/i);
    expect((await db.query("SELECT 1 FROM pg_indexes WHERE indexname = 'users_email_lower'")).rows).toHaveLength(0);
  });
});

describe('gatehouse migrate and start-up (embedded, own processes)', () => {
  // bin/gatehouse.js is the `gatehouse` command npm installs (and the Dockerfile's CMD, with `serve`).
  const gatehouse = (env: Record<string, string>, ...argv: string[]) =>
    spawnSync(process.execPath, ['bin/gatehouse.js', ...argv], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: 'warn', ...env }, encoding: 'utf8', timeout: 60_000 });

  it('applies the migrations to DATA_DIR and prints them as JSON; a second run applies none', async () => {
    const env = { DATA_DIR: tmpDir('gh-migrate-ok-') };
    const first = gatehouse(env, 'migrate');
    expect(first.status, first.stderr).toBe(0);
    const files = fs.readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
    expect(JSON.parse(first.stdout)).toEqual({ applied: files });
    const second = gatehouse(env, 'migrate');
    expect(second.status, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout)).toEqual({ applied: [] });
  }, 90_000);

  it('a failing migration exits non-zero with the file named, from `gatehouse migrate` and `gatehouse serve`', async () => {
    // A database someone else already put a `users` table in: 001_core.sql cannot create its own.
    const dataDir = tmpDir('gh-migrate-fail-');
    const db = await createPgliteDb(dataDir);
    await db.query('CREATE TABLE users (id int)');
    await db.close();

    const cli = gatehouse({ DATA_DIR: dataDir }, 'migrate');
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/migration 001_core\.sql failed: .*users/);
    expect(cli.stdout).toBe('');

    const start = gatehouse({ DATA_DIR: dataDir, PORT: '0' }, 'serve');
    expect(start.status).toBe(1);
    expect(start.stderr).toMatch(/migration 001_core\.sql failed/);

    // Rolled back whole: nothing of 001_core.sql is left behind, and it is not recorded.
    const after = await createPgliteDb(dataDir);
    try {
      expect(await tableExists(after, 'oidc_payloads')).toBe(false);
      expect(await versions(after)).toEqual([]);
    } finally {
      await after.close();
    }
  }, 90_000);
});

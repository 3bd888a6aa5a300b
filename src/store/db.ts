// One query interface over node-postgres (production) and PGlite (embedded).
// Consumers declare what they need as functions over `Queryable`; nothing else knows which engine runs.
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { asUnavailable } from './errors.ts';

export interface QueryResult<T> {
  rows: T[];
  rowCount: number;
}

export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<T>>;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Run fn inside one transaction; it commits when fn resolves and rolls back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  ping(): Promise<void>;
  /**
   * LISTEN on `channel`: `handler` gets each NOTIFY payload sent after a commit. `onState(false)` when
   * the listening connection is lost (notifications may be missed from then on), `onState(true)` once
   * it listens again. Returns a function that stops listening.
   */
  listen(channel: string, handler: (payload: string) => void, onState?: (listening: boolean) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** How often the listening connection proves it is alive: a link that died silently is replaced. */
const LISTEN_PROBE_MS = 10_000;

// Timestamps come back as Date on both engines; bigint counts as number (our counts are small).
pg.types.setTypeParser(20, (v) => Number(v));

export interface PgOptions {
  max?: number;
  /**
   * Bound on waiting for a connection, on a statement in the server (statement_timeout) and on the
   * reply over the wire (query_timeout): a database that is down or hung gives a 503 in about this
   * time, never a request that hangs. Default 5 s.
   */
  timeoutMs?: number;
}

export function createPgDb(url: string, opts: PgOptions = {}): Db {
  const timeout = opts.timeoutMs ?? 5000;
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    connectionTimeoutMillis: timeout,
    statement_timeout: timeout,
    // The client-side bound is a little longer, so a slow statement ends with the server's 57014.
    query_timeout: timeout + 1000,
    // A transaction left open by a lost client must not hold its locks for long.
    idle_in_transaction_session_timeout: 4 * timeout,
    keepAlive: true,
  });
  // An idle client losing its connection must not crash the process; the pool drops it and the next
  // query opens a new one, so the store recovers by itself once PostgreSQL is back.
  pool.on('error', () => {});
  const db: Db = {
    kind: 'postgres',
    async query<T>(sql: string, params?: unknown[]) {
      try {
        const r = await pool.query(sql, params as unknown[]);
        return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
      } catch (err) {
        throw asUnavailable(err, 'database');
      }
    },
    async transaction<T>(fn: (tx: Queryable) => Promise<T>) {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw asUnavailable(err, 'database');
      }
      let broken: Error | undefined;
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          async query<R>(sql: string, params?: unknown[]) {
            const r = await client.query(sql, params as unknown[]);
            return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
          },
        };
        const out = await fn(tx);
        await client.query('COMMIT');
        return out;
      } catch (err) {
        // A lost connection rolls back on the server by itself; the client is not reused.
        await client.query('ROLLBACK').catch((e: Error) => { broken = e; });
        const mapped = asUnavailable(err, 'database');
        if (mapped !== err) broken ??= err as Error;
        throw mapped;
      } finally {
        client.release(broken);
      }
    },
    async ping() {
      await db.query('SELECT 1');
    },
    listen: (channel, handler, onState) => listenOnOwnConnection({ url, timeout }, channel, handler, onState),
    async close() {
      await pool.end();
    },
  };
  return db;
}

/**
 * PostgreSQL's memory settings for the embedded database, which lives inside this process: its
 * defaults (shared_buffers 128MB, touched in full at start) would be most of the process's memory.
 * The embedded database is small and its files stay in the OS page cache, so a small buffer pool
 * costs little. PGlite's own start parameters come first; later `-c` settings win.
 */
const PGLITE_START_PARAMS = [
  ...PGlite.defaultStartParams,
  '-c', 'shared_buffers=8MB', '-c', 'work_mem=2MB', '-c', 'maintenance_work_mem=8MB',
  '-c', 'temp_buffers=1MB', '-c', 'wal_buffers=256kB', '-c', 'max_connections=5',
];

/**
 * LISTEN needs a session of its own (a pooled connection is handed to other queries), so it gets a
 * dedicated client, reconnected with backoff when it is lost and probed so a silently dead link is
 * noticed. Resolves once the first attempt has listened or failed; keeps trying in the background.
 */
async function listenOnOwnConnection(opts: { url: string; timeout: number }, channel: string, handler: (payload: string) => void,
  onState: (listening: boolean) => void = () => {}): Promise<() => Promise<void>> {
  let closed = false;
  let client: pg.Client | undefined;
  let probe: NodeJS.Timeout | undefined;
  let firstAttempt!: () => void;
  const attempted = new Promise<void>((r) => { firstAttempt = r; });
  const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
  (async function keepListening() {
    let delay = 100;
    while (!closed) {
      const c = new pg.Client({ connectionString: opts.url, connectionTimeoutMillis: opts.timeout, query_timeout: opts.timeout, keepAlive: true });
      c.on('error', () => {}); // 'end' follows; handled below
      const ended = new Promise<void>((r) => c.once('end', () => r()));
      try {
        await c.connect();
        c.on('notification', (n) => { if (n.channel === channel) handler(n.payload ?? ''); });
        await c.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      } catch {
        await c.end().catch(() => {});
        firstAttempt();
        await sleep(delay);
        delay = Math.min(delay * 2, 5000);
        continue;
      }
      client = c;
      delay = 100;
      onState(true);
      firstAttempt();
      probe = setInterval(() => {
        c.query('SELECT 1').catch(() => c.end().catch(() => {}));
      }, LISTEN_PROBE_MS);
      probe.unref();
      await ended;
      clearInterval(probe);
      client = undefined;
      if (!closed) onState(false);
    }
  })();
  await attempted;
  return async () => {
    closed = true;
    clearInterval(probe);
    await client?.end().catch(() => {});
  };
}

/** PGlite in `dir` (persisted), or in memory when dir is undefined (tests). */
export async function createPgliteDb(dir?: string): Promise<Db> {
  if (dir) fs.mkdirSync(dir, { recursive: true });
  // PostgreSQL compiled to WebAssembly runs on V8's baseline compiler only: the optimising tier
  // recompiles its hot functions in the background, which on a small machine doubles the start-up
  // time and adds about 80 MB of code, for no throughput we could measure. Set before the module
  // is compiled (PGlite.create); it concerns WebAssembly only, and PGlite is the process's only one.
  v8.setFlagsFromString('--liftoff-only');
  const lite = await PGlite.create(dir ? path.join(dir, 'pglite') : undefined, { startParams: PGLITE_START_PARAMS });
  // PGlite is one connection: serialise transactions so two requests never interleave inside one.
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn, fn);
    chain = run.catch(() => {});
    return run;
  };
  const q = async <T>(sql: string, params?: unknown[]) => {
    const r = params && params.length ? await lite.query<T>(sql, params) : await lite.query<T>(sql);
    return { rows: r.rows, rowCount: Math.max(r.affectedRows ?? 0, r.rows.length) };
  };
  return {
    kind: 'pglite',
    query: <T>(sql: string, params?: unknown[]) => serial(() => q<T>(sql, params)),
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) =>
      serial(() => lite.transaction(async (t) => {
        const tx: Queryable = {
          async query<R>(sql: string, params?: unknown[]) {
            const r = await t.query<R>(sql, params ?? []);
            return { rows: r.rows, rowCount: Math.max(r.affectedRows ?? 0, r.rows.length) };
          },
        };
        return fn(tx);
      })) as Promise<T>,
    async ping() {
      await serial(() => lite.query('SELECT 1'));
    },
    // One process, one database: NOTIFY reaches this listener without a connection that could drop.
    async listen(channel, handler, onState) {
      const stop = await lite.listen(channel, handler);
      onState?.(true);
      return async () => { await stop().catch(() => {}); };
    },
    async close() {
      await serial(() => lite.close());
    },
  };
}

// In-process caches of what the token paths read on every request (clients, exchange and room
// policies, resource servers, users and their roles), kept current on every node at once.
//
// Triggers on the tables behind them (migrations/016_change_notify.sql) NOTIFY `<table>:<key>` when
// a change commits, whoever makes it: this process, another node, the CLI, or an operator in psql.
// Every process LISTENs (src/store/db.ts) and drops the entries that row fed. So a role change, a
// disabled user or a deleted client is seen by the next request on every node, as soon as the
// notification has arrived (PostgreSQL sends it at commit). While the listening connection is down
// nothing is answered from memory: every lookup goes to the database, and the caches start empty
// when it listens again (a notification may have been missed meanwhile). Entries also expire after
// CACHE_TTL_MS, a bound on the damage of anything that slipped through.
import type { Db } from './db.ts';
import type { Logger } from '../http/log.ts';

export const CHANGES_CHANNEL = 'gatehouse_changes';
export const CACHE_TTL_MS = 60_000;
const MAX_ENTRIES = 10_000;

export type ChangedTable = 'users' | 'user_roles' | 'roles' | 'clients' | 'exchange_client_policies' | 'livekit_role_policies' | 'resource_servers'
  | 'livekit_options' | 'signing_keys';

/** What a cache needs from the change feed. */
export interface Changes {
  /** True while notifications are being received: only then may a cache answer from memory. */
  readonly listening: boolean;
  /** `key` is the changed row's key column, or '*' when the whole table changed (TRUNCATE). */
  on(table: ChangedTable, fn: (key: string) => void): void;
  /** The feed was lost or regained: notifications may have been missed, drop everything. */
  onReset(fn: () => void): void;
  /** Caches made over this feed, for /metrics. */
  track(cache: CacheStats): void;
}

export interface CacheStats {
  readonly name: string;
  readonly hits: number;
  readonly misses: number;
}

export interface ChangeFeed extends Changes {
  /** How many notifications this process received, for /metrics and tests. */
  readonly received: number;
  readonly caches: readonly CacheStats[];
  /** This process wrote to `table` (src/store/changes.ts signalLocalWrites): drop its entries now. */
  announce(table: string): void;
  close(): Promise<void>;
}

/** Never listening: every lookup goes to the database (for callers without a feed). */
export const noChanges: Changes = { listening: false, on() {}, onReset() {}, track() {} };

export async function startChangeFeed(db: Pick<Db, 'listen'>, log?: Pick<Logger, 'warn'>): Promise<ChangeFeed> {
  const byTable = new Map<string, Set<(key: string) => void>>();
  const resets = new Set<() => void>();
  let listening = false;
  let received = 0;
  const caches: CacheStats[] = [];
  const reset = () => {
    for (const fn of resets) fn();
  };
  const fire = (table: string, key: string) => {
    for (const fn of byTable.get(table) ?? []) fn(key);
  };
  const stop = await db.listen(CHANGES_CHANNEL, (payload) => {
    received++;
    const at = payload.indexOf(':');
    if (at > 0) fire(payload.slice(0, at), payload.slice(at + 1));
  }, (up) => {
    // Down: stop answering from memory at once. Up again: start from empty caches.
    reset();
    listening = up;
    if (!up) log?.warn('cache invalidation: lost the database connection that hears changes; reading through to the database until it is back');
  });
  return {
    get listening() {
      return listening;
    },
    get received() {
      return received;
    },
    on(table, fn) {
      let fns = byTable.get(table);
      if (!fns) byTable.set(table, (fns = new Set()));
      fns.add(fn);
    },
    onReset(fn) {
      resets.add(fn);
    },
    caches,
    track(cache) {
      caches.push(cache);
    },
    announce(table) {
      fire(table, '*');
    },
    async close() {
      listening = false;
      await stop();
    },
  };
}

/**
 * A read-through cache of `load(key)`. The entry holds the lookup's promise from the moment it
 * starts, so parallel misses make one query, and a change that arrives while the query is in flight
 * drops it too (a later request reads again rather than keep an answer from before the change).
 * Rejections are not kept, nor answers `keep` refuses.
 */
export class Cached<V> implements CacheStats {
  private readonly entries = new Map<string, { value: Promise<V>; expires: number }>();
  hits = 0;
  misses = 0;

  /**
   * `keep` says which answers are worth keeping; by default all but "none" (undefined). Keys often
   * come from requests (a client id, a resource URI): keeping what does not exist would let anyone
   * fill the cache with made-up names, and would answer for them without the database.
   */
  constructor(readonly name: string, private readonly changes: Changes, private readonly load: (key: string) => Promise<V>,
    private readonly keep: (value: V) => boolean = (v) => v !== undefined) {
    changes.onReset(() => this.clear());
    changes.track(this);
  }

  /**
   * Drop entries when `table` changes: by default the entry of the changed row's key; with
   * `everything`, all entries (a change there can affect any key, e.g. a role's permissions for
   * every user holding it).
   */
  dropOn(table: ChangedTable, how: 'key' | 'everything' = 'key'): this {
    this.changes.on(table, (key) => (how === 'everything' || key === '*' ? this.clear() : this.entries.delete(key)));
    return this;
  }

  /**
   * The value for `key`. Every caller gets the same object, frozen (deeply) when it was loaded, so a
   * caller that changed what it got would throw rather than change what the next request reads; a
   * copy per call (structuredClone) was a tenth of a client-credentials request's CPU.
   */
  get(key: string): Promise<V> {
    return this.lookup(key);
  }

  private lookup(key: string): Promise<V> {
    if (!this.changes.listening) return this.load(key).then(deepFreeze);
    const now = Date.now();
    const hit = this.entries.get(key);
    if (hit && hit.expires > now) {
      this.hits++;
      return hit.value;
    }
    this.misses++;
    if (this.entries.size >= MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    const value = this.load(key).then(deepFreeze);
    const entry = { value, expires: now + CACHE_TTL_MS };
    this.entries.set(key, entry);
    const forget = () => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    };
    value.then((v) => { if (!this.keep(v)) forget(); }, forget);
    return value;
  }

  clear(): void {
    this.entries.clear();
  }
}

/** Freeze `v` and everything in it (typed arrays and Buffers cannot be frozen; they are left as they are). */
function deepFreeze<T>(v: T): T {
  if (v === null || typeof v !== 'object' || Object.isFrozen(v) || ArrayBuffer.isView(v)) return v;
  for (const x of Object.values(v)) deepFreeze(x);
  return Object.freeze(v);
}

// INSERT INTO t, UPDATE t, DELETE FROM t, TRUNCATE [TABLE] t: the tables a statement writes to.
const WRITES = /\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)\s+"?(\w+)/gi;

export function tablesWritten(sql: string): string[] {
  return [...sql.matchAll(WRITES)].map((m) => m[1].toLowerCase());
}

/**
 * The database as this process's stores see it, telling the feed of its own writes the moment they
 * commit (and counting statements in `stats`, for /metrics): a request on this node right after a
 * change (a role removed, a client deleted) must not be answered from the entry the change made
 * stale, and the NOTIFY comes back a moment later over another connection. The whole table's
 * entries go (writes are rare; keys are the triggers' job).
 */
export function signalLocalWrites(db: Db, feed: Pick<ChangeFeed, 'announce'>, stats?: { statements: number }): Db {
  // The statements are the code's own constant texts: each is parsed for the tables it writes once.
  const parsed = new Map<string, string[]>();
  const writtenBy = (sql: string) => {
    let tables = parsed.get(sql);
    if (!tables) {
      tables = [...new Set(tablesWritten(sql))];
      if (parsed.size < 2000) parsed.set(sql, tables);
    }
    return tables;
  };
  const announce = (tables: Iterable<string>) => {
    for (const t of new Set(tables)) feed.announce(t);
  };
  const count = (n = 1) => {
    if (stats) stats.statements += n;
  };
  return {
    ...db,
    kind: db.kind,
    async query<T>(sql: string, params?: unknown[]) {
      count();
      const r = await db.query<T>(sql, params);
      for (const t of writtenBy(sql)) feed.announce(t);
      return r;
    },
    async transaction(fn) {
      const written: string[] = [];
      count(2); // BEGIN, COMMIT
      const out = await db.transaction((tx) => fn({
        async query<T>(sql: string, params?: unknown[]) {
          count();
          const r = await tx.query<T>(sql, params);
          written.push(...writtenBy(sql));
          return r;
        },
      }));
      announce(written);
      return out;
    },
  };
}

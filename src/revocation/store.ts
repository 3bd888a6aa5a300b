// Revocation lists over the Kv interface (Redis in production, in-process in embedded mode), with
// PostgreSQL as the durable record. DESIGN.md § Revocation:
// - Each hot entry's TTL is the remaining lifetime of what it revokes, so the lists clean themselves.
// - Entries: by token jti, by grant id, by session id, and by user ("everything issued at or before T").
// - Every revocation is written to PostgreSQL first; a Redis that comes back empty (no marker key)
//   is reloaded from it before any revocation-dependent decision is answered again.
// - A pub/sub message tells every node at once; listeners (live-room removal, caches) hang off it.
// - Fail closed: when the hot store cannot answer (down, slow, not yet reloaded), `check` throws
//   RevocationUnavailableError and callers answer 503 temporarily_unavailable.
import crypto from 'node:crypto';
import type { Kv } from '../store/kv.ts';
import type { Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';

export interface TokenFacts {
  jti?: string;
  /** origin grant id */
  gid?: string;
  /** origin session id */
  sid?: string;
  sub?: string;
  /** issued-at, seconds */
  iat?: number;
}

export type RevocationKind = 'jti' | 'grant' | 'session' | 'user';
export const REVOCATION_KINDS: readonly RevocationKind[] = ['jti', 'grant', 'session', 'user'];

export interface RevokeOptions {
  /** The user the revoked thing belongs to, when known: live-room removal needs it. */
  subject?: string;
  /** Why: token_revocation, logout, refresh_token_reuse, password_change, admin, ... */
  reason?: string;
}

/** What every node hears (pub/sub) when something is revoked. */
export interface RevocationEvent {
  kind: RevocationKind;
  id: string;
  subject?: string;
  reason: string;
  /** epoch seconds; for `user` also the cut-off */
  at: number;
  ttl: number;
  /** unique per revocation (two revocations of one id in one second are two events) */
  eventId: string;
  /** the process that revoked it */
  origin: string;
  /** true on the process that revoked it */
  local: boolean;
}

export interface RevocationStore {
  /** Revoke for `ttlSeconds` (the longest remaining lifetime of what it covers). */
  revoke(kind: RevocationKind, id: string, ttlSeconds: number, opts?: RevokeOptions): Promise<RevokeResult | void>;
  /** Which list (if any) revokes a token with these facts. Throws RevocationUnavailableError when it cannot tell. */
  check(facts: TokenFacts): Promise<RevocationKind | undefined>;
}

export interface RevokeResult {
  /** false when only the durable record was written (the hot store was unreachable; it is reloaded on reconnect) */
  hot: boolean;
}

/** The full service app.ts wires: the store plus its lifecycle. */
export interface RevocationService extends RevocationStore {
  revoke(kind: RevocationKind, id: string, ttlSeconds: number, opts?: RevokeOptions): Promise<RevokeResult>;
  /** Subscribe to pub/sub, load the lists if the hot store lacks them, start sweeping. */
  start(): Promise<void>;
  /** Resolves when revocation decisions can be made now (for /ready); throws otherwise. */
  ready(): Promise<void>;
  /** Every revocation, local or from another node. Returns an unsubscribe function. */
  onRevoked(listener: (e: RevocationEvent) => void): () => void;
  /** Write every unexpired durable record into the hot store. Returns how many. */
  reload(opts?: { force?: boolean }): Promise<number>;
  /** Delete expired durable records. Returns how many. */
  sweep(): Promise<number>;
  close(): Promise<void>;
}

export class RevocationUnavailableError extends Error {
  constructor(cause: unknown) {
    super('revocation store unavailable');
    this.name = 'RevocationUnavailableError';
    this.cause = cause;
  }
}

export const REVOCATION_CHANNEL = 'revocations';
/** Present in the hot store once the lists are loaded; a Redis that lost it lost the lists too. */
const MARKER = 'revoked:loaded';
/** A revocation decision never waits longer than this for the hot store (fail closed, fast). */
const HOT_TIMEOUT_MS = 1000;
const SWEEP_INTERVAL_MS = 5 * 60_000;

// Opaque token values double as their jti: hash them, so no usable token ever appears in a key name.
export const hashId = (id: string) => crypto.createHash('sha256').update(id).digest('base64url').slice(0, 32);
export const hotKey = (kind: RevocationKind, id: string) => `revoked:${kind}:${kind === 'jti' ? hashId(id) : id}`;

function withTimeout<T>(p: Promise<T>, ms = HOT_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`revocation store did not answer within ${ms} ms`)), ms);
      timer.unref();
    }),
  ]).finally(() => clearTimeout(timer));
}

// Set-if-later for user cut-offs, so a reload racing a newer revocation never moves T backwards.
const SET_IF_LATER = `local c = redis.call('GET', KEYS[1])
if (not c) or tonumber(c) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end
return 0`;

export interface RevocationStoreOptions {
  /** The durable record (PostgreSQL / PGlite). Without it the lists live only in the hot store. */
  db?: Queryable;
  log?: Logger;
}

export function createRevocationStore(kv: Kv, opts: RevocationStoreOptions = {}): RevocationService {
  const { db, log } = opts;
  const nodeId = crypto.randomUUID();
  const listeners = new Set<(e: RevocationEvent) => void>();
  let loading: Promise<number> | undefined;
  let sweepTimer: NodeJS.Timeout | undefined;
  let unsubscribe: (() => Promise<void>) | undefined;
  let subscribing = false;
  let closed = false;

  function assertHotReachable() {
    // ioredis queues commands while reconnecting; do not wait for it when we already know it is down.
    if (kv.redis && kv.redis.status !== 'ready') throw new RevocationUnavailableError(new Error(`redis is ${kv.redis.status}`));
  }

  async function mget(keys: string[]): Promise<(string | null)[]> {
    if (kv.redis) return kv.redis.mget(...keys);
    return Promise.all(keys.map((k) => kv.get(k)));
  }

  async function writeHot(kind: RevocationKind, id: string, value: string, ttl: number) {
    const k = hotKey(kind, id);
    const seconds = Math.max(1, Math.ceil(ttl));
    if (kind !== 'user') return kv.set(k, value, seconds);
    if (kv.redis) {
      await kv.redis.eval(SET_IF_LATER, 1, k, value, String(seconds));
      return;
    }
    const current = await kv.get(k);
    if (!current || Number(current) < Number(value)) await kv.set(k, value, seconds);
  }

  function emit(e: RevocationEvent) {
    for (const l of listeners) {
      try {
        l(e);
      } catch (err) {
        log?.warn({ err }, 'revocation listener failed');
      }
    }
  }

  async function reload({ force = false } = {}): Promise<number> {
    loading ??= (async () => {
      try {
        if (!force && (await kv.get(MARKER))) return 0;
        const rows = db
          ? (await db.query<{ kind: RevocationKind; id: string; cutoff: number | null; ttl: number }>(
            `SELECT kind, id, cutoff, ceil(extract(epoch FROM expires_at - now()))::int AS ttl
             FROM revocations WHERE expires_at > now()`,
          )).rows
          : [];
        for (let i = 0; i < rows.length; i += 500) {
          await Promise.all(rows.slice(i, i + 500).map((r) => writeHot(r.kind, r.id, r.kind === 'user' ? String(r.cutoff) : '1', Number(r.ttl))));
        }
        await kv.set(MARKER, new Date().toISOString());
        if (rows.length || force) log?.info({ count: rows.length }, 'revocation lists reloaded from the durable record');
        return rows.length;
      } finally {
        loading = undefined;
      }
    })();
    return loading;
  }

  async function subscribe() {
    if (unsubscribe || subscribing || closed) return;
    subscribing = true;
    try {
      unsubscribe = await kv.subscribe(REVOCATION_CHANNEL, (message) => {
        let e: RevocationEvent;
        try {
          e = JSON.parse(message) as RevocationEvent;
        } catch {
          return;
        }
        // Our own message: listeners already heard it when we revoked.
        if (e.origin === nodeId || !REVOCATION_KINDS.includes(e.kind)) return;
        emit({ ...e, local: false });
      });
    } catch (err) {
      log?.warn({ err }, 'revocation pub/sub subscribe failed; retrying when the store reconnects');
    } finally {
      subscribing = false;
    }
  }

  function onReconnect() {
    // A Redis that restarted may have come back empty (no persistence) or without entries written
    // while it was away (their durable records exist): reload everything, then mark it loaded.
    void subscribe();
    reload({ force: true }).catch((err) => log?.warn({ err }, 'revocation reload failed; decisions stay closed until it succeeds'));
  }

  const service: RevocationService = {
    async revoke(kind, id, ttlSeconds, o = {}) {
      if (!REVOCATION_KINDS.includes(kind) || !id) throw new TypeError(`invalid revocation ${kind}:${id}`);
      const at = Math.floor(Date.now() / 1000);
      const ttl = Math.max(1, Math.ceil(ttlSeconds));
      const reason = o.reason ?? 'unspecified';
      // Durable first: once this returns, a Redis restart cannot un-revoke it.
      if (db) {
        await db.query(
          `INSERT INTO revocations (kind, id, cutoff, subject, reason, expires_at)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6::int))
           ON CONFLICT (kind, id) DO UPDATE SET
             cutoff = GREATEST(revocations.cutoff, EXCLUDED.cutoff),
             subject = COALESCE(EXCLUDED.subject, revocations.subject),
             reason = EXCLUDED.reason, revoked_at = now(),
             expires_at = GREATEST(revocations.expires_at, EXCLUDED.expires_at)`,
          [kind, id, kind === 'user' ? at : null, o.subject ?? null, reason, ttl],
        );
      }
      const event: RevocationEvent = { kind, id, subject: o.subject, reason, at, ttl, eventId: crypto.randomUUID(), origin: nodeId, local: true };
      let hot = true;
      try {
        assertHotReachable();
        await withTimeout(writeHot(kind, id, kind === 'user' ? String(at) : '1', ttl));
        await withTimeout(kv.publish(REVOCATION_CHANNEL, JSON.stringify({ ...event, local: undefined })));
      } catch (err) {
        // Without a durable record the caller must know it did not happen.
        if (!db) throw new RevocationUnavailableError(err);
        hot = false;
        log?.warn({ err, kind }, 'revocation recorded durably; the hot store is unreachable and is reloaded when it returns');
      }
      emit(event);
      return { hot };
    },

    async check(f) {
      const kinds: RevocationKind[] = [];
      const keys = [MARKER];
      const add = (kind: RevocationKind, id: string | undefined) => {
        if (!id) return;
        kinds.push(kind);
        keys.push(hotKey(kind, id));
      };
      add('jti', f.jti);
      add('grant', f.gid);
      add('session', f.sid);
      add('user', f.sub);
      let values: (string | null)[];
      try {
        assertHotReachable();
        values = await withTimeout(mget(keys));
      } catch (err) {
        throw err instanceof RevocationUnavailableError ? err : new RevocationUnavailableError(err);
      }
      if (!values[0]) {
        // The hot store lost the lists (restart without persistence, failover, flush): reload first.
        void reload().catch((err) => log?.warn({ err }, 'revocation reload failed'));
        throw new RevocationUnavailableError(new Error('revocation lists are being reloaded'));
      }
      for (let i = 0; i < kinds.length; i++) {
        const v = values[i + 1];
        if (!v) continue;
        // A user entry holds the cut-off: tokens issued at or before it are dead; an unknown iat is too.
        if (kinds[i] === 'user' && f.iat !== undefined && f.iat > Number(v)) continue;
        return kinds[i];
      }
      return undefined;
    },

    async start() {
      kv.redis?.on('ready', onReconnect);
      await subscribe();
      try {
        await withTimeout(reload(), 10_000);
      } catch (err) {
        log?.warn({ err }, 'revocation lists could not be loaded at start; revocation-dependent requests answer 503 until they are');
      }
      if (db) {
        await service.sweep().catch(() => 0);
        sweepTimer = setInterval(() => {
          service.sweep().catch((err) => log?.warn({ err }, 'sweeping expired revocations failed'));
        }, SWEEP_INTERVAL_MS);
        sweepTimer.unref();
      }
    },

    async ready() {
      assertHotReachable();
      const marker = await withTimeout(kv.get(MARKER));
      if (!marker) {
        void reload().catch(() => {});
        throw new Error('revocation lists are not loaded');
      }
    },

    onRevoked(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    reload,

    async sweep() {
      if (!db) return 0;
      // A minute of grace, as for oidc payloads: an entry is only dropped well after its TTL.
      const r = await db.query(`DELETE FROM revocations WHERE expires_at < now() - interval '1 minute'`);
      return r.rowCount;
    },

    async close() {
      closed = true;
      kv.redis?.off('ready', onReconnect);
      if (sweepTimer) clearInterval(sweepTimer);
      listeners.clear();
      await unsubscribe?.().catch(() => {});
      await loading?.catch(() => {});
    },
  };
  return service;
}

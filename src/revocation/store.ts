// Revocation lists over the Kv interface (Redis in production, in-process in embedded mode), with
// PostgreSQL as the durable record. DESIGN.md § Revocation:
// - Each hot entry's TTL is the remaining lifetime of what it revokes, so the lists clean themselves.
// - Entries: by token jti, by grant id, by session id, and by user ("everything issued at or before T").
// - Every revocation is written to PostgreSQL first; a Redis that comes back empty (no marker key)
//   is reloaded from it before any revocation-dependent decision is answered again.
// - A node answers only from lists it knows are complete, else it fails closed:
//   * the marker names the Redis it was loaded into (run_id), so a snapshot or a promoted replica
//     that kept the marker but lost recent entries does not count;
//   * a reload sets the marker only if the load generation it started under is unchanged (one
//     atomic step), so a flush or restart in the middle of a reload makes it start over;
//   * entries are merged (larger cut-off, later expiry), so a reload racing a newer revocation, or
//     two nodes reloading at once, never weaken an entry;
//   * a revocation whose hot write fails takes the lists offline on every node until reloaded;
//   * a Redis that may evict keys (maxmemory-policy other than noeviction) is refused.
// - A pub/sub message tells every node at once; listeners (live-room removal, caches) hang off it.
// - Fail closed: when the hot store cannot answer (down, slow, not yet reloaded), `check` throws
//   RevocationUnavailableError and callers answer 503 temporarily_unavailable.
import crypto from 'node:crypto';
import { ReplyError } from 'ioredis';
import type { Kv, MaxEntry } from '../store/kv.ts';
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
  /**
   * Digests (jtiDigest) of the tokens this one was exchanged from (its `ojti` claim): revoking any
   * of them by jti reaches it (docs/revocation.md).
   */
  ojti?: string[];
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
/**
 * Present in the hot store once the lists are loaded; its value names the Redis that was loaded
 * (INFO run_id, which changes on every restart and differs on a promoted replica). A marker that
 * came back from a snapshot or a replica names another Redis, so it does not count.
 */
const MARKER = 'revoked:loaded';
/**
 * The load generation. A reload takes the current one (creating it if a flush removed it) before it
 * reads PostgreSQL, and sets the marker only if it is unchanged at the end, in one step (Kv.setIf):
 * a flush, restart or invalidation in between removes or changes it, so a reload that lost some of
 * its writes can never mark the lists complete. It starts over instead.
 */
const GENERATION = 'revoked:generation';
/** Far longer than a reload; only keeps a generation nobody uses from staying forever. */
const GENERATION_TTL_MS = 24 * 3600_000;
/** A revocation decision never waits longer than this for the hot store (fail closed, fast). */
const HOT_TIMEOUT_MS = 1000;
const SWEEP_INTERVAL_MS = 5 * 60_000;
/** How often each node asks Redis who it is (run_id) and how it evicts: a failover behind a proxy keeps the connection. */
const INSPECT_INTERVAL_MS = 10_000;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;
/** The in-process store is never restarted under a running process. */
const MEMORY_INCARNATION = 'in-process';

// Opaque token values double as their jti: hash them, so no usable token ever appears in a key name,
// a durable row or a pub/sub message. A jti is stored and published as its digest, `sha256:<hashId>`.
export const hashId = (id: string) => crypto.hash('sha256', id, 'base64url').slice(0, 32);
const DIGEST = 'sha256:';
/** The form a jti is stored in (idempotent: a digest stays itself). */
export const jtiDigest = (id: string) => (id.startsWith(DIGEST) ? id : DIGEST + hashId(id));
export const hotKey = (kind: RevocationKind, id: string) => `revoked:${kind}:${kind === 'jti' ? jtiDigest(id).slice(DIGEST.length) : id}`;

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

class LoadInterrupted extends Error {
  constructor() {
    super('the hot store was flushed, restarted or invalidated during a revocation reload; loading again');
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/**
 * Redis evicts keys under memory pressure unless maxmemory-policy is noeviction. Revocation entries
 * have TTLs and the marker has none, so a volatile-* policy drops entries and keeps the marker (and
 * allkeys-lru keeps the marker, read on every check, longest): a revoked token would be accepted.
 */
export class UnsafeRedisError extends Error {
  constructor(policy: string) {
    super(`Redis evicts keys (maxmemory-policy ${policy}); revocation entries could disappear while the lists still count as loaded. Set maxmemory-policy noeviction on this Redis (or give Gatehouse its own), then start again.`);
    this.name = 'UnsafeRedisError';
  }
}

/** What INFO says about the Redis we are connected to. */
export function redisFacts(info: string): { runId: string | null; policy: string | null; maxmemory: number } {
  const field = (name: string) => new RegExp(`^${name}:(\\S+)`, 'm').exec(info)?.[1] ?? null;
  return { runId: field('run_id'), policy: field('maxmemory_policy'), maxmemory: Number(field('maxmemory') ?? 0) };
}

export interface RevocationStoreOptions {
  /** The durable record (PostgreSQL / PGlite). Without it the lists live only in the hot store. */
  db?: Queryable;
  log?: Logger;
}

export function createRevocationStore(kv: Kv, opts: RevocationStoreOptions = {}): RevocationService {
  const { db, log } = opts;
  const nodeId = crypto.randomUUID();
  const listeners = new Set<(e: RevocationEvent) => void>();
  let sweepTimer: NodeJS.Timeout | undefined;
  let inspectTimer: NodeJS.Timeout | undefined;
  let unsubscribe: (() => Promise<void>) | undefined;
  let subscribing = false;
  let closed = false;

  // --- what this node knows ---
  // The Redis this node talks to now (its run_id): undefined while unknown (connecting, just
  // reconnected, or refused for its eviction policy), null when INFO is not allowed (then any marker
  // counts and every reconnect reloads).
  let incarnation: string | null | undefined = kv.redis ? undefined : MEMORY_INCARNATION;
  let inspecting: Promise<void> | undefined;
  let lastInspect = 0;
  // Doubts this node has raised about the hot lists (a write of its own failed, a reconnect without
  // INFO, a forced reload) and the last one a completed reload of its own has answered. While
  // raised > settled this node answers no revocation question: it fails closed.
  let raised = 0;
  let settled = 0;
  // The marker is missing or names another Redis: a reload is needed, by this node or any other (a
  // valid marker proves a complete load since the flush, whoever did it).
  let wanted = false;
  // A write of ours failed: every node must stop trusting the lists until they are rewritten.
  let mustInvalidate = false;
  let runner: Promise<void> | undefined;
  let currentPass: Promise<number> | undefined;
  let lastCount = 0;

  function assertHotReachable() {
    // ioredis queues commands while reconnecting; do not wait for it when we already know it is down.
    if (kv.redis && kv.redis.status !== 'ready') throw new RevocationUnavailableError(new Error(`redis is ${kv.redis.status}`));
  }

  /** Learn which Redis this is (run_id) and refuse one that evicts. Single flight. */
  function inspect(): Promise<void> {
    const redis = kv.redis;
    if (!redis) return Promise.resolve();
    inspecting ??= (async () => {
      lastInspect = Date.now();
      let info: string;
      try {
        info = await withTimeout(redis.info());
      } catch (err) {
        if (!(err instanceof ReplyError)) throw err;
        // An ACL without INFO: no run_id to tie the marker to, and no eviction check.
        if (incarnation !== null) log?.warn({ err }, 'Redis INFO is not allowed: cannot check maxmemory-policy or tell a restarted Redis; every reconnect reloads the revocation lists');
        incarnation = null;
        return;
      }
      const facts = redisFacts(info);
      if (facts.policy && facts.policy !== 'noeviction') {
        if (facts.maxmemory > 0) {
          incarnation = undefined;
          throw new UnsafeRedisError(facts.policy);
        }
        log?.warn({ policy: facts.policy }, 'Redis maxmemory-policy is not noeviction: it is harmless only while maxmemory stays 0; with a memory limit revocation entries could be evicted (Gatehouse then refuses to answer revocation questions)');
      }
      if (incarnation && facts.runId && incarnation !== facts.runId) log?.warn('Redis changed under an open connection (failover); revocation lists are reloaded');
      incarnation = facts.runId;
    })().finally(() => {
      inspecting = undefined;
    });
    return inspecting;
  }

  function inspectSoon() {
    if (inspecting || Date.now() - lastInspect < RETRY_MIN_MS * 10) return;
    inspect().catch((err) => log?.error({ err }, 'revocation lists stay closed: the Redis cannot be used for them'));
  }

  /** This node stops answering until a reload of its own, started from now on, has completed. */
  function doubt(): number {
    raised++;
    kick();
    return raised;
  }

  function want() {
    wanted = true;
    kick();
  }

  function kick() {
    if (runner || closed) return;
    runner = runLoads().finally(() => {
      runner = undefined;
      // A doubt raised while the last pass was finishing still needs its pass.
      if (settled < raised || wanted) kick();
    });
  }

  /** Every node stops trusting the lists (works even on a Redis that refuses writes for memory). */
  async function invalidate() {
    assertHotReachable();
    await withTimeout(kv.set(GENERATION, crypto.randomUUID(), GENERATION_TTL_MS / 1000));
    await withTimeout(kv.del(MARKER));
    mustInvalidate = false;
  }

  async function runLoads() {
    let delay = RETRY_MIN_MS;
    while (!closed && (settled < raised || wanted)) {
      const epoch = raised;
      const own = settled < raised;
      wanted = false;
      currentPass = loadPass({ unlessMarked: !own });
      try {
        lastCount = await currentPass;
        settled = Math.max(settled, epoch);
        delay = RETRY_MIN_MS;
      } catch (err) {
        if (!own) wanted = true;
        if (err instanceof LoadInterrupted) {
          // Nothing is broken: the store was emptied under us. Start over at once.
          log?.info(err.message);
          delay = RETRY_MIN_MS;
          continue;
        }
        if (!closed) log?.warn({ err }, 'revocation reload failed; revocation decisions stay closed until it succeeds');
        await sleep(delay);
        delay = Math.min(delay * 2, RETRY_MAX_MS);
      }
    }
  }

  /** One complete reload, or an error (then nothing was marked loaded). */
  async function loadPass({ unlessMarked = false } = {}): Promise<number> {
    assertHotReachable();
    if (incarnation === undefined) await inspect();
    const loadedFor = incarnation ?? 'unknown';
    if (unlessMarked && !mustInvalidate && trusted(await withTimeout(kv.get(MARKER)))) return 0;
    if (mustInvalidate) await invalidate();
    // Join the current generation, or start one if a flush removed it (or it expired).
    await withTimeout(kv.setIfAbsent(GENERATION, crypto.randomUUID(), GENERATION_TTL_MS));
    const generation = await withTimeout(kv.get(GENERATION));
    if (!generation) throw new LoadInterrupted();
    const rows = db
      ? (await db.query<{ kind: RevocationKind; id: string; cutoff: number | null; ttl: number }>(
        `SELECT kind, id, cutoff, ceil(extract(epoch FROM expires_at - now()))::int AS ttl
         FROM revocations WHERE expires_at > now()`,
      )).rows
      : [];
    // 500 entries per round trip (one script call each): a reload of many revocations stays short.
    for (let i = 0; i < rows.length; i += 500) {
      await withTimeout(kv.setMax(rows.slice(i, i + 500).map((r) => hotEntry(r.kind, r.id, r.kind === 'user' ? Number(r.cutoff) : 1, Number(r.ttl)))), 10_000);
    }
    if (!(await withTimeout(kv.setIf(MARKER, loadedFor, { key: GENERATION, equals: generation })))) {
      throw new LoadInterrupted();
    }
    if (rows.length) log?.info({ count: rows.length }, 'revocation lists reloaded from the durable record');
    return rows.length;
  }

  /** Whether this node may answer from the hot lists, given the marker it just read. */
  function trusted(marker: string | null): boolean {
    if (incarnation === undefined || settled < raised || !marker) return false;
    return incarnation === null || marker === incarnation;
  }

  /** Fail closed with the reason, and make sure someone is reloading. */
  function untrusted(marker: string | null): RevocationUnavailableError {
    if (incarnation === undefined) inspectSoon();
    else if (!marker || (incarnation !== null && marker !== incarnation)) want();
    return new RevocationUnavailableError(new Error('revocation lists are being reloaded'));
  }

  // Merged, never overwritten (Kv.setMax): a reload carrying an older row must not shorten an entry
  // or move a user's cut-off back past a newer revocation (the durable record keeps GREATEST too).
  const hotEntry = (kind: RevocationKind, id: string, value: number, ttl: number): MaxEntry => ({ key: hotKey(kind, id), value, ttlSeconds: Math.max(1, Math.ceil(ttl)) });

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
    if (!force && settled >= raised) {
      assertHotReachable();
      if (incarnation === undefined) await inspect();
      if (trusted(await withTimeout(kv.get(MARKER)))) return 0;
    }
    const epoch = doubt();
    while (settled < epoch) {
      if (closed) throw new RevocationUnavailableError(new Error('revocation store closed'));
      // A failed attempt fails this call; the runner keeps trying in the background.
      await currentPass;
    }
    return lastCount;
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

  function onDisconnect() {
    // Until we know which Redis we are back on, nothing is known about its lists.
    if (kv.redis) incarnation = undefined;
  }

  function onReconnect() {
    // A Redis that restarted has another run_id, so its marker (from a snapshot, or none) does not
    // count and the next check reloads. Without INFO we cannot tell: reload every time.
    void subscribe();
    incarnation = undefined;
    inspect().then(
      () => {
        if (incarnation === null) doubt();
      },
      (err) => log?.error({ err }, 'revocation lists stay closed: the Redis cannot be used for them'),
    );
  }

  const service: RevocationService = {
    async revoke(kind, id, ttlSeconds, o = {}) {
      if (!REVOCATION_KINDS.includes(kind) || !id) throw new TypeError(`invalid revocation ${kind}:${id}`);
      if (kind === 'jti') id = jtiDigest(id);
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
        await withTimeout(kv.setMax([hotEntry(kind, id, kind === 'user' ? at : 1, ttl)]));
      } catch (err) {
        // Without a durable record the caller must know it did not happen.
        if (!db) throw new RevocationUnavailableError(err);
        hot = false;
        // Other nodes still trust lists that lack this entry: take the lists offline everywhere
        // (marker gone, generation changed) until this node has reloaded them from PostgreSQL.
        mustInvalidate = true;
        doubt();
        await invalidate().catch(() => {}); // if this fails too, the reload does it first
        log?.warn({ err, kind }, 'revocation recorded durably; the hot store did not take it, so revocation answers pause until the lists are reloaded');
      }
      if (hot) {
        await withTimeout(kv.publish(REVOCATION_CHANNEL, JSON.stringify({ ...event, local: undefined })))
          .catch((err) => log?.warn({ err, kind }, 'revocation stored; telling the other nodes failed (their listeners miss it)'));
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
      for (const origin of f.ojti ?? []) add('jti', origin);
      add('grant', f.gid);
      add('session', f.sid);
      add('user', f.sub);
      let values: (string | null)[];
      try {
        assertHotReachable();
        // One MGET: the marker and the entries are read at one instant, so a flush cannot fall between them.
        values = await withTimeout(kv.mget(keys));
      } catch (err) {
        throw err instanceof RevocationUnavailableError ? err : new RevocationUnavailableError(err);
      }
      // The hot store lost the lists (restart, failover, flush), or this node doubts them: reload first.
      if (!trusted(values[0])) throw untrusted(values[0]);
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
      const redis = kv.redis;
      if (redis) {
        redis.on('ready', onReconnect);
        redis.on('close', onDisconnect);
        if (redis.status === 'connecting' || redis.status === 'connect' || redis.status === 'wait') {
          // The first connection is usually a few ms away; an unreachable Redis is not waited for.
          await new Promise<void>((resolve) => {
            const done = () => {
              clearTimeout(timer);
              redis.off('ready', done).off('close', done);
              resolve();
            };
            const timer = setTimeout(done, 2000);
            redis.once('ready', done).once('close', done);
          });
        }
        // Refuse a Redis that evicts before answering anything from it (UnsafeRedisError stops the start).
        if (redis.status === 'ready') await inspect();
        inspectTimer = setInterval(() => {
          if (redis.status === 'ready') inspectSoon();
        }, INSPECT_INTERVAL_MS);
        inspectTimer.unref();
      }
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
      if (!trusted(marker)) {
        untrusted(marker);
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
      kv.redis?.off('ready', onReconnect).off('close', onDisconnect);
      if (sweepTimer) clearInterval(sweepTimer);
      if (inspectTimer) clearInterval(inspectTimer);
      listeners.clear();
      await unsubscribe?.().catch(() => {});
      await runner?.catch(() => {});
    },
  };
  return service;
}

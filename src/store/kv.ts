// The small key-value + pub/sub interface that revocation, rate limits and cross-node
// invalidation use. Redis in production; an in-process map in embedded mode (single process only).
import { Redis } from 'ioredis';
import { asUnavailable } from './errors.ts';

export interface Kv {
  readonly kind: 'redis' | 'memory';
  get(key: string): Promise<string | null>;
  /** ttlSeconds > 0 sets an expiry; omitted keeps the key until deleted. */
  set(key: string, value: string, ttlSeconds?: number): Promise<void>;
  del(key: string): Promise<void>;
  /** Set only if the key does not exist (SET NX PX); true when this call set it. Atomic across nodes. */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>;
  /** Increment and return the new value; the expiry is set when the key is created. */
  incr(key: string, ttlSeconds?: number): Promise<number>;
  /**
   * Get and delete in one step (GETDEL): of any number of racing callers, exactly one gets the
   * value. For one-time state (a pending sign-in step, an upstream `state`): a get followed by a
   * del lets two requests both use it.
   */
  take(key: string): Promise<string | null>;
  /**
   * For each entry: keep the larger number and the later expiry of what is stored and what is
   * given, in one step, so two writers racing (a reload and a newer write) never move either
   * backwards. Many entries go in one round trip (each entry is atomic, the batch is not).
   */
  setMax(entries: readonly MaxEntry[]): Promise<void>;
  /** Set `key` (no expiry) only while `guard.key` holds `guard.equals`, in one step. True when set. */
  setIf(key: string, value: string, guard: { key: string; equals: string }): Promise<boolean>;
  /** Several keys read in one step (Redis MGET). */
  mget(keys: string[]): Promise<(string | null)[]>;
  /** Returns how many subscribed stores received it (Redis: connections; in-process: 0 or 1). */
  publish(channel: string, message: string): Promise<number>;
  /**
   * Returns an unsubscribe function (idempotent). When a channel's last handler goes, the store
   * leaves the channel (Redis: UNSUBSCRIBE), so it neither receives nor counts as a receiver.
   */
  subscribe(channel: string, handler: (message: string) => void): Promise<() => Promise<void>>;
  ping(): Promise<void>;
  close(): Promise<void>;
  /** The raw client for libraries that speak Redis themselves (rate-limiter-flexible). */
  readonly redis?: Redis;
  readonly prefix: string;
}

export interface MaxEntry {
  key: string;
  value: number;
  ttlSeconds: number;
}

export function createMemoryKv(prefix = ''): Kv {
  const data = new Map<string, { value: string; expiresAt: number }>();
  const subs = new Map<string, Set<(m: string) => void>>();
  const live = (key: string) => {
    const e = data.get(key);
    if (!e) return undefined;
    if (e.expiresAt && e.expiresAt <= Date.now()) {
      data.delete(key);
      return undefined;
    }
    return e;
  };
  // Sweep expired entries so a long-running embedded server does not grow without bound.
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [k, e] of data) if (e.expiresAt && e.expiresAt <= now) data.delete(k);
  }, 60_000);
  sweep.unref();
  return {
    kind: 'memory',
    prefix,
    async get(key) {
      return live(key)?.value ?? null;
    },
    async set(key, value, ttl) {
      data.set(key, { value, expiresAt: ttl ? Date.now() + ttl * 1000 : 0 });
    },
    async del(key) {
      data.delete(key);
    },
    async setIfAbsent(key, value, ttlMs) {
      if (live(key)) return false;
      data.set(key, { value, expiresAt: Date.now() + Math.max(1, ttlMs) });
      return true;
    },
    async incr(key, ttl) {
      const e = live(key);
      const n = (e ? Number(e.value) : 0) + 1;
      data.set(key, { value: String(n), expiresAt: e ? e.expiresAt : ttl ? Date.now() + ttl * 1000 : 0 });
      return n;
    },
    // Each body below runs without an await, so in one process nothing interleaves with it.
    async take(key) {
      const value = live(key)?.value ?? null;
      data.delete(key);
      return value;
    },
    async setMax(entries) {
      for (const { key, value, ttlSeconds } of entries) {
        const e = live(key);
        const expiresAt = Date.now() + Math.max(1, Math.ceil(ttlSeconds)) * 1000;
        data.set(key, {
          value: String(e && Number(e.value) > value ? e.value : value),
          expiresAt: e && (!e.expiresAt || e.expiresAt > expiresAt) ? e.expiresAt : expiresAt,
        });
      }
    },
    async setIf(key, value, guard) {
      if (live(guard.key)?.value !== guard.equals) return false;
      data.set(key, { value, expiresAt: 0 });
      return true;
    },
    async mget(keys) {
      return keys.map((k) => live(k)?.value ?? null);
    },
    async publish(channel, message) {
      const handlers = subs.get(channel);
      for (const h of handlers ?? []) queueMicrotask(() => h(message));
      return handlers ? 1 : 0;
    },
    async subscribe(channel, handler) {
      return addHandler(subs, channel, handler, () => {}, () => {});
    },
    async ping() {},
    async close() {
      clearInterval(sweep);
      data.clear();
      subs.clear();
    },
  };
}

// Lua, so each runs as one step on the server (works on Redis 6.0, which has no GETDEL).
const SCRIPTS = {
  ghTake: `local v = redis.call('GET', KEYS[1]) if v then redis.call('DEL', KEYS[1]) end return v`,
  ghSetMax: `for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i - 1]
  local ms = tonumber(ARGV[2 * i]) * 1000
  local cur = redis.call('GET', key)
  local keep = false
  if cur then
    local n = tonumber(cur)
    if n and n > tonumber(value) then value = cur end
    local left = redis.call('PTTL', key)
    if left == -1 then keep = true elseif left > ms then ms = left end
  end
  if keep then redis.call('SET', key, value, 'KEEPTTL') else redis.call('SET', key, value, 'PX', ms) end
end
return #KEYS`,
  ghSetIf: `if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0`,
};
type ScriptedRedis = Redis & {
  ghTake(key: string): Promise<string | null>;
  ghSetMax(n: number, ...keysThenArgs: string[]): Promise<unknown>;
  ghSetIf(key: string, guard: string, value: string, equals: string): Promise<number>;
};

export function createRedisKv(url: string, prefix = 'gatehouse:', opts: { timeoutMs?: number } = {}): Kv {
  const timeout = opts.timeoutMs ?? 2000;
  const common = {
    // Fail fast instead of queueing forever: revocation decisions must fail closed, not hang.
    maxRetriesPerRequest: 1,
    // A Redis that accepts the connection but never answers (hung, or a black-holed network)
    // fails the command after this long instead of holding the request.
    commandTimeout: timeout,
    connectTimeout: timeout,
    enableOfflineQueue: true,
    retryStrategy: (times: number) => Math.min(times * 200, 2000),
    lazyConnect: false,
  };
  // Commands issued in the same tick (concurrent requests' revocation checks, limits) go out in one
  // write: fewer syscalls per request under load, the same order and replies.
  const redis = new Redis(url, { ...common, keyPrefix: prefix, enableAutoPipelining: true }) as ScriptedRedis;
  // ioredis sends EVALSHA and falls back to EVAL once per connection; KEYS get the prefix.
  // ghSetMax takes its key count first (a batch); the others have a fixed number of keys.
  const keyCounts: Record<string, number | undefined> = { ghTake: 1, ghSetMax: undefined, ghSetIf: 2 };
  for (const [name, lua] of Object.entries(SCRIPTS)) redis.defineCommand(name, { numberOfKeys: keyCounts[name], lua });
  // Pub/sub needs a connection of its own. Channels are prefixed by hand (ioredis does not prefix them).
  const sub = new Redis(url, { ...common });
  redis.on('error', () => {});
  sub.on('error', () => {});
  const handlers = new Map<string, Set<(m: string) => void>>();
  sub.on('message', (channel: string, message: string) => {
    for (const h of handlers.get(channel) ?? []) h(message);
  });
  return unavailableAsTyped({
    kind: 'redis',
    prefix,
    redis,
    async get(key) {
      return redis.get(key);
    },
    async set(key, value, ttl) {
      if (ttl) await redis.set(key, value, 'EX', Math.max(1, Math.ceil(ttl)));
      else await redis.set(key, value);
    },
    async del(key) {
      await redis.del(key);
    },
    async setIfAbsent(key, value, ttlMs) {
      return (await redis.set(key, value, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX')) === 'OK';
    },
    async incr(key, ttl) {
      // One MULTI creates the key with its expiry and increments it: a separate EXPIRE after INCR
      // could fail (maxRetriesPerRequest: 1) or never run, leaving a counter that never expires.
      const tx = redis.multi();
      if (ttl) tx.set(key, '0', 'EX', Math.max(1, Math.ceil(ttl)), 'NX');
      tx.incr(key);
      const results = (await tx.exec()) ?? [];
      const [err, n] = results[results.length - 1] as [Error | null, number];
      if (err) throw err;
      return n;
    },
    async take(key) {
      return redis.ghTake(key);
    },
    async setMax(entries) {
      if (!entries.length) return;
      const args = entries.flatMap((e) => [String(e.value), String(Math.max(1, Math.ceil(e.ttlSeconds)))]);
      await redis.ghSetMax(entries.length, ...entries.map((e) => e.key), ...args);
    },
    async setIf(key, value, guard) {
      return (await redis.ghSetIf(key, guard.key, value, guard.equals)) === 1;
    },
    async mget(keys) {
      return keys.length ? redis.mget(...keys) : [];
    },
    async publish(channel, message) {
      return redis.publish(prefix + channel, message);
    },
    async subscribe(channel, handler) {
      // Commands on one connection run in order, so an UNSUBSCRIBE followed by a new SUBSCRIBE for
      // the same channel leaves it subscribed.
      return addHandler(handlers, prefix + channel, handler, (c) => sub.subscribe(c), (c) => sub.unsubscribe(c));
    },
    async ping() {
      await redis.ping();
    },
    async close() {
      redis.disconnect();
      sub.disconnect();
    },
  });
}

/**
 * Every command of a Redis store fails with the typed outage (src/store/errors.ts, a 503) when
 * Redis cannot answer, whatever ioredis calls it; close() and the raw client stay as they are.
 */
function unavailableAsTyped(kv: Kv): Kv {
  const wrapped: Record<string, unknown> = { ...kv };
  for (const [name, fn] of Object.entries(kv)) {
    if (typeof fn !== 'function' || name === 'close') continue;
    wrapped[name] = async (...args: unknown[]) => {
      try {
        return await (fn as (...a: unknown[]) => Promise<unknown>).apply(kv, args);
      } catch (err) {
        throw asUnavailable(err, 'redis');
      }
    };
  }
  return wrapped as unknown as Kv;
}

/** A channel's pending join, so a second subscriber also waits until the channel is joined. */
const joining = new WeakMap<Set<unknown>, Promise<unknown>>();

/**
 * Add one handler to a channel's set; the first handler joins the channel, and the returned
 * function removes this handler only (the same function subscribed twice is two subscriptions),
 * leaving the channel when none remain.
 */
async function addHandler(
  channels: Map<string, Set<(m: string) => void>>,
  channel: string,
  handler: (m: string) => void,
  join: (channel: string) => unknown,
  leave: (channel: string) => unknown,
): Promise<() => Promise<void>> {
  const own = (m: string) => handler(m);
  let set = channels.get(channel);
  if (!set) {
    channels.set(channel, (set = new Set()));
    joining.set(set, Promise.resolve().then(() => join(channel)));
  }
  set.add(own);
  try {
    await joining.get(set);
  } catch (err) {
    set.delete(own);
    if (!set.size && channels.get(channel) === set) channels.delete(channel);
    throw err;
  }
  return async () => {
    const current = channels.get(channel);
    if (current !== set || !set.delete(own) || set.size) return;
    channels.delete(channel);
    await leave(channel);
  };
}

// Named rate limits over rate-limiter-flexible (DESIGN.md "Rate limits"): counters live in Redis
// when REDIS_URL is set, so a limit holds across every Gatehouse process; in process memory in
// embedded mode (one process only). Each limit is configured by one variable (`60/1m` or `off`)
// and RATE_LIMITS=off switches them all off for benchmarks.
//
// Callers use one function:
//   await limits.consume('exchangeUser', userId, { ip, subject, clientId })
// which throws TooManyRequests (429, `Retry-After`) past the limit and audits the first refusal in
// each window. The lockout limiters (loginAccount, mfaAccount) count failures instead:
// `fail()`, `lockedFor()`, `clear()`.
import crypto from 'node:crypto';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config, RateLimitSpec } from '../config/index.ts';
import type { Kv } from '../store/kv.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from './log.ts';
import { TooManyRequests } from './errors.ts';
import { errors as oidcErrors } from 'oidc-provider';

/** Every named limit, and the variable that configures it. */
export const LIMITS = {
  loginIp: 'RATE_LIMIT_LOGIN_IP',
  loginAccount: 'RATE_LIMIT_LOGIN_ACCOUNT',
  mfaAccount: 'RATE_LIMIT_MFA_ACCOUNT',
  exchangeUser: 'RATE_LIMIT_EXCHANGE_USER',
  exchangeClient: 'RATE_LIMIT_EXCHANGE_CLIENT',
  connectionUser: 'RATE_LIMIT_CONNECTION_USER',
  guestIp: 'RATE_LIMIT_GUEST_IP',
  tokenIp: 'RATE_LIMIT_TOKEN_IP',
  registerIp: 'RATE_LIMIT_REGISTER_IP',
  resetIp: 'RATE_LIMIT_RESET_IP',
  resetAccount: 'RATE_LIMIT_RESET_ACCOUNT',
} as const satisfies Record<string, keyof Config>;

export type LimitName = keyof typeof LIMITS;
/** Limits that count failures and lock for LOCKOUT_DURATION when they run out. */
export type LockoutName = 'loginAccount' | 'mfaAccount';

/** Who was refused, for the audit event (identifiers only). */
export interface LimitContext {
  ip?: string | null;
  subject?: string | null;
  clientId?: string | null;
  requestId?: string | null;
}

export interface RateLimits {
  /** Whether the limit is on (false when set to `off` or RATE_LIMITS=off). */
  enabled(name: LimitName): boolean;
  /** Take one point for `key`; throws TooManyRequests (429 + Retry-After) past the limit. */
  consume(name: LimitName, key: string, context?: LimitContext): Promise<void>;
  /** Count one failure for `key`; returns how many failures the window now holds. Locks at the limit. */
  fail(name: LockoutName, key: string, context?: LimitContext): Promise<number>;
  /** Seconds the key stays locked, 0 when it is not. */
  lockedFor(name: LockoutName, key: string): Promise<number>;
  /** Forget the key's failures and lock (success from a known device, password reset, admin reset). */
  clear(name: LimitName, key: string): Promise<void>;
}

/** Refusal with the wire error of the surface: `slow_down` (RFC 8628 §3.5 / OAuth) and Retry-After. */
export class RateLimited extends TooManyRequests {
  constructor(public readonly limit: LimitName, public readonly retryAfter: number) {
    super('Too many requests. Try again later.', { 'Retry-After': String(retryAfter) });
    this.name = 'RateLimited';
  }
}

/** Keys that carry personal data (emails) are stored hashed. */
export const hashKey = (value: string) => crypto.createHash('sha256').update(value).digest('base64url').slice(0, 32);

const retryAfterSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

export function createRateLimits(kv: Kv, config: Config, opts: { audit?: Audit; log?: Logger } = {}): RateLimits {
  const off = config.RATE_LIMITS === 'off';
  const limiters = new Map<LimitName, { spec: RateLimitSpec; limiter: RateLimiterAbstract }>();

  for (const [name, variable] of Object.entries(LIMITS) as [LimitName, keyof Config][]) {
    const spec = config[variable] as RateLimitSpec | null;
    if (off || !spec) continue;
    const options = { keyPrefix: `rl:${name}`, points: spec.points, duration: spec.seconds };
    let limiter: RateLimiterAbstract;
    if (kv.redis) {
      limiter = new RateLimiterRedis({
        ...options,
        storeClient: kv.redis,
        // Redis unreachable: fall back to a per-process limit rather than refusing every login
        // (DESIGN.md: only revocation decisions fail closed).
        insuranceLimiter: new RateLimiterMemory(options),
      });
    } else {
      limiter = new RateLimiterMemory(options);
    }
    limiters.set(name, { spec, limiter });
  }

  async function auditRefusal(name: LimitName, context: LimitContext) {
    await opts.audit?.record({
      type: 'rate_limit',
      outcome: 'failure',
      subject: context.subject ?? null,
      clientId: context.clientId ?? null,
      ip: context.ip ?? null,
      requestId: context.requestId ?? null,
      details: { limit: name },
    });
  }

  return {
    enabled: (name) => limiters.has(name),

    async consume(name, key, context = {}) {
      const entry = limiters.get(name);
      if (!entry) return;
      try {
        await entry.limiter.consume(key);
      } catch (rej) {
        if (!(rej instanceof RateLimiterRes)) {
          // A store error with no insurance left: let the request through, and say so.
          opts.log?.warn({ err: rej, limit: name }, 'rate limit store failed; request allowed');
          return;
        }
        // One audit event per key and window, not one per refused request (a flood would fill the log).
        if (rej.consumedPoints === entry.spec.points + 1) await auditRefusal(name, context);
        throw new RateLimited(name, retryAfterSeconds(rej.msBeforeNext));
      }
    },

    async fail(name, key, context = {}) {
      const entry = limiters.get(name);
      if (!entry) return 0;
      let consumed: number;
      try {
        consumed = (await entry.limiter.consume(key)).consumedPoints;
      } catch (rej) {
        if (!(rej instanceof RateLimiterRes)) {
          opts.log?.warn({ err: rej, limit: name }, 'lockout store failed');
          return 0;
        }
        consumed = rej.consumedPoints;
      }
      if (consumed === entry.spec.points) {
        // The last allowed failure: lock for LOCKOUT_DURATION (time-boxed, never permanent).
        await entry.limiter.block(key, config.LOCKOUT_DURATION).catch(() => {});
        await auditRefusal(name, context);
      }
      return consumed;
    },

    async lockedFor(name, key) {
      const entry = limiters.get(name);
      if (!entry) return 0;
      const res = await entry.limiter.get(key).catch(() => null);
      if (!res || res.consumedPoints < entry.spec.points) return 0;
      return res.msBeforeNext > 0 ? retryAfterSeconds(res.msBeforeNext) : 0;
    },

    async clear(name, key) {
      await limiters.get(name)?.limiter.delete(key).catch(() => {});
    },
  };
}

/** A limiter that never refuses (tests of other features, tools). */
export const noRateLimits: RateLimits = {
  enabled: () => false,
  async consume() {},
  async fail() {
    return 0;
  },
  async lockedFor() {
    return 0;
  },
  async clear() {},
};

// --- Adapters for the token-exchange seams (src/exchange/grant.ts ExchangeRateLimit, livekit routes) ---

interface ConsumeKey {
  clientId: string;
  subject?: string;
  ip: string;
}

/**
 * oidc-provider answers only its own errors: a refusal inside the token endpoint must be one.
 * `slow_down` with HTTP 429; the provider's grant.error listener (attachRateLimitHeaders) adds Retry-After.
 */
export function toOauthError(err: RateLimited): Error {
  const e = new oidcErrors.SlowDown('too many requests; retry later') as unknown as Error & { status: number; statusCode: number; retryAfter: number };
  e.status = 429;
  e.statusCode = 429;
  e.retryAfter = err.retryAfter;
  return e;
}

/** Token exchange: per user (subject) and per client. For registerTokenExchange(…, { rateLimit }). */
export function exchangeRateLimit(limits: RateLimits) {
  return {
    async consume(k: ConsumeKey) {
      try {
        await limits.consume('exchangeClient', k.clientId, { ip: k.ip, clientId: k.clientId, subject: k.subject });
        if (k.subject) await limits.consume('exchangeUser', k.subject, { ip: k.ip, clientId: k.clientId, subject: k.subject });
      } catch (err) {
        throw err instanceof RateLimited ? toOauthError(err) : err;
      }
    },
  };
}

/** POST /livekit/connection-details: per user; guests per IP. Throws RateLimited (our error handler: 429 + Retry-After). */
export function connectionRateLimits(limits: RateLimits) {
  return {
    rateLimit: {
      async consume(k: ConsumeKey) {
        await limits.consume('connectionUser', k.subject ?? `ip:${k.ip}`, { ip: k.ip, clientId: k.clientId, subject: k.subject });
      },
    },
    guestRateLimit: {
      async consume(k: ConsumeKey) {
        await limits.consume('guestIp', k.ip, { ip: k.ip });
      },
    },
  };
}

/** Retry-After on the token endpoint's 429s (oidc-provider renders the body; we add the header). */
export function attachRateLimitHeaders(provider: { on(event: string, fn: (...args: never[]) => void): unknown }) {
  provider.on('grant.error', ((ctx: { set(k: string, v: string): void }, err: { retryAfter?: number }) => {
    if (err?.retryAfter) ctx.set('Retry-After', String(err.retryAfter));
  }) as never);
}

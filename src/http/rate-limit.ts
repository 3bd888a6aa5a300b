// Named rate limits over rate-limiter-flexible (DESIGN.md "Rate limits"): counters live in Redis
// when REDIS_URL is set, so a limit holds across every Gatehouse process; in process memory in
// embedded mode (one process only). Each limit is configured by one variable (`60/1m` or `off`)
// and RATE_LIMITS=off switches them all off for benchmarks.
//
// Callers use one function:
//   await limits.consume('exchangeUser', userId, { ip, subject, clientId })
// which throws TooManyRequests (429, `Retry-After`) past the limit and audits the first refusal in
// each window.
//
// The lockouts (loginAccount, mfaAccount: password and second-factor guesses, issue 20) take the
// guess BEFORE the expensive check, in one atomic step of the store (Redis INCR in a Lua script; a
// synchronous map in embedded mode), so N parallel guesses cost at most the limit in argon2 or TOTP
// work:
//   const guess = await limits.attempt('loginAccount', key, { ip, exempt: knownDevice })
//   ... check the password ...; on success: await guess.passed()   (the guess does not count)
// The first guess past the limit locks the key for LOCKOUT_DURATION (time-boxed, never permanent);
// until then every guess, the right one included, is refused with 429 + Retry-After. A store that
// cannot be reached refuses too (503 + Retry-After): a lockout that lets guesses through while
// Redis is away protects nothing.
import crypto from 'node:crypto';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config, RateLimitSpec } from '../config/index.ts';
import type { Kv } from '../store/kv.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from './log.ts';
import { SignInUnavailable, TooManyRequests } from './errors.ts';

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
/** Limits on guesses (passwords, second factors): taken before the check, lock for LOCKOUT_DURATION. */
export type LockoutName = 'loginAccount' | 'mfaAccount';
const LOCKOUTS: ReadonlySet<LimitName> = new Set<LockoutName>(['loginAccount', 'mfaAccount']);

/** Who was refused, for the audit event (identifiers only). */
export interface LimitContext {
  ip?: string | null;
  subject?: string | null;
  clientId?: string | null;
  requestId?: string | null;
}

/** One guess at a lockout, already counted. A failed check needs nothing more: the guess stays counted. */
export interface Attempt {
  /** Guesses the window holds, this one included (the progressive delay grows with it). */
  readonly count: number;
  /** The check passed: this guess does not count against the key (its point is given back). */
  passed(): Promise<void>;
}

export interface AttemptOptions extends LimitContext {
  /**
   * Asked only when the key is locked: true lets this guess be checked anyway. The sign-in page
   * passes "this browser signed in to the account before", so an attacker cannot lock the owner out.
   */
  exempt?: () => Promise<boolean>;
}

export interface RateLimits {
  /** Whether the limit is on (false when set to `off` or RATE_LIMITS=off). */
  enabled(name: LimitName): boolean;
  /** Take one point for `key`; throws TooManyRequests (429 + Retry-After) past the limit. */
  consume(name: LimitName, key: string, context?: LimitContext): Promise<void>;
  /**
   * Take one guess at a lockout before checking it. Throws RateLimited (429 + Retry-After) while the
   * key is locked, SignInUnavailable (503 + Retry-After) when the store cannot be reached.
   */
  attempt(name: LockoutName, key: string, options?: AttemptOptions): Promise<Attempt>;
  /** Forget the key's guesses and lock (a completed sign-in, password reset, admin reset). */
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
export const hashKey = (value: string) => crypto.hash('sha256', value, 'base64url').slice(0, 32);

const retryAfterSeconds = (ms: number) => Math.max(1, Math.ceil(ms / 1000));

export function createRateLimits(kv: Kv, config: Config, opts: { audit?: Audit; log?: Logger } = {}): RateLimits {
  const off = config.RATE_LIMITS === 'off';
  const limiters = new Map<LimitName, { spec: RateLimitSpec; limiter: RateLimiterAbstract }>();

  for (const [name, variable] of Object.entries(LIMITS) as [LimitName, keyof Config][]) {
    const spec = config[variable] as RateLimitSpec | null;
    if (off || !spec) continue;
    const lockout = LOCKOUTS.has(name);
    const options = {
      keyPrefix: `rl:${name}`, points: spec.points, duration: spec.seconds,
      // A lockout: the first guess past the limit locks the key for LOCKOUT_DURATION (the store sets
      // it in the same step), after which the key is gone and the window starts afresh.
      ...(lockout ? { blockDuration: config.LOCKOUT_DURATION } : {}),
    };
    let limiter: RateLimiterAbstract;
    if (kv.redis) {
      limiter = new RateLimiterRedis({
        ...options,
        storeClient: kv.redis,
        ...(lockout
          // Lockouts fail closed: no insurance limiter (per-process counters would multiply the
          // limit by the number of processes), and a disconnected client refuses at once instead of
          // queueing guesses until Redis is back.
          ? { rejectIfRedisNotReady: true }
          // The other limits are about load, not guessing: with Redis away they fall back to a
          // per-process limit rather than refusing every request.
          : { insuranceLimiter: new RateLimiterMemory(options) }),
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

    async attempt(name, key, options = {}) {
      const entry = limiters.get(name);
      if (!entry) return { count: 0, async passed() {} };
      const { limiter, spec } = entry;
      let count: number;
      try {
        count = (await limiter.consume(key)).consumedPoints;
      } catch (rej) {
        if (!(rej instanceof RateLimiterRes)) {
          opts.log?.warn({ err: rej, limit: name }, 'lockout store unreachable; guess refused');
          throw new SignInUnavailable();
        }
        // The guess that locked the key is audited; later refusals in the same lock are not.
        if (rej.consumedPoints === spec.points + 1) await auditRefusal(name, options);
        if (!(await options.exempt?.())) throw new RateLimited(name, retryAfterSeconds(rej.msBeforeNext));
        count = rej.consumedPoints;
      }
      return {
        count,
        async passed() {
          // A store error here only leaves one guess counted: the check itself already passed.
          await limiter.reward(key, 1).catch((err: unknown) => opts.log?.warn({ err, limit: name }, 'lockout store failed; guess left counted'));
        },
      };
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
  async attempt() {
    return { count: 0, async passed() {} };
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
export async function toOauthError(err: RateLimited): Promise<Error> {
  // Loaded here, not at the top: the CLI loads this module (lockouts) and never starts the provider.
  const { errors: oidcErrors } = await import('oidc-provider');
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
        throw err instanceof RateLimited ? await toOauthError(err) : err;
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

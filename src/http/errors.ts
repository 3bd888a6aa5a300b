// Typed errors, one handler (STYLE.md §2). Each error carries its HTTP status and wire `error`
// code; `expose` says whether the description may be shown. 5xx bodies never carry a message.
import type { Context, Next } from 'koa';
import type { Logger } from './log.ts';
import { isUnavailable } from '../store/errors.ts';

export class HttpError extends Error {
  constructor(
    public readonly status: number,
    public readonly error: string,
    public readonly description: string,
    public readonly headers: Record<string, string> = {},
  ) {
    super(description);
    this.name = 'HttpError';
  }
  get expose() {
    return this.status < 500;
  }
}

const E = (status: number, error: string) =>
  class extends HttpError {
    constructor(description = error, headers?: Record<string, string>) {
      super(status, error, description, headers);
    }
  };

export const InvalidRequest = E(400, 'invalid_request');
export const InvalidToken = E(401, 'invalid_token');
export const Forbidden = E(403, 'access_denied');
export const NotFound = E(404, 'not_found');
export const PayloadTooLarge = E(413, 'invalid_request');
export const UnsupportedMediaType = E(415, 'invalid_request');
export const TooManyRequests = E(429, 'slow_down');
export const TemporarilyUnavailable = E(503, 'temporarily_unavailable');

/** Seconds a client is told to wait when a dependency is down: about one reconnect of the stores. */
export const RETRY_AFTER_SECONDS = 5;

/**
 * A dependency outage (src/store/errors.ts): 503 with Retry-After, and unlike other 5xx its
 * description is shown, since it tells the caller what to do (wait and retry), not how we failed.
 */
export class ServiceUnavailable extends HttpError {
  constructor(description = 'the service is temporarily unavailable; try again shortly') {
    super(503, 'temporarily_unavailable', description, { 'Retry-After': String(RETRY_AFTER_SECONDS) });
  }
  override get expose() {
    return true;
  }
}

/**
 * Our routes' view of any error: outages become ServiceUnavailable, the rest stay as they are. An
 * outage is a driver's (src/store/errors.ts), the revocation store's fail-closed refusal, or any
 * error whose wire code already says temporarily_unavailable (an ExchangeError, oidc-provider's).
 */
export function asHttpError(err: unknown): unknown {
  if (err instanceof HttpError || !err || typeof err !== 'object') return err;
  const e = err as { code?: unknown; error?: unknown; name?: unknown; message?: unknown; error_description?: unknown };
  const wire = e.code === 'temporarily_unavailable' || e.error === 'temporarily_unavailable' || e.name === 'RevocationUnavailableError';
  if (!wire && !isUnavailable(err)) return err;
  const description = typeof e.error_description === 'string' ? e.error_description : wire && typeof e.message === 'string' && e.message !== 'temporarily_unavailable' ? e.message : undefined;
  return new ServiceUnavailable(description);
}

/**
 * A store sign-in needs (the lockout counters, the second-factor step's state) cannot be reached:
 * sign-in fails closed (issue 20), with a message for the person at the form.
 */
export class SignInUnavailable extends ServiceUnavailable {
  constructor() {
    super('Sign-in is unavailable for a moment. Try again shortly.');
    this.name = 'SignInUnavailable';
  }
}

/** Guards read top-down: assertThat(cond, new InvalidRequest('...')). */
export function assertThat(cond: unknown, err: Error): asserts cond {
  if (!cond) throw err;
}

/** The one error middleware for Gatehouse's own routes (oidc-provider answers its own errors). */
export function errorHandler(log: Logger, renderHtml: (status: number, error: string, description: string) => string) {
  return async function handleErrors(ctx: Context, next: Next) {
    try {
      await next();
    } catch (err) {
      const e = asHttpError(err) as Error & { status?: number; expose?: boolean };
      const known = e instanceof HttpError;
      const status = known ? e.status : e.status && e.status >= 400 && e.status < 600 ? e.status : 500;
      const error = known ? e.error : status >= 500 ? 'server_error' : 'invalid_request';
      const description = status < 500 || (known && e.expose) ? e.message : 'internal server error';
      if (e instanceof ServiceUnavailable) log.warn({ err, requestId: ctx.state.requestId }, 'dependency unavailable');
      else if (status >= 500) log.error({ err: e, requestId: ctx.state.requestId }, 'request failed');
      ctx.status = status;
      if (known) for (const [k, v] of Object.entries(e.headers)) ctx.set(k, v);
      ctx.set('Cache-Control', 'no-store');
      if (ctx.accepts('json', 'html') === 'html' && ctx.method === 'GET' || ctx.state.html) {
        ctx.type = 'html';
        ctx.body = renderHtml(status, error, description);
      } else {
        ctx.body = { error, error_description: description };
      }
    }
  };
}

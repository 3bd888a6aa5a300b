// Typed errors, one handler (STYLE.md §2). Each error carries its HTTP status and wire `error`
// code; `expose` says whether the description may be shown. 5xx bodies never carry a message.
import type { Context, Next } from 'koa';
import type { Logger } from './log.ts';

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
      const e = err as Error & { status?: number; expose?: boolean };
      const known = e instanceof HttpError;
      const status = known ? e.status : e.status && e.status >= 400 && e.status < 600 ? e.status : 500;
      const error = known ? e.error : status >= 500 ? 'server_error' : 'invalid_request';
      const description = status >= 500 ? 'internal server error' : e.message;
      if (status >= 500) log.error({ err: e, requestId: ctx.state.requestId }, 'request failed');
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

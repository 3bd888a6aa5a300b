// Request ids, access logs, security headers and health/readiness.
import crypto from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from './log.ts';

export function requestId() {
  return async function assignRequestId(ctx: Context, next: Next) {
    const incoming = ctx.get('x-request-id');
    const id = /^[A-Za-z0-9._-]{8,128}$/.test(incoming) ? incoming : crypto.randomUUID();
    ctx.state.requestId = id;
    ctx.set('X-Request-Id', id);
    await next();
  };
}

/** One line per request. Only the path is logged: query strings can carry codes and tokens. */
export function accessLog(log: Logger) {
  return async function logRequest(ctx: Context, next: Next) {
    const start = process.hrtime.bigint();
    try {
      await next();
    } finally {
      log.info({
        requestId: ctx.state.requestId,
        method: ctx.method,
        path: ctx.path,
        status: ctx.status,
        ms: Number((process.hrtime.bigint() - start) / 1000n) / 1000,
      }, 'request');
    }
  };
}

/**
 * A body refused before it was read (413: too large by Content-Length, or cut off while counting)
 * leaves its remaining bytes on the connection; reusing it would hand them to the next request or
 * reset it mid-upload. Close it instead (RFC 9110 §15.5.14 lets the server close the connection).
 * Outside the error handler, so it sees the status that handler set.
 */
export function closeAfterRefusedBody() {
  return async function closeConnectionAfterRefusedBody(ctx: Context, next: Next) {
    try {
      await next();
    } finally {
      if (ctx.status === 413 && !ctx.req.complete) ctx.set('Connection', 'close');
    }
  };
}

/** Our pages run no inline script or style; oidc-provider's own pages (form_post, device flow
 * defaults) use inline code, so they get a looser script/style policy. Framing is refused everywhere. */
export function securityHeaders(ownPagePrefixes: string[]) {
  return async function setSecurityHeaders(ctx: Context, next: Next) {
    await next();
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Referrer-Policy', 'no-referrer');
    ctx.set('X-Frame-Options', 'DENY');
    if (ctx.response.is('html')) {
      const own = ownPagePrefixes.some((p) => ctx.path.startsWith(p));
      ctx.set('Content-Security-Policy', own
        ? "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        : "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'");
    }
  };
}

export interface Probe {
  name: string;
  check(): Promise<void>;
}

export function healthRoutes(probes: Probe[]) {
  return async function health(ctx: Context, next: Next) {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return next();
    if (ctx.path === '/health') {
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { status: 'ok' };
      return;
    }
    if (ctx.path === '/ready') {
      const results: Record<string, string> = {};
      await Promise.all(probes.map(async (p) => {
        try {
          await Promise.race([p.check(), new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 2000).unref())]);
          results[p.name] = 'ok';
        } catch {
          results[p.name] = 'unavailable';
        }
      }));
      const ok = Object.values(results).every((v) => v === 'ok');
      ctx.status = ok ? 200 : 503;
      ctx.set('Cache-Control', 'no-store');
      ctx.body = { status: ok ? 'ready' : 'unavailable', checks: results };
      return;
    }
    return next();
  };
}

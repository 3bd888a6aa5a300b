// Request ids, access logs, security headers and health/readiness.
import crypto from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Logger } from './log.ts';
import { InvalidRequest } from './errors.ts';

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
export function securityHeaders(ownPagePrefixes: string[], opts: { https?: boolean } = {}) {
  return async function setSecurityHeaders(ctx: Context, next: Next) {
    await next();
    // RFC 6797: an https issuer tells browsers to use https only, for a year. Not includeSubDomains:
    // the operator's other hosts are not ours to decide. Browsers ignore it over plain http.
    if (opts.https) ctx.set('Strict-Transport-Security', 'max-age=31536000');
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('Referrer-Policy', 'no-referrer');
    ctx.set('X-Frame-Options', 'DENY');
    if (ctx.response.is('html')) {
      // '/' names the front door alone (as a prefix it would be every path).
      const own = ownPagePrefixes.some((p) => (p === '/' ? ctx.path === '/' : ctx.path.startsWith(p)));
      ctx.set('Content-Security-Policy', own
        ? "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        : "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'");
    }
  };
}

/**
 * Every 503 says when to come back (RFC 9110 §10.2.3), also those oidc-provider renders itself
 * (a store outage inside its routes, src/store/errors.ts), which set no headers of their own.
 */
export function retryAfterWhenUnavailable(seconds: number) {
  return async function setRetryAfterOn503(ctx: Context, next: Next) {
    try {
      await next();
    } finally {
      if (ctx.status === 503 && !ctx.response.get('Retry-After')) ctx.set('Retry-After', String(seconds));
    }
  };
}

/** The deployment mistake behind it, told at start (src/app.ts) and on the page. */
export const HTTPS_WITHOUT_PROXY = 'ISSUER is https:// but Gatehouse serves plain HTTP and TRUST_PROXY is off, so it cannot tell a request came over TLS and cannot set its secure sign-in cookies. Put a TLS-terminating proxy in front that sets X-Forwarded-Proto and set TRUST_PROXY=true (or use an http:// ISSUER for local testing).';

/**
 * Pages that set the secure sign-in cookies of an https issuer cannot work over plain HTTP (Koa
 * refuses to send a secure cookie over an unencrypted connection, which oidc-provider turns into
 * a 500). Say so on the page, 400, instead.
 */
export function requireHttpsForPages(config: { ISSUER: string }) {
  const https = config.ISSUER.startsWith('https://');
  const pages = /^\/(auth|interaction|account|admin(?!\/api)|session|device|password|federation)(\/|$)/;
  return async function refusePlainHttpPages(ctx: Context, next: Next) {
    if (!https || ctx.secure || !pages.test(ctx.path)) return next();
    ctx.state.html = ctx.accepts('json', 'html') === 'html';
    throw new InvalidRequest(`This page must be opened over HTTPS. ${HTTPS_WITHOUT_PROXY}`);
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

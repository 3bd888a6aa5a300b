// Double-submit CSRF for our form posts: a random token in an HttpOnly cookie and the same token in
// a hidden `_csrf` field. A cross-site form cannot read the cookie to copy it into the field, and
// SameSite=Lax keeps the cookie off cross-site POSTs altogether. The cookie is signed with the app's
// cookie keys (when set), so a sibling subdomain cannot plant a token of its choosing.
import crypto from 'node:crypto';
import type { Context } from 'koa';
import { Forbidden } from '../http/errors.ts';

export const CSRF_COOKIE = 'gh_csrf';
export const CSRF_FIELD = '_csrf';

export interface CsrfOptions {
  /** Mark the cookie Secure; pass `issuer starts with https://`. Defaults to the request's own scheme. */
  secure?: boolean;
}

const signed = (ctx: Context) => Boolean(ctx.app.keys);

function readCookie(ctx: Context): string | undefined {
  const value = ctx.cookies.get(CSRF_COOKIE, { signed: signed(ctx) });
  return value && /^[A-Za-z0-9_-]{43}$/.test(value) ? value : undefined;
}

/** The token for this browser: the cookie's when it has one, else a new one set as the cookie. */
export function issueCsrf(ctx: Context, opts: CsrfOptions = {}): string {
  const existing = readCookie(ctx);
  if (existing) return existing;
  const token = crypto.randomBytes(32).toString('base64url');
  ctx.cookies.set(CSRF_COOKIE, token, {
    httpOnly: true,
    sameSite: 'lax',
    secure: opts.secure ?? ctx.secure,
    signed: signed(ctx),
    path: '/',
    overwrite: true,
  });
  return token;
}

/** 403 unless the posted field equals the cookie (constant-time). */
export function assertCsrf(ctx: Context, bodyToken: string | null | undefined): void {
  const expected = readCookie(ctx);
  const given = Buffer.from(String(bodyToken ?? ''));
  const ok = expected !== undefined && given.length === expected.length && crypto.timingSafeEqual(given, Buffer.from(expected));
  if (!ok) throw new Forbidden('The form expired or was not sent from this site. Go back, reload the page and try again.');
}

// The JSON edge of the passkey ceremonies: the browser script (public/passkeys.js) posts options
// requests and responses as JSON, with the page's CSRF token in the body, and is answered with JSON
// (the next location on success, { error, error_description } otherwise).
import type { Context } from 'koa';
import { assertThat, HttpError, InvalidRequest } from '../http/errors.ts';
import { readJson } from '../http/body.ts';
import { assertCsrf, CSRF_FIELD } from '../interaction/csrf.ts';
import type { PasskeyRefused } from './ceremonies.ts';

export interface CeremonyBody {
  response?: unknown;
  name?: unknown;
}

/** Read a ceremony request: JSON errors from here on, the CSRF token checked first. */
export async function readCeremonyBody(ctx: Context): Promise<CeremonyBody> {
  ctx.state.html = false;
  ctx.set('Cache-Control', 'no-store');
  const body = await readJson(ctx);
  assertThat(body && typeof body === 'object' && !Array.isArray(body), new InvalidRequest('expected a JSON object'));
  assertCsrf(ctx, String((body as Record<string, unknown>)[CSRF_FIELD] ?? ''));
  return body as CeremonyBody;
}

/** A step that finished with a redirect (303) answers 200 { location } for the script to follow. */
export function answerWithLocation(ctx: Context): void {
  const location = ctx.response.get('Location');
  ctx.remove('Location');
  ctx.status = 200;
  ctx.body = { location };
}

/** 400 for a spent or foreign challenge (start again), 401 for a passkey that did not prove itself. */
export function refusalError(err: PasskeyRefused): HttpError {
  if (err.reason === 'expired' || err.reason === 'wrong_ceremony' || err.reason === 'malformed') return new InvalidRequest(err.message);
  if (err.reason === 'exists') return new HttpError(409, 'invalid_request', err.message);
  if (err.reason === 'sso_only') return new HttpError(403, 'access_denied', err.message);
  return new HttpError(401, 'access_denied', err.message);
}

/** 404 when this deployment cannot have passkeys (an issuer on an IP address). */
export function assertPasskeysAvailable(available: boolean): void {
  assertThat(available, new HttpError(404, 'not_found', 'Passkeys need an issuer with a host name (not an IP address).'));
}

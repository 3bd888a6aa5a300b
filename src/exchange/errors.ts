// Refusals of the exchange, independent of the surface that reports them: the grant turns them into
// oidc-provider errors (RFC 8693 §2.2.2), connection-details into Gatehouse HTTP errors.
import { errors } from 'oidc-provider';
import { HttpError } from '../http/errors.ts';

export type ExchangeErrorCode =
  | 'invalid_request'
  | 'invalid_target'
  | 'invalid_scope'
  | 'unauthorized_client'
  | 'temporarily_unavailable';

export class ExchangeError extends Error {
  constructor(public readonly code: ExchangeErrorCode, description: string) {
    super(description);
    this.name = 'ExchangeError';
  }
}

export const refuse = (code: ExchangeErrorCode) => (description: string) => new ExchangeError(code, description);
export const invalidRequest = refuse('invalid_request');
export const invalidTarget = refuse('invalid_target');
export const invalidScope = refuse('invalid_scope');
export const unauthorizedClient = refuse('unauthorized_client');
export const unavailable = refuse('temporarily_unavailable');

/** Guards read top-down (STYLE.md §3). */
export function assertThat(cond: unknown, err: ExchangeError): asserts cond {
  if (!cond) throw err;
}

/** The oidc-provider error the token endpoint answers with. */
export function toOidcError(e: ExchangeError): Error {
  switch (e.code) {
    case 'invalid_target':
      return new errors.InvalidTarget(e.message);
    case 'invalid_scope':
      // `scope` stays undefined: the error body says what was refused, not what might be granted.
      return new errors.InvalidScope(e.message, undefined as never);
    case 'unauthorized_client':
      return new errors.UnauthorizedClient(e.message);
    case 'temporarily_unavailable': {
      // oidc-provider builds every E() error as 400; the revocation store being down is a 503.
      const err = new errors.TemporarilyUnavailable(e.message) as Error & { status: number; statusCode: number };
      err.status = 503;
      err.statusCode = 503;
      return err;
    }
    default:
      return new errors.InvalidRequest(e.message);
  }
}

/** The Gatehouse HTTP error connection-details answers with. */
export function toHttpError(e: ExchangeError, status?: number): HttpError {
  const code = e.code === 'temporarily_unavailable' ? 503 : status ?? (e.code === 'invalid_target' || e.code === 'unauthorized_client' ? 403 : 400);
  return new HttpError(code, e.code, e.message);
}

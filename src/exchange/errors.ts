// Refusals of the exchange, independent of the surface that reports them: the grant turns them into
// oidc-provider errors (RFC 8693 §2.2.2), connection-details into Gatehouse HTTP errors.
import { errors } from 'oidc-provider';
import { HttpError } from '../http/errors.ts';
import { ACR_MFA } from '../mfa/policy.ts';

export type ExchangeErrorCode =
  | 'invalid_request'
  | 'invalid_target'
  | 'invalid_scope'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'insufficient_user_authentication'
  | 'temporarily_unavailable';

export class ExchangeError extends Error {
  constructor(public readonly code: ExchangeErrorCode, description: string) {
    // A refusal is an answer to the client, not a fault to debug: no stack trace.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(description);
    Error.stackTraceLimit = limit;
    this.name = 'ExchangeError';
  }
}

export const refuse = (code: ExchangeErrorCode) => (description: string) => new ExchangeError(code, description);
export const invalidRequest = refuse('invalid_request');
export const invalidTarget = refuse('invalid_target');
export const invalidScope = refuse('invalid_scope');
export const unauthorizedClient = refuse('unauthorized_client');
/** RFC 6749 §5.2: the assertion of an assertion grant (RFC 7521 §5.2: jwt-bearer) is not acceptable. */
export const invalidGrant = refuse('invalid_grant');
export const unavailable = refuse('temporarily_unavailable');
/** RFC 9470 §3: the subject's authentication is too weak for the target; the hint is always MFA (the one stronger level). */
export const insufficientUserAuthentication = refuse('insufficient_user_authentication');
/** RFC 9470 §3: the acr_values a client should request when it sends the user back to sign in. */
const STEP_UP_ACR_VALUES = ACR_MFA;

/** Guards read top-down (STYLE.md §3). */
/** The refusal is made only when the guard fails: a guard that holds costs nothing (most hold). */
export function assertThat(cond: unknown, refusal: () => ExchangeError): asserts cond {
  if (!cond) throw refusal();
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
    case 'invalid_grant':
      // oidc-provider's InvalidGrant always says "grant request is invalid"; each refusal says why.
      return new errors.CustomOIDCProviderError('invalid_grant', e.message);
    case 'insufficient_user_authentication':
      // 400 like every token-endpoint refusal (RFC 6749 §5.2); index.ts adds acr_values to the body.
      return Object.assign(new errors.CustomOIDCProviderError(e.code, e.message), { acr_values: STEP_UP_ACR_VALUES });
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
  if (e.code === 'insufficient_user_authentication') {
    // RFC 9470 §3: a protected resource answers 401 with the error and the acr_values to ask for.
    return new HttpError(401, e.code, e.message, {
      'WWW-Authenticate': `Bearer error="${e.code}", error_description="${e.message.replace(/["\\]/g, '')}", acr_values="${STEP_UP_ACR_VALUES}"`,
    });
  }
  const code = e.code === 'temporarily_unavailable' ? 503 : status ?? (e.code === 'invalid_target' || e.code === 'unauthorized_client' ? 403 : 400);
  return new HttpError(code, e.code, e.message);
}

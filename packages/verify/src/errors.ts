/** The wire error codes a resource server answers with (RFC 6750 §3.1, RFC 9449 §7.1, RFC 6749 §4.1.2.1). */
export type RejectionCode = 'invalid_request' | 'invalid_token' | 'insufficient_scope' | 'invalid_dpop_proof' | 'use_dpop_nonce' | 'temporarily_unavailable';

const STATUS: Record<RejectionCode, 400 | 401 | 403 | 503> = {
  invalid_request: 400,
  invalid_token: 401,
  invalid_dpop_proof: 401,
  use_dpop_nonce: 401,
  insufficient_scope: 403,
  temporarily_unavailable: 503,
};

/**
 * Why a request's token was refused. `status` is what to answer with; `error` is the OAuth error code
 * for the WWW-Authenticate challenge; `scope` (insufficient_scope only) is what the token lacks, so a
 * client can step up (ask for a new token with those scopes). `error` is undefined when the request
 * carried no token at all: RFC 6750 §3.1 says the challenge then has no error code.
 */
export class TokenRejectedError extends Error {
  readonly status: 400 | 401 | 403 | 503;
  readonly error: RejectionCode | undefined;
  /** `error` null: the request carried no token (401, challenge without an error code). */
  constructor(message: string, error: RejectionCode | null = 'invalid_token', readonly scope?: string[]) {
    super(message);
    this.name = 'TokenRejectedError';
    this.error = error ?? undefined;
    this.status = error ? STATUS[error] : 401;
  }
}

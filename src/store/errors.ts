// A dependency that cannot answer (PostgreSQL, Redis: down, refusing, restarting, too slow) is one
// typed error, so every edge answers it the same way: 503 temporarily_unavailable with Retry-After,
// never a 500 that looks like a bug. The stores throw it; src/http/errors.ts maps it for our routes.
//
// oidc-provider renders any error thrown inside its routes (adapter, findAccount, ...) from
// `statusCode`, `expose`, `message` (its wire `error`) and `error_description`
// (node_modules/oidc-provider/lib/helpers/err_out.js), so the same object also comes out of its
// routes as a 503 temporarily_unavailable instead of its generic 500 server_error.

export type Dependency = 'database' | 'redis';

export class DependencyUnavailableError extends Error {
  readonly status = 503;
  readonly statusCode = 503;
  readonly expose = true;
  readonly error = 'temporarily_unavailable';
  readonly error_description: string;
  constructor(readonly dependency: Dependency, cause?: unknown) {
    super('temporarily_unavailable');
    this.name = 'DependencyUnavailableError';
    this.error_description = `the ${dependency} is unavailable right now; try again shortly`;
    this.cause = cause;
  }
}

// Node socket errors that mean "could not reach / lost the connection".
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ECONNABORTED']);
// PostgreSQL SQLSTATEs for an unavailable server (Appendix A): class 08 connection exception,
// 57P01-57P05 admin/crash shutdown, cannot connect now, idle session timeout; 57014 query_canceled
// (statement_timeout); 53300 too_many_connections.
const PG_UNAVAILABLE = /^(08...|57P0[1-5]|57014|53300)$/;
// Messages of node-postgres and ioredis for the same situations (they carry no code).
const DRIVER_MESSAGES = /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|not queryable|Connection is closed|Command timed out|Stream isn't writeable|Reached the max retries per request limit|Client was closed and is not queryable|Cannot use a pool after calling end/i;

/** Whether `err` (or what it wraps) says the dependency cannot answer, rather than a query being wrong. */
export function isUnavailable(err: unknown, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 4) return false;
  if (err instanceof DependencyUnavailableError) return true;
  const e = err as { code?: unknown; message?: unknown; name?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && (SOCKET_CODES.has(e.code) || PG_UNAVAILABLE.test(e.code))) return true;
  if (e.name === 'MaxRetriesPerRequestError') return true;
  if (typeof e.message === 'string' && DRIVER_MESSAGES.test(e.message)) return true;
  // net.connect to a name with several addresses fails with an AggregateError of each attempt.
  if (Array.isArray(e.errors) && e.errors.some((x) => isUnavailable(x, depth + 1))) return true;
  return isUnavailable(e.cause, depth + 1);
}

/** The typed error for an outage; any other error unchanged. */
export function asUnavailable(err: unknown, dependency: Dependency): unknown {
  return err instanceof DependencyUnavailableError || !isUnavailable(err) ? err : new DependencyUnavailableError(dependency, err);
}

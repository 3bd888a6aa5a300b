// pino JSON logs. Tokens, secrets, passwords, cookies and authorization headers are redacted by path,
// and errors are logged through one serializer that keeps only what says what failed: a driver's
// error carries the failing statement's parameters (device and user codes, emails, token ids:
// PGlite's `params`, node-postgres's `detail` "Key (email)=(...)", ioredis's `command.args`), and
// none of that may reach a log line, in either store mode.
import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  '*.password', '*.client_secret', '*.access_token', '*.refresh_token', '*.id_token',
  '*.subject_token', '*.actor_token', '*.client_assertion', 'req.headers.dpop', '*.code', '*.code_verifier', '*.token', '*.secret',
  '*.device_code', '*.user_code', '*.params', '*.parameters', '*.values',
  // Issue 19's credentials: the jwt-bearer grant's assertion (an ID-JAG), CIBA's request handle,
  // login_hint_token and ping bearer, and an imported user's password hash.
  '*.assertion', '*.auth_req_id', '*.login_hint_token', '*.client_notification_token', '*.password_hash',
  'password', 'client_secret', 'token', 'secret', 'params', 'parameters',
];

// SQLSTATE class 22 (data exception) and 23 (integrity) messages quote the offending input value.
const QUOTES_INPUT = /^2[23]/;

/** An error as logged: its kind, code, message and stack, and the same for its causes; nothing else. */
export function serializeError(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error) && (typeof err !== 'object' || err === null)) return err;
  const e = err as Error & { code?: unknown; status?: unknown; errors?: unknown };
  const code = typeof e.code === 'string' || typeof e.code === 'number' ? e.code : undefined;
  const message = typeof code === 'string' && QUOTES_INPUT.test(code)
    ? String(e.message).replace(/"[^"]*"|'[^']*'|\([^)]*\)/g, '…')
    : String(e.message ?? '');
  const stack = typeof e.stack === 'string' ? [`${e.name ?? 'Error'}: ${message}`, ...e.stack.split('\n').filter((l) => /^\s+at /.test(l))].join('\n') : undefined;
  return {
    type: e.name ?? e.constructor?.name,
    message,
    // Not `code`: that key is redacted everywhere (an OAuth authorization code).
    ...(code !== undefined ? { errCode: code } : {}),
    ...(typeof e.status === 'number' ? { status: e.status } : {}),
    ...(stack ? { stack } : {}),
    ...(depth < 3 && e.cause !== undefined ? { cause: serializeError(e.cause, depth + 1) } : {}),
    ...(depth < 3 && Array.isArray(e.errors) ? { errors: e.errors.slice(0, 5).map((x) => serializeError(x, depth + 1)) } : {}),
  };
}

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { service: 'gatehouse' },
      serializers: { err: serializeError, error: serializeError, cause: serializeError },
    },
    destination as never,
  );
}

// pino JSON logs. Tokens, secrets, passwords, cookies and authorization headers are redacted by path.
import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  '*.password', '*.client_secret', '*.access_token', '*.refresh_token', '*.id_token',
  '*.subject_token', '*.actor_token', '*.client_assertion', 'req.headers.dpop', '*.code', '*.code_verifier', '*.token', '*.secret',
  'password', 'client_secret', 'token', 'secret',
];

export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { service: 'gatehouse' } },
    destination as never,
  );
}

// Configuration: one zod schema over the environment, parsed once, frozen.
// Every option carries its default and the reason for it beside it (STYLE.md §7).
import path from 'node:path';
import { z } from 'zod';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const seconds = (def: number) => z.coerce.number().int().positive().default(def);

/** A rate limit, `<points>/<duration>` or `off` (issue 7). */
export interface RateLimitSpec {
  points: number;
  seconds: number;
}
const UNITS: Record<string, number> = { s: 1, m: 60, min: 60, h: 3600, d: 86400 };
const rateLimit = (def: string) =>
  z
    .string()
    .default(def)
    .transform((v, ctx): RateLimitSpec | null => {
      if (v.trim() === 'off') return null;
      const m = /^\s*(\d+)\s*\/\s*(\d*)\s*(s|m|min|h|d)\s*$/.exec(v);
      const points = m ? Number(m[1]) : 0;
      const secs = m ? Number(m[2] || 1) * UNITS[m[3]] : 0;
      if (!m || points < 1 || secs < 1) {
        ctx.addIssue({ code: 'custom', message: 'must look like 60/1m (points/duration: s, m, h, d) or off' });
        return z.NEVER;
      }
      return { points, seconds: secs };
    });

const list = z
  .string()
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean));

// A browser sends Origin as scheme://host[:port], lower-case, no default port, no path: an entry in
// any other shape could never match, so it is refused at start rather than silently ignored.
const isOrigin = (o: string) => {
  try {
    return new URL(o).origin === o;
  } catch {
    return false;
  }
};
const origins = list.pipe(z.array(z.string().refine(isOrigin, {
  error: (issue) => `"${String(issue.input)}" is not an origin; write each like https://app.example.com (no path, no trailing slash)`,
})));

export const envSchema = z.object({
  // Public URL of this issuer exactly as clients see it (scheme, host, optional path, no trailing slash).
  ISSUER: z.url().optional(),
  // 3000 is the conventional dev port; the printed URL follows it when ISSUER is unset.
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  // Listen on loopback by default in embedded mode: a fresh laptop should not expose an IdP to the LAN.
  HOST: z.string().default('127.0.0.1'),
  // PostgreSQL 14+. Unset → embedded PGlite in DATA_DIR (single process).
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  // Redis 6+/Valkey. Unset → in-process store (single process only).
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').optional(),
  // How long a request may wait on PostgreSQL (a connection, a statement) and on a Redis command
  // before it gets 503 temporarily_unavailable: a hung or unreachable dependency answers in bounded time.
  DATABASE_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(5000),
  REDIS_TIMEOUT_MS: z.coerce.number().int().min(50).max(60_000).default(2000),
  // Prefix for every Redis key, so several deployments (or test runs) can share one Redis.
  REDIS_KEY_PREFIX: z.string().default('gatehouse:'),
  // Where embedded mode keeps PGlite and generated secrets.
  DATA_DIR: z.string().default('./data'),
  // The first administrator, created at start while no admin exists (both or neither). Unset → an
  // admin@localhost account with a one-time password printed once at first start.
  ADMIN_EMAIL: z.email().optional(),
  ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  // Origins allowed to call the token, userinfo and LiveKit endpoints from a browser.
  CORS_ORIGINS: origins.default([]),
  // Lifetimes (seconds). The contract: access 15 min, refresh 7 days sliding / 30 days absolute.
  ACCESS_TOKEN_TTL: seconds(900),
  ID_TOKEN_TTL: seconds(3600),
  AUTHORIZATION_CODE_TTL: seconds(60),
  REFRESH_TOKEN_TTL: seconds(7 * 24 * 3600),
  REFRESH_TOKEN_ABSOLUTE_TTL: seconds(30 * 24 * 3600),
  SESSION_TTL: seconds(14 * 24 * 3600),
  INTERACTION_TTL: seconds(3600),
  DEVICE_CODE_TTL: seconds(600),
  // 32 bytes, base64url. Unset → generated once and persisted (DATA_DIR file, or the database).
  DATA_ENCRYPTION_KEY: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes base64url (43 chars)').optional(),
  // Comma-separated cookie signing keys, newest first. Unset → generated once and persisted.
  COOKIE_KEYS: list.optional(),
  // Self-registration (sign-up) on the sign-in page; off by default, so accounts are made by operators.
  ALLOW_REGISTRATION: bool.default(false),
  // Outgoing mail for password reset and email verification (smtp:// or smtps://, credentials in the
  // URL). Unset → neither is offered: operators reset passwords with `gatehouse user set-password`.
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'must be an smtp:// or smtps:// URL').optional(),
  // The From of those messages. Unset → "Gatehouse <no-reply@<issuer host>>".
  MAIL_FROM: z.string().min(3).max(320).optional(),
  // In-call approvals (CIBA): each pending request is also POSTed here as JSON (user, client, binding
  // message, approval link; never the auth_req_id), for an app to turn into a push. Unset → none.
  CIBA_WEBHOOK_URL: z.string().url().regex(/^https?:\/\//, 'must be an http(s) URL').optional(),
  // Extra CA certificates (PEM file) trusted for calls to endpoints an operator set on a client:
  // back-channel logout URIs and CIBA notification endpoints (https only), e.g. an internal PKI.
  BACKCHANNEL_CA_FILE: z.string().optional(),
  // How long a reset link works (30 min) and a verification link (1 day), in seconds.
  PASSWORD_RESET_TTL: seconds(1800),
  EMAIL_VERIFICATION_TTL: seconds(86400),
  // Signing keys are re-read from the database this often, so a rotation on one node reaches all.
  KEYS_REFRESH_SECONDS: seconds(30),
  // Largest request body we read; oidc-provider and our routes share it.
  BODY_LIMIT: z.string().regex(/^\d+(b|kb|mb)$/i, 'must look like 64kb').default('64kb'),
  // Honour X-Forwarded-* (set when behind a load balancer).
  TRUST_PROXY: bool.default(false),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // Reserved for the token-exchange grant.
  LIVEKIT_URL: z.string().regex(/^(wss?|https?):\/\//, 'must be a ws(s):// or http(s):// URL').optional(),
  LIVEKIT_API_KEY: z.string().min(1).optional(),
  LIVEKIT_API_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  // Participant identity is `<prefix><user id>`, so LiveKit webhooks map back to a user.
  LIVEKIT_IDENTITY_PREFIX: z.string().regex(/^[A-Za-z0-9_.-]{0,32}$/, 'letters, digits, _ . - (at most 32)').default('user_'),
  // Generated room names are `<prefix>_<epoch>_<random>`; unset → the participant identity, so a
  // generated room falls inside the default "own rooms" policy pattern `{identity}_*`.
  LIVEKIT_ROOM_PREFIX: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, _ . - (1 to 64)').optional(),
  // LiveKit checks expiry only on connect; 15 min matches the access-token default (the contract).
  LIVEKIT_TOKEN_TTL: z.coerce.number().int().min(30).max(24 * 3600).default(900),
  // Anonymous connection-details (identity guest_<random>, no data publishing). Off: a bearer token is required.
  LIVEKIT_GUESTS: bool.default(false),
  // Lifetime of the delegation token connection-details hands to dispatched agents: short, it sits in participant attributes.
  LIVEKIT_DELEGATION_TTL: z.coerce.number().int().min(30).max(900).default(300),
  // Rooms only Gatehouse's participants may stay in: one whose token Gatehouse did not mint is removed
  // when LiveKit reports it (webhooks). `false` by default, so a LiveKit shared with another token
  // minter keeps working; `true` = every room; or room-name globs (`support_*,*_locked`).
  LIVEKIT_GATEHOUSE_ONLY: z.string().default('false').transform((v, ctx): string[] => {
    const t = v.trim();
    if (['false', '0', 'no', ''].includes(t)) return [];
    if (['true', '1', 'yes'].includes(t)) return ['*'];
    const globs = t.split(',').map((x) => x.trim()).filter(Boolean);
    if (globs.some((g) => !/^[A-Za-z0-9_.:=@*-]{1,256}$/.test(g))) {
      ctx.addIssue({ code: 'custom', message: 'must be true, false or comma-separated room-name globs (letters, digits, _ . : = @ - and *)' });
      return z.NEVER;
    }
    return globs;
  }),
  // Participants LiveKit itself starts, with tokens it mints, stay in Gatehouse-only rooms: agents
  // (dispatched through the token's roomConfig) and egress (recording). Add sip, ingress as needed.
  LIVEKIT_GATEHOUSE_ONLY_EXEMPT: list.default(['agent', 'egress']).pipe(z.array(z.enum(['standard', 'ingress', 'egress', 'sip', 'agent', 'connector']))),
  // --- login security (issue 7) ---
  // Everyone must use a second factor (else only the roles below and clients with require_mfa).
  MFA_REQUIRED: bool.default(false),
  // Roles that must use a second factor; admins by default (an admin account is the whole IdP).
  // `none` for no role (an empty value means "use the default", like every variable here).
  MFA_REQUIRED_ROLES: z.string().default('admin').transform((s) => (s.trim() === 'none' ? [] : s.split(',').map((x) => x.trim()).filter(Boolean))),
  // Issuer name shown in authenticator apps next to the account.
  MFA_ISSUER_NAME: z.string().min(1).max(64).default('Gatehouse'),
  // Recovery codes left at which the user is told to generate a new set.
  MFA_RECOVERY_LOW: z.coerce.number().int().min(0).max(10).default(3),
  // `off` switches every rate limit, lockout and login delay off (benchmarks only).
  RATE_LIMITS: z.enum(['on', 'off']).default('on'),
  // Each limit is `<points>/<duration>` (duration: 30s, 1m, 15m, 1h, 1d) or `off`. See docs/login-security.md.
  // Login attempts per client IP: generous, since many people can sit behind one NAT.
  RATE_LIMIT_LOGIN_IP: rateLimit('30/1m'),
  // Failed logins per account (by email, known or not) before the account is locked for LOCKOUT_DURATION.
  RATE_LIMIT_LOGIN_ACCOUNT: rateLimit('5/15m'),
  // Failed second-factor codes per account before MFA is locked for LOCKOUT_DURATION.
  RATE_LIMIT_MFA_ACCOUNT: rateLimit('5/15m'),
  // Token exchange per user (subject) and per client: 60/min per user (the contract), high per client
  // because one agent client exchanges for many users.
  RATE_LIMIT_EXCHANGE_USER: rateLimit('60/1m'),
  RATE_LIMIT_EXCHANGE_CLIENT: rateLimit('6000/1m'),
  // POST /livekit/connection-details per user, and anonymous guests per IP (much stricter).
  RATE_LIMIT_CONNECTION_USER: rateLimit('60/1m'),
  RATE_LIMIT_GUEST_IP: rateLimit('10/1m'),
  // POST /token per client IP (every grant); a backend NAT may carry many users.
  RATE_LIMIT_TOKEN_IP: rateLimit('600/1m'),
  // Account registration (and dynamic client registration) per IP.
  RATE_LIMIT_REGISTER_IP: rateLimit('10/1h'),
  // Password-reset (and verification-mail) requests per IP, and per address whether or not it has an account.
  RATE_LIMIT_RESET_IP: rateLimit('10/1h'),
  RATE_LIMIT_RESET_ACCOUNT: rateLimit('3/1h'),
  // How long an account stays locked after too many failures (seconds). Time-boxed, never permanent.
  LOCKOUT_DURATION: seconds(900),
  // Progressive delay after each failed login of an account: base * 2^(failures-1), at most 5 s. 0 = none.
  LOGIN_DELAY_MS: z.coerce.number().int().min(0).max(5000).default(250),
  // --- end login security ---
  // --- MCP clients and voice devices (issue 5) ---
  // Dynamic client registration (RFC 7591/7592) at /reg. `open` by default: MCP hosts register
  // themselves with no manual set-up (the MCP authorization spec's path for unknown clients); the
  // registration policy keeps such clients untrusted (never first-party, consent always shown,
  // code/refresh/device grants only, PKCE for public clients) and RATE_LIMIT_REGISTER_IP limits them.
  // `token`: an initial access token (REGISTRATION_INITIAL_ACCESS_TOKEN) is required. `off`: no /reg.
  REGISTRATION: z.enum(['open', 'token', 'off']).default('open'),
  // The initial access token for REGISTRATION=token (at least 32 characters; give it to trusted hosts).
  REGISTRATION_INITIAL_ACCESS_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  // GET /metrics (Prometheus): unset → loopback callers only; set → `Authorization: Bearer <token>` from anywhere.
  METRICS_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  // Scope used when an authorization or device request has no `scope`; with `resource=` the
  // resource's registered scopes are added, so an MCP host that sends no scope still gets a usable token.
  DEFAULT_SCOPE: z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/, 'space-separated scope tokens').default('openid'),
  // RFC 8628 §3.2 polling interval (seconds) told to devices; polling faster answers slow_down.
  DEVICE_POLL_INTERVAL: z.coerce.number().int().min(1).max(60).default(5),
  // Client ID Metadata Documents (https client_id URLs fetched on first use). Off unless hosts are
  // listed: comma-separated host names (or host:port); `*` allows any public host.
  CIMD_ALLOWED_HOSTS: list.default([]),
  // Tests and closed networks only: allow fetching documents from private, loopback and link-local addresses.
  CIMD_ALLOW_PRIVATE_ADDRESSES: bool.default(false),
  // Extra CA certificates (PEM file) trusted for CIMD fetches, e.g. an internal PKI.
  CIMD_CA_FILE: z.string().optional(),
  // Largest document accepted (bytes) and the longest a fetch may take (ms).
  CIMD_MAX_BYTES: z.coerce.number().int().min(512).max(64 * 1024).default(5 * 1024),
  CIMD_TIMEOUT_MS: z.coerce.number().int().min(100).max(10_000).default(2500),
  // --- end MCP clients and voice devices ---
  // Read by libraries (Koa's app.env); nothing in Gatehouse behaves differently on it.
  NODE_ENV: z.string().default('development'),
});

export type Env = z.infer<typeof envSchema>;

export interface Config extends Readonly<Omit<Env, 'ISSUER' | 'DATA_DIR'>> {
  readonly ISSUER: string;
  readonly DATA_DIR: string;
  readonly embedded: boolean;
}

export class ConfigError extends Error {
  constructor(public readonly issues: { variable: string; message: string }[]) {
    super(
      'Invalid configuration:\n' +
        issues.map((i) => `  ${i.variable}: ${i.message}`).join('\n'),
    );
    this.name = 'ConfigError';
  }
}

/** Parse the environment once. Empty strings count as unset. Throws ConfigError naming each bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== '') input[key] = v;
  }
  const parsed = envSchema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => ({ variable: String(i.path[0] ?? '?'), message: i.message })),
    );
  }
  const e = parsed.data;
  const livekit = [e.LIVEKIT_URL, e.LIVEKIT_API_KEY, e.LIVEKIT_API_SECRET];
  if (livekit.some(Boolean) && !livekit.every(Boolean)) {
    throw new ConfigError([
      { variable: 'LIVEKIT_URL', message: 'LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET must be set together' },
    ]);
  }
  if (e.REGISTRATION === 'token' && !e.REGISTRATION_INITIAL_ACCESS_TOKEN) {
    throw new ConfigError([{ variable: 'REGISTRATION_INITIAL_ACCESS_TOKEN', message: 'is required when REGISTRATION=token' }]);
  }
  if ((e.ADMIN_EMAIL === undefined) !== (e.ADMIN_PASSWORD === undefined)) {
    throw new ConfigError([
      { variable: e.ADMIN_EMAIL ? 'ADMIN_PASSWORD' : 'ADMIN_EMAIL', message: 'ADMIN_EMAIL and ADMIN_PASSWORD must be set together' },
    ]);
  }
  const issuer = (e.ISSUER ?? `http://${e.HOST === '0.0.0.0' ? 'localhost' : e.HOST}:${e.PORT}`).replace(/\/+$/, '');
  return Object.freeze({
    ...e,
    CORS_ORIGINS: Object.freeze([...e.CORS_ORIGINS]) as unknown as string[],
    ISSUER: issuer,
    DATA_DIR: path.resolve(e.DATA_DIR),
    embedded: !e.DATABASE_URL,
  });
}

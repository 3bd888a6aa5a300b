// Configuration: one zod schema over the environment, parsed once, frozen.
// Every option carries its default and the reason for it beside it (STYLE.md §7).
import path from 'node:path';
import { z } from 'zod';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

const seconds = (def: number) => z.coerce.number().int().positive().default(def);

const list = z
  .string()
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean));

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
  // Prefix for every Redis key, so several deployments (or test runs) can share one Redis.
  REDIS_KEY_PREFIX: z.string().default('gatehouse:'),
  // Where embedded mode keeps PGlite and generated secrets.
  DATA_DIR: z.string().default('./data'),
  ADMIN_EMAIL: z.email().optional(),
  ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  // Origins allowed to call the token, userinfo and LiveKit endpoints from a browser.
  CORS_ORIGINS: list.default([]),
  // Lifetimes (seconds). DESIGN.md: access 15 min, refresh 7 days sliding / 30 days absolute.
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
  ALLOW_REGISTRATION: bool.default(false),
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
  // LiveKit checks expiry only on connect; 15 min matches the access-token default (DESIGN.md).
  LIVEKIT_TOKEN_TTL: z.coerce.number().int().min(30).max(24 * 3600).default(900),
  // Anonymous connection-details (identity guest_<random>, no data publishing). Off: a bearer token is required.
  LIVEKIT_GUESTS: bool.default(false),
  // Lifetime of the delegation token connection-details hands to dispatched agents: short, it sits in participant attributes.
  LIVEKIT_DELEGATION_TTL: z.coerce.number().int().min(30).max(900).default(300),
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

// How long a revocation entry must live: the longest remaining lifetime of anything it covers,
// plus a minute of clock skew. After that nothing it revokes can still be valid, so it may go.
import type { Config } from '../config/index.ts';

const SKEW = 60;
/** Exchanged resource tokens are capped at 15 minutes (DESIGN.md, src/exchange/grant.ts). */
const EXCHANGED_TOKEN_MAX_TTL = 900;

type TtlConfig = Pick<Config, 'ACCESS_TOKEN_TTL' | 'LIVEKIT_TOKEN_TTL' | 'LIVEKIT_DELEGATION_TTL' | 'REFRESH_TOKEN_ABSOLUTE_TTL' | 'SESSION_TTL'>;

/** Any single access-type token Gatehouse issues (OIDC access token, exchanged MCP / LiveKit / delegation token). */
export function accessTokenTtl(c: TtlConfig): number {
  return Math.max(c.ACCESS_TOKEN_TTL, EXCHANGED_TOKEN_MAX_TTL, c.LIVEKIT_TOKEN_TTL, c.LIVEKIT_DELEGATION_TTL) + SKEW;
}

/**
 * A grant, a session or a user: refresh tokens (checked on refresh) live up to the absolute refresh
 * lifetime, sessions up to SESSION_TTL, and every access token derived from them is shorter.
 */
export function originTtl(c: TtlConfig): number {
  return Math.max(c.REFRESH_TOKEN_ABSOLUTE_TTL, c.SESSION_TTL, accessTokenTtl(c)) + SKEW;
}

/** A single token with a known expiry. */
export function remainingTtl(exp: number | undefined, c: TtlConfig): number {
  if (!exp) return accessTokenTtl(c);
  return Math.max(1, exp - Math.floor(Date.now() / 1000) + SKEW);
}

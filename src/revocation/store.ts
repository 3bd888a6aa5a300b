// Revocation lists over the Kv interface (Redis in production, in-process in embedded mode).
// Each entry's TTL is the remaining lifetime of what it revokes, so the lists clean themselves.
// Entries: by token jti, by grant id, by session id, and by user ("everything issued before T").
import type { Kv } from '../store/kv.ts';

export interface TokenFacts {
  jti?: string;
  /** origin grant id */
  gid?: string;
  /** origin session id */
  sid?: string;
  sub?: string;
  /** issued-at, seconds */
  iat?: number;
}

export type RevocationKind = 'jti' | 'grant' | 'session' | 'user';

export interface RevocationStore {
  /** Revoke for `ttlSeconds` (the longest remaining lifetime of what it covers). */
  revoke(kind: RevocationKind, id: string, ttlSeconds: number): Promise<void>;
  /** Which list (if any) revokes a token with these facts. Throws when the store is unreachable. */
  check(facts: TokenFacts): Promise<RevocationKind | undefined>;
}

export class RevocationUnavailableError extends Error {
  constructor(cause: unknown) {
    super('revocation store unavailable');
    this.name = 'RevocationUnavailableError';
    this.cause = cause;
  }
}

const key = (kind: RevocationKind, id: string) => `revoked:${kind}:${id}`;

export function createRevocationStore(kv: Kv): RevocationStore {
  return {
    async revoke(kind, id, ttlSeconds) {
      // A user revocation stores the cut-off time: tokens issued at or before it are dead.
      const value = kind === 'user' ? String(Math.floor(Date.now() / 1000)) : '1';
      await kv.set(key(kind, id), value, Math.max(1, Math.ceil(ttlSeconds)));
    },
    async check(f) {
      try {
        const [jti, gid, sid, user] = await Promise.all([
          f.jti ? kv.get(key('jti', f.jti)) : null,
          f.gid ? kv.get(key('grant', f.gid)) : null,
          f.sid ? kv.get(key('session', f.sid)) : null,
          f.sub ? kv.get(key('user', f.sub)) : null,
        ]);
        if (jti) return 'jti';
        if (gid) return 'grant';
        if (sid) return 'session';
        if (user && (f.iat === undefined || f.iat <= Number(user))) return 'user';
        return undefined;
      } catch (err) {
        throw new RevocationUnavailableError(err);
      }
    },
  };
}

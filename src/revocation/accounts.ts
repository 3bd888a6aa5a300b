// User-level revocation ("everything issued to this user before now") on the account changes that
// must end every session: password change, disable, delete, MFA reset. The accounts module stays
// unaware of revocation; app.ts hands everyone this decorated version.
import type { Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';
import type { Config } from '../config/index.ts';
import type { RevocationService } from './store.ts';
import { originTtl } from './ttl.ts';
import type { SessionEnds } from './session-ends.ts';

/** The account operations that revoke; other methods pass through untouched. */
const REVOKING: Record<string, { reason: string; when?: (args: unknown[]) => boolean }> = {
  setPassword: { reason: 'password_change' },
  setActive: { reason: 'account_disabled', when: (args) => args[1] === false },
  deleteUser: { reason: 'account_deleted' },
  resetMfa: { reason: 'mfa_reset' },
};

export interface UserRevocationDeps {
  revocations: RevocationService;
  config: Config;
  db: Queryable;
  log: Logger;
  /** Relying parties with a back-channel logout URI hear of the sessions this ends. */
  sessionEnds?: SessionEnds;
}

export function withUserRevocation<A extends object>(accounts: A, deps: UserRevocationDeps): A {
  const decorated = { ...accounts } as Record<string, unknown>;
  for (const [name, rule] of Object.entries(REVOKING)) {
    const original = (accounts as Record<string, unknown>)[name];
    if (typeof original !== 'function') continue;
    decorated[name] = async (...args: unknown[]) => {
      const result = await (original as (...a: unknown[]) => Promise<unknown>).apply(accounts, args);
      const userId = args[0];
      if (typeof userId === 'string' && (!rule.when || rule.when(args))) await revokeUser(userId, rule.reason, deps);
      return result;
    };
  }
  return decorated as A;
}

/**
 * Revoke every token issued to the user until now, and end their browser sessions (no silent re-issue).
 *
 * Tokens say when they were issued in whole seconds (`iat`), so the cutoff refuses everything issued
 * in the second of the revocation too — a token from that second may predate it. To keep that from
 * refusing a sign-in made right after (a new password used at once, a script that provisions and
 * signs in), this returns only once that second is over: whatever is issued afterwards is later.
 */
export async function revokeUser(userId: string, reason: string, deps: UserRevocationDeps) {
  await deps.revocations.revoke('user', userId, originTtl(deps.config), { subject: userId, reason });
  await deps.db.query<{ payload: unknown }>(`DELETE FROM oidc_payloads WHERE model = 'Session' AND payload->>'accountId' = $1 RETURNING payload`, [userId])
    .then((r) => deps.sessionEnds?.ended(r.rows.map((x) => x.payload), reason))
    .catch((err) => deps.log.warn({ err }, 'ending the sessions of a revoked user failed'));
  await new Promise((resolve) => setTimeout(resolve, 1000 - (Date.now() % 1000) + 5));
}

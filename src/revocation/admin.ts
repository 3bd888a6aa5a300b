// Operator revocation (`gatehouse revoke --user|--grant|--session|--jti`, and the admin API later):
// the same lists and the same pub/sub as every other writer, with the owner looked up so live
// LiveKit participants are removed too.
import type { Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';
import type { Config } from '../config/index.ts';
import type { RevocationKind, RevocationService } from './store.ts';
import { accessTokenTtl, originTtl } from './ttl.ts';
import { revokeUser } from './accounts.ts';
import type { SessionEnds } from './session-ends.ts';

export interface OperatorRevocation {
  kind: RevocationKind;
  id: string;
  /** jti only: seconds the entry must live (default: the longest access-token lifetime). */
  ttl?: number;
}

export interface OperatorRevocationDeps {
  revocations: RevocationService;
  config: Config;
  db: Queryable;
  log: Logger;
  sessionEnds?: SessionEnds;
}

/** Whose grant / session is it (oidc-provider payloads): live-room removal needs the user. */
async function ownerOf(db: Queryable, kind: RevocationKind, id: string): Promise<string | undefined> {
  if (kind === 'grant') {
    const r = await db.query<{ account: string | null }>(`SELECT payload->>'accountId' AS account FROM oidc_payloads WHERE model = 'Grant' AND id = $1`, [id]);
    return r.rows[0]?.account ?? undefined;
  }
  if (kind === 'session') {
    const r = await db.query<{ account: string | null }>(`SELECT payload->>'accountId' AS account FROM oidc_payloads WHERE model = 'Session' AND uid = $1`, [id]);
    return r.rows[0]?.account ?? undefined;
  }
  return undefined;
}

export async function revokeAsOperator(deps: OperatorRevocationDeps, r: OperatorRevocation) {
  if (r.kind === 'user') {
    await revokeUser(r.id, 'admin', deps);
    return { revoked: 'user', id: r.id, ttl: originTtl(deps.config) };
  }
  const subject = await ownerOf(deps.db, r.kind, r.id);
  const ttl = r.kind === 'jti' ? r.ttl ?? accessTokenTtl(deps.config) : originTtl(deps.config);
  const result = await deps.revocations.revoke(r.kind, r.id, ttl, { subject, reason: 'admin' });
  if (r.kind === 'grant') {
    // Also end it in oidc-provider's store: its refresh tokens and codes stop working at once.
    await deps.db.query(`DELETE FROM oidc_payloads WHERE grant_id = $1 OR (model = 'Grant' AND id = $1)`, [r.id]);
  }
  if (r.kind === 'session') {
    const ended = await deps.db.query<{ payload: unknown }>(`DELETE FROM oidc_payloads WHERE model = 'Session' AND uid = $1 RETURNING payload`, [r.id]);
    deps.sessionEnds?.ended(ended.rows.map((x) => x.payload), 'admin');
  }
  return { revoked: r.kind, id: r.id, ttl, ...(subject ? { subject } : {}), ...(result.hot ? {} : { warning: 'recorded durably; Redis is unreachable and is reloaded when it returns' }) };
}

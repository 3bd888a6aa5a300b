// oidc-provider's storage adapter over PostgreSQL/PGlite: every model in `oidc_payloads`, keyed by
// (model, id), with grant_id / user_code / uid columns indexed for the lookups oidc-provider makes.
// Clients are not stored here: they live in `clients` and are read through `clientFinder`.
import type { Db, Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';

type Payload = Record<string, unknown> & { grantId?: string; userCode?: string; uid?: string; consumed?: number };

export interface AdapterOptions {
  clientFinder?: (id: string) => Promise<object | undefined>;
}

export interface AdapterInstance {
  upsert(id: string, payload: Payload, expiresIn?: number): Promise<void>;
  find(id: string): Promise<Payload | undefined>;
  findByUid(uid: string): Promise<Payload | undefined>;
  findByUserCode(userCode: string): Promise<Payload | undefined>;
  consume(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
}

const LIVE = '(expires_at IS NULL OR expires_at > now())';

async function findOne(db: Queryable, model: string, column: 'id' | 'uid' | 'user_code', value: string) {
  const r = await db.query<{ payload: Payload; consumed_at: Date | null }>(
    `SELECT payload, consumed_at FROM oidc_payloads WHERE model = $1 AND ${column} = $2 AND ${LIVE} LIMIT 1`,
    [model, value],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  // consumed is epoch seconds, as oidc-provider's own memory adapter records it.
  return row.consumed_at ? { ...row.payload, consumed: Math.floor(row.consumed_at.getTime() / 1000) } : row.payload;
}

export function createAdapterFactory(db: Db, opts: AdapterOptions = {}) {
  return class PostgresAdapter implements AdapterInstance {
    constructor(private readonly model: string) {}

    async upsert(id: string, payload: Payload, expiresIn?: number) {
      await db.query(
        `INSERT INTO oidc_payloads (model, id, payload, grant_id, user_code, uid, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7::int IS NULL THEN NULL ELSE now() + make_interval(secs => $7::int) END)
         ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id,
           user_code = EXCLUDED.user_code, uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`,
        [this.model, id, JSON.stringify(payload), payload.grantId ?? null, payload.userCode ?? null, payload.uid ?? null,
          expiresIn ? Math.ceil(expiresIn) : null],
      );
    }

    async find(id: string) {
      if (this.model === 'Client' && opts.clientFinder) return (await opts.clientFinder(id)) as Payload | undefined;
      return findOne(db, this.model, 'id', id);
    }

    async findByUid(uid: string) {
      return findOne(db, this.model, 'uid', uid);
    }

    async findByUserCode(userCode: string) {
      return findOne(db, this.model, 'user_code', userCode);
    }

    async consume(id: string) {
      await db.query('UPDATE oidc_payloads SET consumed_at = now() WHERE model = $1 AND id = $2', [this.model, id]);
    }

    async destroy(id: string) {
      await db.query('DELETE FROM oidc_payloads WHERE model = $1 AND id = $2', [this.model, id]);
    }

    /** This model's rows of the grant (oidc-provider calls it per model, then destroys the Grant):
     * refresh-token reuse detection and revocation rely on it. */
    async revokeByGrantId(grantId: string) {
      await db.query('DELETE FROM oidc_payloads WHERE model = $1 AND grant_id = $2', [this.model, grantId]);
    }
  };
}

/** Delete rows that expired more than a minute ago (the grace keeps "expired" answers meaningful). */
export async function sweepExpired(db: Queryable): Promise<number> {
  const r = await db.query(`DELETE FROM oidc_payloads WHERE expires_at < now() - interval '1 minute'`);
  return r.rowCount;
}

export function startSweeper(db: Queryable, intervalMs: number, log?: Logger): () => void {
  const timer = setInterval(() => {
    sweepExpired(db).catch((err) => log?.warn({ err }, 'sweeping expired oidc payloads failed'));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

// oidc-provider's storage adapter over PostgreSQL/PGlite: every model in `oidc_payloads`, keyed by
// (model, id), with grant_id / user_code / uid columns indexed for the lookups oidc-provider makes.
// The payload jsonb is the source of truth (what oidc-provider saved, plus `consumed`); the columns
// mirror the parts of it we look up or sweep by.
// Clients are normally not stored here: they live in `clients` and are read through `clientFinder`.
import crypto from 'node:crypto';
import Provider, { errors, type Adapter, type AdapterConstructor, type AdapterPayload, type KoaContextWithOIDC } from 'oidc-provider';
import type { Db, Queryable } from '../store/db.ts';
import type { Logger } from '../http/log.ts';

export interface AdapterOptions {
  /** Reads a client's metadata from where clients are managed; used for the 'Client' model's find(). */
  clientFinder?: (id: string) => Promise<object | undefined>;
  /** Where dynamically registered clients (RFC 7591/7592) are written and deleted (issue 5). */
  clientStore?: {
    saveRegistered(payload: Record<string, unknown>): Promise<void>;
    deleteClient(id: string): Promise<unknown>;
  };
}

/**
 * Models whose rows belong to a grant and go when it is revoked. The same set oidc-provider's own
 * memory adapter indexes by grant: Interaction and Session rows may carry a grantId too, but revoking
 * a grant must not abort a login in progress or end the browser session, and the Grant row itself
 * is destroyed by oidc-provider (helpers/revoke.js) when revokeGrantPolicy says so.
 */
export const GRANTABLE_MODELS = [
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
] as const;

const LIVE = '(expires_at IS NULL OR expires_at > now())';

// One fixed statement per lookup column; only values are parameters.
const FIND_BY = {
  id: `SELECT payload FROM oidc_payloads WHERE model = $1 AND id = $2 AND ${LIVE}`,
  uid: `SELECT payload FROM oidc_payloads WHERE model = $1 AND uid = $2 AND ${LIVE} LIMIT 1`,
  user_code: `SELECT payload FROM oidc_payloads WHERE model = $1 AND user_code = $2 AND ${LIVE} LIMIT 1`,
} as const;

// expires_at: oidc-provider passes the remaining lifetime in seconds (it may be 0 or negative for
// something already expired, e.g. a Session re-saved at its end); no number means no expiry.
// consumed_at mirrors payload.consumed so a re-saved consumed token stays consumed in both places.
const UPSERT = `
  INSERT INTO oidc_payloads (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
  VALUES ($1, $2, $3::jsonb, $4, $5, $6,
          CASE WHEN $7::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $7::float8) END,
          CASE WHEN $8::float8 IS NULL THEN NULL ELSE to_timestamp($8::float8) END)
  ON CONFLICT (model, id) DO UPDATE SET
    payload = EXCLUDED.payload, grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code,
    uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at, consumed_at = EXCLUDED.consumed_at`;

// oidc-provider's memory adapter records consumption as `payload.consumed = epochTime()`
// (integer epoch seconds) and the models check `!this.consumed`; we store the same in the payload.
// One-time artefacts are consumed exactly once (issue 20): oidc-provider checks `consumed` on the
// row it found and then calls consume(), so every parallel redemption of one code would pass that
// check. The UPDATE only matches a row nobody consumed yet; PostgreSQL re-evaluates the WHERE after
// a concurrent winner commits, so of N racers exactly one sees `won`.
const SPEND = `oidc_payloads
     SET consumed_at = now(),
         payload = payload || jsonb_build_object('consumed', floor(extract(epoch FROM now()))::bigint)
   WHERE model = $1 AND id = $2 AND consumed_at IS NULL`;

const CONSUME_ONCE = `
  WITH found AS (SELECT grant_id FROM oidc_payloads WHERE model = $1 AND id = $2),
       spent AS (UPDATE ${SPEND} RETURNING 1)
  SELECT (SELECT grant_id FROM found) AS grant_id, EXISTS (SELECT 1 FROM spent) AS won`;

// Refresh rotation (issue 20, crash safety): the old token is spent and its successor stored in ONE
// statement, so a crash leaves either the old token unspent or the successor stored, never a spent
// token without a successor; and a racer that lost the spend stores nothing.
const ROTATE = `
  WITH spent AS (UPDATE ${SPEND.replace('$1', "'RefreshToken'").replace('$2', '$9')} RETURNING 1)
  INSERT INTO oidc_payloads (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
  SELECT $1, $2, $3::jsonb, $4, $5, $6,
         CASE WHEN $7::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $7::float8) END,
         CASE WHEN $8::float8 IS NULL THEN NULL ELSE to_timestamp($8::float8) END
   WHERE EXISTS (SELECT 1 FROM spent)
  RETURNING 1`;

/**
 * A token value no token has: src/revocation/endpoints.ts hands it to oidc-provider in place of a
 * JWT it introspects or revokes itself, so oidc-provider authenticates the client and answers
 * "inactive". Looking it up in every token model would be three statements for nothing.
 */
export const NO_SUCH_TOKEN = 'gatehouse-structured-token';

/** What oidc-provider's own error says for each one-time model, so a racer reads like a late comer. */
const ALREADY_USED: Record<string, string> = {
  AuthorizationCode: 'authorization code already consumed',
  RefreshToken: 'refresh token already used',
  DeviceCode: 'device code already consumed',
  BackchannelAuthenticationRequest: 'backchannel authentication request already consumed',
  PreAuthorizedCode: 'pre-authorized code already consumed',
};

/** The refresh token a token request is rotating: spent together with its successor's save. */
const rotating = new WeakMap<object, string>();

/**
 * A one-time artefact presented again (a racer that lost, or a replay): as oidc-provider does for
 * a late second presentation (helpers/revoke.js), every token of the grant goes and `grant.revoked`
 * is emitted, so the revocation lists reach what was derived from it (exchanged tokens included).
 */
async function refuseReuse(db: Queryable, model: string, grantId: string | null | undefined): Promise<never> {
  if (model === 'PushedAuthorizationRequest') {
    throw new errors.InvalidRequestUri('request_uri is invalid, expired, or was already used');
  }
  const ctx = Provider.ctx as KoaContextWithOIDC | undefined;
  if (grantId) {
    await db.query(
      `DELETE FROM oidc_payloads WHERE (grant_id = $1 AND model = ANY($2::text[])) OR (model = 'Grant' AND id = $1)`,
      [grantId, [...GRANTABLE_MODELS]],
    );
    ctx?.oidc?.provider.emit('grant.revoked', ctx, grantId);
  }
  throw new errors.InvalidGrant(ALREADY_USED[model] ?? 'already used');
}

// An access token with the session it is bound to and the grant behind it, in one statement:
// oidc-provider reads the session right after the token (session binding) and the exchange reads
// the grant (its lifetime), each a round trip of its own otherwise.
const FIND_ACCESS_TOKEN_WITH_ORIGIN = `
  SELECT a.payload, s.payload AS session, g.payload AS grant
    FROM oidc_payloads a
    LEFT JOIN LATERAL (SELECT payload FROM oidc_payloads WHERE model = 'Session' AND uid = a.payload->>'sessionUid'
                        AND (expires_at IS NULL OR expires_at > now()) LIMIT 1) s ON true
    LEFT JOIN LATERAL (SELECT payload FROM oidc_payloads WHERE model = 'Grant' AND id = a.grant_id
                        AND (expires_at IS NULL OR expires_at > now())) g ON true
   WHERE a.model = 'AccessToken' AND a.id = $1 AND ${LIVE.replaceAll('expires_at', 'a.expires_at')}`;

/**
 * Rows read ahead for the request in progress (oidc-provider's Provider.ctx): `Session:uid:<uid>`,
 * `Grant:<id>` → payload (undefined: there is none). Request-scoped, so nothing is shared between
 * requests; any write of the request clears it.
 */
const readAhead = new WeakMap<object, Map<string, AdapterPayload | undefined>>();

async function findAccessTokenWithOrigin(db: Queryable, ctx: object, id: string): Promise<AdapterPayload | undefined> {
  const r = await db.query<{ payload: AdapterPayload; session: AdapterPayload | null; grant: AdapterPayload | null }>(FIND_ACCESS_TOKEN_WITH_ORIGIN, [id]);
  const row = r.rows[0];
  if (!row) return undefined;
  const ahead = new Map<string, AdapterPayload | undefined>();
  const t = row.payload as { sessionUid?: string; grantId?: string };
  if (t.sessionUid) ahead.set(`Session:uid:${t.sessionUid}`, row.session ?? undefined);
  if (t.grantId) ahead.set(`Grant:${t.grantId}`, row.grant ?? undefined);
  readAhead.set(ctx, ahead);
  return row.payload;
}

/** A row read ahead for this request: [true, payload] when known, [false] when it must be read. */
function aheadOf(key: string): [true, AdapterPayload | undefined] | [false] {
  const ctx = Provider.ctx;
  const ahead = ctx && readAhead.get(ctx);
  return ahead?.has(key) ? [true, ahead.get(key)] : [false];
}

async function findPayload(db: Queryable, sql: string, model: string, value: string) {
  const r = await db.query<{ payload: AdapterPayload }>(sql, [model, value]);
  return r.rows[0]?.payload;
}

function forgetReadAhead() {
  const ctx = Provider.ctx;
  if (ctx) readAhead.delete(ctx);
}

function epochSecondsOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

export function createAdapterFactory(db: Db, opts: AdapterOptions = {}): AdapterConstructor {
  return class PostgresAdapter implements Adapter {
    constructor(private readonly model: string) {}

    async upsert(id: string, payload: AdapterPayload, expiresIn?: number) {
      forgetReadAhead();
      if (this.model === 'Client' && opts.clientStore) {
        return opts.clientStore.saveRegistered({ ...payload, client_id: id });
      }
      const params = [
        this.model,
        id,
        JSON.stringify(payload),
        payload.grantId ?? null,
        payload.userCode ?? null,
        payload.uid ?? null,
        epochSecondsOrNull(expiresIn),
        epochSecondsOrNull(payload.consumed),
      ];
      const ctx = this.model === 'RefreshToken' ? Provider.ctx : undefined;
      const predecessor = ctx && rotating.get(ctx);
      if (predecessor) {
        rotating.delete(ctx);
        const r = await db.query(ROTATE, [...params, predecessor]);
        if (r.rowCount === 0) await refuseReuse(db, this.model, payload.grantId);
        return;
      }
      await db.query(UPSERT, params);
    }

    async find(id: string) {
      if (this.model === 'Client' && opts.clientFinder) {
        return (await opts.clientFinder(id)) as AdapterPayload | undefined;
      }
      if (id === NO_SUCH_TOKEN) return undefined;
      if (this.model === 'AccessToken') {
        const ctx = Provider.ctx;
        if (ctx) return findAccessTokenWithOrigin(db, ctx, id);
      }
      if (this.model === 'Grant') {
        const [known, payload] = aheadOf(`Grant:${id}`);
        if (known) return payload;
      }
      return findPayload(db, FIND_BY.id, this.model, id);
    }

    async findByUid(uid: string) {
      if (this.model === 'Session') {
        const [known, payload] = aheadOf(`Session:uid:${uid}`);
        if (known) return payload;
      }
      return findPayload(db, FIND_BY.uid, this.model, uid);
    }

    async findByUserCode(userCode: string) {
      return findPayload(db, FIND_BY.user_code, this.model, userCode);
    }

    async consume(id: string) {
      forgetReadAhead();
      // oidc-provider's refresh grant calls consume() and then saves the successor; the spend waits
      // for that save (see ROTATE). A failure in between leaves the old token usable, as it should.
      const ctx = this.model === 'RefreshToken' ? Provider.ctx : undefined;
      if (ctx && (ctx as KoaContextWithOIDC).oidc?.route === 'token') {
        rotating.set(ctx, id);
        return;
      }
      const r = await db.query<{ grant_id: string | null; won: boolean }>(CONSUME_ONCE, [this.model, id]);
      if (!r.rows[0]?.won) await refuseReuse(db, this.model, r.rows[0]?.grant_id);
    }

    async destroy(id: string) {
      forgetReadAhead();
      if (this.model === 'Client' && opts.clientStore) {
        await opts.clientStore.deleteClient(id);
        return;
      }
      await db.query('DELETE FROM oidc_payloads WHERE model = $1 AND id = $2', [this.model, id]);
    }

    /**
     * Deletes every grantable model's rows of the grant, whichever model it is called on, as the
     * memory adapter does. Refresh-token reuse detection and revocation rely on it, and
     * oidc-provider only calls it on the models the client's grant types allow — a token stored
     * under another model must still go.
     */
    async revokeByGrantId(grantId: string) {
      forgetReadAhead();
      await db.query('DELETE FROM oidc_payloads WHERE grant_id = $1 AND model = ANY($2::text[])', [
        grantId,
        [...GRANTABLE_MODELS],
      ]);
    }
  };
}

/** Delete rows that expired more than a minute ago; the grace keeps in-flight "expired" answers meaningful. */
export async function sweepExpired(db: Queryable): Promise<number> {
  const r = await db.query(`DELETE FROM oidc_payloads WHERE expires_at < now() - interval '1 minute'`);
  return r.rowCount;
}

/** Sweep every intervalMs; the timer is unref'd so it never keeps the process alive. Returns stop(). */
export function startSweeper(db: Queryable, intervalMs: number, log?: Pick<Logger, 'warn'>): () => void {
  const timer = setInterval(function sweepOidcPayloads() {
    sweepExpired(db).catch((err) => log?.warn({ err }, 'sweeping expired oidc payloads failed'));
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

// A jti seen for the first time, in one statement. A row already there counts only while it lives;
// an expired one (not swept yet) is taken over.
const CLAIM_ONCE = `
  INSERT INTO oidc_payloads (model, id, payload, expires_at)
  VALUES ('ReplayDetection', $1, $2::jsonb, now() + make_interval(secs => $3::float8))
  ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload, expires_at = EXCLUDED.expires_at
    WHERE oidc_payloads.expires_at IS NOT NULL AND oidc_payloads.expires_at <= now()
  RETURNING id`;

/**
 * oidc-provider's ReplayDetection.unique (client_assertion jti for private_key_jwt and
 * client_secret_jwt, DPoP proof jti) finds, then saves: two requests carrying the same assertion at
 * once both find nothing and both pass. RFC 7523 §3 item 7 and RFC 9449 §11.1 want one use; this
 * makes "first use" one INSERT, so exactly one of any number of parallel requests, on any number of
 * nodes sharing the database, wins. Same id and row as oidc-provider's own model.
 */
export function replayDetectionOnce(db: Queryable) {
  return async function uniqueOnce(iss: string, jti: string, exp: number): Promise<boolean> {
    const id = crypto.hash('sha256', `${iss}${jti}`, 'base64url');
    const ttl = Math.max(1, exp - Math.floor(Date.now() / 1000));
    const r = await db.query(CLAIM_ONCE, [id, JSON.stringify({ jti: id, iss, kind: 'ReplayDetection' }), ttl]);
    return r.rowCount === 1;
  };
}

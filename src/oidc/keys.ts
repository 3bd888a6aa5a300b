// Signing keys: RS256 (OIDC's mandatory algorithm) and ES256, generated on first start, private
// halves sealed with the DEK, kept in PostgreSQL so every process serves the same /jwks.
// Rotation adds a new key per algorithm that becomes the signer; the old one stays published until
// everything it signed has expired (retired_at + the longest JWT lifetime).
import crypto from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import type { Queryable } from '../store/db.ts';
import type { SecretBox } from '../crypto/secretbox.ts';

export const SIGNING_ALGS = ['RS256', 'ES256'] as const;

export interface SigningKeys {
  /** Ensure one active key per algorithm exists. Returns the kids it created. */
  ensure(): Promise<string[]>;
  /** Add a new active key per algorithm, retiring the current ones. Returns the new kids. */
  rotate(publishFor: number): Promise<string[]>;
  /** Private JWKs for oidc-provider: active signers first, then retired keys still published. */
  privateJwks(): Promise<{ keys: JWK[] }>;
  /** Identifies the current key set; changes when a key is added or expires. */
  version(): Promise<string>;
  list(): Promise<{ kid: string; alg: string; createdAt: Date; retiredAt: Date | null; expiresAt: Date | null }[]>;
}

async function newKey(alg: string, box: SecretBox) {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, ...(alg === 'RS256' ? { modulusLength: 2048 } : {}) });
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(8).toString('base64url')}`;
  const priv = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  const pub = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, sealed: box.seal(JSON.stringify(priv)), pub };
}

const LIVE = '(expires_at IS NULL OR expires_at > now())';

export function createSigningKeys(db: Queryable & { transaction?: unknown }, box: SecretBox): SigningKeys {
  async function insert(tx: Queryable, alg: string) {
    const k = await newKey(alg, box);
    await tx.query('INSERT INTO signing_keys (kid, alg, private_jwk_enc, public_jwk) VALUES ($1, $2, $3, $4)', [
      k.kid, k.alg, k.sealed, JSON.stringify(k.pub),
    ]);
    return k.kid;
  }
  return {
    async ensure() {
      const created: string[] = [];
      for (const alg of SIGNING_ALGS) {
        const r = await db.query('SELECT 1 FROM signing_keys WHERE alg = $1 AND retired_at IS NULL', [alg]);
        if (r.rowCount === 0) created.push(await insert(db, alg));
      }
      if (created.length) {
        // Two processes starting at once on an empty database may both have created a key:
        // keep the oldest active one per algorithm as the signer and retire the others at once.
        await db.query(`UPDATE signing_keys k SET retired_at = now(), expires_at = now()
          WHERE retired_at IS NULL AND EXISTS (SELECT 1 FROM signing_keys o WHERE o.alg = k.alg
            AND o.retired_at IS NULL AND (o.created_at, o.kid) < (k.created_at, k.kid))`);
      }
      return created;
    },
    async rotate(publishFor) {
      const kids: string[] = [];
      for (const alg of SIGNING_ALGS) {
        await db.query(
          `UPDATE signing_keys SET retired_at = now(), expires_at = now() + make_interval(secs => $2)
           WHERE alg = $1 AND retired_at IS NULL`,
          [alg, publishFor],
        );
        kids.push(await insert(db, alg));
      }
      return kids;
    },
    async privateJwks() {
      const r = await db.query<{ private_jwk_enc: string }>(
        `SELECT private_jwk_enc FROM signing_keys WHERE ${LIVE} ORDER BY retired_at IS NOT NULL, created_at DESC`,
      );
      return { keys: r.rows.map((row) => JSON.parse(box.open(row.private_jwk_enc)) as JWK) };
    },
    async version() {
      const r = await db.query<{ v: string }>(
        `SELECT coalesce(string_agg(kid || ':' || (retired_at IS NULL)::text, ',' ORDER BY kid), '') AS v
         FROM signing_keys WHERE ${LIVE}`,
      );
      return r.rows[0].v;
    },
    async list() {
      const r = await db.query<{ kid: string; alg: string; created_at: Date; retired_at: Date | null; expires_at: Date | null }>(
        `SELECT kid, alg, created_at, retired_at, expires_at FROM signing_keys WHERE ${LIVE} ORDER BY created_at`,
      );
      return r.rows.map((x) => ({ kid: x.kid, alg: x.alg, createdAt: x.created_at, retiredAt: x.retired_at, expiresAt: x.expires_at }));
    },
  };
}

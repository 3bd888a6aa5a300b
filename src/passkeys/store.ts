// Passkeys (WebAuthn credentials, issue 19) over raw SQL named by intent (STYLE.md §5). Knows no
// HTTP and no WebAuthn: src/passkeys/ceremonies.ts checks the signatures, this only keeps the rows.
import crypto from 'node:crypto';
import type { Queryable } from '../store/db.ts';

/** What pages, the admin API and audit may see of a passkey: no key material, no credential id. */
export interface Passkey {
  id: string;
  userId: string;
  name: string;
  /** Synced (multi-device) passkeys are backed up by their provider; device-bound ones are not. */
  deviceType: 'singleDevice' | 'multiDevice';
  backedUp: boolean;
  createdAt: Date;
  lastUsedAt: Date | null;
}

/** What a ceremony needs to check an assertion. */
export interface StoredCredential extends Passkey {
  credentialId: string;
  publicKey: Uint8Array<ArrayBuffer>;
  signCount: number;
  transports: string[];
}

interface Row {
  id: string;
  user_id: string;
  credential_id: string;
  public_key: string;
  sign_count: number | string;
  transports: string;
  name: string;
  device_type: 'singleDevice' | 'multiDevice';
  backed_up: boolean;
  created_at: Date;
  last_used_at: Date | null;
}

const COLUMNS = 'id, user_id, credential_id, public_key, sign_count, transports, name, device_type, backed_up, created_at, last_used_at';

const toPasskey = (r: Row): Passkey => ({
  id: r.id,
  userId: r.user_id,
  name: r.name,
  deviceType: r.device_type,
  backedUp: r.backed_up,
  createdAt: new Date(r.created_at),
  lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
});

const toCredential = (r: Row): StoredCredential => ({
  ...toPasskey(r),
  credentialId: r.credential_id,
  publicKey: new Uint8Array(Buffer.from(r.public_key, 'base64url')),
  signCount: Number(r.sign_count),
  transports: r.transports ? r.transports.split(',') : [],
});

/** A passkey's name as shown on pages: no control characters, at most 64 characters. */
export const passkeyName = (name: string) => name.replace(/\p{Cc}/gu, '').trim().slice(0, 64);

export interface NewPasskey {
  userId: string;
  name: string;
  credentialId: string;
  publicKey: Uint8Array;
  signCount: number;
  transports: string[];
  aaguid?: string;
  deviceType: 'singleDevice' | 'multiDevice';
  backedUp: boolean;
}

export class PasskeyExistsError extends Error {
  constructor() {
    super('This passkey is already registered.');
    this.name = 'PasskeyExistsError';
  }
}

export function createPasskeys(db: Queryable) {
  async function list(userId: string): Promise<Passkey[]> {
    const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, [userId]);
    return rows.map(toPasskey);
  }

  /** The user's credentials, for excludeCredentials / allowCredentials. */
  async function credentialsOf(userId: string): Promise<StoredCredential[]> {
    const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, [userId]);
    return rows.map(toCredential);
  }

  async function hasPasskey(userId: string): Promise<boolean> {
    const { rows } = await db.query('SELECT 1 FROM passkeys WHERE user_id = $1 LIMIT 1', [userId]);
    return rows.length > 0;
  }

  async function findByCredentialId(credentialId: string): Promise<StoredCredential | undefined> {
    const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM passkeys WHERE credential_id = $1`, [credentialId]);
    return rows[0] ? toCredential(rows[0]) : undefined;
  }

  async function add(input: NewPasskey): Promise<Passkey> {
    const { rows } = await db.query<Row>(
      `INSERT INTO passkeys (id, user_id, credential_id, public_key, sign_count, transports, name, aaguid, device_type, backed_up)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (credential_id) DO NOTHING
       RETURNING ${COLUMNS}`,
      [crypto.randomUUID(), input.userId, input.credentialId, Buffer.from(input.publicKey).toString('base64url'), input.signCount,
        input.transports.join(','), passkeyName(input.name) || 'Passkey', input.aaguid ?? null, input.deviceType, input.backedUp],
    );
    if (!rows[0]) throw new PasskeyExistsError();
    return toPasskey(rows[0]);
  }

  /**
   * Record a use with the authenticator's new counter. Conditional (WebAuthn L3 §6.1.1): the counter
   * must go up, unless the authenticator does not count (0 then and now). False: it did not, so the
   * assertion is refused — a clone, or a concurrent use that already recorded this counter.
   */
  async function recordUse(id: string, signCount: number): Promise<boolean> {
    const { rows } = await db.query(
      `UPDATE passkeys SET sign_count = $2, last_used_at = now()
       WHERE id = $1 AND (sign_count < $2 OR ($2 = 0 AND sign_count = 0)) RETURNING id`,
      [id, signCount],
    );
    return rows.length > 0;
  }

  /** False when the name is empty (after cleaning) or the passkey is not the user's. */
  async function rename(userId: string, id: string, input: string): Promise<boolean> {
    const name = passkeyName(input);
    if (!name) return false;
    const { rows } = await db.query('UPDATE passkeys SET name = $3 WHERE user_id = $1 AND id = $2 RETURNING id', [userId, id, name]);
    return rows.length > 0;
  }

  /** The removed passkey, or undefined when the user has none with that id. */
  async function remove(userId: string, id: string): Promise<Passkey | undefined> {
    const { rows } = await db.query<Row>(`DELETE FROM passkeys WHERE user_id = $1 AND id = $2 RETURNING ${COLUMNS}`, [userId, id]);
    return rows[0] ? toPasskey(rows[0]) : undefined;
  }

  return { list, credentialsOf, hasPasskey, findByCredentialId, add, recordUse, rename, remove };
}

export type Passkeys = ReturnType<typeof createPasskeys>;

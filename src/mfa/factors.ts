// Second factors: TOTP authenticators (RFC 6238, otplib) and one-time recovery codes, over raw SQL
// named by intent (STYLE.md §5).
//
// - Seeds are sealed with the data-encryption key (deps.box) and opened only to verify a code.
// - A code is accepted within ±1 time step (30 s either way, for clock drift) and only once: each
//   factor remembers the time step of its last accepted code, and the update that records it is
//   conditional, so two concurrent submissions of one code cannot both win (RFC 6238 §5.2).
// - Recovery codes are 80 random bits each and stored as SHA-256(user id, code). A slow password hash
//   (argon2) protects low-entropy secrets people choose; against 2^80 possibilities per code an
//   offline search is hopeless even at GPU speed, so one fast hash is enough and keeps a login cheap.
import crypto from 'node:crypto';
import { generateSecret, generateURI, verify } from 'otplib';
import type { Queryable } from '../store/db.ts';
import type { SecretBox } from '../crypto/secretbox.ts';

export const RECOVERY_CODE_COUNT = 10;
/** RFC 6238 §5.2: one step of tolerance either way; with period 30 s that is ±30 s. */
const EPOCH_TOLERANCE_SECONDS = 30;
// Crockford's base32 alphabet: no I, L, O, U, so codes survive being read aloud or copied by hand.
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

export interface Factor {
  id: string;
  type: 'totp';
  name: string;
  createdAt: Date;
  lastUsedAt: Date | null;
}

interface FactorRow {
  id: string;
  type: 'totp';
  name: string;
  secret_enc: string;
  last_time_step: number | string | null;
  created_at: Date;
  last_used_at: Date | null;
}

const toFactor = (r: FactorRow): Factor => ({
  id: r.id,
  type: r.type,
  name: r.name,
  createdAt: new Date(r.created_at),
  lastUsedAt: r.last_used_at ? new Date(r.last_used_at) : null,
});

/** Digits only, spaces tolerated ("123 456"). */
export function normalizeTotp(code: unknown): string | null {
  const c = String(code ?? '').replace(/[\s-]/g, '');
  return /^\d{6}$/.test(c) ? c : null;
}

/** Upper-case, separators dropped, and the look-alikes Crockford maps (O→0, I/L→1). */
export function normalizeRecoveryCode(code: unknown): string | null {
  const c = String(code ?? '').toUpperCase().replace(/[\s-]/g, '').replace(/O/g, '0').replace(/[IL]/g, '1');
  return /^[0-9A-HJKMNP-TV-Z]{16}$/.test(c) ? c : null;
}

/** 16 characters (80 bits) shown as XXXX-XXXX-XXXX-XXXX. */
export function newRecoveryCode(): string {
  const bytes = crypto.randomBytes(10);
  let bits = 0n;
  for (const b of bytes) bits = (bits << 8n) | BigInt(b);
  let out = '';
  for (let i = 0; i < 16; i++) out = CROCKFORD[Number((bits >> BigInt(5 * i)) & 31n)] + out;
  return out.match(/.{4}/g)!.join('-');
}

/** A factor's name as shown on pages: no control characters, at most 64 characters. */
const factorName = (name: string) => name.replace(/\p{Cc}/gu, '').trim().slice(0, 64);

const hashRecoveryCode = (userId: string, normalized: string) =>
  crypto.createHash('sha256').update(`${userId}:${normalized}`).digest('base64url');

export function createMfa(db: Queryable, box: SecretBox, opts: { issuer: string }) {
  /** A fresh base32 seed (160 bits, RFC 4226 §4's recommendation) for an enrolment in progress. */
  function newSecret(): string {
    return generateSecret({ length: 20 });
  }

  /** The otpauth:// URI and a QR code of it as a PNG data: URL (our CSP allows img-src data:). */
  async function enrolmentQr(secret: string, accountLabel: string): Promise<{ uri: string; qr: string }> {
    const uri = generateURI({ issuer: opts.issuer, label: accountLabel, secret });
    // qrcode (and its PNG encoder) loads at the first enrolment, not at start.
    const { default: QRCode } = await import('qrcode');
    const qr = await QRCode.toDataURL(uri, { errorCorrectionLevel: 'M', margin: 2, width: 220 });
    return { uri, qr };
  }

  /** The time step a code matches, or null. `after`: steps at or before it are refused (replay). */
  async function matchStep(secret: string, code: string, after?: number | null): Promise<number | null> {
    const result = await verify({
      secret,
      token: code,
      epochTolerance: EPOCH_TOLERANCE_SECONDS,
      ...(after === null || after === undefined ? {} : { afterTimeStep: after }),
    });
    // otplib v13: a valid TOTP result carries the matched time step (absent for HOTP).
    return result.valid && 'timeStep' in result ? (result as { timeStep: number }).timeStep : null;
  }

  async function listFactors(userId: string): Promise<Factor[]> {
    const { rows } = await db.query<FactorRow>(
      'SELECT id, type, name, secret_enc, last_time_step, created_at, last_used_at FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id',
      [userId],
    );
    return rows.map(toFactor);
  }

  async function hasFactor(userId: string): Promise<boolean> {
    const { rows } = await db.query('SELECT 1 FROM mfa_factors WHERE user_id = $1 LIMIT 1', [userId]);
    return rows.length > 0;
  }

  /**
   * Confirm an enrolment: the first code must match the new seed before the factor counts. The step
   * of that code is recorded, so it cannot be used again to sign in.
   */
  async function confirmFactor(userId: string, input: { name: string; secret: string; code: string }): Promise<Factor | null> {
    const code = normalizeTotp(input.code);
    if (!code) return null;
    const step = await matchStep(input.secret, code);
    if (step === null) return null;
    const name = factorName(input.name) || 'Authenticator';
    const { rows } = await db.query<FactorRow>(
      `INSERT INTO mfa_factors (id, user_id, type, name, secret_enc, last_time_step, last_used_at)
       VALUES ($1, $2, 'totp', $3, $4, $5, now())
       RETURNING id, type, name, secret_enc, last_time_step, created_at, last_used_at`,
      [crypto.randomUUID(), userId, name, box.seal(input.secret), step],
    );
    return toFactor(rows[0]);
  }

  /** Check a TOTP code against each of the user's authenticators; the matching one, or null. */
  async function verifyTotp(userId: string, input: string): Promise<Factor | null> {
    const code = normalizeTotp(input);
    if (!code) return null;
    const { rows } = await db.query<FactorRow>(
      'SELECT id, type, name, secret_enc, last_time_step, created_at, last_used_at FROM mfa_factors WHERE user_id = $1',
      [userId],
    );
    for (const row of rows) {
      const last = row.last_time_step === null ? null : Number(row.last_time_step);
      const step = await matchStep(box.open(row.secret_enc), code, last);
      if (step === null) continue;
      // Conditional: a concurrent use of the same (or a later) step already won → replay.
      const won = await db.query(
        `UPDATE mfa_factors SET last_time_step = $2, last_used_at = now()
         WHERE id = $1 AND (last_time_step IS NULL OR last_time_step < $2) RETURNING id`,
        [row.id, step],
      );
      if (won.rows.length > 0) return toFactor(row);
    }
    return null;
  }

  async function deleteFactor(userId: string, factorId: string): Promise<boolean> {
    const { rows } = await db.query('DELETE FROM mfa_factors WHERE user_id = $1 AND id = $2 RETURNING id', [userId, factorId]);
    return rows.length > 0;
  }

  /** False when the name is empty (after cleaning) or the factor is not the user's. */
  async function renameFactor(userId: string, factorId: string, input: string): Promise<boolean> {
    const name = factorName(input);
    if (!name) return false;
    const { rows } = await db.query('UPDATE mfa_factors SET name = $3 WHERE user_id = $1 AND id = $2 RETURNING id', [userId, factorId, name]);
    return rows.length > 0;
  }

  async function deleteRecoveryCodes(userId: string): Promise<void> {
    await db.query('DELETE FROM mfa_recovery_codes WHERE user_id = $1', [userId]);
  }

  /** A new set of recovery codes, replacing (invalidating) any earlier set. Shown once; stored hashed. */
  async function regenerateRecoveryCodes(userId: string): Promise<string[]> {
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, newRecoveryCode);
    // One statement, so the old set is never gone without the new one in place.
    await db.query(
      `WITH old AS (DELETE FROM mfa_recovery_codes WHERE user_id = $1)
       INSERT INTO mfa_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::text[])`,
      [userId, codes.map((code) => hashRecoveryCode(userId, normalizeRecoveryCode(code)!))],
    );
    return codes;
  }

  /** Spend a recovery code (once: the update is conditional). Returns how many remain, or null. */
  async function useRecoveryCode(userId: string, input: string): Promise<{ remaining: number } | null> {
    const code = normalizeRecoveryCode(input);
    if (!code) return null;
    const { rows } = await db.query(
      'UPDATE mfa_recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING user_id',
      [userId, hashRecoveryCode(userId, code)],
    );
    if (rows.length === 0) return null;
    return { remaining: await remainingRecoveryCodes(userId) };
  }

  async function remainingRecoveryCodes(userId: string): Promise<number> {
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL', [userId]);
    return Number(rows[0]?.n ?? 0);
  }

  /** Known devices: a device that completed a login for the user is exempt from its lockout. */
  const deviceHash = (deviceId: string) => crypto.createHash('sha256').update(deviceId).digest('base64url');

  async function rememberDevice(userId: string, deviceId: string): Promise<void> {
    await db.query(
      `INSERT INTO known_devices (user_id, device_hash) VALUES ($1, $2)
       ON CONFLICT (user_id, device_hash) DO UPDATE SET last_seen_at = now()`,
      [userId, deviceHash(deviceId)],
    );
  }

  async function isKnownDevice(userId: string, deviceId: string | undefined): Promise<boolean> {
    if (!deviceId) return false;
    const { rows } = await db.query('SELECT 1 FROM known_devices WHERE user_id = $1 AND device_hash = $2', [userId, deviceHash(deviceId)]);
    return rows.length > 0;
  }

  return {
    newSecret,
    enrolmentQr,
    listFactors,
    hasFactor,
    confirmFactor,
    verifyTotp,
    deleteFactor,
    renameFactor,
    deleteRecoveryCodes,
    regenerateRecoveryCodes,
    useRecoveryCode,
    remainingRecoveryCodes,
    rememberDevice,
    isKnownDevice,
  };
}

export type Mfa = ReturnType<typeof createMfa>;

/** Remove every factor, recovery code and known device of a user (admin MFA reset). */
export async function deleteAllFactors(q: Queryable, userId: string): Promise<number> {
  const { rows } = await q.query('DELETE FROM mfa_factors WHERE user_id = $1 RETURNING id', [userId]);
  await q.query('DELETE FROM mfa_recovery_codes WHERE user_id = $1', [userId]);
  await q.query('DELETE FROM known_devices WHERE user_id = $1', [userId]);
  return rows.length;
}

/** For callers built without a database (unit tests of the pages): nobody has a factor. */
export const noMfa: Mfa = {
  ...createMfa({ query: async () => { throw new Error('MFA is not configured'); } }, { seal: (s) => s, open: (s) => s }, { issuer: 'Gatehouse' }),
  hasFactor: async () => false,
  isKnownDevice: async () => false,
  rememberDevice: async () => {},
};

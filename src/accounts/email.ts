// One normalisation of e-mail addresses (issue 20). Every place that finds, compares, counts or
// keeps addresses unique goes through `emailKey`: sign-in and its lockout, registration, admin
// create, federation JIT and linking, password-reset requests, login_hint routing. The database
// keeps the key beside the address (users.email_key, unique) and compares only that column, so
// JavaScript and PostgreSQL never disagree on what "the same address" is (they did: lower('İ')
// depends on the database's locale, toLowerCase() does not).
import type { Queryable } from '../store/db.ts';

/**
 * The form an address is compared in:
 *   1. NFKC — compatibility forms become their plain letters ("ａｌｉｃｅ" → "alice", "K" (Kelvin) → "K");
 *   2. a full case fold, as toUpperCase() then toLowerCase(): JavaScript applies Unicode's full
 *      SpecialCasing mappings, so "ß" → "SS" → "ss", "ﬁ" → "FI" → "fi", "İ" → "i̇" (i + U+0307), and
 *      Turkish "ı" → "I" → "i"; lower-casing alone would leave "ß" and "ss" two addresses;
 *   3. NFKC again — case mapping can leave sequences that compose ("i" + U+0307 stays two code
 *      points, but e.g. decomposed accents recompose), so equal keys are equal strings.
 * Locale-independent by construction (no toLocale*Case). The key is for comparison only: mail goes
 * to the address as the user gave it (RFC 5321 §2.4 lets a mailbox's local part be case-sensitive).
 */
export function emailKey(address: string): string {
  return address.trim().normalize('NFKC').toUpperCase().toLowerCase().normalize('NFKC');
}

/** Whether two spellings are one address. */
export const sameAddress = (a: string, b: string) => emailKey(a) === emailKey(b);

// RFC 5321 §4.5.3.1.3: a path is at most 256 octets, so an address at most 254. Deliberately loose
// otherwise: one @, no whitespace or control characters (PostgreSQL text also refuses NUL).
const EMAIL = /^[^\s@\p{Cc}]+@[^\s@\p{Cc}]+$/u;

/**
 * An address as typed (trimmed) and its key, or null when it cannot be an address — checked on both
 * forms, so a fullwidth "＠" that NFKC turns into a second "@" is refused, not folded into one.
 */
export function parseEmail(input: unknown): { address: string; key: string } | null {
  if (typeof input !== 'string') return null;
  const address = input.trim();
  if (address.length > 254 || !EMAIL.test(address)) return null;
  const key = emailKey(address);
  return key.length <= 254 && EMAIL.test(key) ? { address, key } : null;
}

/** The domain of an address in its compared form (home-realm discovery), or undefined. */
export function emailDomain(input: string): string | undefined {
  const key = emailKey(input);
  const at = key.lastIndexOf('@');
  return at > 0 ? key.slice(at + 1) : undefined;
}

/**
 * The code half of migrations/010_email_key.sql, run in its transaction: the SQL keyed every plain
 * ASCII address (there the fold is exactly a-z lower-casing); this keys the rest with emailKey.
 * Accounts whose addresses were distinct before and are one address now are all kept: the oldest
 * keeps the address, each other is parked — `email_key = 'conflict:<id>'` (no address has that
 * form, it has no '@'), reachable by id and through its SSO links but not by address — and an
 * `account.email_conflict` audit event names it and the account that kept the address, for an
 * administrator to resolve (delete one, or sign in with the parked one's SSO link).
 */
export async function keyStoredEmails(q: Queryable): Promise<void> {
  const { rows } = await q.query<{ id: string; email: string }>(
    'SELECT id, email FROM users WHERE email_key IS NULL ORDER BY created_at, id',
  );
  for (const row of rows) {
    const key = emailKey(row.email);
    const holder = (await q.query<{ id: string; older: boolean }>(
      'SELECT id, (created_at, id) < (SELECT created_at, id FROM users WHERE id = $2) AS older FROM users WHERE email_key = $1',
      [key, row.id],
    )).rows[0];
    let parked: string | undefined;
    let kept: string | undefined;
    if (holder && !holder.older) {
      // A younger plain-ASCII account holds the key: it gives way to this older one.
      await q.query("UPDATE users SET email_key = 'conflict:' || id WHERE id = $1", [holder.id]);
      [parked, kept] = [holder.id, row.id];
    }
    if (holder?.older) {
      await q.query("UPDATE users SET email_key = 'conflict:' || id WHERE id = $1", [row.id]);
      [parked, kept] = [row.id, holder.id];
    } else {
      await q.query('UPDATE users SET email_key = $2 WHERE id = $1', [row.id, key]);
    }
    if (parked) {
      await q.query(
        "INSERT INTO audit_events (type, outcome, actor, subject, details) VALUES ('account.email_conflict', 'failure', 'system', $1, $2)",
        [parked, JSON.stringify({ kept_by: kept, reason: 'same address after normalisation' })],
      );
    }
  }
  // Every row has its key now; every insert gives one (src/accounts/users.ts).
  await q.query('ALTER TABLE users ALTER COLUMN email_key SET NOT NULL');
}

// Password hashing and policy. argon2id with the OWASP Password Storage Cheat Sheet parameters
// (m=19 MiB, t=2, p=1); a stored hash made with other parameters is re-hashed at the next login.
import argon2 from 'argon2';
import { verifyLegacyHash } from './legacy-hashes.ts';

/** OWASP Password Storage Cheat Sheet, argon2id option 2: m=19456 KiB, t=2, p=1. */
export const ARGON2_PARAMS = Object.freeze({ memoryCost: 19456, timeCost: 2, parallelism: 1 });

export const PASSWORD_MIN_LENGTH = 12;
// Long enough for any passphrase or password manager; short enough that hashing stays bounded.
export const PASSWORD_MAX_LENGTH = 1024;

/**
 * A hash of a random, discarded password made with ARGON2_PARAMS. Verifying against it costs what
 * verifying a real user's hash costs, so an unknown email answers as slowly as a wrong password.
 * The accounts test checks it still matches ARGON2_PARAMS (update both together).
 */
export const DUMMY_HASH = '$argon2id$v=19$m=19456,p=1,t=2$UaL3PHZDeNMakBqzVFgOvg$j2izqRSk0vGhhO9pZM2fZ7xFVzy7SppbQEEnPAgGHIE';

export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, { type: argon2.argon2id, ...ARGON2_PARAMS });
}

export interface PasswordCheck {
  ok: boolean;
  /** The hash was made with other parameters than ARGON2_PARAMS: store a fresh one. */
  needsRehash: boolean;
}

export async function verifyPassword(hash: string, password: string): Promise<PasswordCheck> {
  // An imported hash (bcrypt, scrypt, PBKDF2: src/accounts/legacy-hashes.ts) is verified as its old
  // system did, and always replaced by argon2id once the password is known.
  if (!hash.startsWith('$argon2')) {
    const ok = await verifyLegacyHash(hash, password).catch(() => false);
    return { ok, needsRehash: ok };
  }
  let ok: boolean;
  try {
    ok = await argon2.verify(hash, password);
  } catch {
    // A malformed stored hash is a failed login, never a 500.
    return { ok: false, needsRehash: false };
  }
  return { ok, needsRehash: ok && (!hash.startsWith('$argon2id$') || argon2.needsRehash(hash, ARGON2_PARAMS)) };
}

/** Spend the time of one verification and fail: for unknown emails and accounts without a password. */
export async function verifyAgainstDummy(password: string): Promise<false> {
  await argon2.verify(DUMMY_HASH, password).catch(() => false);
  return false;
}

/**
 * NIST SP 800-63B §5.1.1.2: a minimum length, a generous maximum, no composition rules, and no
 * password that is the account's own identifier. Returns a message to show the user, or null.
 */
export function passwordPolicyViolation(password: string, context: { email?: string } = {}): string | null {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH) return `Password must be at least ${PASSWORD_MIN_LENGTH} characters.`;
  if (length > PASSWORD_MAX_LENGTH) return `Password must be at most ${PASSWORD_MAX_LENGTH} characters.`;
  if (context.email && password.trim().toLowerCase() === context.email.trim().toLowerCase()) {
    return 'Password must not be your email address.';
  }
  return null;
}

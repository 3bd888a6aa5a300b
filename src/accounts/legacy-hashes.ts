// Password hashes brought over from other systems (issue 18, `gatehouse user import`): verified as
// those systems verify them at login, then replaced by an argon2id hash (src/accounts/users.ts
// `authenticate`). Gatehouse never makes one of these; it only reads them.
//
//   bcrypt     $2a$ / $2b$ / $2y$ (Modular Crypt Format)                       — bcryptjs
//   scrypt     $scrypt$ln=16,r=8,p=1$<salt>$<key>       (passlib; n= also taken) — node:crypto
//              scrypt:32768:8:1$<salt>$<hex key>          (werkzeug ≥ 3)
//   PBKDF2     $pbkdf2-sha256$29000$<salt>$<key>        (passlib; $pbkdf2$ is SHA-1, -sha512 too)
//              pbkdf2_sha256$600000$<salt>$<base64 key> (Django; pbkdf2_sha1 too)
//              pbkdf2:sha256:600000$<salt>$<hex key>    (werkzeug)
// argon2 (argon2id, argon2i) PHC strings are the argon2 library's own (src/accounts/passwords.ts).
//
// Each format says how its salt is read: passlib decodes its "adapted base64" (. for +, no
// padding) to bytes; Django and werkzeug use the salt text itself, as UTF-8. The derived key's
// length is the stored key's; the comparison is node:crypto's timingSafeEqual.
import crypto from 'node:crypto';
import { promisify } from 'node:util';

const pbkdf2 = promisify(crypto.pbkdf2);
const scrypt = promisify(crypto.scrypt) as (password: crypto.BinaryLike, salt: crypto.BinaryLike, keylen: number, options: crypto.ScryptOptions) => Promise<Buffer>;

export type LegacyKind = 'bcrypt' | 'scrypt' | 'pbkdf2';

/** A parsed hash: enough to verify a password against it. Never shown to anyone. */
export type LegacyHash =
  | { kind: 'bcrypt'; encoded: string; cost: number }
  | { kind: 'scrypt'; N: number; r: number; p: number; salt: Buffer; key: Buffer }
  | { kind: 'pbkdf2'; digest: 'sha1' | 'sha256' | 'sha512'; iterations: number; salt: Buffer; key: Buffer };

// Bounds on what one login may cost: a hash beyond them (a typo, or a file made to stall the
// server) is refused at import and fails at login rather than pinning a core for minutes.
export const LIMITS = Object.freeze({
  bcryptCost: { min: 4, max: 16 },
  pbkdf2Iterations: { min: 1000, max: 5_000_000 },
  /** scrypt's memory is 128·N·r·p bytes. */
  scryptMemoryBytes: 512 * 1024 * 1024,
  keyBytes: { min: 16, max: 256 },
});

/** Why a hash cannot be imported: a reason for the report, which never contains the hash. */
export class UnsupportedHashError extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'UnsupportedHashError';
  }
}

const fail = (reason: string): never => {
  throw new UnsupportedHashError(reason);
};

/** Base64 in any of its spellings: standard, URL-safe, or passlib's adapted (. for +); padding optional. */
function b64(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9+/._-]*={0,2}$/.test(text)) fail(`${what} is not base64`);
  return Buffer.from(text.replace(/\./g, '+').replace(/-/g, '+').replace(/_/g, '/'), 'base64');
}

function hex(text: string, what: string): Buffer {
  if (!/^(?:[0-9a-f]{2})+$/i.test(text)) fail(`${what} is not hexadecimal`);
  return Buffer.from(text, 'hex');
}

function int(text: string | undefined, what: string): number {
  if (text === undefined || !/^\d{1,10}$/.test(text)) fail(`${what} is not a number`);
  return Number(text);
}

function checkKey(key: Buffer): Buffer {
  if (key.length < LIMITS.keyBytes.min || key.length > LIMITS.keyBytes.max) fail(`the derived key is ${key.length} bytes (expected ${LIMITS.keyBytes.min}–${LIMITS.keyBytes.max})`);
  return key;
}

function checkIterations(n: number): number {
  const { min, max } = LIMITS.pbkdf2Iterations;
  if (n < min || n > max) fail(`PBKDF2 iterations ${n} are outside ${min}–${max}`);
  return n;
}

function checkScrypt(N: number, r: number, p: number) {
  if (N < 2 || (N & (N - 1)) !== 0) fail('scrypt N must be a power of two');
  if (r < 1 || p < 1 || r > 64 || p > 64) fail('scrypt r and p must be 1–64');
  if (128 * N * r * p > LIMITS.scryptMemoryBytes) fail(`scrypt parameters need more than ${LIMITS.scryptMemoryBytes / 1024 / 1024} MiB`);
}

const DIGESTS: Record<string, 'sha1' | 'sha256' | 'sha512'> = { sha1: 'sha1', sha256: 'sha256', sha512: 'sha512' };

function parseBcrypt(hash: string): LegacyHash {
  const m = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/.exec(hash);
  if (!m) return fail('a bcrypt hash is $2a$, $2b$ or $2y$, a two-digit cost and 53 characters of salt and hash');
  const cost = Number(m[1]);
  if (cost < LIMITS.bcryptCost.min || cost > LIMITS.bcryptCost.max) fail(`bcrypt cost ${cost} is outside ${LIMITS.bcryptCost.min}–${LIMITS.bcryptCost.max}`);
  return { kind: 'bcrypt', encoded: hash, cost };
}

/** passlib: $scrypt$ln=16,r=8,p=1$salt$key (PHC-like; `n=` for N itself is taken too). */
function parsePhcScrypt(hash: string): LegacyHash {
  const parts = hash.split('$');
  if (parts.length !== 5 || parts[0] !== '') fail('a $scrypt$ hash is $scrypt$ln=…,r=…,p=…$salt$key');
  const params = Object.fromEntries(parts[2].split(',').map((kv) => kv.split('=') as [string, string]));
  const N = params.ln !== undefined ? 2 ** int(params.ln, 'scrypt ln') : int(params.n, 'scrypt n (or ln)');
  const r = int(params.r, 'scrypt r');
  const p = int(params.p, 'scrypt p');
  checkScrypt(N, r, p);
  return { kind: 'scrypt', N, r, p, salt: b64(parts[3], 'the salt'), key: checkKey(b64(parts[4], 'the key')) };
}

/** passlib: $pbkdf2-sha256$rounds$salt$key in adapted base64; $pbkdf2$ is SHA-1. */
function parsePasslibPbkdf2(hash: string): LegacyHash {
  const parts = hash.split('$');
  const digest = parts[1] === 'pbkdf2' ? 'sha1' : DIGESTS[parts[1]?.slice('pbkdf2-'.length) ?? ''];
  if (parts.length !== 5 || !digest) return fail('a passlib PBKDF2 hash is $pbkdf2-sha256$rounds$salt$key');
  return { kind: 'pbkdf2', digest, iterations: checkIterations(int(parts[2], 'PBKDF2 rounds')), salt: b64(parts[3], 'the salt'), key: checkKey(b64(parts[4], 'the key')) };
}

/** Django: pbkdf2_sha256$iterations$salt$base64key; the salt is text. */
function parseDjangoPbkdf2(hash: string): LegacyHash {
  const parts = hash.split('$');
  const digest = DIGESTS[parts[0].slice('pbkdf2_'.length)];
  if (parts.length !== 4 || !digest || !parts[2]) return fail('a Django PBKDF2 hash is pbkdf2_sha256$iterations$salt$key');
  return { kind: 'pbkdf2', digest, iterations: checkIterations(int(parts[1], 'PBKDF2 iterations')), salt: Buffer.from(parts[2], 'utf8'), key: checkKey(b64(parts[3], 'the key')) };
}

/** werkzeug: pbkdf2:sha256:iterations$salt$hexkey and scrypt:N:r:p$salt$hexkey; the salt is text. */
function parseWerkzeug(hash: string): LegacyHash {
  const parts = hash.split('$');
  if (parts.length !== 3 || !parts[1]) fail('a werkzeug hash is method$salt$key');
  const [method, ...args] = parts[0].split(':');
  const salt = Buffer.from(parts[1], 'utf8');
  const key = checkKey(hex(parts[2], 'the key'));
  if (method === 'scrypt') {
    if (args.length !== 3) fail('a werkzeug scrypt hash is scrypt:N:r:p$salt$key');
    const [N, r, p] = args.map((a, i) => int(a, ['scrypt N', 'scrypt r', 'scrypt p'][i]));
    checkScrypt(N, r, p);
    return { kind: 'scrypt', N, r, p, salt, key };
  }
  const digest = DIGESTS[args[0] ?? ''];
  // Old werkzeug left the iterations out and used its default of the day: not knowable from the hash.
  if (!digest || args.length !== 2) return fail('a werkzeug PBKDF2 hash is pbkdf2:sha256:iterations$salt$key (with the iteration count)');
  return { kind: 'pbkdf2', digest, iterations: checkIterations(int(args[1], 'PBKDF2 iterations')), salt, key };
}

/**
 * The hash in a form `verifyLegacyHash` takes, or an UnsupportedHashError saying why not. Argon2
 * strings are not legacy (passwords.ts verifies them): this refuses them, as it refuses anything else.
 */
export function parseLegacyHash(hash: string): LegacyHash {
  if (hash.length > 1024) fail('the hash is longer than 1024 characters');
  if (hash.startsWith('$2')) return parseBcrypt(hash);
  if (hash.startsWith('$scrypt$')) return parsePhcScrypt(hash);
  if (hash.startsWith('$pbkdf2')) return parsePasslibPbkdf2(hash);
  if (hash.startsWith('pbkdf2_')) return parseDjangoPbkdf2(hash);
  if (hash.startsWith('pbkdf2:') || hash.startsWith('scrypt:')) return parseWerkzeug(hash);
  return fail('unknown password hash format (supported: argon2id/argon2i, bcrypt, scrypt, PBKDF2; see docs/migrate.md)');
}

/** The password's key by the hash's own parameters, compared in constant time. False for any malformed hash. */
export async function verifyLegacyHash(hash: string, password: string): Promise<boolean> {
  let parsed: LegacyHash;
  try {
    parsed = parseLegacyHash(hash);
  } catch {
    return false;
  }
  // Loaded at the first imported bcrypt hash, not at every start (most servers never see one).
  if (parsed.kind === 'bcrypt') return (await import('bcryptjs')).default.compare(password, parsed.encoded);
  const derived = parsed.kind === 'scrypt'
    ? await scrypt(password, parsed.salt, parsed.key.length, { N: parsed.N, r: parsed.r, p: parsed.p, maxmem: 128 * parsed.N * parsed.r * parsed.p + 1024 * 1024 })
    : await pbkdf2(password, parsed.salt, parsed.iterations, parsed.key.length, parsed.digest);
  return crypto.timingSafeEqual(derived, parsed.key);
}

/** Which family a stored hash is (for audit and reports), without parsing it fully. */
export function hashKind(hash: string): 'argon2' | LegacyKind | 'unknown' {
  if (hash.startsWith('$argon2')) return 'argon2';
  if (hash.startsWith('$2')) return 'bcrypt';
  if (hash.startsWith('$scrypt$') || hash.startsWith('scrypt:')) return 'scrypt';
  if (hash.startsWith('$pbkdf2') || hash.startsWith('pbkdf2')) return 'pbkdf2';
  return 'unknown';
}

// argon2id and argon2i as PHC strings (argon2d is not offered by the systems we import from). The
// parameters come in either order: argon2-cffi writes m,t,p and node-argon2 m,p,t.
const ARGON2 = /^\$argon2(?:id|i)\$(?:v=(?:16|19)\$)?([a-z]=\d{1,7}(?:,[a-z]=\d{1,7}){2})\$[A-Za-z0-9+/]{8,}\$[A-Za-z0-9+/]{16,}$/;

/**
 * What kind of hash an import file brings, or an UnsupportedHashError saying why it cannot be
 * imported (the same bounds a login would apply). Argon2 strings go to the argon2 library at login.
 */
export function importableHashKind(hash: string): 'argon2' | LegacyKind {
  if (hash.startsWith('$argon2')) {
    const params = ARGON2.exec(hash)?.[1];
    const p = Object.fromEntries((params ?? '').split(',').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
    if (!params || p.m === undefined || p.t === undefined || p.p === undefined) fail('an argon2 hash is a PHC string: $argon2id$v=19$m=…,t=…,p=…$salt$hash (argon2id or argon2i)');
    if (p.m > 262144 || p.t > 20 || p.p > 16) fail('argon2 parameters above m=262144 (256 MiB), t=20, p=16');
    return 'argon2';
  }
  return parseLegacyHash(hash).kind;
}

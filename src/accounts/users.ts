// Users, roles and permissions over raw SQL, named by intent (STYLE.md §5). The interaction router,
// oidc-provider's findAccount, the CLI and the admin API all go through these functions.
import crypto from 'node:crypto';
import type { Db, Queryable } from '../store/db.ts';
import type { Audit } from '../audit/index.ts';
import { HttpError } from '../http/errors.ts';
import { deleteAllFactors } from '../mfa/factors.ts';
import { hashPassword, passwordPolicyViolation, verifyAgainstDummy, verifyPassword } from './passwords.ts';
import { emailKey, parseEmail } from './email.ts';
import { hashKind } from './legacy-hashes.ts';
import { Cached, noChanges, type Changes } from '../store/changes.ts';

export interface User {
  id: string;
  email: string;
  name: string | null;
  active: boolean;
  emailVerified: boolean;
  createdAt: Date;
  lastLoginAt: Date | null;
}

export interface NewUser {
  email: string;
  /** Omitted: the account has no password (federated users, or an admin sets one later). */
  password?: string;
  name?: string;
  /** Defaults to ['user'], the role every signed-up user has. */
  roles?: string[];
  emailVerified?: boolean;
}

export type AuthenticateResult = { user: User } | { error: 'invalid_credentials' | 'inactive' };

/** Which claims each scope releases; oidc-provider's `claims` configuration. */
export const CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name'],
  roles: ['roles', 'permissions'],
} as const;

// Typed errors (STYLE.md §2): each carries its HTTP status for the one error handler.
export class EmailTakenError extends HttpError {
  constructor() {
    super(409, 'email_taken', 'An account with this email address already exists.');
    this.name = 'EmailTakenError';
  }
}
export class UnknownRoleError extends HttpError {
  constructor(public readonly roles: string[]) {
    super(400, 'invalid_request', `Unknown role${roles.length > 1 ? 's' : ''}: ${roles.join(', ')}`);
    this.name = 'UnknownRoleError';
  }
}
export class UserNotFoundError extends HttpError {
  constructor(id: string) {
    super(404, 'not_found', `No user ${id}`);
    this.name = 'UserNotFoundError';
  }
}
export class InvalidEmailError extends HttpError {
  constructor() {
    super(400, 'invalid_request', 'Enter a valid email address.');
    this.name = 'InvalidEmailError';
  }
}
export class WeakPasswordError extends HttpError {
  constructor(message: string) {
    super(400, 'invalid_request', message);
    this.name = 'WeakPasswordError';
  }
}

/** Trimmed email as given, or null when it cannot be an address (so it can never match a row). */
export function normalizeEmail(email: unknown): string | null {
  return parseEmail(email)?.address ?? null;
}

interface UserRow {
  id: string;
  email: string;
  name: string | null;
  active: boolean;
  email_verified: boolean;
  created_at: Date;
  last_login_at: Date | null;
  password_hash?: string | null;
}

const USER_COLUMNS = 'id, email, name, active, email_verified, created_at, last_login_at';

function toUser(r: UserRow): User {
  return {
    id: r.id,
    email: r.email,
    name: r.name,
    active: r.active,
    emailVerified: r.email_verified,
    createdAt: new Date(r.created_at),
    lastLoginAt: r.last_login_at ? new Date(r.last_login_at) : null,
  };
}

const uniq = (xs: string[]) => [...new Set(xs.map((x) => x.trim()).filter(Boolean))];

function isUniqueViolation(err: unknown) {
  return (err as { code?: string })?.code === '23505';
}

async function assertRolesExist(q: Queryable, roles: string[]) {
  if (!roles.length) return;
  const { rows } = await q.query<{ name: string }>('SELECT name FROM roles WHERE name = ANY($1::text[])', [roles]);
  const known = new Set(rows.map((r) => r.name));
  const unknown = roles.filter((r) => !known.has(r));
  if (unknown.length) throw new UnknownRoleError(unknown);
}

async function insertUser(q: Queryable, u: { email: string; passwordHash: string | null; name: string | null; roles: string[]; emailVerified: boolean }): Promise<User> {
  await assertRolesExist(q, u.roles);
  // Every spelling of one address is one account (src/accounts/email.ts): the key is unique.
  const key = emailKey(u.email);
  const taken = await q.query('SELECT 1 FROM users WHERE email_key = $1', [key]);
  if (taken.rows.length > 0) throw new EmailTakenError();
  const { rows } = await q.query<UserRow>(
    `INSERT INTO users (id, email, email_key, name, password_hash, email_verified, password_changed_at)
     VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5::text IS NULL THEN NULL ELSE now() END)
     RETURNING ${USER_COLUMNS}`,
    [crypto.randomUUID(), u.email, key, u.name, u.passwordHash, u.emailVerified],
  );
  const user = toUser(rows[0]);
  for (const role of u.roles) await q.query('INSERT INTO user_roles (user_id, role) VALUES ($1, $2)', [user.id, role]);
  return user;
}

export function createAccounts(db: Db, audit: Audit, changes: Changes = noChanges) {
  async function hashAcceptedPassword(password: string, email: string) {
    const problem = passwordPolicyViolation(password, { email });
    if (problem) throw new WeakPasswordError(problem);
    return hashPassword(password);
  }

  async function createUser(input: NewUser): Promise<User> {
    const email = normalizeEmail(input.email);
    if (!email) throw new InvalidEmailError();
    const passwordHash = input.password === undefined ? null : await hashAcceptedPassword(input.password, email);
    try {
      return await db.transaction((tx) => insertUser(tx, {
        email,
        passwordHash,
        name: input.name?.trim() || null,
        roles: uniq(input.roles ?? ['user']),
        emailVerified: input.emailVerified ?? false,
      }));
    } catch (err) {
      // Two sign-ups racing past the SELECT: the unique index decides.
      if (isUniqueViolation(err)) throw new EmailTakenError();
      throw err;
    }
  }

  async function findUserById(id: string): Promise<User | undefined> {
    const { rows } = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = $1`, [id]);
    return rows[0] ? toUser(rows[0]) : undefined;
  }

  async function findUserRowByEmail(email: unknown): Promise<UserRow | undefined> {
    const parsed = parseEmail(email);
    if (!parsed) return undefined;
    const { rows } = await db.query<UserRow>(
      `SELECT ${USER_COLUMNS}, password_hash FROM users WHERE email_key = $1`,
      [parsed.key],
    );
    return rows[0];
  }

  async function findUserByEmail(email: string): Promise<User | undefined> {
    const row = await findUserRowByEmail(email);
    return row ? toUser(row) : undefined;
  }

  async function listUsers(opts: { limit?: number; offset?: number } = {}): Promise<User[]> {
    const limit = Math.min(Math.max(Math.trunc(opts.limit ?? 100) || 100, 1), 1000);
    const offset = Math.max(Math.trunc(opts.offset ?? 0) || 0, 0);
    const { rows } = await db.query<UserRow>(
      `SELECT ${USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1 OFFSET $2`,
      [limit, offset],
    );
    return rows.map(toUser);
  }

  async function setActive(id: string, active: boolean): Promise<void> {
    const r = await db.query('UPDATE users SET active = $2, updated_at = now() WHERE id = $1 RETURNING id', [id, active]);
    if (r.rows.length === 0) throw new UserNotFoundError(id);
  }

  /** The profile's display name (the `name` claim, a LiveKit participant's name); empty clears it. */
  async function setDisplayName(id: string, name: string): Promise<void> {
    const r = await db.query('UPDATE users SET name = $2, updated_at = now() WHERE id = $1 RETURNING id', [id, name.trim() || null]);
    if (r.rows.length === 0) throw new UserNotFoundError(id);
  }

  async function setPassword(id: string, password: string): Promise<void> {
    const user = await findUserById(id);
    if (!user) throw new UserNotFoundError(id);
    const hash = await hashAcceptedPassword(password, user.email);
    await db.query(
      'UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1',
      [id, hash],
    );
  }

  async function setRoles(id: string, roles: string[]): Promise<void> {
    const wanted = uniq(roles);
    await db.transaction(async (tx) => {
      const exists = await tx.query('SELECT 1 FROM users WHERE id = $1', [id]);
      if (exists.rows.length === 0) throw new UserNotFoundError(id);
      await assertRolesExist(tx, wanted);
      await tx.query('DELETE FROM user_roles WHERE user_id = $1', [id]);
      for (const role of wanted) await tx.query('INSERT INTO user_roles (user_id, role) VALUES ($1, $2)', [id, role]);
      await tx.query('UPDATE users SET updated_at = now() WHERE id = $1', [id]);
    });
  }

  /**
   * One answer for an unknown email and a wrong password, in the same time (a dummy verification);
   * `inactive` only after the right password, so a disabled account is not revealed to a guesser.
   */
  async function authenticate(email: string, password: string): Promise<AuthenticateResult> {
    const row = await findUserRowByEmail(email);
    if (!row || !row.password_hash) {
      await verifyAgainstDummy(String(password ?? ''));
      return { error: 'invalid_credentials' };
    }
    const check = await verifyPassword(row.password_hash, String(password ?? ''));
    if (!check.ok) return { error: 'invalid_credentials' };
    if (!row.active) return { error: 'inactive' };
    if (check.needsRehash) {
      // Same password, current parameters: password_changed_at stays (nothing to revoke).
      // Only while the hash is still the one verified: of two sign-ins at once, one replaces it.
      const fresh = await hashPassword(password);
      const replaced = await db.query('UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3 RETURNING id', [row.id, fresh, row.password_hash]);
      if (replaced.rows.length) await audit.record({ type: 'account.password_rehash', actor: row.id, subject: row.id, details: { from: hashKind(row.password_hash) } });
    }
    const { rows } = await db.query<{ last_login_at: Date }>(
      'UPDATE users SET last_login_at = now() WHERE id = $1 RETURNING last_login_at',
      [row.id],
    );
    return { user: toUser({ ...row, last_login_at: rows[0]?.last_login_at ?? new Date() }) };
  }

  /**
   * Delete the account and, through the foreign keys, its roles, factors, devices and federation
   * links. The audit trail keeps the id. Revocation of what was issued is the caller's decorator
   * (src/revocation/accounts.ts).
   */
  async function deleteUser(id: string): Promise<void> {
    const r = await db.query('DELETE FROM users WHERE id = $1 RETURNING id', [id]);
    if (r.rows.length === 0) throw new UserNotFoundError(id);
  }

  /**
   * Change a user's name, address or verification state (issue 18, `user update`). A new address is
   * unverified unless `emailVerified` says otherwise, and must not belong to another account.
   */
  async function updateProfile(id: string, change: { name?: string | null; email?: string; emailVerified?: boolean }): Promise<User> {
    return db.transaction(async (tx) => {
      const { rows } = await tx.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE`, [id]);
      if (!rows[0]) throw new UserNotFoundError(id);
      let email = rows[0].email;
      let verified = change.emailVerified ?? rows[0].email_verified;
      if (change.email !== undefined) {
        const next = normalizeEmail(change.email);
        if (!next) throw new InvalidEmailError();
        if (emailKey(next) !== emailKey(email)) {
          const taken = await tx.query('SELECT 1 FROM users WHERE email_key = $1 AND id <> $2', [emailKey(next), id]);
          if (taken.rows.length > 0) throw new EmailTakenError();
          verified = change.emailVerified ?? false;
        }
        email = next;
      }
      const name = change.name === undefined ? rows[0].name : change.name;
      try {
        const r = await tx.query<UserRow>(
          `UPDATE users SET name = $2, email = $3, email_key = $4, email_verified = $5, updated_at = now() WHERE id = $1 RETURNING ${USER_COLUMNS}`,
          [id, name, email, emailKey(email), verified],
        );
        return toUser(r.rows[0]);
      } catch (err) {
        if (isUniqueViolation(err)) throw new EmailTakenError();
        throw err;
      }
    });
  }

  /** The address was shown to reach the user (a link sent to it was opened); only while it is still theirs. */
  async function markEmailVerified(id: string, email: string): Promise<boolean> {
    const r = await db.query('UPDATE users SET email_verified = true, updated_at = now() WHERE id = $1 AND email_key = $2 RETURNING id', [id, emailKey(email)]);
    return r.rows.length > 0;
  }

  /** Whether the user has a password at all (accounts created through SSO have none). */
  async function hasPassword(id: string): Promise<boolean> {
    const { rows } = await db.query<{ has: boolean }>('SELECT password_hash IS NOT NULL AS has FROM users WHERE id = $1', [id]);
    return rows[0]?.has === true;
  }

  /** Ids of the active users who hold the admin role. */
  async function activeAdminIds(): Promise<string[]> {
    const { rows } = await db.query<{ id: string }>(
      "SELECT u.id FROM users u JOIN user_roles ur ON ur.user_id = u.id WHERE ur.role = 'admin' AND u.active ORDER BY u.id",
    );
    return rows.map((r) => r.id);
  }

  /** Remove every second factor, recovery code and known device (admin MFA reset, issue 7). */
  async function resetMfa(id: string): Promise<{ factors: number }> {
    const user = await findUserById(id);
    if (!user) throw new UserNotFoundError(id);
    return db.transaction(async (tx) => ({ factors: await deleteAllFactors(tx, id) }));
  }

  async function rolesAndPermissions(userId: string): Promise<{ roles: string[]; permissions: string[] }> {
    const { rows } = await db.query<{ name: string; permissions: string[] }>(
      `SELECT r.name, r.permissions FROM user_roles ur JOIN roles r ON r.name = ur.role
       WHERE ur.user_id = $1 ORDER BY r.name`,
      [userId],
    );
    const permissions = [...new Set(rows.flatMap((r) => r.permissions ?? []))].sort();
    return { roles: rows.map((r) => r.name), permissions };
  }

  /** Claims for oidc-provider's findAccount: only what the granted scopes release (CLAIMS). */
  async function claimsFor(userId: string, scopes: Set<string>): Promise<Record<string, unknown>> {
    const claims: Record<string, unknown> = { sub: userId };
    const needUser = scopes.has('email') || scopes.has('profile');
    const user = needUser ? await findUserById(userId) : undefined;
    if (user && scopes.has('email')) {
      claims.email = user.email;
      claims.email_verified = user.emailVerified;
    }
    if (user && scopes.has('profile') && user.name) claims.name = user.name;
    if (scopes.has('roles')) Object.assign(claims, await rolesAndPermissions(userId));
    return claims;
  }

  /**
   * First start: when no user holds the admin role, make one — from ADMIN_EMAIL/ADMIN_PASSWORD, or
   * with a generated one-time password that the caller prints once. Returns null when an admin
   * already exists (every later start). An existing user with that email is given the admin role
   * and keeps their password.
   */
  async function ensureFirstAdmin(opts: { email?: string; password?: string } = {}): Promise<{ email: string; password?: string } | null> {
    const hasAdmin = async (q: Queryable) => (await q.query("SELECT 1 FROM user_roles WHERE role = 'admin' LIMIT 1")).rows.length > 0;
    // Every start after the first: answer before spending a hash.
    if (await hasAdmin(db)) return null;
    const email = normalizeEmail(opts.email ?? 'admin@localhost');
    if (!email) throw new InvalidEmailError();
    const generated = opts.password === undefined ? crypto.randomBytes(18).toString('base64url') : undefined;
    const password = opts.password ?? generated!;
    const passwordHash = await hashAcceptedPassword(password, email);
    const outcome = await db.transaction(async (tx) => {
      // Several processes may start at once on one PostgreSQL: only one creates the admin.
      if (db.kind === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(724311)');
      if (await hasAdmin(tx)) return null;
      const existing = await tx.query<{ id: string }>('SELECT id FROM users WHERE email_key = $1', [emailKey(email)]);
      if (existing.rows[0]) {
        await tx.query("INSERT INTO user_roles (user_id, role) VALUES ($1, 'admin') ON CONFLICT DO NOTHING", [existing.rows[0].id]);
        return { id: existing.rows[0].id, email, created: false };
      }
      const user = await insertUser(tx, { email, passwordHash, name: 'Administrator', roles: ['admin'], emailVerified: opts.email !== undefined });
      return { id: user.id, email: user.email, created: true };
    });
    if (!outcome) return null;
    await audit.record({ type: 'admin.bootstrap', actor: 'system', subject: outcome.id, details: { created: outcome.created, generated: Boolean(generated && outcome.created) } });
    return outcome.created && generated ? { email: outcome.email, password: generated } : { email: outcome.email };
  }

  // Read on every refresh, code redemption and userinfo call (oidc-provider's findAccount, the scope
  // rule): answered from memory, dropped on every node when the rows behind them change
  // (src/store/changes.ts). Inside this module the reads stay direct: a write checks what is there now.
  const users = new Cached('accounts.user', changes, findUserById).dropOn('users');
  const grants = new Cached('accounts.roles', changes, rolesAndPermissions).dropOn('users').dropOn('user_roles').dropOn('roles', 'everything');

  return {
    createUser,
    findUserById: (id: string) => users.get(id),
    findUserByEmail,
    listUsers,
    setActive,
    setDisplayName,
    setPassword,
    setRoles,
    resetMfa,
    deleteUser,
    activeAdminIds,
    hasPassword,
    markEmailVerified,
    updateProfile,
    authenticate,
    rolesAndPermissions: (userId: string) => grants.get(userId),
    claimsFor,
    ensureFirstAdmin,
  };
}

export type Accounts = ReturnType<typeof createAccounts>;

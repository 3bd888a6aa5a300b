// Roles and their permissions (migrations/001_core.sql). A permission is a plain string: the
// `permissions` claim carries the union over a user's roles, and token exchange intersects the
// scopes it grants with it (DESIGN.md § Token exchange). `user` and `admin` are built in: they can
// be given other permissions but not deleted.
import type { Db } from '../store/db.ts';
import { HttpError } from '../http/errors.ts';

export interface Role {
  name: string;
  description: string;
  permissions: string[];
  users: number;
}

export const BUILT_IN_ROLES = ['user', 'admin'] as const;
const ROLE_NAME = /^[a-z][a-z0-9_.:-]{0,63}$/;
const PERMISSION = /^[\x21-\x7e]{1,128}$/;

export class RoleError extends HttpError {
  constructor(message: string) {
    super(400, 'invalid_request', message);
  }
}

function checkPermissions(permissions: string[]): string[] {
  const bad = permissions.find((p) => !PERMISSION.test(p));
  if (bad !== undefined) throw new RoleError(`permission ${JSON.stringify(bad)} must be 1-128 printable characters without spaces`);
  return [...new Set(permissions)].sort();
}

export function createRoles(db: Db) {
  async function listRoles(): Promise<Role[]> {
    const { rows } = await db.query<{ name: string; description: string; permissions: string[]; users: number | string }>(
      `SELECT r.name, r.description, r.permissions, count(ur.user_id) AS users
         FROM roles r LEFT JOIN user_roles ur ON ur.role = r.name
        GROUP BY r.name, r.description, r.permissions ORDER BY r.name`,
    );
    return rows.map((r) => ({ name: r.name, description: r.description, permissions: r.permissions ?? [], users: Number(r.users) }));
  }

  async function findRole(name: string): Promise<Role | undefined> {
    return (await listRoles()).find((r) => r.name === name);
  }

  async function createRole(input: { name: string; description?: string; permissions?: string[] }): Promise<Role> {
    if (!ROLE_NAME.test(input.name)) throw new RoleError('role name must start with a lower-case letter and use a-z 0-9 _ . : - (at most 64)');
    const permissions = checkPermissions(input.permissions ?? []);
    const r = await db.query(
      'INSERT INTO roles (name, description, permissions) VALUES ($1, $2, $3::text[]) ON CONFLICT (name) DO NOTHING RETURNING name',
      [input.name, input.description ?? '', permissions],
    );
    if (r.rows.length === 0) throw new RoleError(`role ${input.name} exists`);
    return (await findRole(input.name))!;
  }

  /** Change a role's description and permissions: `permissions` replaces, `add`/`remove` adjust. */
  async function updateRole(name: string, change: { description?: string; permissions?: string[]; add?: string[]; remove?: string[] }): Promise<Role> {
    await db.transaction(async (tx) => {
      const { rows } = await tx.query<{ permissions: string[]; description: string }>('SELECT permissions, description FROM roles WHERE name = $1 FOR UPDATE', [name]);
      if (!rows[0]) throw new RoleError(`no role ${name}`);
      const base = [...(change.permissions ?? rows[0].permissions ?? []), ...(change.add ?? [])];
      const next = base.filter((p) => !(change.remove ?? []).includes(p));
      await tx.query('UPDATE roles SET permissions = $2::text[], description = $3 WHERE name = $1', [name, checkPermissions(next), change.description ?? rows[0].description]);
    });
    return (await findRole(name))!;
  }

  /** Delete a role nobody holds (or, with `force`, take it from its holders too). */
  async function deleteRole(name: string, opts: { force?: boolean } = {}): Promise<void> {
    if ((BUILT_IN_ROLES as readonly string[]).includes(name)) throw new RoleError(`${name} is built in and cannot be deleted`);
    const role = await findRole(name);
    if (!role) throw new RoleError(`no role ${name}`);
    if (role.users > 0 && !opts.force) throw new RoleError(`${role.users} user(s) hold ${name}; take it from them first, or pass --force`);
    await db.query('DELETE FROM roles WHERE name = $1', [name]);
  }

  return { listRoles, findRole, createRole, updateRole, deleteRole };
}

export type Roles = ReturnType<typeof createRoles>;

// Exchange policy lives in data (migrations/002_exchange_policy.sql), not in code. Deny by default:
// a client without a policy row exchanges nothing; a user without a role that has a LiveKit policy
// joins no room. This module is the storage the exchange declares (STYLE.md §5) plus the pure rules
// over it: room-name validation, room patterns, video grants.
import type { Queryable } from '../store/db.ts';
import { Cached, type Changes } from '../store/changes.ts';

export interface ClientPolicy {
  clientId: string;
  /** May exchange for LiveKit room tokens (and call connection-details with this client's tokens). */
  livekit: boolean;
  /** Registered resource URIs it may exchange to. */
  resources: string[];
  /** Scopes it may obtain by exchange; null = whatever the one scope rule allows (src/authz/scope-rule.ts). */
  scopes: string[] | null;
  /** May act for users (RFC 8693 delegation) for the resources above without the user's may_act, where the user's grant consented to the resource. */
  mayAct: boolean;
  /** The LiveKit agent name this client runs as (dispatch + delegation in connection-details). */
  agentName: string | null;
}

/**
 * ID-JAG (migrations/013_id_jag.sql): another authorization server this client may get an Identity
 * Assertion JWT Authorization Grant for. Deny by default: no target, no ID-JAG.
 */
export interface IdJagTarget {
  clientId: string;
  /** The target authorization server's issuer identifier: the ID-JAG's `aud`. */
  audience: string;
  /** The client's identifier at that server: the ID-JAG's `client_id`. */
  targetClientId: string;
  /** Resource identifiers at that server the client may name. */
  resources: string[];
  /** Scopes it may ask for there; null = the requested scopes go through (the target server decides). */
  scopes: string[] | null;
}

export interface RolePolicy {
  role: string;
  /** Globs over room names: `*` any run of characters, `{identity}` and `{sub}` placeholders. */
  roomPatterns: string[];
  canPublish: boolean;
  canSubscribe: boolean;
  canPublishData: boolean;
  /** roomAdmin only where an operator configured it, never by default. */
  roomAdmin: boolean;
  /** Issue 7: admits its rooms (and adds its grant) only for a subject signed in with MFA. */
  requireMfa: boolean;
}

export interface UserFacts {
  id: string;
  email: string;
  name: string | null;
  active: boolean;
  roles: string[];
  permissions: string[];
}

export interface PolicyStore {
  clientPolicy(clientId: string): Promise<ClientPolicy | undefined>;
  clientsByAgentName(names: string[]): Promise<ClientPolicy[]>;
  rolePolicies(roles: string[]): Promise<RolePolicy[]>;
  user(id: string): Promise<UserFacts | undefined>;
  setClientPolicy(p: ClientPolicy): Promise<ClientPolicy>;
  deleteClientPolicy(clientId: string): Promise<boolean>;
  listClientPolicies(): Promise<ClientPolicy[]>;
  setRolePolicy(p: RolePolicy): Promise<RolePolicy>;
  deleteRolePolicy(role: string): Promise<boolean>;
  listRolePolicies(): Promise<RolePolicy[]>;
  idJagTarget(clientId: string, audience: string): Promise<IdJagTarget | undefined>;
  setIdJagTarget(t: IdJagTarget): Promise<IdJagTarget>;
  deleteIdJagTarget(clientId: string, audience: string): Promise<boolean>;
  listIdJagTargets(clientId?: string): Promise<IdJagTarget[]>;
}

interface ClientRow {
  client_id: string; livekit: boolean; resources: string[]; scopes: string[] | null; may_act: boolean; agent_name: string | null;
}
interface RoleRow {
  role: string; room_patterns: string[]; can_publish: boolean; can_subscribe: boolean; can_publish_data: boolean; room_admin: boolean;
  require_mfa: boolean;
}

interface IdJagRow {
  client_id: string; audience: string; target_client_id: string; resources: string[]; scopes: string[] | null;
}
const toIdJag = (r: IdJagRow): IdJagTarget => ({
  clientId: r.client_id, audience: r.audience, targetClientId: r.target_client_id, resources: r.resources, scopes: r.scopes,
});

const toClient = (r: ClientRow): ClientPolicy => ({
  clientId: r.client_id, livekit: r.livekit, resources: r.resources, scopes: r.scopes, mayAct: r.may_act, agentName: r.agent_name,
});
const toRole = (r: RoleRow): RolePolicy => ({
  role: r.role, roomPatterns: r.room_patterns, canPublish: r.can_publish, canSubscribe: r.can_subscribe,
  canPublishData: r.can_publish_data, roomAdmin: r.room_admin, requireMfa: r.require_mfa,
});

export function createPolicyStore(db: Queryable): PolicyStore {
  return {
    async clientPolicy(clientId) {
      const r = await db.query<ClientRow>('SELECT * FROM exchange_client_policies WHERE client_id = $1', [clientId]);
      return r.rows[0] && toClient(r.rows[0]);
    },
    async clientsByAgentName(names) {
      if (names.length === 0) return [];
      const r = await db.query<ClientRow>('SELECT * FROM exchange_client_policies WHERE agent_name = ANY($1)', [names]);
      return r.rows.map(toClient);
    },
    async rolePolicies(roles) {
      if (roles.length === 0) return [];
      const r = await db.query<RoleRow>('SELECT * FROM livekit_role_policies WHERE role = ANY($1) ORDER BY role', [roles]);
      return r.rows.map(toRole);
    },
    async user(id) {
      // One statement (user and roles together): this runs on every exchange and connection-details
      // call, and each round trip counts, most of all on PGlite's single connection.
      const u = await db.query<{ id: string; email: string; name: string | null; active: boolean; roles: { role: string; permissions: string[] }[] }>(
        `SELECT u.id, u.email, u.name, u.active,
                COALESCE(json_agg(json_build_object('role', r.name, 'permissions', r.permissions) ORDER BY r.name)
                         FILTER (WHERE r.name IS NOT NULL), '[]'::json) AS roles
           FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id LEFT JOIN roles r ON r.name = ur.role
          WHERE u.id = $1 GROUP BY u.id`, [id],
      );
      const row = u.rows[0];
      if (!row) return undefined;
      // Named fields, not `{ ...user, roles, … }` (docs/performance.md: the Node 20 spread quirk).
      return {
        id: row.id, email: row.email, name: row.name, active: row.active,
        roles: row.roles.map((x) => x.role),
        permissions: [...new Set(row.roles.flatMap((x) => x.permissions))].sort(),
      };
    },
    async setClientPolicy(p) {
      const r = await db.query<ClientRow>(
        `INSERT INTO exchange_client_policies (client_id, livekit, resources, scopes, may_act, agent_name)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (client_id) DO UPDATE SET livekit = $2, resources = $3, scopes = $4, may_act = $5, agent_name = $6, updated_at = now()
         RETURNING *`,
        [p.clientId, p.livekit, p.resources, p.scopes, p.mayAct, p.agentName],
      );
      return toClient(r.rows[0]);
    },
    async deleteClientPolicy(clientId) {
      return (await db.query('DELETE FROM exchange_client_policies WHERE client_id = $1', [clientId])).rowCount > 0;
    },
    async listClientPolicies() {
      return (await db.query<ClientRow>('SELECT * FROM exchange_client_policies ORDER BY client_id')).rows.map(toClient);
    },
    async setRolePolicy(p) {
      const r = await db.query<RoleRow>(
        `INSERT INTO livekit_role_policies (role, room_patterns, can_publish, can_subscribe, can_publish_data, room_admin, require_mfa)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (role) DO UPDATE SET room_patterns = $2, can_publish = $3, can_subscribe = $4, can_publish_data = $5, room_admin = $6,
           require_mfa = $7, updated_at = now()
         RETURNING *`,
        [p.role, p.roomPatterns, p.canPublish, p.canSubscribe, p.canPublishData, p.roomAdmin, p.requireMfa],
      );
      return toRole(r.rows[0]);
    },
    async deleteRolePolicy(role) {
      return (await db.query('DELETE FROM livekit_role_policies WHERE role = $1', [role])).rowCount > 0;
    },
    async listRolePolicies() {
      return (await db.query<RoleRow>('SELECT * FROM livekit_role_policies ORDER BY role')).rows.map(toRole);
    },
    async idJagTarget(clientId, audience) {
      const r = await db.query<IdJagRow>('SELECT * FROM exchange_id_jag_targets WHERE client_id = $1 AND audience = $2', [clientId, audience]);
      return r.rows[0] && toIdJag(r.rows[0]);
    },
    async setIdJagTarget(t) {
      const r = await db.query<IdJagRow>(
        `INSERT INTO exchange_id_jag_targets (client_id, audience, target_client_id, resources, scopes)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (client_id, audience) DO UPDATE SET target_client_id = $3, resources = $4, scopes = $5, updated_at = now()
         RETURNING *`,
        [t.clientId, t.audience, t.targetClientId, t.resources, t.scopes],
      );
      return toIdJag(r.rows[0]);
    },
    async deleteIdJagTarget(clientId, audience) {
      return (await db.query('DELETE FROM exchange_id_jag_targets WHERE client_id = $1 AND audience = $2', [clientId, audience])).rowCount > 0;
    },
    async listIdJagTargets(clientId) {
      const r = clientId
        ? await db.query<IdJagRow>('SELECT * FROM exchange_id_jag_targets WHERE client_id = $1 ORDER BY audience', [clientId])
        : await db.query<IdJagRow>('SELECT * FROM exchange_id_jag_targets ORDER BY client_id, audience');
      return r.rows.map(toIdJag);
    },
  };
}

/**
 * The lookups every exchange and connection-details call makes, answered from memory and dropped on
 * every node when the rows behind them change (src/store/changes.ts). Writes and lists go through.
 */
export function cachedPolicyStore(store: PolicyStore, changes: Changes): PolicyStore {
  // A client's policy row goes with the client (ON DELETE CASCADE), so a deleted client drops it too.
  const clients = new Cached('policy.client', changes, (id) => store.clientPolicy(id)).dropOn('exchange_client_policies').dropOn('clients');
  // Agent names come from requests (room_config.agents): only names some client runs are kept.
  const agents = new Cached('policy.agents', changes, (names) => store.clientsByAgentName(JSON.parse(names)), (found) => found.length > 0)
    .dropOn('exchange_client_policies', 'everything').dropOn('clients', 'everything');
  const roles = new Cached('policy.roles', changes, (names) => store.rolePolicies(JSON.parse(names))).dropOn('livekit_role_policies', 'everything');
  // A role's permissions reach every user holding it.
  const users = new Cached('policy.user', changes, (id) => store.user(id)).dropOn('users').dropOn('user_roles').dropOn('roles', 'everything');
  return {
    ...store,
    clientPolicy: (clientId) => clients.get(clientId),
    clientsByAgentName: (names) => (names.length ? agents.get(JSON.stringify([...names].sort())) : Promise.resolve([])),
    rolePolicies: (names) => (names.length ? roles.get(JSON.stringify([...names].sort())) : Promise.resolve([])),
    user: (id) => users.get(id),
  };
}

// ---- Rooms ------------------------------------------------------------------------------------

export const MAX_ROOM_NAME_BYTES = 256;
/** Letters, digits and `_ - . : = @`: safe in URLs, logs and LiveKit's API without escaping. */
export const ROOM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:=@-]*$/;
/** Names an operator or LiveKit itself may use for other purposes; never handed to a participant. */
export const RESERVED_ROOM_NAMES = new Set(['admin', 'administrator', 'system', 'root', 'livekit', 'gatehouse', 'api', 'internal', 'default', 'null', 'undefined']);

/** undefined when acceptable, otherwise why not. */
export function roomNameProblem(name: string): string | undefined {
  if (Buffer.byteLength(name, 'utf8') > MAX_ROOM_NAME_BYTES) return `room name is longer than ${MAX_ROOM_NAME_BYTES} bytes`;
  if (!ROOM_NAME.test(name)) return 'room name may contain only letters, digits and _ - . : = @, starting with a letter or digit';
  if (RESERVED_ROOM_NAMES.has(name.toLowerCase())) return `room name "${name}" is reserved`;
  return undefined;
}

/** A room pattern as an anchored regular expression, placeholders filled in. */
export function patternToRegExp(pattern: string, vars: { identity: string; sub: string }): RegExp {
  const filled = pattern.replaceAll('{identity}', '\u0000I').replaceAll('{sub}', '\u0000S');
  const source = filled
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
      .replaceAll('\u0000I', vars.identity.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .replaceAll('\u0000S', vars.sub.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('.*');
  return new RegExp(`^${source}$`);
}

export interface LivekitGrant {
  canPublish: boolean;
  canSubscribe: boolean;
  canPublishData: boolean;
  roomAdmin: boolean;
  /** Roles whose patterns admitted the room (for audit). */
  roles: string[];
}

/**
 * The video grant for `room`: the union over the roles whose patterns admit the room. undefined when
 * no role admits it (the room is outside the user's allowed patterns).
 */
export function grantForRoom(policies: RolePolicy[], room: string, vars: { identity: string; sub: string }): LivekitGrant | undefined {
  const admitting = policies.filter((p) => p.roomPatterns.some((pat) => patternToRegExp(pat, vars).test(room)));
  if (admitting.length === 0) return undefined;
  return {
    canPublish: admitting.some((p) => p.canPublish),
    canSubscribe: admitting.some((p) => p.canSubscribe),
    canPublishData: admitting.some((p) => p.canPublishData),
    roomAdmin: admitting.some((p) => p.roomAdmin),
    roles: admitting.map((p) => p.role),
  };
}

// ---- Scopes -----------------------------------------------------------------------------------

// Which scopes a token gets is the one scope rule's to decide (src/authz/scope-rule.ts).
export { splitScope } from '../authz/scope-rule.ts';

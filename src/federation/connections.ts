// Upstream OpenID Connect connections and the identities linked through them (issue 4), over raw
// SQL named by intent (STYLE.md §5). The upstream client secret is sealed with the data-encryption key.
import type { Db, Queryable } from '../store/db.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import { emailDomain } from '../accounts/email.ts';
import { z } from 'zod';

/** Which upstream claims carry what Gatehouse needs; defaults are the OIDC Core standard claims. */
export interface ClaimMap {
  email: string;
  email_verified: string;
  name: string;
  /** Upstream claim with group or role values (Okta/Keycloak `groups`, Entra ID `groups` or `roles`). */
  groups: string;
}

export const DEFAULT_CLAIM_MAP: ClaimMap = { email: 'email', email_verified: 'email_verified', name: 'name', groups: 'groups' };

export interface Connection {
  name: string;
  displayName: string;
  issuer: string;
  clientId: string;
  /** Decrypted only when the RP needs it. */
  hasClientSecret: boolean;
  scopes: string;
  domains: string[];
  jit: boolean;
  linkByEmail: boolean;
  passwordLogin: boolean;
  trustMfa: boolean;
  claimMap: ClaimMap;
  /** Upstream group value → Gatehouse roles. */
  roleMap: Record<string, string[]>;
  defaultRoles: string[];
  enabled: boolean;
  /** ID-JAG (docs/id-jag.md): whether, and for which clients and resources, this issuer's ID-JAGs are redeemed. */
  idJag: IdJagTrust;
  updatedAt: Date;
}

export interface IdJagTrust {
  enabled: boolean;
  /** Where the issuer's signing keys are; null = the jwks_uri of its discovery document. */
  jwksUri: string | null;
  /** Or the keys themselves (a JWK Set). */
  jwks: { keys: Record<string, unknown>[] } | null;
  /** Our clients that may present its ID-JAGs. */
  clients: string[];
  /** Registered resources its ID-JAGs may name. */
  resources: string[];
}

// Connection names appear in URLs and authorization requests (`connection=<name>`).
const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
// A bare DNS name, lower-case (IDNs in their punycode form).
const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$/;

const roleList = z.array(z.string().min(1).max(64));
export const connectionInput = z.object({
  name: z.string().regex(NAME, 'lower-case letters, digits, _ and - (at most 63, starting with a letter or digit)'),
  displayName: z.string().trim().min(1).max(100).optional(),
  issuer: z.url().refine((u) => /^https:\/\//.test(u) || isLoopbackHttp(u), 'must be https:// (http:// only on a loopback address, for development)'),
  clientId: z.string().min(1).max(512),
  clientSecret: z.string().min(1).max(4096).optional(),
  scopes: z.string().max(1000).refine((s) => s.split(/\s+/).includes('openid'), 'must include openid').optional(),
  domains: z.array(z.string().transform((d) => d.trim().toLowerCase()).pipe(z.string().regex(DOMAIN, 'not a domain name'))).optional(),
  jit: z.boolean().optional(),
  linkByEmail: z.boolean().optional(),
  passwordLogin: z.boolean().optional(),
  trustMfa: z.boolean().optional(),
  claimMap: z.object({ email: z.string().min(1), email_verified: z.string().min(1), name: z.string().min(1), groups: z.string().min(1) }).partial().optional(),
  roleMap: z.record(z.string().min(1).max(256), roleList).optional(),
  defaultRoles: roleList.optional(),
  enabled: z.boolean().optional(),
  idJag: z.boolean().optional(),
  idJagJwksUri: z.url().refine((u) => /^https:\/\//.test(u) || isLoopbackHttp(u), 'must be https:// (http:// only on a loopback address, for development)').nullable().optional(),
  idJagJwks: z.object({ keys: z.array(z.object({ kty: z.string() }).passthrough()).min(1) }).nullable().optional(),
  idJagClients: z.array(z.string().min(1).max(512)).optional(),
  idJagResources: z.array(z.url()).optional(),
});
export type ConnectionInput = z.input<typeof connectionInput>;

/** http:// is allowed only towards this machine (development and tests), never another host. */
export function isLoopbackHttp(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
  } catch {
    return false;
  }
}

export class ConnectionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConnectionError';
  }
}

interface ConnectionRow {
  name: string;
  display_name: string | null;
  issuer: string;
  client_id: string;
  client_secret_enc: string | null;
  scopes: string;
  domains: string[];
  jit: boolean;
  link_by_email: boolean;
  password_login: boolean;
  trust_mfa: boolean;
  claim_map: Partial<ClaimMap> | string;
  role_map: Record<string, string[]> | string;
  default_roles: string[];
  enabled: boolean;
  id_jag: boolean;
  id_jag_jwks_uri: string | null;
  id_jag_jwks: IdJagTrust['jwks'] | string | null;
  id_jag_clients: string[];
  id_jag_resources: string[];
  updated_at: Date;
}

const json = <T>(v: T | string): T => (typeof v === 'string' ? (JSON.parse(v) as T) : v);

function toConnection(r: ConnectionRow): Connection {
  return {
    name: r.name,
    displayName: r.display_name ?? r.name,
    issuer: r.issuer,
    clientId: r.client_id,
    hasClientSecret: Boolean(r.client_secret_enc),
    scopes: r.scopes,
    domains: r.domains ?? [],
    jit: r.jit,
    linkByEmail: r.link_by_email,
    passwordLogin: r.password_login,
    trustMfa: r.trust_mfa,
    claimMap: { ...DEFAULT_CLAIM_MAP, ...json(r.claim_map) },
    roleMap: json(r.role_map),
    defaultRoles: r.default_roles ?? [],
    enabled: r.enabled,
    idJag: {
      enabled: r.id_jag, jwksUri: r.id_jag_jwks_uri, jwks: r.id_jag_jwks === null ? null : json(r.id_jag_jwks),
      clients: r.id_jag_clients ?? [], resources: r.id_jag_resources ?? [],
    },
    updatedAt: new Date(r.updated_at),
  };
}

export interface LinkedIdentity {
  connection: string;
  subject: string;
  userId: string;
  managedRoles: string[];
}

async function assertRolesExist(q: Queryable, roles: string[]) {
  if (!roles.length) return;
  const { rows } = await q.query<{ name: string }>('SELECT name FROM roles WHERE name = ANY($1::text[])', [roles]);
  const known = new Set(rows.map((r) => r.name));
  const unknown = [...new Set(roles.filter((r) => !known.has(r)))];
  if (unknown.length) throw new ConnectionError(`unknown role${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`);
}

export function createConnections(db: Db, box: SecretBox) {
  async function assertDomainsFree(q: Queryable, name: string, domains: string[]) {
    if (!domains.length) return;
    const { rows } = await q.query<{ name: string; domain: string }>(
      'SELECT name, d AS domain FROM federation_connections, unnest(domains) AS d WHERE name <> $1 AND d = ANY($2::text[])',
      [name, domains],
    );
    // Home-realm discovery needs one answer per domain.
    if (rows.length) throw new ConnectionError(`domain ${rows[0].domain} already belongs to connection ${rows[0].name}`);
  }

  async function create(input: ConnectionInput): Promise<Connection> {
    const c = connectionInput.parse(input);
    return db.transaction(async (tx) => {
      const exists = await tx.query('SELECT 1 FROM federation_connections WHERE name = $1', [c.name]);
      if (exists.rows.length) throw new ConnectionError(`connection ${c.name} already exists`);
      await assertDomainsFree(tx, c.name, c.domains ?? []);
      const defaultRoles = c.defaultRoles ?? ['user'];
      await assertRolesExist(tx, [...defaultRoles, ...Object.values(c.roleMap ?? {}).flat()]);
      const { rows } = await tx.query<ConnectionRow>(
        `INSERT INTO federation_connections (name, display_name, issuer, client_id, client_secret_enc, scopes, domains, jit,
           link_by_email, password_login, trust_mfa, claim_map, role_map, default_roles, enabled,
           id_jag, id_jag_jwks_uri, id_jag_jwks, id_jag_clients, id_jag_resources)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) RETURNING *`,
        [c.name, c.displayName ?? null, c.issuer.replace(/\/+$/, ''), c.clientId, c.clientSecret ? box.seal(c.clientSecret) : null,
          c.scopes ?? 'openid email profile', c.domains ?? [], c.jit ?? true, c.linkByEmail ?? false, c.passwordLogin ?? true,
          c.trustMfa ?? false, JSON.stringify(c.claimMap ?? {}), JSON.stringify(c.roleMap ?? {}), defaultRoles, c.enabled ?? true,
          c.idJag ?? false, c.idJagJwksUri ?? null, c.idJagJwks ? JSON.stringify(c.idJagJwks) : null, c.idJagClients ?? [], c.idJagResources ?? []],
      );
      return toConnection(rows[0]);
    });
  }

  /** Change the given fields; `clientSecret: null` removes the secret (public upstream client). */
  async function update(name: string, patch: Partial<Omit<ConnectionInput, 'name' | 'clientSecret'>> & { clientSecret?: string | null }): Promise<Connection> {
    const current = await find(name);
    if (!current) throw new ConnectionError(`no connection ${name}`);
    const { clientSecret, ...rest } = patch;
    const merged = connectionInput.parse({
      name,
      displayName: current.displayName,
      issuer: current.issuer,
      clientId: current.clientId,
      scopes: current.scopes,
      domains: current.domains,
      jit: current.jit,
      linkByEmail: current.linkByEmail,
      passwordLogin: current.passwordLogin,
      trustMfa: current.trustMfa,
      claimMap: current.claimMap,
      roleMap: current.roleMap,
      defaultRoles: current.defaultRoles,
      enabled: current.enabled,
      idJag: current.idJag.enabled,
      idJagJwksUri: current.idJag.jwksUri,
      idJagJwks: current.idJag.jwks,
      idJagClients: current.idJag.clients,
      idJagResources: current.idJag.resources,
      ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)),
      ...(clientSecret ? { clientSecret } : {}),
    });
    return db.transaction(async (tx) => {
      await assertDomainsFree(tx, name, merged.domains ?? []);
      await assertRolesExist(tx, [...(merged.defaultRoles ?? []), ...Object.values(merged.roleMap ?? {}).flat()]);
      const { rows } = await tx.query<ConnectionRow>(
        `UPDATE federation_connections SET display_name = $2, issuer = $3, client_id = $4, scopes = $5, domains = $6, jit = $7,
           link_by_email = $8, password_login = $9, trust_mfa = $10, claim_map = $11, role_map = $12, default_roles = $13,
           enabled = $14, updated_at = now(),
           client_secret_enc = CASE WHEN $15::boolean THEN $16 ELSE client_secret_enc END,
           id_jag = $17, id_jag_jwks_uri = $18, id_jag_jwks = $19, id_jag_clients = $20, id_jag_resources = $21
         WHERE name = $1 RETURNING *`,
        [name, merged.displayName ?? null, merged.issuer.replace(/\/+$/, ''), merged.clientId, merged.scopes, merged.domains, merged.jit,
          merged.linkByEmail, merged.passwordLogin, merged.trustMfa, JSON.stringify(merged.claimMap), JSON.stringify(merged.roleMap),
          merged.defaultRoles, merged.enabled, clientSecret !== undefined, clientSecret ? box.seal(clientSecret) : null,
          merged.idJag ?? false, merged.idJagJwksUri ?? null, merged.idJagJwks ? JSON.stringify(merged.idJagJwks) : null,
          merged.idJagClients ?? [], merged.idJagResources ?? []],
      );
      return toConnection(rows[0]);
    });
  }

  async function find(name: string): Promise<Connection | undefined> {
    if (!NAME.test(name)) return undefined;
    const { rows } = await db.query<ConnectionRow>('SELECT * FROM federation_connections WHERE name = $1', [name]);
    return rows[0] ? toConnection(rows[0]) : undefined;
  }

  async function list(): Promise<Connection[]> {
    const { rows } = await db.query<ConnectionRow>('SELECT * FROM federation_connections ORDER BY name');
    return rows.map(toConnection);
  }

  async function remove(name: string): Promise<boolean> {
    const r = await db.query('DELETE FROM federation_connections WHERE name = $1 RETURNING name', [name]);
    return r.rows.length > 0;
  }

  /** Home-realm discovery: the connection that owns this email's domain, enabled or not. */
  async function findByEmail(email: string): Promise<Connection | undefined> {
    // The domain in the compared form (src/accounts/email.ts): "ＥＸＡＭＰＬＥ.com" is example.com.
    const domain = emailDomain(email);
    if (!domain || !DOMAIN.test(domain)) return undefined;
    const { rows } = await db.query<ConnectionRow>('SELECT * FROM federation_connections WHERE $1 = ANY(domains)', [domain]);
    return rows[0] ? toConnection(rows[0]) : undefined;
  }

  /** ID-JAG: the enabled connection that trusts this issuer's ID-JAGs (issuers compare without a trailing slash). */
  async function findIdJagIssuer(issuer: string): Promise<Connection | undefined> {
    const { rows } = await db.query<ConnectionRow>(
      'SELECT * FROM federation_connections WHERE issuer = $1 AND id_jag AND enabled ORDER BY name LIMIT 1', [issuer.replace(/\/+$/, '')]);
    return rows[0] ? toConnection(rows[0]) : undefined;
  }

  /** Whether any connection can take a sign-in (the login page offers single sign-on only then). */
  async function anyEnabled(): Promise<boolean> {
    const { rows } = await db.query<{ any: boolean }>('SELECT EXISTS (SELECT 1 FROM federation_connections WHERE enabled) AS any');
    return rows[0]?.any === true;
  }

  async function clientSecret(name: string): Promise<string | undefined> {
    const { rows } = await db.query<{ client_secret_enc: string | null }>('SELECT client_secret_enc FROM federation_connections WHERE name = $1', [name]);
    const sealed = rows[0]?.client_secret_enc;
    return sealed ? box.open(sealed) : undefined;
  }

  async function findIdentity(connection: string, subject: string): Promise<LinkedIdentity | undefined> {
    const { rows } = await db.query<{ connection: string; subject: string; user_id: string; managed_roles: string[] }>(
      'SELECT connection, subject, user_id, managed_roles FROM federated_identities WHERE connection = $1 AND subject = $2',
      [connection, subject],
    );
    const r = rows[0];
    return r ? { connection: r.connection, subject: r.subject, userId: r.user_id, managedRoles: r.managed_roles ?? [] } : undefined;
  }

  async function link(identity: { connection: string; subject: string; userId: string; email: string | null }) {
    await db.query(
      'INSERT INTO federated_identities (connection, subject, user_id, email, last_login_at) VALUES ($1, $2, $3, $4, now())',
      [identity.connection, identity.subject, identity.userId, identity.email],
    );
  }

  async function identitiesOf(userId: string): Promise<{ connection: string; subject: string; email: string | null; lastLoginAt: Date | null }[]> {
    const { rows } = await db.query<{ connection: string; subject: string; email: string | null; last_login_at: Date | null }>(
      'SELECT connection, subject, email, last_login_at FROM federated_identities WHERE user_id = $1 ORDER BY connection',
      [userId],
    );
    return rows.map((r) => ({ connection: r.connection, subject: r.subject, email: r.email, lastLoginAt: r.last_login_at }));
  }

  /**
   * Roles re-mapped at each login: the roles the link granted last time are replaced by the newly
   * mapped ones; roles the account holds for another reason (given by an admin) stay untouched.
   */
  async function applyMappedRoles(identity: LinkedIdentity, mapped: string[]): Promise<{ roles: string[]; added: string[]; removed: string[] }> {
    return db.transaction(async (tx) => {
      const known = new Set((await tx.query<{ name: string }>('SELECT name FROM roles WHERE name = ANY($1::text[])', [mapped])).rows.map((r) => r.name));
      const wanted = [...new Set(mapped.filter((r) => known.has(r)))];
      const current = (await tx.query<{ role: string }>('SELECT role FROM user_roles WHERE user_id = $1', [identity.userId])).rows.map((r) => r.role);
      const previous = new Set(identity.managedRoles);
      const local = current.filter((r) => !previous.has(r));
      const removed = current.filter((r) => previous.has(r) && !wanted.includes(r));
      const added = wanted.filter((r) => !current.includes(r));
      if (removed.length) await tx.query('DELETE FROM user_roles WHERE user_id = $1 AND role = ANY($2::text[])', [identity.userId, removed]);
      for (const role of added) await tx.query('INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING', [identity.userId, role]);
      const managed = wanted.filter((r) => !local.includes(r));
      await tx.query(
        'UPDATE federated_identities SET managed_roles = $3, last_login_at = now() WHERE connection = $1 AND subject = $2',
        [identity.connection, identity.subject, managed],
      );
      return { roles: [...new Set([...local, ...wanted])].sort(), added, removed };
    });
  }

  return { create, update, find, list, remove, findByEmail, findIdJagIssuer, anyEnabled, clientSecret, findIdentity, link, identitiesOf, applyMappedRoles };
}

export type Connections = ReturnType<typeof createConnections>;

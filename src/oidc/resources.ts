// Resource servers (RFC 8707): MCP servers and APIs. Tokens for them are RFC 9068 JWTs with
// aud = the URI exactly as registered. A lookup tolerates a trailing-slash difference.
import crypto from 'node:crypto';
import { z } from 'zod';
import type { Queryable } from '../store/db.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import { Cached, noChanges, type Changes } from '../store/changes.ts';

/** User claims a resource may ask for in its access tokens (docs/authorization.md). */
export const TOKEN_CLAIMS = ['roles', 'permissions'] as const;
export type TokenClaim = (typeof TOKEN_CLAIMS)[number];

const scopeToken = z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]+$/, 'scope tokens are printable ASCII without spaces, quotes or backslashes');

export const resourceInput = z.object({
  uri: z.url().refine((s) => {
    const u = new URL(s);
    // RFC 8707 §2: an absolute URI without a fragment.
    return (u.protocol === 'https:' || u.protocol === 'http:') && !u.hash;
  }, 'resource must be an absolute http(s) URI without a fragment'),
  name: z.string().min(1).max(200).optional(),
  scopes: z.array(scopeToken).default([]),
  accessTokenTtl: z.number().int().min(30).max(900).default(900),
  signing: z.enum(['jwks', 'hs256']).default('jwks'),
  /** Issue 7: token exchange for this resource needs a subject signed in with MFA (acr urn:gatehouse:acr:mfa). */
  requireMfa: z.boolean().default(false),
  /** Issue 14: what a request naming none of its scopes gets (must be among `scopes`); unset = all of them. */
  defaultScopes: z.array(scopeToken).nullable().default(null),
  /** Issue 14: user claims its JWT access tokens carry, for servers that authorise without calling back. */
  claims: z.array(z.enum(TOKEN_CLAIMS)).default([]),
}).refine((r) => !r.defaultScopes || r.defaultScopes.every((s) => r.scopes.includes(s)), { message: 'default scopes must be among the resource\'s scopes', path: ['defaultScopes'] });
export type ResourceInput = z.input<typeof resourceInput>;

/** What `resource update` may change; `defaultScopes: null` means all of the resource's scopes. */
export interface ResourceChanges {
  name?: string;
  scopes?: string[];
  accessTokenTtl?: number;
  requireMfa?: boolean;
  defaultScopes?: string[] | null;
  claims?: TokenClaim[];
}

export interface ResourceServer {
  uri: string;
  name: string;
  scopes: string[];
  accessTokenTtl: number;
  signing: 'jwks' | 'hs256';
  requireMfa: boolean;
  defaultScopes: string[] | null;
  claims: TokenClaim[];
  createdAt: Date;
}

interface Row {
  uri: string;
  name: string;
  scopes: string[];
  access_token_ttl: number;
  signing: 'jwks' | 'hs256';
  hs256_secret_enc: string | null;
  require_mfa: boolean;
  default_scopes: string[] | null;
  token_claims: TokenClaim[];
  created_at: Date;
}

const toResource = (r: Row): ResourceServer => ({
  uri: r.uri, name: r.name, scopes: r.scopes, accessTokenTtl: r.access_token_ttl, signing: r.signing, requireMfa: r.require_mfa,
  defaultScopes: r.default_scopes, claims: r.token_claims ?? [], createdAt: r.created_at,
});

/** Both spellings of a URI, with and without one trailing slash. */
export function uriVariants(uri: string): string[] {
  const bare = uri.replace(/\/+$/, '');
  return [uri, bare, `${bare}/`].filter((v, i, a) => a.indexOf(v) === i);
}

export function createResources(db: Queryable, box: SecretBox, changes: Changes = noChanges) {
  // Read on every token request naming a resource; a change to any resource drops them all (an
  // entry is keyed by the URI as asked, which may differ from the row's by a trailing slash).
  const byUri = new Cached('resources', changes, (uri) => readResource(db, box, uri)).dropOn('resource_servers', 'everything');
  return {
    async createResource(input: ResourceInput): Promise<{ resource: ResourceServer; hs256Secret?: string }> {
      const r = resourceInput.parse(input);
      const secret = r.signing === 'hs256' ? crypto.randomBytes(32).toString('base64url') : undefined;
      const existing = await db.query('SELECT 1 FROM resource_servers WHERE uri = ANY($1)', [uriVariants(r.uri)]);
      if (existing.rowCount) throw new ResourceExistsError(r.uri);
      const row = await db.query<Row>(
        `INSERT INTO resource_servers (uri, name, scopes, access_token_ttl, signing, hs256_secret_enc, require_mfa, default_scopes, token_claims)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
        [r.uri, r.name ?? new URL(r.uri).host, r.scopes, r.accessTokenTtl, r.signing, secret ? box.seal(secret) : null, r.requireMfa, r.defaultScopes, r.claims],
      );
      return { resource: toResource(row.rows[0]), hs256Secret: secret };
    },
    async listResources(): Promise<ResourceServer[]> {
      return (await db.query<Row>('SELECT * FROM resource_servers ORDER BY uri')).rows.map(toResource);
    },
    /** Issue 7: switch the resource's MFA requirement; undefined when no such resource. */
    async setRequireMfa(uri: string, requireMfa: boolean): Promise<ResourceServer | undefined> {
      const r = await db.query<Row>('UPDATE resource_servers SET require_mfa = $2 WHERE uri = ANY($1) RETURNING *', [uriVariants(uri), requireMfa]);
      return r.rows[0] && toResource(r.rows[0]);
    },
    /**
     * Change a resource in place (issue 14: default scopes and token claims; issue 18: name, scopes,
     * token lifetime, MFA); undefined when no such resource. The whole is checked as creation checks
     * it, so default scopes stay among the scopes. `defaultScopes: null` goes back to all of them.
     * The URI and the signing method stay: they are what tokens and verifiers already rely on.
     */
    async updateResource(uri: string, change: ResourceChanges): Promise<ResourceServer | undefined> {
      const current = (await db.query<Row>('SELECT * FROM resource_servers WHERE uri = ANY($1) LIMIT 1', [uriVariants(uri)])).rows[0];
      if (!current) return undefined;
      const next = resourceInput.parse({
        uri: current.uri,
        name: change.name ?? current.name,
        scopes: change.scopes ?? current.scopes,
        accessTokenTtl: change.accessTokenTtl ?? current.access_token_ttl,
        requireMfa: change.requireMfa ?? current.require_mfa,
        defaultScopes: change.defaultScopes === undefined ? current.default_scopes : change.defaultScopes,
        claims: change.claims ?? current.token_claims,
      });
      const r = await db.query<Row>(
        `UPDATE resource_servers SET name = $2, scopes = $3, access_token_ttl = $4, require_mfa = $5, default_scopes = $6, token_claims = $7
          WHERE uri = $1 RETURNING *`,
        [current.uri, next.name, next.scopes, next.accessTokenTtl, next.requireMfa, next.defaultScopes, next.claims],
      );
      return toResource(r.rows[0]);
    },
    async deleteResource(uri: string): Promise<boolean> {
      return (await db.query('DELETE FROM resource_servers WHERE uri = ANY($1)', [uriVariants(uri)])).rowCount > 0;
    },
    /** The registered resource matching `uri` (trailing slash normalised), with its HS256 secret if any. */
    findResource: (uri: string) => byUri.get(uri),
  };
}

async function readResource(db: Queryable, box: SecretBox, uri: string): Promise<(ResourceServer & { hs256Secret?: string }) | undefined> {
  const r = await db.query<Row>('SELECT * FROM resource_servers WHERE uri = ANY($1) ORDER BY uri = $2 DESC LIMIT 1', [uriVariants(uri), uri]);
  const row = r.rows[0];
  if (!row) return undefined;
  return { ...toResource(row), ...(row.hs256_secret_enc ? { hs256Secret: box.open(row.hs256_secret_enc) } : {}) };
}
export type Resources = ReturnType<typeof createResources>;

export class ResourceExistsError extends Error {
  constructor(uri: string) {
    super(`resource ${uri} is already registered`);
    this.name = 'ResourceExistsError';
  }
}

// OAuth clients in PostgreSQL. The secret is sealed with the DEK (oidc-provider compares it in
// plain, so it is encrypted, not hashed). oidc-provider reads clients through `findMetadata`.
import crypto from 'node:crypto';
import { z } from 'zod';
import type { Queryable } from '../store/db.ts';
import type { SecretBox } from '../crypto/secretbox.ts';
import { Cached, noChanges, type Changes } from '../store/changes.ts';

export const GRANT_TYPES = [
  'authorization_code',
  'refresh_token',
  'client_credentials',
  'urn:ietf:params:oauth:grant-type:device_code',
  'urn:ietf:params:oauth:grant-type:token-exchange',
  // CIBA (in-call approvals, src/ciba): the agent polls for the user's answer.
  'urn:openid:params:grant-type:ciba',
  // ID-JAG (docs/id-jag.md): an enterprise IdP's Identity Assertion JWT Authorization Grant (RFC 7523).
  'urn:ietf:params:oauth:grant-type:jwt-bearer',
] as const;

const isLoopback = (h: string) => h === 'localhost' || h === '127.0.0.1' || h === '[::1]';

/**
 * Client authentication at the token, PAR, introspection and revocation endpoints (oidc-provider
 * does it; discovery lists exactly these, docs/clients.md explains them):
 *   client_secret_basic / client_secret_post — the secret Gatehouse generated (RFC 6749 §2.3.1);
 *   client_secret_jwt — a JWT signed with that secret, HS256 (RFC 7523 §2.2, OIDC Core §9);
 *   private_key_jwt — a JWT signed with the client's own private key; Gatehouse holds only the
 *     public keys (jwks) or where to fetch them (jwks_uri), and never a secret for the client.
 * Public clients use `none` (PKCE instead).
 */
export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt'] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];
/** Methods that use a secret Gatehouse issues. */
const SECRET_METHODS = new Set<string>(['client_secret_basic', 'client_secret_post', 'client_secret_jwt']);

const MAX_JWKS_KEYS = 10;
/** Members of a private or symmetric JWK: a client's key set is public keys only (RFC 7517 §6.2.2, §6.3.2, §6.4.1). */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/** A JWK Set of public signing keys (RSA, EC or OKP); its shape is checked again by oidc-provider. */
export const publicJwks = z.object({
  keys: z.array(z.looseObject({ kty: z.enum(['RSA', 'EC', 'OKP'], { error: 'jwks keys must be RSA, EC or OKP public keys' }) }))
    .min(1, 'jwks needs at least one key').max(MAX_JWKS_KEYS, `jwks may hold at most ${MAX_JWKS_KEYS} keys`),
}).refine((set) => set.keys.every((k) => PRIVATE_JWK_MEMBERS.every((m) => !(m in k))), 'jwks must hold public keys only (no private or symmetric key members)');

/**
 * Where Gatehouse fetches a client's public keys: https, or http on loopback for development. The
 * fetch goes through the outbound guard (src/oidc/cimd.ts), which refuses private addresses.
 */
export const jwksUri = z.string().max(2000).refine((s) => {
  const u = URL.parse(s);
  return !!u && !u.hash && !u.username && (u.protocol === 'https:' || (u.protocol === 'http:' && isLoopback(u.hostname)));
}, 'jwks_uri must be an https URL (http only on loopback), without credentials or a fragment');

/** https anywhere; http only on loopback (RFC 8252 §7.3); private-use schemes for native apps (§7.1). */
export const redirectUri = z.string().refine((s) => {
  try {
    const u = new URL(s);
    if (u.hash) return false;
    if (u.protocol === 'https:') return true;
    if (u.protocol === 'http:') return isLoopback(u.hostname);
    return /^[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+:$/.test(u.protocol); // reverse-DNS custom scheme
  } catch {
    return false;
  }
}, 'redirect URIs must be https, loopback http, or a reverse-DNS private-use scheme, without a fragment');

export const clientInput = z.object({
  name: z.string().min(1).max(200),
  type: z.enum(['public', 'confidential']).default('confidential'),
  redirectUris: z.array(redirectUri).default([]),
  postLogoutRedirectUris: z.array(redirectUri).default([]),
  grantTypes: z.array(z.enum(GRANT_TYPES)).min(1).default(['authorization_code', 'refresh_token']),
  authMethod: z.enum(AUTH_METHODS).optional(),
  /** private_key_jwt: the client's public keys, inline or by URL (exactly one). */
  jwks: publicJwks.optional(),
  jwksUri: jwksUri.optional(),
  /**
   * OIDC Registration §2 / RFC 8252: `native` apps redirect to a loopback port (any port matches,
   * §7.3), a private-use scheme (§7.1) or a claimed https URI; `web` apps to http(s) only.
   */
  applicationType: z.enum(['web', 'native']).default('web'),
  firstParty: z.boolean().default(false),
  scope: z.string().optional(),
  /** OIDC Back-Channel Logout 1.0: where Gatehouse POSTs a logout token when a session of this client ends. */
  backchannelLogoutUri: z.url({ protocol: /^https?$/ }).refine((s) => {
    const u = new URL(s);
    return !u.hash && (u.protocol === 'https:' || isLoopback(u.hostname));
  }, 'the back-channel logout URI must be https (http only on loopback), without a fragment').optional(),
  /** CIBA Core §10.2 ping mode: where Gatehouse tells the agent its answer is ready (operator-set only; §4: https). */
  cibaNotificationEndpoint: z.url({ protocol: /^https$/ }).refine((s) => !new URL(s).hash, 'the CIBA notification endpoint must be https, without a fragment').optional(),
  origin: z.string().default('cli'),
}).superRefine((c, ctx) => {
  if (c.grantTypes.includes('authorization_code') && c.redirectUris.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['redirectUris'], message: 'authorization_code clients need at least one redirect URI' });
  }
  for (const uri of [...c.redirectUris, ...c.postLogoutRedirectUris]) {
    const u = URL.parse(uri);
    if (!u) continue; // redirectUri says why
    const web = u.protocol === 'https:' || u.protocol === 'http:';
    if (c.applicationType === 'web' && !web) {
      ctx.addIssue({ code: 'custom', path: ['redirectUris'], message: `${uri} uses a private-use scheme, which is for native apps: create the client with --preset native (application_type native)` });
    }
    if (c.applicationType === 'native' && u.protocol === 'https:' && isLoopback(u.hostname)) {
      ctx.addIssue({ code: 'custom', path: ['redirectUris'], message: `${uri}: native apps use http on loopback (any port), not https (RFC 8252 §7.3)` });
    }
  }
  if (c.type === 'public' && c.grantTypes.includes('client_credentials')) {
    ctx.addIssue({ code: 'custom', path: ['grantTypes'], message: 'public clients cannot use client_credentials' });
  }
  if (c.cibaNotificationEndpoint && !c.grantTypes.includes('urn:openid:params:grant-type:ciba')) {
    ctx.addIssue({ code: 'custom', path: ['cibaNotificationEndpoint'], message: 'a CIBA notification endpoint needs the grant urn:openid:params:grant-type:ciba' });
  }
  const hasKeys = c.jwks !== undefined || c.jwksUri !== undefined;
  if (c.jwks !== undefined && c.jwksUri !== undefined) {
    ctx.addIssue({ code: 'custom', path: ['jwks'], message: 'give either jwks or a jwks_uri, not both' });
  }
  if (c.type === 'public' && (hasKeys || c.authMethod)) {
    ctx.addIssue({ code: 'custom', path: ['authMethod'], message: 'public clients do not authenticate (they use PKCE); drop the auth method and keys' });
  }
  if (c.authMethod === 'private_key_jwt' && !hasKeys) {
    ctx.addIssue({ code: 'custom', path: ['jwks'], message: 'private_key_jwt needs the client\'s public keys: a jwks_uri or a jwks' });
  }
  if (hasKeys && c.authMethod && c.authMethod !== 'private_key_jwt') {
    ctx.addIssue({ code: 'custom', path: ['jwks'], message: `keys are for private_key_jwt; ${c.authMethod} uses the generated secret` });
  }
});

/** The auth method a parsed input stands for: keys alone mean private_key_jwt. */
function authMethodOf(c: z.output<typeof clientInput>): AuthMethod | 'none' {
  if (c.type === 'public') return 'none';
  return c.authMethod ?? (c.jwks || c.jwksUri ? 'private_key_jwt' : 'client_secret_basic');
}
export type ClientInput = z.input<typeof clientInput>;

/** What `client update` may change; `null` clears an optional value. */
export interface ClientChanges {
  name?: string;
  redirectUris?: string[];
  postLogoutRedirectUris?: string[];
  grantTypes?: string[];
  firstParty?: boolean;
  scope?: string | null;
  backchannelLogoutUri?: string | null;
}

/** An update the client's origin does not allow. */
export class ClientUpdateRefused extends Error {}

export interface ClientRecord {
  clientId: string;
  name: string;
  type: 'public' | 'confidential';
  metadata: Record<string, unknown>;
  firstParty: boolean;
  origin: string;
  createdAt: Date;
}

interface Row {
  client_id: string;
  client_secret_enc: string | null;
  metadata: Record<string, unknown>;
  first_party: boolean;
  origin: string;
  created_at: Date;
}

const toRecord = (r: Row): ClientRecord => ({
  clientId: r.client_id,
  name: String(r.metadata.client_name ?? ''),
  type: r.metadata.token_endpoint_auth_method === 'none' ? 'public' : 'confidential',
  metadata: r.metadata,
  firstParty: r.first_party,
  origin: r.origin,
  createdAt: r.created_at,
});

export function createClients(db: Queryable, box: SecretBox, changes: Changes = noChanges) {
  // oidc-provider reads the client on every request that names one (client authentication, /auth):
  // answered from memory, dropped on every node when the row changes (src/store/changes.ts).
  const metadata = new Cached('clients.metadata', changes, (id) => readMetadata(db, box, id)).dropOn('clients');
  return {
    async createClient(input: ClientInput): Promise<{ client: ClientRecord; clientSecret?: string }> {
      const c = clientInput.parse(input);
      const clientId = `gh_${crypto.randomBytes(12).toString('base64url')}`;
      const authMethod = authMethodOf(c);
      // A private_key_jwt client has no secret: nothing Gatehouse stores could authenticate as it.
      const secret = SECRET_METHODS.has(authMethod) ? crypto.randomBytes(32).toString('base64url') : undefined;
      const usesCode = c.grantTypes.includes('authorization_code');
      const metadata: Record<string, unknown> = {
        client_name: c.name,
        redirect_uris: c.redirectUris,
        post_logout_redirect_uris: c.postLogoutRedirectUris,
        grant_types: c.grantTypes,
        response_types: usesCode ? ['code'] : [],
        token_endpoint_auth_method: authMethod,
        ...(c.applicationType === 'native' ? { application_type: 'native' } : {}),
        ...(c.jwks ? { jwks: c.jwks } : {}),
        ...(c.jwksUri ? { jwks_uri: c.jwksUri } : {}),
        first_party: c.firstParty,
        ...(c.scope ? { scope: c.scope } : {}),
        // The logout token names the session (sid), so the RP can end exactly that one.
        ...(c.backchannelLogoutUri ? { backchannel_logout_uri: c.backchannelLogoutUri, backchannel_logout_session_required: true } : {}),
        // CIBA Core §4: a client using the grant names its delivery mode; poll needs no endpoint of its
        // own, ping (§10.2) is told at its notification endpoint when to fetch the token.
        ...(c.grantTypes.includes('urn:openid:params:grant-type:ciba')
          ? c.cibaNotificationEndpoint
            ? { backchannel_token_delivery_mode: 'ping', backchannel_client_notification_endpoint: c.cibaNotificationEndpoint }
            : { backchannel_token_delivery_mode: 'poll' }
          : {}),
      };
      const r = await db.query<Row>(
        `INSERT INTO clients (client_id, client_secret_enc, metadata, first_party, origin)
         VALUES ($1, $2, $3, $4, $5) RETURNING *`,
        [clientId, secret ? box.seal(secret) : null, JSON.stringify(metadata), c.firstParty, c.origin],
      );
      return { client: toRecord(r.rows[0]), clientSecret: secret };
    },
    /**
     * Change an operator's client (issue 18): the changes are merged into what it has and the whole
     * is checked by the same rules as `createClient`, so an update cannot make a client creation
     * would refuse. Type, auth method and keys stay (they decide the secret; make a new client).
     * Other metadata (require_mfa, admin_api) is kept. Registered clients change through RFC 7592.
     */
    async updateClient(clientId: string, changes: ClientChanges): Promise<ClientRecord | undefined> {
      const r0 = await db.query<Row>('SELECT * FROM clients WHERE client_id = $1', [clientId]);
      const row = r0.rows[0];
      if (!row) return undefined;
      if (row.origin !== 'cli') throw new ClientUpdateRefused(`client ${clientId} was registered by itself (origin ${row.origin}); it changes through its registration_client_uri (RFC 7592), or delete it`);
      const m = row.metadata;
      const authMethod = String(m.token_endpoint_auth_method);
      const c = clientInput.parse({
        name: changes.name ?? m.client_name,
        type: authMethod === 'none' ? 'public' : 'confidential',
        redirectUris: changes.redirectUris ?? m.redirect_uris ?? [],
        postLogoutRedirectUris: changes.postLogoutRedirectUris ?? m.post_logout_redirect_uris ?? [],
        grantTypes: changes.grantTypes ?? m.grant_types,
        ...(authMethod === 'none' ? {} : { authMethod }),
        applicationType: m.application_type === 'native' ? 'native' : 'web',
        ...(m.jwks ? { jwks: m.jwks } : {}),
        ...(m.jwks_uri ? { jwksUri: m.jwks_uri } : {}),
        firstParty: changes.firstParty ?? row.first_party,
        scope: changes.scope === null ? undefined : (changes.scope ?? m.scope),
        backchannelLogoutUri: changes.backchannelLogoutUri === null ? undefined : (changes.backchannelLogoutUri ?? m.backchannel_logout_uri),
      });
      const { scope: _scope, backchannel_logout_uri: _bc, backchannel_logout_session_required: _bcs, ...kept } = m;
      const metadata: Record<string, unknown> = {
        ...kept,
        client_name: c.name,
        redirect_uris: c.redirectUris,
        post_logout_redirect_uris: c.postLogoutRedirectUris,
        grant_types: c.grantTypes,
        response_types: c.grantTypes.includes('authorization_code') ? ['code'] : [],
        first_party: c.firstParty,
        ...(c.scope ? { scope: c.scope } : {}),
        ...(c.backchannelLogoutUri ? { backchannel_logout_uri: c.backchannelLogoutUri, backchannel_logout_session_required: true } : {}),
      };
      const r = await db.query<Row>('UPDATE clients SET metadata = $2, first_party = $3 WHERE client_id = $1 RETURNING *', [clientId, JSON.stringify(metadata), c.firstParty]);
      return r.rows[0] && toRecord(r.rows[0]);
    },
    async listClients(): Promise<ClientRecord[]> {
      const r = await db.query<Row>('SELECT * FROM clients ORDER BY created_at, client_id');
      return r.rows.map(toRecord);
    },
    async findClient(clientId: string): Promise<ClientRecord | undefined> {
      const r = await db.query<Row>('SELECT * FROM clients WHERE client_id = $1', [clientId]);
      return r.rows[0] && toRecord(r.rows[0]);
    },
    async deleteClient(clientId: string): Promise<boolean> {
      const r = await db.query('DELETE FROM clients WHERE client_id = $1', [clientId]);
      return r.rowCount > 0;
    },
    /**
     * Store a client oidc-provider registered (RFC 7591) or updated (RFC 7592): the adapter's
     * 'Client' upsert lands here, so registered clients sit beside the CLI's, secret sealed.
     * An update keeps the row's origin and creation time.
     */
    async saveRegistered(payload: Record<string, unknown>, origin = 'registration'): Promise<void> {
      const { client_id: clientId, client_secret: secret, ...metadata } = payload;
      await db.query(
        `INSERT INTO clients (client_id, client_secret_enc, metadata, first_party, origin)
         VALUES ($1, $2, $3, false, $4)
         ON CONFLICT (client_id) DO UPDATE SET client_secret_enc = EXCLUDED.client_secret_enc, metadata = EXCLUDED.metadata`,
        [String(clientId), typeof secret === 'string' ? box.seal(secret) : null, JSON.stringify(metadata), origin],
      );
    },
    /** oidc-provider client metadata, secret included, or undefined for an unknown client. */
    findMetadata: (clientId: string) => metadata.get(clientId),
  };
}

async function readMetadata(db: Queryable, box: SecretBox, clientId: string): Promise<Record<string, unknown> | undefined> {
  const r = await db.query<Row>('SELECT * FROM clients WHERE client_id = $1', [clientId]);
  const row = r.rows[0];
  if (!row) return undefined;
  return {
    ...row.metadata,
    client_id: row.client_id,
    ...(row.client_secret_enc ? { client_secret: box.open(row.client_secret_enc) } : {}),
  };
}
export type Clients = ReturnType<typeof createClients>;

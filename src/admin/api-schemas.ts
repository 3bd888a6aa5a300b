// The admin API's bodies and answers as zod schemas: api.ts parses requests with them and
// openapi.ts writes the OpenAPI document from them (z.toJSONSchema), so the two cannot drift.
import { z } from 'zod';
import { AUTH_METHODS } from '../oidc/clients.ts';
import { PRESET_NAMES } from './client-presets.ts';

// Every string the admin API takes is one line: names, emails, URIs, ids, scopes (issue 15).
const str = z.string().min(1).max(2048).regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');
const strs = z.array(str).max(100);
export const userCreate = z.object({ email: str, password: str.optional(), name: str.optional(), roles: strs.optional(), email_verified: z.boolean().optional() }).strict();
// PATCH /users/{id}: roles replace; a new email is unverified unless email_verified says so; null clears the name.
export const userPatch = z.object({
  active: z.boolean().optional(), roles: strs.min(1).optional(), name: str.nullable().optional(), email: str.optional(), email_verified: z.boolean().optional(),
}).strict();
export const password = z.object({ password: str.optional() }).strict();
export const roleCreate = z.object({ name: str, permissions: strs.optional(), description: str.optional() }).strict();
export const rolePatch = z.object({ permissions: strs.optional(), add: strs.optional(), remove: strs.optional(), description: str.optional() }).strict();
export const clientCreate = z.object({
  name: str, type: z.enum(['public', 'confidential']).optional(), redirect_uris: strs.optional(), post_logout_redirect_uris: strs.optional(),
  grant_types: strs.optional(), token_endpoint_auth_method: z.enum(AUTH_METHODS).optional(),
  first_party: z.boolean().optional(), scope: str.optional(), backchannel_logout_uri: str.optional(),
  // private_key_jwt (docs/clients.md): the client's public keys, by URL or inline (clients.ts checks them).
  jwks_uri: str.optional(), jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())).max(10) }).optional(),
  // Issue 18: what the kind of client needs (docs/cli.md#presets-client-create---preset); the fields above win.
  preset: z.enum(PRESET_NAMES).optional(), application_type: z.enum(['web', 'native']).optional(),
  // --preset agent: its exchange policy.
  resources: strs.optional(), agent_name: str.optional(),
}).strict();
// PATCH /clients/{id}: lists replace; null clears scope and the back-channel logout URI.
export const clientPatch = z.object({
  name: str.optional(), redirect_uris: strs.optional(), post_logout_redirect_uris: strs.optional(), grant_types: strs.min(1).optional(),
  first_party: z.boolean().optional(), scope: str.nullable().optional(), backchannel_logout_uri: str.nullable().optional(),
}).strict();
export const toggle = z.object({ require_mfa: z.boolean() }).strict();
export const adminAccess = z.object({ access: z.enum(['read', 'full']).nullable() }).strict();
export const resourceCreate = z.object({
  uri: str, name: str.optional(), scopes: strs.optional(), access_token_ttl: z.number().int().positive().optional(),
  signing: z.enum(['jwks', 'hs256']).optional(), require_mfa: z.boolean().optional(),
  default_scopes: strs.optional(), claims: z.array(z.enum(['roles', 'permissions'])).optional(),
}).strict();
// PATCH /resources?uri=: scopes replace; null default_scopes means all of the resource's scopes.
export const resourcePatch = z.object({
  name: str.optional(), scopes: strs.optional(), access_token_ttl: z.number().int().min(30).max(900).optional(), require_mfa: z.boolean().optional(),
  default_scopes: strs.nullable().optional(), claims: z.array(z.enum(['roles', 'permissions'])).optional(),
}).strict();
export const clientPolicy = z.object({ livekit: z.boolean().optional(), resources: strs.optional(), scopes: strs.optional(), act: z.boolean().optional(), agent_name: str.optional() }).strict();
export const idJagPolicy = z.object({ audience: str, target_client_id: str, resources: strs.min(1), scopes: strs.optional() }).strict();
export const rolePolicy = z.object({
  rooms: strs.optional(), publish: z.boolean().optional(), subscribe: z.boolean().optional(), data: z.boolean().optional(),
  room_admin: z.boolean().optional(), require_mfa: z.boolean().optional(),
}).strict();
export const livekitOptions = z.object({
  room_prefix: str.optional(), max_participants: z.number().int().optional(), empty_timeout: z.number().int().optional(), departure_timeout: z.number().int().optional(),
}).strict();
export const connection = z.object({
  name: str.optional(), display_name: str.optional(), issuer: str.optional(), client_id: str.optional(), client_secret: str.nullable().optional(),
  scopes: strs.optional(), domains: strs.optional(), jit: z.boolean().optional(), link_by_email: z.boolean().optional(),
  password_login: z.boolean().optional(), trust_mfa: z.boolean().optional(), enabled: z.boolean().optional(),
  email_claim: str.optional(), email_verified_claim: str.optional(), name_claim: str.optional(), groups_claim: str.optional(),
  role_map: z.record(z.string(), strs).optional(), default_roles: strs.optional(),
  // ID-JAG (docs/id-jag.md): redeem this issuer's ID-JAGs; null clears the JWKS URI or inline keys.
  id_jag: z.boolean().optional(), id_jag_jwks_uri: str.nullable().optional(),
  id_jag_jwks: z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) }).nullable().optional(),
  id_jag_clients: z.array(str).optional(), id_jag_resources: z.array(str).optional(),
}).strict();
export const revocation = z.object({
  user: str.optional(), grant: str.optional(), session: str.optional(), jti: str.optional(), ttl: z.number().int().positive().optional(),
}).strict();


// ---- Answers: what each route returns (the CLI's JSON). Fields are snake_case (src/admin/wire.ts);
// an answer may carry more fields than listed here, never fewer.
const text = z.string();
const texts = z.array(z.string());
// ISO 8601 in UTC, as JSON.stringify writes a Date.
const when = z.string().meta({ format: 'date-time' });

export const errorOut = z.looseObject({ error: text, error_description: text });
export const userOut = z.looseObject({
  id: text, email: text, name: text.nullable(), active: z.boolean(), email_verified: z.boolean(), created_at: when, last_login_at: when.nullable(),
});
export const userDetailOut = userOut.extend({ roles: texts, permissions: texts });
export const passwordOut = z.looseObject({ id: text, email: text, password: text.optional().describe('only when generated: shown once'), sessions_revoked: z.boolean() });
export const resetMfaOut = z.looseObject({ id: text, email: text, factors_removed: z.number().int(), sessions_revoked: z.boolean() });
export const appsOut = z.looseObject({ apps: z.array(z.record(z.string(), z.unknown())) });
export const roleOut = z.looseObject({ name: text, description: text, permissions: texts, users: z.number().int() });
export const clientPolicyOut = z.looseObject({
  client_id: text, livekit: z.boolean(), resources: texts, scopes: texts.nullable(), may_act: z.boolean(), agent_name: text.nullable(),
});
export const rolePolicyOut = z.looseObject({
  role: text, room_patterns: texts, can_publish: z.boolean(), can_subscribe: z.boolean(), can_publish_data: z.boolean(), room_admin: z.boolean(), require_mfa: z.boolean(),
});
export const clientOut = z.looseObject({
  client_id: text, name: text, type: z.enum(['public', 'confidential']),
  metadata: z.record(z.string(), z.unknown()).describe('OAuth client metadata (RFC 7591 names): redirect_uris, grant_types, token_endpoint_auth_method, ...'),
  first_party: z.boolean(), origin: text, created_at: when,
});
export const clientCreatedOut = clientOut.extend({
  client_secret: text.optional().describe('confidential clients with a generated secret: shown once'), preset: z.enum(PRESET_NAMES).optional(),
  exchange_policy: clientPolicyOut.optional(),
});
export const clientMfaOut = z.looseObject({ client_id: text, require_mfa: z.boolean() });
export const adminAccessOut = z.looseObject({ client_id: text, admin_api: z.enum(['read', 'full']).nullable(), warning: text.optional() });
export const resourceOut = z.looseObject({
  uri: text, name: text, scopes: texts, access_token_ttl: z.number().int(), signing: z.enum(['jwks', 'hs256']), require_mfa: z.boolean(),
  default_scopes: texts.nullable(), claims: z.array(z.enum(['roles', 'permissions'])), created_at: when,
});
export const resourceCreatedOut = resourceOut.extend({ hs256_secret: text.optional().describe('signing hs256: shown once') });
export const resourceMfaOut = z.looseObject({ uri: text, require_mfa: z.boolean() });
export const connectionOut = z.looseObject({
  name: text, display_name: text, issuer: text, client_id: text, has_client_secret: z.boolean().describe('the secret itself is write-only'),
  scopes: text, domains: texts, jit: z.boolean(), link_by_email: z.boolean(), password_login: z.boolean(), trust_mfa: z.boolean(),
  claim_map: z.record(z.string(), z.string()), role_map: z.record(z.string(), texts), default_roles: texts, enabled: z.boolean(), updated_at: when,
  redirect_uri: text.describe('register it at the upstream IdP'), post_logout_redirect_uri: text,
});
export const revocationOut = z.looseObject({ revoked: text, id: text, ttl: z.number().int(), subject: text.optional(), warning: text.optional() });
export const keyOut = z.looseObject({ kid: text, alg: text, created_at: when, retired_at: when.nullable(), expires_at: when.nullable() });
export const rotateOut = z.looseObject({ rotated: texts, previous_published_for_seconds: z.number().int() });
export const auditOut = z.looseObject({
  events: z.array(z.looseObject({
    id: z.number().int(), at: when, type: text, outcome: text, actor: text.nullable(), subject: text.nullable(), client_id: text.nullable(),
    ip: text.nullable(), request_id: text.nullable(), details: z.record(z.string(), z.unknown()).nullable(),
  })),
  next_before_id: z.number().int().nullable(),
});
export const importOut = z.looseObject({
  dry_run: z.boolean(), update: z.boolean(), lines: z.number().int(), refused: z.number().int(),
  refusals: z.array(z.looseObject({ line: z.number().int(), reason: text })),
});
export const passkeysOut = z.looseObject({
  id: text, email: text,
  passkeys: z.array(z.looseObject({ id: text, name: text, created_at: when, last_used_at: when.nullable() })),
});
export const livekitOptionsOut = z.looseObject({
  scope: z.enum(['client', 'role']), name: text, room_prefix: text.optional(), max_participants: z.number().int().optional(),
  empty_timeout: z.number().int().optional(), departure_timeout: z.number().int().optional(),
});
export const idJagPolicyOut = z.looseObject({ client_id: text, audience: text, target_client_id: text, resources: texts, scopes: texts.nullish() });

// The admin API as an OpenAPI 3.1 document, served at /admin/api/openapi.json. Bodies and answers
// come from the zod schemas api.ts parses with (src/admin/api-schemas.ts, through z.toJSONSchema:
// JSON Schema 2020-12 is OpenAPI 3.1's dialect). The route list below is written by hand, and
// test/admin-openapi.test.ts checks it against the router's own stack both ways.
import { z } from 'zod';
import * as s from './api-schemas.ts';
import { ADMIN_API_PATH, ADMIN_READ_SCOPE, ADMIN_SCOPE } from './api-scopes.ts';

interface Operation {
  summary: string;
  tag: string;
  body?: z.ZodType;
  /** Query parameters: name → description (all strings, optional unless `required` names them). */
  query?: Record<string, string>;
  required?: string[];
  /** A body that is not JSON: its media types (the schema is then a string). */
  bodyTypes?: string[];
  /** The success answer: a schema (200, or `status`), or undefined for 204. */
  answer?: z.ZodType;
  status?: number;
}

const list = (schema: z.ZodType) => z.array(schema);
const RESOURCE_URI = { uri: 'the resource URI, as registered (a trailing slash is the same resource)' };

/** Every admin API route: `METHOD /path/{param}` → what it does. */
export const ADMIN_OPERATIONS: Record<string, Operation> = {
  'GET /openapi.json': { summary: 'This document (no token needed)', tag: 'meta', answer: z.record(z.string(), z.unknown()) },

  'GET /users': { summary: 'List users', tag: 'users', query: { limit: 'at most 1000 (default 100)', offset: 'rows to skip' }, answer: list(s.userOut) },
  'POST /users': { summary: 'Create a user', tag: 'users', body: s.userCreate, answer: s.userOut, status: 201 },
  'GET /users/{id}': { summary: 'A user with roles and permissions', tag: 'users', answer: s.userDetailOut },
  'PATCH /users/{id}': { summary: 'Change name, email, verification, roles (replace) or active; disabling ends every session and token', tag: 'users', body: s.userPatch, answer: s.userDetailOut },
  'DELETE /users/{id}': { summary: 'Delete a user (never the last active administrator)', tag: 'users' },
  'POST /users/{id}/password': { summary: 'Set a password, or generate one (returned once); ends sessions', tag: 'users', body: s.password, answer: s.passwordOut },
  'POST /users/{id}/reset-mfa': { summary: 'Remove authenticators and recovery codes; ends sessions', tag: 'users', answer: s.resetMfaOut },
  'POST /users/{id}/sign-out': { summary: 'Revoke every session and token of the user', tag: 'users', answer: s.revocationOut },
  'GET /users/{id}/apps': { summary: 'Applications holding a grant of the user', tag: 'users', answer: s.appsOut },
  'POST /users/import': {
    summary: 'Import users from another system (the body is the file: JSON lines or CSV); a report of each line', tag: 'users',
    bodyTypes: ['application/x-ndjson', 'text/csv'], query: { dry_run: 'true: report only', update: 'true: apply lines that differ', format: 'jsonl or csv (else from Content-Type)' },
    answer: s.importOut,
  },
  'GET /users/{id}/passkeys': { summary: "The user's passkeys (names and dates, never key material)", tag: 'users', answer: s.passkeysOut },
  'DELETE /users/{id}/passkeys/{passkey}': { summary: 'Remove one passkey of the user', tag: 'users' },

  'GET /roles': { summary: 'List roles', tag: 'roles', answer: list(s.roleOut) },
  'POST /roles': { summary: 'Create a role', tag: 'roles', body: s.roleCreate, answer: s.roleOut, status: 201 },
  'GET /roles/{name}': { summary: 'A role', tag: 'roles', answer: s.roleOut },
  'PATCH /roles/{name}': { summary: 'Change permissions (replace, add, remove) or description', tag: 'roles', body: s.rolePatch, answer: s.roleOut },
  'DELETE /roles/{name}': { summary: 'Delete a role (force=true: also when users hold it)', tag: 'roles', query: { force: 'true to take the role from its holders' } },

  'GET /clients': { summary: 'List clients (registered ones have origin registration)', tag: 'clients', answer: list(s.clientOut) },
  'POST /clients': { summary: 'Create a client, optionally from a preset; the secret is in this answer only', tag: 'clients', body: s.clientCreate, answer: s.clientCreatedOut, status: 201 },
  'GET /clients/{id}': { summary: 'A client', tag: 'clients', answer: s.clientOut },
  'PATCH /clients/{id}': { summary: 'Change name, redirect URIs, grants, scope, first_party, back-channel logout URI (409 for a self-registered client)', tag: 'clients', body: s.clientPatch, answer: s.clientOut },
  'DELETE /clients/{id}': { summary: 'Delete a client', tag: 'clients' },
  'PUT /clients/{id}/require-mfa': { summary: 'Require a second factor of every login for the client', tag: 'clients', body: s.toggle, answer: s.clientMfaOut },
  'PUT /clients/{id}/admin-api': { summary: 'Make the client a service account of this API (read or full), or not (null)', tag: 'clients', body: s.adminAccess, answer: s.adminAccessOut },

  'GET /resources': { summary: 'List resource servers (uri: that one only, or 404)', tag: 'resources', query: RESOURCE_URI, answer: list(s.resourceOut) },
  'POST /resources': { summary: 'Register a resource server; an hs256 secret is in this answer only', tag: 'resources', body: s.resourceCreate, answer: s.resourceCreatedOut, status: 201 },
  'PATCH /resources': { summary: 'Change name, scopes, token lifetime, MFA, default scopes, token claims', tag: 'resources', query: RESOURCE_URI, required: ['uri'], body: s.resourcePatch, answer: s.resourceOut },
  'DELETE /resources': { summary: 'Delete a resource server', tag: 'resources', query: RESOURCE_URI, required: ['uri'] },
  'PUT /resources/require-mfa': { summary: 'Require an MFA sign-in for token exchange to the resource', tag: 'resources', query: RESOURCE_URI, required: ['uri'], body: s.toggle, answer: s.resourceMfaOut },

  'GET /policies/clients': { summary: 'List client exchange policies', tag: 'policies', answer: list(s.clientPolicyOut) },
  'GET /policies/clients/{id}': { summary: "A client's exchange policy (404: it may exchange nothing)", tag: 'policies', answer: s.clientPolicyOut },
  'PUT /policies/clients/{id}': { summary: "Replace a client's exchange policy (what it does not grant is denied)", tag: 'policies', body: s.clientPolicy, answer: s.clientPolicyOut },
  'DELETE /policies/clients/{id}': { summary: "Delete a client's exchange policy", tag: 'policies' },
  'GET /policies/roles': { summary: 'List LiveKit role policies', tag: 'policies', answer: list(s.rolePolicyOut) },
  'GET /policies/roles/{role}': { summary: "A role's LiveKit policy", tag: 'policies', answer: s.rolePolicyOut },
  'PUT /policies/roles/{role}': { summary: "Replace a role's LiveKit policy", tag: 'policies', body: s.rolePolicy, answer: s.rolePolicyOut },
  'DELETE /policies/roles/{role}': { summary: "Delete a role's LiveKit policy", tag: 'policies' },

  'GET /policies/id-jag': { summary: 'ID-JAG targets: the other authorization servers each client may get ID-JAGs for', tag: 'policies', query: { client_id: 'one client only' }, answer: list(s.idJagPolicyOut) },
  'PUT /policies/id-jag/{id}': { summary: "Set one ID-JAG target of a client (one per audience)", tag: 'policies', body: s.idJagPolicy, answer: s.idJagPolicyOut },
  'DELETE /policies/id-jag/{id}': { summary: 'Delete one ID-JAG target of a client', tag: 'policies', query: { audience: 'the target authorization server' }, required: ['audience'] },

  'GET /livekit/options': { summary: 'List LiveKit options of every client and role', tag: 'livekit', answer: list(s.livekitOptionsOut) },
  ...Object.fromEntries((['clients', 'roles'] as const).flatMap((kind) => [
    [`GET /livekit/options/${kind}/{name}`, { summary: `The LiveKit options of one of the ${kind}`, tag: 'livekit', answer: s.livekitOptionsOut }],
    [`PUT /livekit/options/${kind}/{name}`, { summary: `Replace the LiveKit options of one of the ${kind} (room prefix, participants, timeouts)`, tag: 'livekit', body: s.livekitOptions, answer: s.livekitOptionsOut }],
    [`DELETE /livekit/options/${kind}/{name}`, { summary: `Delete the LiveKit options of one of the ${kind}`, tag: 'livekit' }],
  ])),

  'GET /connections': { summary: 'List SSO connections', tag: 'connections', answer: list(s.connectionOut) },
  'POST /connections': { summary: 'Create an SSO connection (client_secret is write-only)', tag: 'connections', body: s.connection, answer: s.connectionOut, status: 201 },
  'GET /connections/{name}': { summary: 'An SSO connection', tag: 'connections', answer: s.connectionOut },
  'PATCH /connections/{name}': { summary: 'Change an SSO connection (enabled, domains, claims, role map, ...; client_secret null clears it)', tag: 'connections', body: s.connection, answer: s.connectionOut },
  'DELETE /connections/{name}': { summary: 'Delete an SSO connection and its linked identities (the accounts stay)', tag: 'connections' },

  'POST /revocations': { summary: 'Revoke by user, grant, session or token id', tag: 'revocation', body: s.revocation, answer: s.revocationOut },
  'GET /keys': { summary: 'Signing keys in use', tag: 'keys', answer: list(s.keyOut) },
  'POST /keys/rotate': { summary: 'Rotate the signing keys (old ones stay published while tokens they signed live)', tag: 'keys', answer: s.rotateOut },
  'GET /audit': {
    summary: 'The audit log, newest first, paged by id', tag: 'audit', answer: s.auditOut,
    query: {
      type: 'event type', outcome: 'success or failure', subject: 'subject id', actor: 'user:<id>, client:<id> or cli', client_id: 'client id',
      since: 'ISO 8601', until: 'ISO 8601', before_id: 'next_before_id of the previous page', limit: '1 to 1000 (default 100)',
    },
  },
};

const ERRORS: Record<string, string> = {
  400: 'invalid_request: a bad body, query or value',
  401: 'invalid_token or insufficient_user_authentication (WWW-Authenticate says which)',
  403: 'insufficient_scope',
  404: 'not_found',
  409: 'conflict: already exists, the last active administrator, a self-registered client',
};

const schemaOf = (schema: z.ZodType, io: 'input' | 'output') => {
  const { $schema: _dialect, ...json } = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as Record<string, unknown>;
  return json;
};
const json = (schema: Record<string, unknown>) => ({ 'application/json': { schema } });

/** The OpenAPI 3.1 document for the admin API of this issuer. */
export function adminOpenApi(issuer: string, version: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [key, op] of Object.entries(ADMIN_OPERATIONS)) {
    const [method, path] = key.split(' ');
    const params = [
      ...[...path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } })),
      ...Object.entries(op.query ?? {}).map(([name, description]) => ({ name, in: 'query', required: op.required?.includes(name) ?? false, description, schema: { type: 'string' } })),
    ];
    const status = String(op.answer ? (op.status ?? 200) : 204);
    const isMeta = op.tag === 'meta';
    const errors = Object.fromEntries(
      Object.entries(ERRORS)
        .filter(([code]) => !isMeta && (code !== '404' || path.includes('{') || op.required || op.query?.uri) && (code !== '409' || method !== 'GET'))
        .map(([code, description]) => [code, { description, content: json({ $ref: '#/components/schemas/Error' }) }]),
    );
    paths[path] ??= {};
    paths[path][method.toLowerCase()] = {
      operationId: `${method.toLowerCase()}${path.replace(/\{(\w+)\}/g, 'By_$1').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''))}`,
      summary: op.summary,
      tags: [op.tag],
      ...(isMeta ? { security: [] } : {}),
      ...(params.length ? { parameters: params } : {}),
      ...(op.body ? { requestBody: { required: true, content: json(schemaOf(op.body, 'input')) } } : {}),
      ...(op.bodyTypes ? { requestBody: { required: true, content: Object.fromEntries(op.bodyTypes.map((t) => [t, { schema: { type: 'string' } }])) } } : {}),
      responses: {
        [status]: op.answer ? { description: 'OK', content: json(schemaOf(op.answer, 'output')) } : { description: 'Done; no body' },
        ...errors,
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Gatehouse admin API',
      version,
      description: 'Users, roles, clients, resource servers, exchange policy, SSO connections, revocation, keys and the audit log. '
        + 'Every answer is what the gatehouse CLI prints with --json (snake_case fields). Every change is audited with the caller as actor.',
    },
    servers: [{ url: `${issuer}${ADMIN_API_PATH}` }],
    security: [{ bearer: [ADMIN_SCOPE] }, { bearer: [ADMIN_READ_SCOPE] }],
    components: {
      securitySchemes: {
        bearer: {
          type: 'http', scheme: 'bearer', bearerFormat: 'JWT',
          description: `An access token issued for the resource ${issuer}${ADMIN_API_PATH} (RFC 8707), with ${ADMIN_SCOPE} (every call) or ${ADMIN_READ_SCOPE} (GET only).`,
        },
      },
      schemas: { Error: schemaOf(s.errorOut, 'output') },
    },
    paths,
  };
}

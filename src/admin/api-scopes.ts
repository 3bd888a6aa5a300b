// The admin API as a resource server: its URI (the `aud` of its tokens) and its two scopes. Kept
// apart from the router so the provider configuration can use it without importing the commands.

/** Every admin API call, reads and changes. Held by the `admin` role (permission of the same name). */
export const ADMIN_SCOPE = 'gatehouse:admin';
/** Reads only (GET): for auditors and monitoring. Grant it with a role's permission of the same name. */
export const ADMIN_READ_SCOPE = 'gatehouse:admin:read';

export const ADMIN_API_PATH = '/admin/api';
export const adminApiUri = (issuer: string) => `${issuer}${ADMIN_API_PATH}`;

/** Whether a resource indicator names the admin API (a trailing slash is the same resource). */
export const isAdminApi = (issuer: string, indicator: string) => indicator.replace(/\/+$/, '') === adminApiUri(issuer);

/** Admin tokens live five minutes at most, whatever ACCESS_TOKEN_TTL says. */
export const ADMIN_TOKEN_TTL = 300;

/** The admin scopes a role's permissions allow. */
export function adminScopesForPermissions(permissions: string[]): string[] {
  if (permissions.includes(ADMIN_SCOPE)) return [ADMIN_SCOPE, ADMIN_READ_SCOPE];
  if (permissions.includes(ADMIN_READ_SCOPE)) return [ADMIN_READ_SCOPE];
  return [];
}

/** The admin scopes a service-account client may get with client credentials (`client admin-api`). */
export function adminScopesForClient(metadata: Record<string, unknown> | undefined): string[] {
  if (metadata?.admin_api === 'full') return [ADMIN_SCOPE, ADMIN_READ_SCOPE];
  if (metadata?.admin_api === 'read') return [ADMIN_READ_SCOPE];
  return [];
}

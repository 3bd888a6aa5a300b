// The one scope rule (docs/authorization.md). Every path that issues a token bound to a resource
// server — authorization code, refresh, device flow, client credentials, token exchange to a
// resource, delegation, and the delegation tokens connection-details hands to agents — asks this
// function, and only this function, which scopes the token carries. It knows no HTTP and no storage:
// callers gather the facts (the resource, the principal's permissions or allowed scopes, the user's
// consent) and map a refusal to their surface's `invalid_scope`.

/** OpenID scopes (src/oidc/provider.ts): they are about the ID token and userinfo, never a resource's. */
export const OIDC_SCOPES: readonly string[] = ['openid', 'offline_access', 'email', 'profile', 'roles'];

export const splitScope = (s: string | undefined | null): string[] => [...new Set(String(s ?? '').split(' ').filter(Boolean))];

export interface ScopeResource {
  uri: string;
  scopes: string[];
  /** What a request naming none of the resource's scopes gets; null = all of the resource's scopes. */
  defaultScopes: string[] | null;
}

/** Who holds the scopes: a user (through their roles' permissions) or a client on its own behalf. */
export type ScopePrincipal =
  | { kind: 'user'; permissions: string[] }
  /** Client credentials: the client's allowed scopes (its `scope` metadata); null = not restricted. */
  | { kind: 'client'; allowed: string[] | null };

/**
 * For a token used by a client on a user's behalf: what the user consented to for this resource and
 * client, or `pre-consented` where the operator decided for them (a first-party client; a client
 * whose exchange policy lists the resource).
 */
export type ScopeConsent = { scopes: string[] } | 'pre-consented';

export interface ScopeFacts {
  resource: ScopeResource;
  /** The scopes asked for; OpenID scopes are ignored. None (or none but OpenID scopes) → the defaults. */
  requested: string[] | undefined;
  principal: ScopePrincipal;
  /** Required when the principal is a user: every user-bound token acts for the user. */
  consent?: ScopeConsent;
  /** Further ceilings, each named in a refusal (a client's exchange policy, a delegation token's scopes); null = none. */
  limits?: { name: string; scopes: string[] | null }[];
}

/** Which part of the rule left nothing (the refusal's message names it). */
export type ScopePart = 'request' | 'resource' | 'principal' | 'consent' | 'limit';

export class ScopeRefused extends Error {
  constructor(public readonly part: ScopePart, message: string) {
    super(message);
    this.name = 'ScopeRefused';
  }
}

const list = (s: string[]) => s.join(' ');

/**
 * scope = requested (or the resource's defaults) ∩ the resource's scopes ∩ what the principal holds
 * ∩ (for a user) what the user consented to ∩ any further limit. Narrows silently (RFC 6749 §3.3:
 * the response's `scope` tells the client what it got); an empty result throws ScopeRefused naming
 * the first part that removed the last scope.
 */
export function decideScope(f: ScopeFacts): string[] {
  const oidc = new Set(OIDC_SCOPES);
  const asked = (f.requested ?? []).filter((s) => !oidc.has(s));
  const defaults = f.resource.defaultScopes ?? f.resource.scopes;
  let scopes = asked.length ? asked : defaults;
  if (scopes.length === 0) {
    throw new ScopeRefused('request', `no scope was requested and ${f.resource.uri} has no default scopes`);
  }
  const narrow = (part: ScopePart, allowed: Iterable<string>, why: (had: string[]) => string) => {
    const set = new Set(allowed);
    const next = scopes.filter((s) => set.has(s));
    if (next.length === 0) throw new ScopeRefused(part, why(scopes));
    scopes = next;
  };
  narrow('resource', f.resource.scopes, (had) => `${f.resource.uri} does not define ${had.length > 1 ? 'any of ' : ''}${list(had)}`);
  const p = f.principal;
  if (p.kind === 'user') {
    narrow('principal', p.permissions, (had) => `the user's roles do not hold ${had.length > 1 ? 'any of ' : ''}${list(had)}`);
    const consent = f.consent ?? { scopes: [] };
    if (consent !== 'pre-consented') {
      narrow('consent', consent.scopes, (had) => `the user has not consented to ${list(had)} at ${f.resource.uri} for this client`);
    }
  } else if (p.allowed) {
    narrow('principal', p.allowed, (had) => `this client is not allowed ${had.length > 1 ? 'any of ' : ''}${list(had)}`);
  }
  for (const limit of f.limits ?? []) {
    if (limit.scopes) narrow('limit', limit.scopes, (had) => `${limit.name} allows none of ${list(had)}`);
  }
  return scopes;
}

/**
 * The user claims a resource asked for in its JWT access tokens (resource create --claims): the
 * user's roles, and the permissions relevant to that resource (those among its scopes), so a
 * resource server can authorise without calling back. Always current at issue time.
 */
export function claimsForResource(
  resource: { scopes: string[]; claims: readonly string[] },
  user: { roles: string[]; permissions: string[] },
): { roles?: string[]; permissions?: string[] } {
  const own = new Set(resource.scopes);
  return {
    ...(resource.claims.includes('roles') ? { roles: user.roles } : {}),
    ...(resource.claims.includes('permissions') ? { permissions: user.permissions.filter((p) => own.has(p)) } : {}),
  };
}

// Who must use a second factor (issue 7). One function decides, and both the login pages and
// oidc-provider's login prompt (src/oidc/provider.ts) ask it, so a login the pages complete always
// satisfies the prompt (no loop back to the login page).
import type { Config } from '../config/index.ts';

/** acr values Gatehouse issues (OIDC Core §2: acr is an opaque, deployment-defined string). */
export const ACR_PASSWORD = 'urn:gatehouse:acr:pwd';
export const ACR_MFA = 'urn:gatehouse:acr:mfa';

/** RFC 8176 amr values: a password, then a one-time password; `mfa` when more than one factor was used. */
export const AMR_PASSWORD = ['pwd'];
export const AMR_MFA = ['pwd', 'otp', 'mfa'];
/** RFC 8176 has no value for "federated"; `fed` is what Entra ID and others use for it. */
export const AMR_FEDERATED = 'fed';

/**
 * RFC 8176 values for a passkey (issue 19): `hwk`, proof of possession of a hardware-secured key;
 * `user` when the authenticator also verified the person (WebAuthn's UV flag: a PIN or biometric).
 * A user-verified passkey is two factors by itself (what you have, and what you know or are), so it
 * signs in at ACR_MFA with `mfa`; as a second factor after a password, `mfa` comes from the pair.
 */
export const AMR_PASSKEY = 'hwk';
export const AMR_USER_VERIFIED = 'user';
export function passkeyAmr(userVerified: boolean, firstFactor?: string): string[] {
  const passkey = userVerified ? [AMR_PASSKEY, AMR_USER_VERIFIED] : [AMR_PASSKEY];
  return firstFactor ? [firstFactor, ...passkey, 'mfa'] : userVerified ? [...passkey, 'mfa'] : passkey;
}

/** The reason Gatehouse's login-prompt check reports when a session lacks the second factor. */
export const STEP_UP_REASON = 'mfa_required';

export type MfaReason = 'everyone' | 'role' | 'client' | 'resource' | 'acr_values';

export interface MfaPolicyDeps {
  config: Pick<Config, 'MFA_REQUIRED' | 'MFA_REQUIRED_ROLES'>;
  accounts: { rolesAndPermissions(userId: string): Promise<{ roles: string[] }> };
  /** Registered resource servers: one created with --require-mfa makes a request naming it need MFA. */
  resources?: { findResource(uri: string): Promise<{ requireMfa: boolean } | undefined> };
}

/**
 * OIDC Core §3.1.2.1: acr_values are voluntary and listed in order of preference. The client asks
 * for MFA when it lists the MFA value and not the password one (which would also satisfy it).
 */
export function acrValuesRequireMfa(acrValues: unknown): boolean {
  const values = typeof acrValues === 'string' ? acrValues.split(' ').filter(Boolean) : [];
  return values.includes(ACR_MFA) && !values.includes(ACR_PASSWORD);
}

/**
 * Whether any `resource` of the request (RFC 8707: one or more absolute URIs) is a resource server
 * registered with --require-mfa. Token exchange refuses such a resource for a password-only subject;
 * checking at sign-in too means the token a client gets straight from the code flow is held to it.
 */
async function resourceRequiresMfa(resources: MfaPolicyDeps['resources'], resource: unknown): Promise<boolean> {
  if (!resources) return false;
  const uris = (Array.isArray(resource) ? resource : [resource]).filter((v): v is string => typeof v === 'string' && v.length > 0);
  for (const uri of uris) {
    if ((await resources.findResource(uri))?.requireMfa) return true;
  }
  return false;
}

/** Why this login must include a second factor, or null when a password is enough. */
export async function mfaRequirement(
  deps: MfaPolicyDeps,
  input: { accountId: string; clientRequiresMfa?: unknown; acrValues?: unknown; resource?: unknown },
): Promise<MfaReason | null> {
  if (deps.config.MFA_REQUIRED) return 'everyone';
  if (input.clientRequiresMfa === true) return 'client';
  if (acrValuesRequireMfa(input.acrValues)) return 'acr_values';
  if (await resourceRequiresMfa(deps.resources, input.resource)) return 'resource';
  if (deps.config.MFA_REQUIRED_ROLES.length > 0) {
    const { roles } = await deps.accounts.rolesAndPermissions(input.accountId);
    if (roles.some((r) => deps.config.MFA_REQUIRED_ROLES.includes(r))) return 'role';
  }
  return null;
}

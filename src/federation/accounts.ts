// From a verified upstream identity to a Gatehouse account (issue 4): an existing link, a safe
// link by email, or a JIT-created account; then the claim → role mapping, re-applied every login.
import type { Accounts, User } from '../accounts/users.ts';
import { EmailTakenError } from '../accounts/users.ts';
import { parseEmail } from '../accounts/email.ts';
import { ACR_MFA, ACR_PASSWORD, AMR_FEDERATED } from '../mfa/policy.ts';
import type { Connection, Connections } from './connections.ts';
import type { UpstreamIdentity } from './rp.ts';


/** Upstream amr values that are a factor other than "something you know". */
const SECOND_FACTORS = new Set(['otp', 'hwk', 'swk', 'sms', 'tel', 'fpt', 'face', 'iris', 'retina', 'vbm', 'sc', 'pin']);

/**
 * The amr/acr Gatehouse puts in its login result for a federated sign-in. Exported so the MFA
 * policy and tests agree: the upstream's MFA counts (acr = ACR_MFA) only when the connection is
 * trusted for it and the upstream amr shows it (`mfa`, or a password and another factor).
 * Otherwise the session is one factor (ACR_PASSWORD) and Gatehouse's own step-up asks for TOTP
 * where the policy requires MFA.
 */
export function federatedAuthentication(connection: Pick<Connection, 'trustMfa'>, claims: Record<string, unknown>): { amr: string[]; acr: string; upstreamMfa: boolean } {
  const upstreamAmr = Array.isArray(claims.amr) ? claims.amr.filter((v): v is string => typeof v === 'string') : [];
  const upstreamMfa = upstreamAmr.includes('mfa') || (upstreamAmr.some((a) => SECOND_FACTORS.has(a)) && upstreamAmr.length > 1);
  if (connection.trustMfa && upstreamMfa) return { amr: [AMR_FEDERATED, 'mfa'], acr: ACR_MFA, upstreamMfa };
  return { amr: [AMR_FEDERATED], acr: ACR_PASSWORD, upstreamMfa };
}

export type Resolution =
  | { user: User; how: 'linked' | 'link' | 'jit'; roles: { roles: string[]; added: string[]; removed: string[] } }
  | { refused: 'no_email' | 'email_domain' | 'link_refused' | 'no_account' | 'inactive' | 'email_taken'; message: string; userId?: string };

const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

/** Upstream group/role values, from an array claim or a space/comma separated string. */
export function groupsOf(claims: Record<string, unknown>, claim: string): string[] {
  const v = claims[claim];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  if (typeof v === 'string') return v.split(/[\s,]+/).filter(Boolean);
  return [];
}

/** The connection's default roles plus the roles its role map gives these groups. */
export function mappedRoles(connection: Pick<Connection, 'defaultRoles' | 'roleMap' | 'claimMap'>, claims: Record<string, unknown>): string[] {
  const groups = groupsOf(claims, connection.claimMap.groups);
  return [...new Set([...connection.defaultRoles, ...groups.flatMap((g) => connection.roleMap[g] ?? [])])];
}

export async function resolveAccount(deps: { accounts: Accounts; connections: Connections }, connection: Connection, identity: UpstreamIdentity): Promise<Resolution> {
  const { accounts, connections } = deps;
  const { claimMap } = connection;
  const roles = mappedRoles(connection, identity.claims);

  const existing = await connections.findIdentity(connection.name, identity.subject);
  if (existing) {
    const user = await accounts.findUserById(existing.userId);
    if (!user || !user.active) return { refused: 'inactive', message: 'This account has been disabled. Contact your administrator.', userId: existing.userId };
    return { user, how: 'linked', roles: await connections.applyMappedRoles(existing, roles) };
  }

  const parsed = parseEmail(identity.claims[claimMap.email]);
  const email = parsed?.address;
  if (!parsed || !email) return { refused: 'no_email', message: `${connection.displayName} did not share an email address, so no account can be found or created.` };
  // A connection speaks only for its own domains: an upstream tenant asserting someone else's
  // address must not reach (or squat) that account.
  const domain = parsed.key.slice(parsed.key.lastIndexOf('@') + 1);
  if (connection.domains.length && !connection.domains.includes(domain)) {
    return { refused: 'email_domain', message: `${connection.displayName} may only sign in addresses at ${connection.domains.join(', ')}.` };
  }
  // OIDC Core §5.1: email_verified is a boolean; anything else is "not verified".
  const verified = identity.claims[claimMap.email_verified] === true;
  const name = str(identity.claims[claimMap.name])?.trim().slice(0, 200) || undefined;

  const local = await accounts.findUserByEmail(email);
  if (local) {
    if (!connection.linkByEmail || !verified) {
      return { refused: 'link_refused', message: 'An account with this email address already exists and cannot be linked to this sign-in automatically. Sign in with your password, or ask your administrator.', userId: local.id };
    }
    if (!local.active) return { refused: 'inactive', message: 'This account has been disabled. Contact your administrator.', userId: local.id };
    await connections.link({ connection: connection.name, subject: identity.subject, userId: local.id, email });
    const linked = (await connections.findIdentity(connection.name, identity.subject))!;
    return { user: local, how: 'link', roles: await connections.applyMappedRoles(linked, roles) };
  }

  if (!connection.jit) return { refused: 'no_account', message: `There is no account for ${email} yet. Ask your administrator to create one.` };
  let user: User;
  try {
    // No password: the account signs in through its connection (an admin may set one later).
    // Only roles that exist are given; applyMappedRoles below records which ones the link manages.
    user = await accounts.createUser({ email, name, roles: [], emailVerified: verified });
  } catch (err) {
    if (err instanceof EmailTakenError) return { refused: 'email_taken', message: 'An account with this email address already exists. Try again.' };
    throw err;
  }
  await connections.link({ connection: connection.name, subject: identity.subject, userId: user.id, email });
  const linked = (await connections.findIdentity(connection.name, identity.subject))!;
  return { user, how: 'jit', roles: await connections.applyMappedRoles(linked, roles) };
}


// The consent part of the one scope rule (docs/authorization.md) for tokens derived from a user's
// token: what the user consented to for a resource and the client the token was issued to.
import type Provider from 'oidc-provider';
import type { ScopeConsent } from '../authz/scope-rule.ts';
import { uriVariants } from '../oidc/resources.ts';
import type { PolicyStore } from './policy.ts';
import { splitScope } from './policy.ts';
import { originGrant, type VerifiedToken } from './tokens.ts';

/**
 * What the user consented to for `resource` in the grant behind `t` (oidc-provider's Grant, by gid).
 * The token's own scopes are not enough: scope names repeat across resources, and consent given to
 * one resource server is not consent to another.
 */
export async function consentedInGrant(provider: Provider, t: VerifiedToken, resource: string): Promise<string[]> {
  const grant = await originGrant(provider, t);
  return grant ? [...new Set(uriVariants(resource).flatMap((uri) => splitScope(grant.getResourceScope(uri))))] : [];
}

/**
 * The client `t` was issued to acts for the user. The operator has pre-consented for it where the
 * client is first-party, or where its exchange policy lists the resource (the operator chose to let
 * this client reach that resource for its users); otherwise the user's consent in the grant decides.
 */
export async function clientConsentFor(deps: { provider: Provider; policy: Pick<PolicyStore, 'clientPolicy'> }, t: VerifiedToken, resource: string): Promise<ScopeConsent> {
  const client = await deps.provider.Client.find(t.clientId);
  if (client?.metadata().first_party === true) return 'pre-consented';
  const policy = await deps.policy.clientPolicy(t.clientId);
  if (policy?.resources.flatMap(uriVariants).includes(resource)) return 'pre-consented';
  return { scopes: await consentedInGrant(deps.provider, t, resource) };
}

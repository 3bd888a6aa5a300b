// RFC 8693 token exchange, registered on each provider instance (app.ts rebuilds the provider when
// the signing keys change, so the key ring below always matches the provider's keys).
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Deps } from '../app.ts';
import { ExchangeError, toOidcError } from './errors.ts';
import { buildExchangeHandler, GRANT_TYPE, noRateLimit, PARAMETERS, REPEATABLE, type ExchangeRateLimit } from './grant.ts';
import { livekitSettings } from './livekit.ts';
import { buildKeyRing, type KeyRing } from './tokens.ts';
import { buildIdJagIssuer, isIdJagRequest } from './id-jag.ts';
import { createRoomTokens } from '../livekit/room-tokens.ts';
import { originTtl } from '../revocation/ttl.ts';

export { GRANT_TYPE, ACCESS_TOKEN_TYPE, type ExchangeRateLimit } from './grant.ts';
export { LIVEKIT_TOKEN_TYPE } from './livekit.ts';
export { ID_JAG_TOKEN_TYPE } from './id-jag.ts';

type ExchangeAppDeps = Pick<Deps, 'config' | 'db' | 'audit' | 'resources' | 'revocations' | 'keys' | 'accounts' | 'policy' | 'livekitOptions'>;

/** Key ring built once per provider instance, on first use; rebuilt after a failure. */
export function lazyKeyRing(deps: Pick<Deps, 'keys'>): () => Promise<KeyRing> {
  let ring: Promise<KeyRing> | undefined;
  return () => {
    ring ??= deps.keys.privateJwks().then(buildKeyRing);
    ring.catch(() => { ring = undefined; });
    return ring;
  };
}

export function registerTokenExchange(provider: Provider, deps: ExchangeAppDeps, opts: { rateLimit?: ExchangeRateLimit } = {}): void {
  const exchangeDeps = {
    config: deps.config,
    audit: deps.audit,
    resources: deps.resources,
    revocations: deps.revocations,
    policy: deps.policy,
    keyRing: lazyKeyRing(deps),
    livekit: livekitSettings(deps.config),
    roomTokens: createRoomTokens(deps.db, { keepSeconds: originTtl(deps.config) }),
    livekitOptions: deps.livekitOptions,
    rateLimit: opts.rateLimit ?? noRateLimit,
  };
  const { tokenExchangeGrant, auditProviderRefusal } = buildExchangeHandler(provider, exchangeDeps);
  // ID-JAG (docs/id-jag.md): the same grant, asked for requested_token_type=...:id-jag.
  const idJagExchange = buildIdJagIssuer(provider, { ...exchangeDeps, accounts: deps.accounts });
  provider.registerGrantType(GRANT_TYPE, async function tokenExchange(ctx: KoaContextWithOIDC) {
    try {
      await (isIdJagRequest(ctx) ? idJagExchange(ctx) : tokenExchangeGrant(ctx));
    } catch (err) {
      // One place turns exchange refusals into oidc-provider's RFC 6749 §5.2 error responses.
      throw err instanceof ExchangeError ? toOidcError(err) : err;
    }
  } as never, PARAMETERS, REPEATABLE);
  // Refusals oidc-provider answers before the grant runs are audited too (every exchange is).
  provider.on('grant.error', auditProviderRefusal);
  provider.on('grant.error', addStepUpHint);
}

/**
 * RFC 9470 §3: an insufficient_user_authentication refusal tells the client which acr_values to ask
 * for. oidc-provider's error body has only error/error_description; it emits grant.error after
 * setting the body, so the hint is added here.
 */
function addStepUpHint(ctx: KoaContextWithOIDC, err: { error?: string; acr_values?: string }) {
  if (err?.error !== 'insufficient_user_authentication' || !err.acr_values) return;
  if (ctx.body && typeof ctx.body === 'object') (ctx.body as Record<string, unknown>).acr_values = err.acr_values;
}

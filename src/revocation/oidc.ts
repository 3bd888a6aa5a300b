// Revocation inside oidc-provider, through its configuration and events only (no internals):
// - readers: findAccount (called with the token on refresh, code redemption and userinfo) and the
//   introspection allowedPolicy consult the lists; a revoked token is "not found" / inactive.
// - writers: grant.revoked (refresh-token revocation, refresh-token reuse, logout per grant) and
//   end_session.success (session-level) write them.
// Writes started while a request runs are awaited before its response (see awaitRevocationWrites),
// so a client that gets 200 from /token/revocation can rely on it everywhere at once.
import type { Context, Next } from 'koa';
import { errors, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Logger } from '../http/log.ts';
import { RevocationUnavailableError, type RevocationStore, type RevocationService, type TokenFacts } from './store.ts';
import { originTtl, remainingTtl } from './ttl.ts';

/** oidc-provider's TemporarilyUnavailable is built as 400; a store we cannot reach is a 503. */
export function unavailableOidcError(): Error {
  const err = new errors.TemporarilyUnavailable('revocation status cannot be checked right now; try again') as Error & { status: number; statusCode: number };
  err.status = 503;
  err.statusCode = 503;
  return err;
}

interface ProviderToken {
  kind?: string;
  jti?: string;
  grantId?: string;
  sessionUid?: string;
  accountId?: string;
  clientId?: string;
  iat?: number;
  exp?: number;
}

export function factsOfProviderToken(t: ProviderToken): TokenFacts {
  return {
    jti: t.jti,
    gid: t.grantId,
    sid: t.sessionUid,
    // A client-credentials token's subject is its client.
    sub: t.accountId ?? (t.kind === 'ClientCredentials' ? t.clientId : undefined),
    iat: t.iat,
  };
}

/** Fail closed: true when revoked, 503 when the lists cannot answer. */
async function isRevoked(revocations: RevocationStore, facts: TokenFacts): Promise<boolean> {
  try {
    return (await revocations.check(facts)) !== undefined;
  } catch (err) {
    if (err instanceof RevocationUnavailableError) throw unavailableOidcError();
    throw err;
  }
}

/**
 * provider configuration `extend` hook: the readers, and one writer oidc-provider has no event for
 * in a request: a client's own (client-credentials) token revoked at /token/revocation goes on the
 * jti list, so tokens exchanged with it as actor_token (their `ojti`) die with it. A user's access
 * token needs nothing more: oidc-provider revokes its whole grant (grant.revoked below).
 */
export function revocationChecks(revocations: RevocationService, writes: { config: Config; log: Logger }) {
  return function configureRevocationChecks(configuration: Configuration) {
    const findAccount = configuration.findAccount!;
    // oidc-provider passes the token when it resolves the account for refresh, code and device-code
    // redemption and userinfo: a revoked one resolves to no account (invalid_grant / 401 invalid_token).
    configuration.findAccount = async function findAccountUnlessRevoked(ctx, sub, token) {
      if (token && (await isRevoked(revocations, factsOfProviderToken(token as unknown as ProviderToken)))) return undefined;
      return findAccount(ctx, sub, token);
    };
    const features = (configuration.features ??= {});
    features.introspection = {
      ...features.introspection,
      enabled: true,
      // oidc-provider's default policy (public clients see only their own tokens), plus the lists.
      async allowedPolicy(ctx, client, token) {
        const t = token as unknown as ProviderToken;
        if (client.clientAuthMethod === 'none' && t.clientId !== ctx.oidc.client?.clientId) return false;
        return !(await isRevoked(revocations, factsOfProviderToken(t)));
      },
    };
    features.revocation = {
      ...features.revocation,
      enabled: true,
      // RFC 7009 §2.1: only the client the token was issued to may revoke it (oidc-provider's default, stated).
      async allowedPolicy(ctx, client, token) {
        const t = token as unknown as ProviderToken;
        if (t.clientId !== client.clientId) {
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        if (t.kind === 'ClientCredentials' && t.jti) {
          // Awaited before the response, like every writer (awaitRevocationWrites).
          track(ctx, revocations.revoke('jti', t.jti, remainingTtl(t.exp, writes.config), { subject: t.clientId, reason: 'token_revocation' }), writes.log, 'jti');
        }
        return true;
      },
    };
  };
}

type StateWithWrites = { revocationWrites?: Promise<unknown>[] };

function track(ctx: KoaContextWithOIDC | undefined, p: Promise<unknown>, log: Logger, what: string) {
  const guarded = p.catch((err) => log.error({ err, what }, 'revocation write failed'));
  const state = (ctx as unknown as Context | undefined)?.state as StateWithWrites | undefined;
  if (state) (state.revocationWrites ??= []).push(guarded);
}

/** In front of the provider: the response waits for revocation writes its request started. */
export function awaitRevocationWrites() {
  return async function awaitRevocationWritesMiddleware(ctx: Context, next: Next) {
    try {
      await next();
    } finally {
      const writes = (ctx.state as StateWithWrites).revocationWrites;
      if (writes?.length) await Promise.all(writes);
    }
  };
}

function reasonFor(ctx: KoaContextWithOIDC | undefined): string {
  const route = ctx?.oidc?.route;
  if (route === 'revocation') return 'token_revocation';
  if (route === 'token') {
    const grantType = (ctx!.oidc.params as Record<string, unknown> | undefined)?.grant_type;
    return grantType === 'refresh_token' ? 'refresh_token_reuse' : grantType === 'authorization_code' ? 'code_reuse' : 'token_endpoint';
  }
  if (route?.startsWith('end_session')) return 'logout';
  return route ?? 'provider';
}

function subjectOf(ctx: KoaContextWithOIDC | undefined): string | undefined {
  const e = ctx?.oidc?.entities as Record<string, { accountId?: string } | undefined> | undefined;
  return ctx?.oidc?.account?.accountId ?? e?.RefreshToken?.accountId ?? e?.AccessToken?.accountId ?? e?.Grant?.accountId
    ?? e?.AuthorizationCode?.accountId ?? ctx?.oidc?.session?.accountId ?? undefined;
}

/** The writers oidc-provider triggers. */
export function attachRevocationWriters(provider: Provider, deps: { revocations: RevocationService; config: Config; log: Logger }) {
  const { revocations, config, log } = deps;
  // refresh-token revocation (RFC 7009), refresh-token / code reuse, and logout, per grant.
  provider.on('grant.revoked', (ctx: KoaContextWithOIDC, grantId: string) => {
    track(ctx, revocations.revoke('grant', grantId, originTtl(config), { subject: subjectOf(ctx), reason: reasonFor(ctx) }), log, 'grant');
  });
  // RP-initiated logout that ends the whole session ("sign me out" everywhere): session-level.
  provider.on('end_session.success', (ctx: KoaContextWithOIDC) => {
    const session = ctx.oidc.session as unknown as { uid?: string; accountId?: string } | undefined;
    const full = Boolean((ctx.oidc.params as Record<string, unknown> | undefined)?.logout);
    if (!full || !session?.uid) return;
    track(ctx, revocations.revoke('session', session.uid, originTtl(config), { subject: session.accountId, reason: 'logout' }), log, 'session');
  });
}

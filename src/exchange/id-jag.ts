// Gatehouse as the enterprise IdP of the Identity Assertion JWT Authorization Grant (ID-JAG,
// draft-ietf-oauth-identity-assertion-authz-grant; docs/id-jag.md): a client trades the user's ID
// token (or its refresh token) at our token-exchange grant for a signed ID-JAG addressed to another
// authorization server, which that server redeems for an access token to its MCP server. Allowed
// only where the client's exchange policy names that server (policy id-jag set), read top-down:
// readIdJagParams → decideIdJagTarget → verifyIdJagSubject → checkSubjectNotRevoked → rate limit
// → decideIdJagScope → mintGrant.
import type { KoaContextWithOIDC } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { Accounts } from '../accounts/users.ts';
import { decideScope, OIDC_SCOPES, ScopeRefused } from '../authz/scope-rule.ts';
import { assertThat, invalidRequest, invalidScope, invalidTarget, unauthorizedClient } from './errors.ts';
import { activeSubjectUser, asRefusal, many, markAudited, one, type ExchangeDeps, type Refusal } from './grant.ts';
import { splitScope, type IdJagTarget, type UserFacts } from './policy.ts';
import { mintIdJag, verifyIdToken, verifyRefreshToken, type VerifiedToken } from './tokens.ts';

export const ID_JAG_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id-jag';
export const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
export const REFRESH_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:refresh_token';

/**
 * The draft leaves the lifetime to the IdP; its examples use 5 minutes. The grant is redeemed at
 * once, and each is good for one access token at Gatehouse (jti replay), so short is enough.
 */
export const ID_JAG_TTL = 300;

interface Params {
  subjectToken: string;
  subjectTokenType: string;
  audience: string;
  resource: string;
  scope?: string[];
}

/** What the steps learn; also what the audit event records (never the tokens). */
interface IdJagExchange {
  clientId: string;
  params?: Params;
  subject?: VerifiedToken & { authTime?: number };
  user?: UserFacts;
  target?: IdJagTarget;
  scopes?: string[];
}


export function isIdJagRequest(ctx: KoaContextWithOIDC): boolean {
  return (ctx.oidc.params as Record<string, unknown>).requested_token_type === ID_JAG_TOKEN_TYPE;
}

function readIdJagParams(ctx: KoaContextWithOIDC): Params {
  const p = ctx.oidc.params as Record<string, unknown>;
  const subjectToken = one(p.subject_token);
  assertThat(subjectToken, () => invalidRequest('missing required parameter subject_token'));
  const subjectTokenType = one(p.subject_token_type);
  // The draft: implementations MUST accept identity assertions (here: our ID tokens) and MAY accept refresh tokens.
  assertThat(subjectTokenType === ID_TOKEN_TYPE || subjectTokenType === REFRESH_TOKEN_TYPE,
    () => invalidRequest(`for an ID-JAG, subject_token_type must be ${ID_TOKEN_TYPE} or ${REFRESH_TOKEN_TYPE}`));
  assertThat(!one(p.actor_token), () => invalidRequest('actor_token is not supported for ID-JAG requests'));
  const audiences = many(p.audience);
  assertThat(audiences.length === 1, () => invalidTarget("audience is required: exactly one, the other authorization server's issuer"));
  const resources = many(p.resource);
  // The MCP extension (enterprise-managed authorization) makes resource REQUIRED: the MCP server.
  assertThat(resources.length === 1, () => invalidTarget('resource is required: exactly one, the resource server at that authorization server'));
  return { subjectToken, subjectTokenType, audience: audiences[0], resource: resources[0], scope: one(p.scope) ? splitScope(one(p.scope)) : undefined };
}

export function buildIdJagIssuer(provider: Provider, deps: ExchangeDeps & { accounts: Pick<Accounts, 'findUserById'> }) {
  const issuer = deps.config.ISSUER;

  async function verifyIdJagSubject(x: IdJagExchange) {
    const p = x.params!;
    x.subject = p.subjectTokenType === ID_TOKEN_TYPE
      ? await verifyIdToken(p.subjectToken, 'subject_token', { issuer, keys: await deps.keyRing(), clientId: x.clientId })
      : await verifyRefreshToken(p.subjectToken, 'subject_token', { provider, clientId: x.clientId });
    assertThat(x.subject.user, () => invalidRequest('subject_token does not represent a user'));
  }

  async function checkSubjectNotRevoked(x: IdJagExchange) {
    x.user = await activeSubjectUser(deps, x.subject!);
  }

  /** Admin policy per client and target server (policy id-jag set); deny by default. */
  async function decideIdJagTarget(x: IdJagExchange, ctx: KoaContextWithOIDC) {
    const p = x.params!;
    // The draft § Security Considerations: confidential clients only (a public one uses the code flow at the other server).
    assertThat(ctx.oidc.client!.clientAuthMethod !== 'none', () => unauthorizedClient('ID-JAGs are issued only to confidential clients'));
    const targets = await deps.policy.listIdJagTargets(x.clientId);
    assertThat(targets.length, () => unauthorizedClient('this client may not request ID-JAGs (no ID-JAG policy)'));
    // Issuer identifiers compare exactly (RFC 8414 §2), but a trailing slash is not worth a refusal.
    const same = (a: string, b: string) => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
    x.target = targets.find((t) => same(t.audience, p.audience));
    assertThat(x.target, () => invalidTarget('this client may not request an ID-JAG for this audience'));
    assertThat(x.target.resources.some((r) => same(r, p.resource)), () => invalidTarget('this client may not request an ID-JAG for this resource'));
  }

  /**
   * The one scope rule over what the policy allows at the other server. Its resources' scopes are
   * that server's to define and decide: with no scope list in the policy, the request passes through.
   */
  function decideIdJagScope(x: IdJagExchange) {
    const t = x.target!;
    const oidc = new Set(OIDC_SCOPES);
    const asked = (x.params!.scope ?? []).filter((s) => !oidc.has(s));
    if (!t.scopes) {
      x.scopes = asked;
      return;
    }
    try {
      x.scopes = decideScope({
        // The other server's resource defines its scopes; here only the policy bounds them.
        resource: { uri: x.params!.resource, scopes: asked.length ? asked : t.scopes, defaultScopes: t.scopes },
        requested: asked,
        principal: { kind: 'client', allowed: null },
        limits: [{ name: "this client's ID-JAG policy", scopes: t.scopes }],
      });
    } catch (err) {
      if (err instanceof ScopeRefused) throw invalidScope(err.message);
      throw err;
    }
  }

  async function mintGrant(x: IdJagExchange) {
    const s = x.subject!;
    const now = Math.floor(Date.now() / 1000);
    // Never outlives the assertion it came from.
    const ttl = Math.min(ID_JAG_TTL, (s.exp ?? now + ID_JAG_TTL) - now);
    assertThat(ttl > 0, () => invalidRequest('subject_token is expired'));
    const user = await deps.accounts.findUserById(s.user!);
    const { token } = await mintIdJag(await deps.keyRing(), {
      issuer, sub: s.user!, audience: x.target!.audience, clientId: x.target!.targetClientId, resource: x.params!.resource,
      scope: x.scopes!, ttl, authTime: s.authTime, acr: s.acr, amr: s.amr, email: user?.email, emailVerified: user?.emailVerified,
    });
    return {
      access_token: token,
      issued_token_type: ID_JAG_TOKEN_TYPE,
      // RFC 8693 §2.2.1 and the draft: an ID-JAG is not an access token.
      token_type: 'N_A',
      expires_in: ttl,
      // The draft: REQUIRED when it differs from the request; always sent, so a client need not compare.
      ...(x.scopes!.length ? { scope: x.scopes!.join(' ') } : {}),
    };
  }

  function audit(ctx: KoaContextWithOIDC, x: IdJagExchange, err?: Refusal) {
    markAudited(ctx);
    void deps.audit.record({
      type: 'token.exchange',
      outcome: err ? 'failure' : 'success',
      subject: x.subject?.user ?? null,
      clientId: x.clientId || null,
      ip: ctx.ip,
      requestId: ctx.state.requestId ?? null,
      details: {
        target_type: 'id-jag',
        target: x.target?.audience ?? x.params?.audience ?? null,
        resource: x.params?.resource ?? null,
        target_client_id: x.target?.targetClientId ?? null,
        scopes: x.scopes ?? x.params?.scope ?? null,
        subject_token_type: x.params?.subjectTokenType ?? null,
        ...(err ? { error: err.code, reason: err.message } : {}),
      },
    });
  }

  return async function idJagExchange(ctx: KoaContextWithOIDC) {
    const x: IdJagExchange = { clientId: ctx.oidc.client!.clientId };
    try {
      x.params = readIdJagParams(ctx);
      await decideIdJagTarget(x, ctx);
      await verifyIdJagSubject(x);
      await checkSubjectNotRevoked(x);
      await deps.rateLimit.consume({ clientId: x.clientId, subject: x.subject!.user, ip: ctx.ip });
      decideIdJagScope(x);
      const body = await mintGrant(x);
      audit(ctx, x);
      ctx.body = body;
    } catch (err) {
      const refusal = asRefusal(err);
      if (refusal) audit(ctx, x, refusal);
      else markAudited(ctx); // rate limited: audited by the limiter
      throw err;
    }
  };
}

// The RFC 8693 token-exchange grant, as named steps read top-down (STYLE.md §1). oidc-provider has
// already authenticated the client and checked the grant is in its grant_types; each step below
// either adds to the exchange state or refuses with an RFC 8693 §2.2.2 error.
import type { KoaContextWithOIDC } from 'oidc-provider';
import type Provider from 'oidc-provider';
import type { Config } from '../config/index.ts';
import type { Audit } from '../audit/index.ts';
import type { Resources } from '../oidc/resources.ts';
import { uriVariants } from '../oidc/resources.ts';
import type { RevocationStore } from '../revocation/store.ts';
import { ACR_MFA } from '../mfa/policy.ts';
import { assertThat, ExchangeError, insufficientUserAuthentication, invalidRequest, invalidScope, invalidTarget, unauthorizedClient } from './errors.ts';
import { splitScope, type ClientPolicy, type PolicyStore, type UserFacts } from './policy.ts';
import { claimsForResource, decideScope, ScopeRefused } from '../authz/scope-rule.ts';
import { clientConsentFor, consentedInGrant } from './consent.ts';
import { assertBoundToGatehouse, assertNotRevoked, lineageOf, mintAccessToken, originLifetimeLeft, verifyIssuedToken, type KeyRing, type VerifiedToken } from './tokens.ts';
import type { LivekitOptionsStore } from './livekit-options.ts';
import { decideRoom, LIVEKIT_TOKEN_TYPE, mintLivekitToken, userParticipant, type IssuedRoomTokens, type LivekitSettings } from './livekit.ts';

export const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

/** Parameters the grant reads; resource, audience and agent_name may repeat. */
export const PARAMETERS = [
  'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type',
  'resource', 'audience', 'scope', 'room', 'participant_name', 'participant_metadata', 'agent_name',
  'device_id',
];
export const REPEATABLE = ['resource', 'audience', 'agent_name'];

/** Exchange tokens are capped at 15 minutes whatever the resource says (DESIGN.md). */
const MAX_RESOURCE_TOKEN_TTL = 900;

/**
 * The seam for rate limits (a separate issue): called once the client and subject are known, before
 * anything is minted. Throw to refuse (e.g. an error carrying 429 + Retry-After).
 */
export interface ExchangeRateLimit {
  consume(key: { clientId: string; subject?: string; ip: string }): Promise<void>;
}
export const noRateLimit: ExchangeRateLimit = { async consume() {} };

export interface ExchangeDeps {
  config: Config;
  audit: Audit;
  resources: Resources;
  revocations: RevocationStore;
  policy: PolicyStore;
  keyRing(): Promise<KeyRing>;
  livekit: LivekitSettings | undefined;
  /** Every minted room token is recorded, so LiveKit webhooks can be checked against it (issue 19.4). */
  roomTokens: IssuedRoomTokens;
  livekitOptions: Pick<LivekitOptionsStore, 'resolve'>;
  rateLimit: ExchangeRateLimit;
}

interface Params {
  subjectToken: string;
  actorToken?: string;
  requestedTokenType: string;
  targets: string[];
  scope?: string[];
  room?: string;
  participantName?: string;
  deviceId?: string;
  participantMetadata?: string;
  agentNames: string[];
}

/** What the steps learn; also what the audit event records (never the tokens). */
interface Exchange {
  clientId: string;
  params?: Params;
  policy?: ClientPolicy;
  subject?: VerifiedToken;
  user?: UserFacts;
  actor?: VerifiedToken;
  targetType?: 'livekit' | 'resource';
  target?: string;
  resource?: NonNullable<Awaited<ReturnType<Resources['findResource']>>>;
  scopes?: string[];
  room?: string;
  /** Acting by policy: the resource scopes the user consented to in the origin grant (they bound the token). */
  consented?: string[];
}

/** A form parameter given once, and one that may repeat (oidc-provider gives an array then). */
export const one = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
export const many = (v: unknown) => (Array.isArray(v) ? v : v === undefined || v === '' ? [] : [v]).map(String).filter(Boolean);

function readParams(ctx: KoaContextWithOIDC): Params {
  const p = ctx.oidc.params as Record<string, unknown>;
  const subjectToken = one(p.subject_token);
  assertThat(subjectToken, () => invalidRequest('missing required parameter subject_token'));
  assertThat(one(p.subject_token_type) === ACCESS_TOKEN_TYPE, () => invalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`));
  const actorToken = one(p.actor_token);
  if (actorToken) assertThat(one(p.actor_token_type) === ACCESS_TOKEN_TYPE, () => invalidRequest(`actor_token_type must be ${ACCESS_TOKEN_TYPE}`));
  else assertThat(!one(p.actor_token_type), () => invalidRequest('actor_token_type given without actor_token'));
  const requestedTokenType = one(p.requested_token_type) ?? ACCESS_TOKEN_TYPE;
  assertThat(requestedTokenType === ACCESS_TOKEN_TYPE || requestedTokenType === LIVEKIT_TOKEN_TYPE,
    () => invalidRequest(`unsupported requested_token_type; use ${ACCESS_TOKEN_TYPE}, ${LIVEKIT_TOKEN_TYPE} or urn:ietf:params:oauth:token-type:id-jag`));
  return {
    subjectToken,
    actorToken,
    requestedTokenType,
    // RFC 8707 resource, with audience accepted as a synonym (DESIGN.md).
    targets: [...new Set([...many(p.resource), ...many(p.audience)])],
    scope: one(p.scope) ? splitScope(one(p.scope)) : undefined,
    room: one(p.room),
    participantName: one(p.participant_name),
    deviceId: one(p.device_id),
    participantMetadata: one(p.participant_metadata),
    agentNames: many(p.agent_name),
  };
}

const namesIn = (v: unknown) => (Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : []);

/** The user behind a subject token, refused when the token is revoked or the user unknown or disabled. */
export async function activeSubjectUser(deps: Pick<ExchangeDeps, 'revocations' | 'policy'>, subject: VerifiedToken): Promise<UserFacts> {
  await assertNotRevoked(subject, 'subject_token', deps.revocations);
  const user = await deps.policy.user(subject.user!);
  assertThat(user?.active, () => invalidRequest('the subject_token user is unknown or disabled'));
  return user;
}

export function buildExchangeHandler(provider: Provider, deps: ExchangeDeps) {
  const issuer = deps.config.ISSUER;

  async function checkClientMayExchange(x: Exchange) {
    x.policy = await deps.policy.clientPolicy(x.clientId);
    assertThat(x.policy, () => unauthorizedClient('this client has no token-exchange policy'));
  }

  async function verifySubjectToken(x: Exchange) {
    x.subject = await verifyIssuedToken(x.params!.subjectToken, 'subject_token', { provider, issuer, keys: await deps.keyRing() });
    // Audience binding: a token issued for a resource server is that server's, not a key to more
    // tokens (it could otherwise be replayed by the server that received it, and chains would never end).
    assertBoundToGatehouse(x.subject, 'subject_token', issuer);
    assertThat(x.subject.user, () => invalidRequest('subject_token does not represent a user'));
  }

  async function checkSubjectNotRevoked(x: Exchange) {
    x.user = await activeSubjectUser(deps, x.subject!);
  }

  async function verifyActorToken(x: Exchange) {
    if (!x.params!.actorToken) return;
    const actor = await verifyIssuedToken(x.params!.actorToken, 'actor_token', { provider, issuer, keys: await deps.keyRing() });
    assertBoundToGatehouse(actor, 'actor_token', issuer);
    assertThat(!actor.user, () => invalidRequest("actor_token must be the agent's own client-credentials token"));
    // A client may not present someone else's actor token.
    assertThat(actor.clientId === x.clientId, () => invalidRequest('actor_token was issued to another client'));
    await assertNotRevoked(actor, 'actor_token', deps.revocations);
    x.actor = actor;
  }

  function checkSubjectBinding(x: Exchange) {
    const s = x.subject!;
    if (x.actor) return; // delegation: decided per target in checkDelegation
    // A delegation token (may_act) is only good in the hands of the agent it names, with its actor_token.
    assertThat(!s.mayAct, () => invalidRequest('subject_token names an actor (may_act); present the actor_token of that agent'));
    assertThat(s.clientId === x.clientId, () => invalidRequest('subject_token was issued to another client'));
  }

  async function checkRateLimit(x: Exchange, ip: string) {
    await deps.rateLimit.consume({ clientId: x.clientId, subject: x.subject?.user, ip });
  }

  async function decideTarget(x: Exchange) {
    const p = x.params!;
    if (p.requestedTokenType === LIVEKIT_TOKEN_TYPE) {
      x.targetType = 'livekit';
      x.target = 'livekit';
      assertThat(deps.livekit, () => invalidTarget('LiveKit is not configured on this server (LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET)'));
      assertThat(x.policy!.livekit, () => invalidTarget('this client may not exchange for LiveKit tokens'));
      assertThat(!x.actor && !x.subject!.act, () => invalidRequest('a delegated token cannot be exchanged for a LiveKit token'));
      assertThat(p.targets.length === 0, () => invalidTarget('resource/audience do not apply to LiveKit tokens'));
      return;
    }
    x.targetType = 'resource';
    assertThat(p.targets.length > 0, () => invalidTarget('resource (or audience) is required'));
    assertThat(p.targets.length === 1, () => invalidTarget('only one resource per exchange'));
    x.target = p.targets[0];
    const rs = await deps.resources.findResource(x.target);
    assertThat(rs, () => invalidTarget('resource is not registered with this server'));
    x.resource = rs;
    x.target = rs.uri;
    const allowed = new Set(x.policy!.resources.flatMap(uriVariants));
    assertThat(allowed.has(rs.uri), () => invalidTarget('this client may not exchange for this resource'));
  }

  /**
   * Issue 7: a resource registered with require_mfa takes only subjects whose sign-in had a second
   * factor (the acr the subject token carries from the session). RFC 9470 §3's error tells the
   * client to send the user through step-up (acr_values) and try again. LiveKit role policies that
   * require MFA are decided with the room (decideRoom).
   */
  function checkAuthenticationStrength(x: Exchange) {
    if (x.targetType !== 'resource' || !x.resource!.requireMfa) return;
    assertThat(x.subject!.acr === ACR_MFA, () => insufficientUserAuthentication(
      `this resource requires multi-factor authentication; sign in again with acr_values=${ACR_MFA}`));
  }

  async function checkDelegation(x: Exchange) {
    if (!x.actor) return;
    const mayAct = x.subject!.mayAct;
    // RFC 8693 §4.4: may_act names the party authorised to act; a token naming one agent is no
    // good to any other, whatever that agent's policy says.
    if (mayAct) {
      assertThat(namesIn(mayAct.sub).includes(x.clientId), () => invalidRequest("subject_token's may_act does not name this client"));
      return;
    }
    // Otherwise the agent's policy must let it act (for this resource: decideTarget checked it is
    // listed), and the user's consent must cover the resource.
    assertThat(x.policy!.mayAct, () => invalidRequest('this client may not act for the subject (no may_act naming it and no acting policy)'));
    x.consented = await consentedInGrant(provider, x.subject!, x.resource!.uri);
    assertThat(x.consented.length > 0, () => invalidRequest("the user's consent (the grant behind subject_token) does not cover this resource"));
  }

  async function mintResourceToken(x: Exchange) {
    const p = x.params!;
    const rs = x.resource!;
    const s = x.subject!;
    let granted: string[];
    try {
      granted = decideScope({
        resource: rs,
        requested: p.scope,
        principal: { kind: 'user', permissions: x.user!.permissions },
        // Acting by policy: only what the user consented to for this resource (checkDelegation). The
        // client the user signed in to: its exchange policy lists the resource (decideTarget), the
        // operator's pre-consent. A may_act token's client: decided as connection-details did.
        consent: x.consented ? { scopes: x.consented }
          : s.clientId === x.clientId ? 'pre-consented'
          : await clientConsentFor({ provider, policy: deps.policy }, s, rs.uri),
        limits: [
          { name: "this client's exchange policy", scopes: x.policy!.scopes },
          // A delegation token (may_act) or a delegated one only narrows (DESIGN.md § Audience binding).
          ...(s.mayAct || s.act ? [{ name: 'the subject_token', scopes: s.scope }] : []),
        ],
      });
    } catch (err) {
      if (err instanceof ScopeRefused) throw invalidScope(err.message);
      throw err;
    }
    x.scopes = granted;
    const ttl = Math.min(rs.accessTokenTtl, deps.config.ACCESS_TOKEN_TTL, MAX_RESOURCE_TOKEN_TTL, await originLifetimeLeft(provider, s));
    const minted = await mintAccessToken(await deps.keyRing(), {
      issuer,
      audience: rs.uri,
      sub: s.user!,
      clientId: x.clientId,
      scope: granted,
      ttl,
      gid: s.gid,
      sid: s.sid,
      acr: s.acr,
      amr: s.amr,
      // RFC 8693 §4.1: the current actor on top, earlier actors nested under it.
      act: x.actor ? { sub: x.clientId, ...(s.act ? { act: s.act } : {}) } : s.act,
      hs256Secret: rs.signing === 'hs256' ? rs.hs256Secret : undefined,
      claims: claimsForResource(rs, x.user!),
      ojti: lineageOf(s, x.actor),
    });
    return {
      access_token: minted.token,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: 'Bearer',
      expires_in: ttl,
      scope: granted.join(' '),
    };
  }

  async function mintRoomToken(x: Exchange) {
    const p = x.params!;
    const lk = deps.livekit!;
    const participant = userParticipant(lk, x.user!, p.participantName, x.subject!.acr, p.deviceId);
    const decision = await decideRoom(deps.policy, lk, participant, {
      room: p.room,
      agents: p.agentNames.map((agentName) => ({ agentName })),
      options: await deps.livekitOptions.resolve(x.clientId, x.user!.roles),
    });
    x.room = decision.room;
    const { token, expiresIn } = await mintLivekitToken(lk, participant, decision, {
      participantMetadata: p.participantMetadata, ttl: await originLifetimeLeft(provider, x.subject!),
    }, { store: deps.roomTokens, clientId: x.clientId, gid: x.subject!.gid, sid: x.subject!.sid });
    return {
      access_token: token,
      issued_token_type: LIVEKIT_TOKEN_TYPE,
      // RFC 8693 §2.2.1: token_type is N_A when the issued token is not an access token for this server's resources.
      token_type: 'N_A',
      expires_in: expiresIn,
      server_url: lk.url,
      room_name: decision.room,
      participant_identity: participant.identity,
    };
  }

  function audit(ctx: KoaContextWithOIDC, x: Exchange, err?: Refusal) {
    (ctx.state as ExchangeState).exchangeAudited = true;
    void deps.audit.record({
      type: 'token.exchange',
      outcome: err ? 'failure' : 'success',
      actor: x.actor ? x.clientId : null,
      subject: x.subject?.user ?? null,
      clientId: x.clientId || null,
      ip: ctx.ip,
      requestId: ctx.state.requestId ?? null,
      details: {
        target_type: x.targetType ?? (x.params?.requestedTokenType === LIVEKIT_TOKEN_TYPE ? 'livekit' : 'resource'),
        target: x.target ?? x.params?.targets[0] ?? null,
        scopes: x.scopes ?? x.params?.scope ?? null,
        room: x.room ?? x.params?.room ?? null,
        ...(x.subject?.acr ? { acr: x.subject.acr } : {}),
        ...(x.actor ? { acting_client: x.clientId } : {}),
        ...(err ? { error: err.code, reason: err.message } : {}),
      },
    });
  }

  /**
   * oidc-provider refuses some exchanges before the grant runs (client authentication, a client
   * without the grant type, a missing grant parameter). Its `grant.error` event reports them; they
   * are audited here unless the grant already recorded the request.
   */
  function auditProviderRefusal(ctx: KoaContextWithOIDC, err: unknown) {
    if ((ctx.state as ExchangeState).exchangeAudited || ctx.oidc?.params?.grant_type !== GRANT_TYPE) return;
    const refusal = asRefusal(err);
    if (!refusal) return;
    // invalid_client: the id the client claimed, when oidc-provider found one.
    audit(ctx, { clientId: ctx.oidc.client?.clientId ?? '' }, refusal);
  }

  async function tokenExchangeGrant(ctx: KoaContextWithOIDC) {
    const x: Exchange = { clientId: ctx.oidc.client!.clientId };
    try {
      x.params = readParams(ctx);
      await checkClientMayExchange(x);
      await verifySubjectToken(x);
      await checkSubjectNotRevoked(x);
      await verifyActorToken(x);
      checkSubjectBinding(x);
      await checkRateLimit(x, ctx.ip);
      await decideTarget(x);
      await checkDelegation(x);
      checkAuthenticationStrength(x);
      const body = x.targetType === 'livekit' ? await mintRoomToken(x) : await mintResourceToken(x);
      audit(ctx, x);
      ctx.body = body;
    } catch (err) {
      const refusal = asRefusal(err);
      if (refusal) audit(ctx, x, refusal);
      else (ctx.state as ExchangeState).exchangeAudited = true; // rate limited: audited by the limiter
      throw err;
    }
  }

  return { tokenExchangeGrant, auditProviderRefusal };
}

type ExchangeState = { exchangeAudited?: boolean };
/** The request has its audit event (or its limiter's): auditProviderRefusal records nothing more. */
export function markAudited(ctx: KoaContextWithOIDC) {
  (ctx.state as ExchangeState).exchangeAudited = true;
}
export interface Refusal {
  code: string;
  message: string;
}

/**
 * What the audit event records of an error: the RFC 8693 code and description (never a token; no
 * error message echoes one). undefined for a rate-limit refusal (429), which the limiter audits once
 * per window rather than once per request, so a flood cannot fill the log.
 */
export function asRefusal(err: unknown): Refusal | undefined {
  if (err instanceof ExchangeError) return { code: err.code, message: err.message };
  const e = err as { status?: number; statusCode?: number; error?: string; error_description?: string; message?: string } | undefined;
  const status = e?.statusCode ?? e?.status;
  if (status === 429) return undefined;
  if (status && status < 500 && e?.error) return { code: e.error, message: e.error_description ?? e.error };
  return { code: 'server_error', message: 'the exchange failed on the server' };
}

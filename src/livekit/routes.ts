// LiveKit conveniences. POST /livekit/connection-details is a drop-in for livekit-client's
// `TokenSource.endpoint`: a bearer access token (or an anonymous guest, when LIVEKIT_GUESTS=true)
// in, `{serverUrl, roomName, participantName, participantToken}` out. The same policy as the
// token-exchange grant decides the room and grant; when agents are dispatched, each registered agent
// gets a short-lived delegation token (may_act = its client id) in the participant attributes, which
// it exchanges with its own credentials for an MCP token for exactly this user.
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import { z } from 'zod';
import type { Deps } from '../app.ts';
import { HttpError, InvalidRequest, InvalidToken, NotFound } from '../http/errors.ts';
import { readJson } from '../http/body.ts';
import { ExchangeError, toHttpError } from '../exchange/errors.ts';
import { lazyKeyRing } from '../exchange/index.ts';
import { noRateLimit, type ExchangeRateLimit } from '../exchange/grant.ts';
import {
  checkAttributes, decideRoom, DELEGATION_ATTRIBUTE_PREFIX, DEVICE_ID, guestParticipant, livekitSettings, mintLivekitToken,
  userParticipant, type LivekitDecision, type Participant,
} from '../exchange/livekit.ts';
import type { UserFacts } from '../exchange/policy.ts';
import { assertBoundToGatehouse, assertNotRevoked, lineageOf, mintAccessToken, originLifetimeLeft, verifyIssuedToken, type KeyRing, type VerifiedToken } from '../exchange/tokens.ts';
import { clientConsentFor } from '../exchange/consent.ts';
import { decideScope, ScopeRefused } from '../authz/scope-rule.ts';
import { originTtl } from '../revocation/ttl.ts';
import { createRoomTokens } from './room-tokens.ts';
import type { Clients } from '../oidc/clients.ts';

type LivekitDeps = Pick<Deps, 'config' | 'db' | 'audit' | 'resources' | 'revocations' | 'keys' | 'policy' | 'livekitOptions'> & { provider: () => Provider; clients: Pick<Clients, 'findMetadata'> };

/** The origins of a client's registered redirect URIs: where its pages run. */
function redirectOrigins(metadata: Record<string, unknown> | undefined): string[] {
  const uris = Array.isArray(metadata?.redirect_uris) ? metadata.redirect_uris as unknown[] : [];
  return uris.flatMap((u) => {
    try {
      const o = new URL(String(u)).origin;
      return o === 'null' ? [] : [o];
    } catch {
      return [];
    }
  });
}

/** livekit-client's TokenSource request body (snake_case, as the SDK sends it). */
/** Names are one line of text: no control characters (tab and newline included). */
const name = (max: number) => z.string().max(max).regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');
const connectionDetailsBody = z.object({
  room_name: name(1024).optional(),
  participant_name: name(128).optional(),
  // Identity comes from the user (or is generated for a guest), never from the request; accepted and ignored.
  participant_identity: z.string().max(1024).optional(),
  participant_metadata: z.string().max(16 * 1024).optional(),
  participant_attributes: z.record(z.string(), z.string()).optional(),
  // One identity per device (user_<sub>_<device>), so a second device does not disconnect the first.
  device_id: z.string().regex(DEVICE_ID, 'letters, digits and - (1 to 64)').optional(),
  room_config: z.object({
    agents: z.array(z.object({ agent_name: name(256).min(1), metadata: z.string().max(16 * 1024).optional() })).max(8).optional(),
  }).optional(),
});

export function createLivekitRouter(deps: LivekitDeps, opts: { rateLimit?: ExchangeRateLimit; guestRateLimit?: ExchangeRateLimit } = {}): Router {
  const router = new Router({ prefix: '/livekit' });
  const { policy } = deps;
  const roomTokens = createRoomTokens(deps.db, { keepSeconds: originTtl(deps.config) });
  const { livekitOptions } = deps;
  const settings = livekitSettings(deps.config);
  const rateLimit = opts.rateLimit ?? noRateLimit;
  const guestRateLimit = opts.guestRateLimit ?? noRateLimit;
  const issuer = deps.config.ISSUER;

  // The key ring follows the provider, which app.ts rebuilds when signing keys change.
  let keysFor: { provider: Provider; ring: () => Promise<KeyRing> } | undefined;
  const keyRing = (provider: Provider) => {
    if (keysFor?.provider !== provider) keysFor = { provider, ring: lazyKeyRing(deps) };
    return keysFor.ring();
  };

  async function authenticateBearer(ctx: Context): Promise<{ token: VerifiedToken; user: UserFacts; lifetimeLeft: number } | undefined> {
    const header = ctx.get('authorization');
    if (!header) return undefined;
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(header);
    if (!m) throw new InvalidToken('Authorization must be "Bearer <access token>"', { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    const provider = deps.provider();
    let token: VerifiedToken;
    let lifetimeLeft: number;
    try {
      token = await verifyIssuedToken(m[1], 'access token', { provider, issuer, keys: await keyRing(provider) });
      // Audience binding: a token issued for an MCP server must not let that server join the user's rooms.
      assertBoundToGatehouse(token, 'access token', issuer);
      await assertNotRevoked(token, 'access token', deps.revocations);
      // What it mints never outlives the bearer token or the grant behind it.
      lifetimeLeft = await originLifetimeLeft(provider, token);
    } catch (err) {
      if (err instanceof ExchangeError && err.code === 'invalid_request') {
        throw new InvalidToken(err.message, { 'WWW-Authenticate': `Bearer error="invalid_token", error_description="${err.message}"` });
      }
      throw err;
    }
    // A delegation token (may_act) or an agent's delegated token (act) must not let anyone join as the user.
    if (!token.user || token.mayAct || token.act) throw new InvalidToken("a user's own access token is required", { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    const user = await policy.user(token.user);
    if (!user?.active) throw new InvalidToken('the user is unknown or disabled', { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
    const clientPolicy = await policy.clientPolicy(token.clientId);
    if (!clientPolicy?.livekit) throw new HttpError(403, 'unauthorized_client', 'the client this token was issued to may not obtain LiveKit tokens');
    return { token, user, lifetimeLeft };
  }

  // CORS, as /token allows it (oidc-provider's clientBasedCORS): a browser app may call
  // connection-details from the origin of one of its client's redirect URIs (or CORS_ORIGINS), so
  // livekit-client's TokenSource works without extra configuration. A preflight carries no token:
  // it is allowed for the origins of every LiveKit client; the request itself only for its own client's.
  async function livekitClientOrigins(): Promise<Set<string>> {
    const ids = (await policy.listClientPolicies()).filter((c) => c.livekit).map((c) => c.clientId);
    const all = await Promise.all(ids.map(async (id) => redirectOrigins(await deps.clients.findMetadata(id))));
    return new Set(all.flat());
  }
  async function allowOrigin(ctx: Context, origins: () => Promise<Set<string> | string[]>): Promise<boolean> {
    const origin = ctx.get('origin');
    ctx.vary('Origin');
    if (!origin) return false;
    const ok = deps.config.CORS_ORIGINS.includes(origin) || [...await origins()].includes(origin);
    if (ok) ctx.set('Access-Control-Allow-Origin', origin);
    return ok;
  }

  router.options('/connection-details', async function connectionDetailsPreflight(ctx) {
    if (await allowOrigin(ctx, livekitClientOrigins)) {
      ctx.set('Access-Control-Allow-Methods', 'POST');
      ctx.set('Access-Control-Allow-Headers', 'authorization, content-type');
      ctx.set('Access-Control-Max-Age', '600');
    }
    // Without the headers above the browser refuses the request itself.
    ctx.status = 204;
  });

  /** One delegation token per dispatched agent client: may_act = that agent, audience = Gatehouse. */
  async function delegationAttributes(decision: LivekitDecision, bearer: { token: VerifiedToken; user: UserFacts; lifetimeLeft: number }) {
    const attrs: Record<string, string> = {};
    for (const agent of decision.agents) {
      const c = agent.client;
      if (!c) continue;
      // The ceiling of what the agent could ever get for this user: the one scope rule for each of
      // its resources, asking for all the agent's policy allows, with the consent of the user's client.
      const granted = new Set<string>();
      for (const uri of c.resources) {
        const resource = await deps.resources.findResource(uri);
        if (!resource) continue;
        try {
          for (const s of decideScope({
            resource,
            requested: c.scopes ?? resource.scopes,
            principal: { kind: 'user', permissions: bearer.user.permissions },
            consent: await clientConsentFor({ provider: deps.provider(), policy }, bearer.token, resource.uri),
          })) granted.add(s);
        } catch (err) {
          if (!(err instanceof ScopeRefused)) throw err;
        }
      }
      if (granted.size === 0) continue;
      const minted = await mintAccessToken(await keyRing(deps.provider()), {
        issuer,
        audience: issuer,
        sub: bearer.user.id,
        clientId: bearer.token.clientId,
        scope: [...granted],
        ttl: Math.min(deps.config.LIVEKIT_DELEGATION_TTL, bearer.lifetimeLeft),
        gid: bearer.token.gid,
        sid: bearer.token.sid,
        // Issue 7: the user's sign-in strength travels on, so an MFA-only resource takes the agent's exchange.
        acr: bearer.token.acr,
        amr: bearer.token.amr,
        mayAct: { sub: c.clientId },
        ojti: lineageOf(bearer.token),
      });
      attrs[`${DELEGATION_ATTRIBUTE_PREFIX}${agent.agentName}`] = minted.token;
    }
    return attrs;
  }

  router.post('/connection-details', async function connectionDetails(ctx) {
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Pragma', 'no-cache');
    if (!settings) throw new NotFound('LiveKit is not configured on this server');
    const audit: { subject?: string; clientId?: string; room?: string; agents?: string[]; guest?: boolean } = {};
    let raw: unknown;
    try {
      raw = await readJson(ctx);
      const parsed = connectionDetailsBody.safeParse(raw ?? {});
      if (!parsed.success) throw new InvalidRequest(parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
      const body = parsed.data;
      const bearer = await authenticateBearer(ctx);
      if (!bearer && !deps.config.LIVEKIT_GUESTS) {
        throw new HttpError(401, 'invalid_token', 'a bearer access token is required', { 'WWW-Authenticate': 'Bearer realm="gatehouse"' });
      }
      audit.guest = !bearer;
      audit.subject = bearer?.user.id;
      audit.clientId = bearer?.token.clientId;
      if (ctx.get('origin')) {
        await allowOrigin(ctx, async () => (bearer ? redirectOrigins(await deps.clients.findMetadata(bearer.token.clientId)) : livekitClientOrigins()));
      }
      if (bearer) await rateLimit.consume({ clientId: bearer.token.clientId, subject: bearer.user.id, ip: ctx.ip });
      else await guestRateLimit.consume({ clientId: 'guest', ip: ctx.ip });

      const participant: Participant = bearer ? userParticipant(settings, bearer.user, body.participant_name, bearer.token.acr, body.device_id) : guestParticipant(body.participant_name);
      const agents = (body.room_config?.agents ?? []).map((a) => ({ agentName: a.agent_name, metadata: a.metadata }));
      audit.agents = agents.map((a) => a.agentName);
      const options = await livekitOptions.resolve(bearer?.token.clientId, bearer ? bearer.user.roles : ['guest']);
      const decision = await decideRoom(policy, settings, participant, { room: body.room_name || undefined, agents, options });
      audit.room = decision.room;
      const attributes = {
        ...checkAttributes(body.participant_attributes),
        ...(bearer ? await delegationAttributes(decision, bearer) : {}),
      };
      const { token } = await mintLivekitToken(settings, participant, decision, {
        participantMetadata: body.participant_metadata, attributes,
        ...(bearer ? { ttl: bearer.lifetimeLeft } : {}),
      }, { store: roomTokens, clientId: bearer?.token.clientId, gid: bearer?.token.gid, sid: bearer?.token.sid });
      void deps.audit.record({
        type: 'livekit.connection_details', subject: audit.subject ?? null, clientId: audit.clientId ?? null, ip: ctx.ip,
        requestId: ctx.state.requestId, details: { room: decision.room, guest: audit.guest, agents: audit.agents, identity: participant.identity },
      });
      ctx.body = { serverUrl: settings.url, roomName: decision.room, participantName: participant.name, participantToken: token };
    } catch (err) {
      const e = err instanceof ExchangeError ? toHttpError(err) : err;
      // A refusal the app's page can read (401 → sign in again), from the origins of LiveKit clients.
      if (ctx.get('origin') && !ctx.response.get('Access-Control-Allow-Origin')) await allowOrigin(ctx, livekitClientOrigins).catch(() => false);
      if (e instanceof HttpError) {
        void deps.audit.record({
          type: 'livekit.connection_details', outcome: 'failure', subject: audit.subject ?? null, clientId: audit.clientId ?? null, ip: ctx.ip,
          requestId: ctx.state.requestId, details: { room: audit.room ?? (raw as { room_name?: unknown } | undefined)?.room_name ?? null, guest: audit.guest ?? null, agents: audit.agents ?? null, error: e.error, reason: e.description },
        });
      }
      throw e;
    }
  });

  return router;
}

// LiveKit room tokens: identity, room choice and video grant come from the user and policy, never
// from the request. Shared by the token-exchange grant and POST /livekit/connection-details.
import crypto from 'node:crypto';
import { livekitSdk } from '../livekit/sdk.ts';
import type { ClaimGrants, VideoGrant } from 'livekit-server-sdk';
import { signHs256Jwt } from '../crypto/jws.ts';
import type { Config } from '../config/index.ts';
import { ACR_MFA } from '../mfa/policy.ts';
import { insufficientUserAuthentication, invalidRequest, invalidTarget } from './errors.ts';
import type { LivekitOptions } from './livekit-options.ts';
import { grantForRoom, roomNameProblem, type ClientPolicy, type LivekitGrant, type PolicyStore, type UserFacts } from './policy.ts';

export const LIVEKIT_TOKEN_TYPE = 'urn:gatehouse:token-type:livekit';
/** Participant attribute prefix for per-agent delegation tokens: `gatehouse.delegation.<agent_name>`. */
export const DELEGATION_ATTRIBUTE_PREFIX = 'gatehouse.delegation.';
/**
 * Participant attribute naming the record of the room token (issue 19.4): webhooks carry the
 * participant's attributes, so Gatehouse can tell its own participants, and whose they are, when
 * LiveKit reports a join. Opaque and random: everyone in the room sees it, and it grants nothing.
 */
export const ROOM_TOKEN_ATTRIBUTE = 'gatehouse.room_token';
const RESERVED_ATTRIBUTE_PREFIX = 'gatehouse.';

export interface LivekitSettings {
  url: string;
  apiKey: string;
  apiSecret: string;
  identityPrefix: string;
  roomPrefix?: string;
  ttl: number;
}

/** undefined when LiveKit is not configured (LIVEKIT_URL/API_KEY/API_SECRET unset). */
export function livekitSettings(config: Config): LivekitSettings | undefined {
  if (!config.LIVEKIT_URL || !config.LIVEKIT_API_KEY || !config.LIVEKIT_API_SECRET) return undefined;
  return {
    url: config.LIVEKIT_URL,
    apiKey: config.LIVEKIT_API_KEY,
    apiSecret: config.LIVEKIT_API_SECRET,
    identityPrefix: config.LIVEKIT_IDENTITY_PREFIX,
    roomPrefix: config.LIVEKIT_ROOM_PREFIX,
    ttl: config.LIVEKIT_TOKEN_TTL,
  };
}

/**
 * Who joins: a user (bearer or subject token) or an anonymous guest. `person` is the user's identity
 * (`user_<sub>`), which room policies (`{identity}`) and generated room names use; `identity` is the
 * participant's, `user_<sub>_<device>` when the request names a device.
 */
export type Participant =
  | { kind: 'user'; user: UserFacts; identity: string; person: string; name: string; /** the sign-in behind the token (issue 7) */ acr?: string }
  | { kind: 'guest'; identity: string; person: string; name: string };

/**
 * A device id keeps one person's phone and laptop apart: LiveKit lets one identity into a room
 * once, and a second join with it disconnects the first. Letters, digits and `-`: no `_`, so the
 * identity still reads as prefix, user id, device.
 */
export const DEVICE_ID = /^[A-Za-z0-9-]{1,64}$/;

export function userParticipant(s: LivekitSettings, user: UserFacts, requestedName?: string, acr?: string, deviceId?: string): Participant {
  if (deviceId !== undefined && !DEVICE_ID.test(deviceId)) throw invalidRequest('device_id: 1 to 64 letters, digits and -');
  const person = `${s.identityPrefix}${user.id}`;
  return {
    kind: 'user', user, person, identity: deviceId ? `${person}_${deviceId}` : person,
    // The profile's name (the `name` claim, editable on the account page) first.
    name: user.name || requestedName || user.email, ...(acr ? { acr } : {}),
  };
}

export function guestParticipant(requestedName?: string): Participant {
  const id = crypto.randomBytes(9).toString('base64url').replace(/[-_]/g, 'x');
  return { kind: 'guest', identity: `guest_${id}`, person: `guest_${id}`, name: requestedName?.trim().slice(0, 128) || 'Guest' };
}

/** `<prefix>_<epoch>_<random>`; the prefix defaults to the identity so the room is the participant's own. */
export function generateRoomName(s: LivekitSettings, p: Participant): string {
  return `${s.roomPrefix ?? p.person}_${Math.floor(Date.now() / 1000)}_${crypto.randomBytes(6).toString('hex')}`;
}

export interface RoomRequest {
  room?: string;
  participantName?: string;
  participantMetadata?: string;
  participantAttributes?: Record<string, string>;
  agents: { agentName: string; metadata?: string }[];
  /** The client's and roles' LiveKit options (./livekit-options.ts). */
  options?: LivekitOptions;
}

export interface LivekitDecision {
  room: string;
  grant: LivekitGrant;
  agents: { agentName: string; metadata?: string; client?: ClientPolicy }[];
  /** Carried in the token's roomConfig. */
  roomConfig: Pick<LivekitOptions, 'maxParticipants' | 'emptyTimeout' | 'departureTimeout'>;
}

/**
 * Decide room, grant and agent dispatch from policy: the room must be valid and admitted by one of
 * the participant's role policies; every dispatched agent must be a registered agent client.
 */
export async function decideRoom(policy: PolicyStore, s: LivekitSettings, p: Participant, req: RoomRequest): Promise<LivekitDecision> {
  const { roomPrefix, ...roomConfig } = req.options ?? {};
  // A client's or role's prefix: a requested name without it gets it, so apps may send short names.
  const named = req.room ?? generateRoomName(s, p);
  const room = roomPrefix && !named.startsWith(roomPrefix) ? `${roomPrefix}${named}` : named;
  const problem = roomNameProblem(room);
  if (problem) throw invalidTarget(problem);
  const roles = p.kind === 'user' ? p.user.roles : ['guest'];
  const policies = await policy.rolePolicies(roles);
  const vars = { identity: p.person, sub: p.kind === 'user' ? p.user.id : p.identity };
  // Issue 7: a role policy with requireMfa counts only for a user signed in with a second factor.
  const mfa = p.kind === 'user' && p.acr === ACR_MFA;
  const grant = grantForRoom(policies.filter((r) => mfa || !r.requireMfa), room, vars);
  if (!grant && p.kind === 'user' && grantForRoom(policies, room, vars)) {
    // Only MFA-requiring roles admit the room: signing in again with a second factor would help (RFC 9470).
    throw insufficientUserAuthentication(`${req.room ? `room "${room}"` : 'a LiveKit room'} requires multi-factor authentication; sign in again with acr_values=${ACR_MFA}`);
  }
  if (!grant) throw invalidTarget(req.room ? `room "${room}" is outside the rooms this user may join` : 'this user may not join any LiveKit room');
  // Guests never publish data (DESIGN.md / issue 3).
  if (p.kind === 'guest') grant.canPublishData = false;

  const names = [...new Set(req.agents.map((a) => a.agentName))];
  const clients = await policy.clientsByAgentName(names);
  for (const n of names) {
    if (!clients.some((c) => c.agentName === n)) throw invalidTarget(`agent "${n}" is not a registered agent`);
  }
  return { room, grant, agents: req.agents.map((a) => ({ ...a, client: clients.find((c) => c.agentName === a.agentName) })), roomConfig };
}

export function checkAttributes(attrs: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (typeof v !== 'string') throw invalidRequest(`participant attribute "${k}" must be a string`);
    if (k.startsWith(RESERVED_ATTRIBUTE_PREFIX)) throw invalidRequest(`participant attributes starting with "${RESERVED_ATTRIBUTE_PREFIX}" are reserved`);
    out[k] = v;
  }
  return out;
}

/** What a minted room token was derived from; the webhook check looks it up by id (src/livekit/rejoin.ts). */
export interface IssuedRoomToken {
  tokenId: string;
  identity: string;
  room: string;
  userId?: string;
  clientId?: string;
  gid?: string;
  sid?: string;
}
/** The storage the minting declares (STYLE.md §5); src/livekit/room-tokens.ts satisfies it. */
export interface IssuedRoomTokens {
  record(t: IssuedRoomToken): Promise<void>;
}

/** The LiveKit JWT (HS256, iss = API key, sub = identity), its claims built with livekit-server-sdk. */
export async function mintLivekitToken(
  s: LivekitSettings,
  p: Participant,
  d: LivekitDecision,
  /** ttl: what is left of the token it was derived from, when shorter than LIVEKIT_TOKEN_TTL. */
  extra: { participantMetadata?: string; attributes?: Record<string, string>; ttl?: number },
  /** Where the token is recorded, and the origin it came from (client, grant, session). */
  issued: { store: IssuedRoomTokens; clientId?: string; gid?: string; sid?: string },
): Promise<{ token: string; expiresIn: number }> {
  const { RoomAgentDispatch, RoomConfiguration, claimsToJwtPayload } = await livekitSdk();
  const ttl = Math.min(s.ttl, extra.ttl ?? s.ttl);
  const tokenId = crypto.randomBytes(16).toString('base64url');
  const metadata: Record<string, unknown> = p.kind === 'user'
    ? { user_id: p.user.id, email: p.user.email, roles: p.user.roles, permissions: p.user.permissions, session_type: 'user' }
    : { user_id: null, email: null, roles: ['guest'], permissions: [], session_type: 'guest' };
  if (p.kind === 'user' && p.acr) metadata.acr = p.acr;
  // The application's own metadata rides along under `app`, never over Gatehouse's fields.
  if (extra.participantMetadata) metadata.app = extra.participantMetadata;
  const video: VideoGrant = {
    roomJoin: true,
    room: d.room,
    canPublish: d.grant.canPublish,
    canSubscribe: d.grant.canSubscribe,
    canPublishData: d.grant.canPublishData,
  };
  if (d.grant.roomAdmin) video.roomAdmin = true;
  // What the SDK's AccessToken would hold (its constructor options and addGrant), laid out by the
  // SDK's own claimsToJwtPayload; iss, exp, nbf and sub as its toJwt adds them. Signed here, not by
  // toJwt: that goes through jose and WebCrypto, about 40 µs of CPU a token against 5 (docs/performance.md).
  const grants: ClaimGrants = {
    name: p.name,
    metadata: JSON.stringify(metadata),
    attributes: Object.assign({}, extra.attributes, { [ROOM_TOKEN_ATTRIBUTE]: tokenId }),
    video,
  };
  const rc = d.roomConfig ?? {};
  if (d.agents.length || Object.keys(rc).length) {
    // Applied by LiveKit when this join creates the room (a room that exists keeps its own).
    grants.roomConfig = new RoomConfiguration({
      agents: d.agents.map((a) => new RoomAgentDispatch({ agentName: a.agentName, metadata: a.metadata ?? '' })),
      ...(rc.maxParticipants !== undefined ? { maxParticipants: rc.maxParticipants } : {}),
      ...(rc.emptyTimeout !== undefined ? { emptyTimeout: rc.emptyTimeout } : {}),
      ...(rc.departureTimeout !== undefined ? { departureTimeout: rc.departureTimeout } : {}),
    });
  }
  const now = Math.floor(Date.now() / 1000);
  const claims = claimsToJwtPayload(grants) as Record<string, unknown>;
  claims.iss = s.apiKey;
  claims.exp = now + ttl;
  claims.nbf = now;
  claims.sub = p.identity;
  const token = signHs256Jwt(s.apiSecret, claims);
  // Recorded before it is handed out: a join can never come before its record.
  await issued.store.record({
    tokenId, identity: p.identity, room: d.room, ...(p.kind === 'user' ? { userId: p.user.id } : {}),
    clientId: issued.clientId, gid: issued.gid, sid: issued.sid,
  });
  return { token, expiresIn: ttl };
}

// Issue 19.4: no way back into a room after revocation. Open-source LiveKit checks a token only when
// a participant connects, and renews a connected participant's token by itself, so a participant
// removed at revocation (./rooms.ts) can reconnect with what it holds. LiveKit tells us of every
// join and every published track (webhooks); each is checked here, and a participant Gatehouse
// should not let in is removed again at once (the webhook answers after the first removal attempt).
//
// The checks, top-down:
//   participantKindExempt  — LiveKit's own agents and egress, in Gatehouse-only rooms, stay
//   findIssuedToken        — the participant attribute `gatehouse.room_token` names our record,
//                            for this identity and this room; else it is not a Gatehouse token
//   checkOriginNotRevoked  — the record's user, session and grant against the revocation lists;
//                            when the lists cannot answer, remove (fail closed) and say so
import type { ParticipantInfo } from 'livekit-server-sdk';
import type { Config } from '../config/index.ts';
import { ROOM_TOKEN_ATTRIBUTE } from '../exchange/livekit.ts';
import { patternToRegExp } from '../exchange/policy.ts';
import { RevocationUnavailableError, type RevocationStore } from '../revocation/store.ts';
import { userIdOfIdentity, type ParticipantRemover } from './rooms.ts';
import type { Queryable } from '../store/db.ts';
import { originTtl } from '../revocation/ttl.ts';
import { createRoomTokens, type RoomTokenRecord } from './room-tokens.ts';

export interface RejoinGuardDeps {
  config: Config;
  db: Queryable;
  revocations: Pick<RevocationStore, 'check'>;
  remover: ParticipantRemover;
}

/** Why a participant goes: written on its room session and in the audit event. */
export interface Verdict {
  reason: 'revoked_user' | 'revoked_session' | 'revoked_grant' | 'not_issued' | 'revocation_unavailable';
  subject: string | null;
}

/** ParticipantInfo.Kind (livekit protocol) by the names LIVEKIT_GATEHOUSE_ONLY_EXEMPT uses. */
const KINDS: Record<string, number> = { standard: 0, ingress: 1, egress: 2, sip: 3, agent: 4, connector: 7 };

/** Is `room` a Gatehouse-only room (LIVEKIT_GATEHOUSE_ONLY: `*`, or globs)? */
export function gatehouseOnly(config: Pick<Config, 'LIVEKIT_GATEHOUSE_ONLY'>, room: string): boolean {
  return config.LIVEKIT_GATEHOUSE_ONLY.some((g) => patternToRegExp(g, { identity: '', sub: '' }).test(room));
}

export function createRejoinGuard(deps: RejoinGuardDeps) {
  const { config } = deps;
  const roomTokens = createRoomTokens(deps.db, { keepSeconds: originTtl(config) });
  const exemptKinds = new Set(config.LIVEKIT_GATEHOUSE_ONLY_EXEMPT.map((k) => KINDS[k]));

  function participantKindExempt(p: ParticipantInfo): boolean {
    return exemptKinds.has(Number(p.kind ?? 0));
  }

  async function findIssuedToken(room: string, p: ParticipantInfo) {
    const id = p.attributes?.[ROOM_TOKEN_ATTRIBUTE];
    if (!id || id.length > 64) return undefined;
    const rec = await roomTokens.find(id);
    // Someone else's attribute copied into another token, or another room: not ours.
    return rec && rec.identity === p.identity && rec.room === room ? rec : undefined;
  }

  async function checkOriginNotRevoked(facts: { sub: string; gid?: string; sid?: string; iat?: number }): Promise<Verdict | undefined> {
    try {
      const kind = await deps.revocations.check(facts);
      return kind === 'user' || kind === 'session' || kind === 'grant' ? { reason: `revoked_${kind}`, subject: facts.sub } : undefined;
    } catch (err) {
      // DESIGN.md § Revocation: a decision that depends on revocation fails closed.
      if (err instanceof RevocationUnavailableError) return { reason: 'revocation_unavailable', subject: facts.sub };
      throw err;
    }
  }

  /** undefined: the participant may stay. */
  async function decide(room: string, p: ParticipantInfo, rec: RoomTokenRecord | undefined): Promise<Verdict | undefined> {
    if (rec) return rec.userId ? checkOriginNotRevoked({ sub: rec.userId, gid: rec.gid, sid: rec.sid, iat: Math.floor(rec.issuedAt.getTime() / 1000) }) : undefined;
    // Not a token Gatehouse minted, under a Gatehouse user's identity: any revocation of that user
    // in force (no issue time to compare: nothing of ours was issued to it) takes it out.
    const userId = userIdOfIdentity(config, p.identity);
    const revoked = userId ? await checkOriginNotRevoked({ sub: userId }) : undefined;
    if (revoked?.reason === 'revoked_user' || revoked?.reason === 'revocation_unavailable') return revoked;
    if (gatehouseOnly(config, room) && !participantKindExempt(p)) return { reason: 'not_issued', subject: userId };
    return undefined;
  }

  return {
    /** The record of the participant's room token, when it is one Gatehouse minted for this identity and room. */
    identify: findIssuedToken,
    /** participant_joined / track_published: remove the participant when it should not be there. */
    async checkParticipant(trigger: string, room: string, p: ParticipantInfo, rec: RoomTokenRecord | undefined): Promise<Verdict | undefined> {
      const verdict = await decide(room, p, rec);
      if (verdict) {
        await deps.remover.remove({
          room, identity: p.identity, subject: verdict.subject, participantSid: p.sid || undefined, reason: verdict.reason,
          details: { trigger, reason: verdict.reason },
        });
      }
      return verdict;
    },
  };
}
export type RejoinGuard = ReturnType<typeof createRejoinGuard>;

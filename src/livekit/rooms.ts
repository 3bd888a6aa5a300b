// LiveKit room sessions (who was in which room, when, for how long) and participant removal.
// LiveKit checks a room token's expiry only when a participant connects, so revoking a user,
// session or grant also removes that user's live participants through RoomServiceClient
// (DESIGN.md § LiveKit conveniences). Removal never blocks the revocation: it runs after it,
// retries, and audits the outcome.
import Router from '@koa/router';
import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { RoomServiceClient } from 'livekit-server-sdk';
import { livekitSdk } from './sdk.ts';
import type { Config } from '../config/index.ts';
import type { Queryable } from '../store/db.ts';
import type { Kv } from '../store/kv.ts';
import type { Audit } from '../audit/index.ts';
import type { Logger } from '../http/log.ts';
import type { SigningKeys } from '../oidc/keys.ts';
import { InvalidToken, TemporarilyUnavailable } from '../http/errors.ts';
import { RevocationUnavailableError, type RevocationEvent, type RevocationService } from '../revocation/store.ts';
import { lazyKeyRing } from '../exchange/index.ts';
import { verifyIssuedToken, type KeyRing } from '../exchange/tokens.ts';
import { ExchangeError } from '../exchange/errors.ts';

export interface RoomSession {
  participantSid: string;
  roomName: string;
  roomSid: string | null;
  participantIdentity: string;
  userId: string | null;
  joinedAt: Date;
  leftAt: Date | null;
  durationSeconds: number | null;
  endReason: string | null;
  removedAt: Date | null;
  removalReason: string | null;
}

interface Row {
  participant_sid: string;
  room_name: string;
  room_sid: string | null;
  participant_identity: string;
  user_id: string | null;
  joined_at: Date;
  left_at: Date | null;
  duration_seconds: number | null;
  end_reason: string | null;
  removed_at: Date | null;
  removal_reason: string | null;
}

const toSession = (r: Row): RoomSession => ({
  participantSid: r.participant_sid,
  roomName: r.room_name,
  roomSid: r.room_sid,
  participantIdentity: r.participant_identity,
  userId: r.user_id,
  joinedAt: new Date(r.joined_at),
  leftAt: r.left_at ? new Date(r.left_at) : null,
  durationSeconds: r.duration_seconds,
  endReason: r.end_reason,
  removedAt: r.removed_at ? new Date(r.removed_at) : null,
  removalReason: r.removal_reason,
});

/** Room-session queries, named by intent (STYLE.md §5). Every write is idempotent: webhooks repeat. */
export function createRoomSessions(db: Queryable) {
  /**
   * A deleted account's room history goes with it; a session still open at deletion is kept until it
   * ends (participant removal reads it to take the user out of the room), then dropped here.
   */
  async function purgeDeletedUsers(where: string, params: unknown[]) {
    await db.query(
      `DELETE FROM room_sessions WHERE ${where} AND left_at IS NOT NULL AND user_id IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = room_sessions.user_id)`,
      params,
    );
  }

  return {
    async recordJoin(s: { participantSid: string; roomName: string; roomSid?: string; identity: string; userId: string | null; joinedAt: Date }) {
      await db.query(
        `INSERT INTO room_sessions (participant_sid, room_name, room_sid, participant_identity, user_id, joined_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (participant_sid) DO NOTHING`,
        [s.participantSid, s.roomName, s.roomSid ?? null, s.identity, s.userId, s.joinedAt],
      );
    },
    /** Closes the session (creating it when the join webhook was lost). */
    async recordLeave(s: { participantSid: string; roomName: string; roomSid?: string; identity: string; userId: string | null; joinedAt?: Date; leftAt: Date }) {
      await db.query(
        `INSERT INTO room_sessions (participant_sid, room_name, room_sid, participant_identity, user_id, joined_at, left_at, duration_seconds, end_reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, GREATEST(0, extract(epoch FROM $7::timestamptz - $6::timestamptz))::int, 'participant_left')
         ON CONFLICT (participant_sid) DO UPDATE SET
           left_at = EXCLUDED.left_at,
           duration_seconds = GREATEST(0, extract(epoch FROM EXCLUDED.left_at - room_sessions.joined_at))::int,
           end_reason = 'participant_left'
         WHERE room_sessions.left_at IS NULL`,
        [s.participantSid, s.roomName, s.roomSid ?? null, s.identity, s.userId, s.joinedAt ?? s.leftAt, s.leftAt],
      );
      await purgeDeletedUsers('participant_sid = $1', [s.participantSid]);
    },
    /** room_finished: every session still open in the room ends now. */
    async finishRoom(roomName: string, roomSid: string | undefined, at: Date): Promise<number> {
      const r = await db.query(
        `UPDATE room_sessions SET left_at = $3,
           duration_seconds = GREATEST(0, extract(epoch FROM $3::timestamptz - joined_at))::int, end_reason = 'room_finished'
         WHERE room_name = $1 AND left_at IS NULL AND ($2::text IS NULL OR room_sid IS NULL OR room_sid = $2)`,
        [roomName, roomSid ?? null, at],
      );
      await purgeDeletedUsers('room_name = $1', [roomName]);
      return r.rowCount;
    },
    /** Account deletion: the ended sessions go now; open ones when they end (purgeDeletedUsers). */
    async deleteEndedSessionsOfUser(userId: string): Promise<void> {
      await db.query('DELETE FROM room_sessions WHERE user_id = $1 AND left_at IS NOT NULL', [userId]);
    },
    /** Gatehouse removed the participant: the session says when and why (LiveKit then reports the leave). */
    async recordRemoval(t: { participantSid?: string; room: string; identity: string; reason: string }): Promise<void> {
      await db.query(
        `UPDATE room_sessions SET removed_at = now(), removal_reason = $4
          WHERE ($1::text IS NOT NULL AND participant_sid = $1)
             OR ($1::text IS NULL AND room_name = $2 AND participant_identity = $3 AND left_at IS NULL)`,
        [t.participantSid ?? null, t.room, t.identity, t.reason],
      );
    },
    async openSessionsOfUser(userId: string): Promise<RoomSession[]> {
      const { rows } = await db.query<Row>('SELECT * FROM room_sessions WHERE user_id = $1 AND left_at IS NULL', [userId]);
      return rows.map(toSession);
    },
    async listForUser(userId: string, opts: { limit?: number } = {}): Promise<RoomSession[]> {
      const limit = Math.min(Math.max(Math.trunc(opts.limit ?? 50) || 50, 1), 500);
      const { rows } = await db.query<Row>('SELECT * FROM room_sessions WHERE user_id = $1 ORDER BY joined_at DESC LIMIT $2', [userId, limit]);
      return rows.map(toSession);
    },
  };
}
export type RoomSessions = ReturnType<typeof createRoomSessions>;

/** `<LIVEKIT_IDENTITY_PREFIX><user id>` → user id; guests and agents → null. */
export function userIdOfIdentity(config: Pick<Config, 'LIVEKIT_IDENTITY_PREFIX'>, identity: string): string | null {
  const prefix = config.LIVEKIT_IDENTITY_PREFIX;
  if (!identity.startsWith(prefix) || identity.length === prefix.length) return null;
  return identity.slice(prefix.length);
}

/** What one removal is about: the participant, the user it belongs to, and why (audited as is). */
export interface RemovalTarget {
  room: string;
  identity: string;
  subject: string | null;
  /** The room session to mark removed (else: the identity's open sessions in the room). */
  participantSid?: string;
  /** Written on the room session row: revoked_user, revoked_session, revoked_grant, not_issued, revocation_unavailable. */
  reason: string;
  /** Audit details beside room and identity (never a token). */
  details: Record<string, unknown>;
}

export interface ParticipantRemover {
  /**
   * Resolves once the first attempt has been answered (or after INLINE_WAIT_MS, when LiveKit is slow:
   * a webhook is answered in time either way); the attempt and its retries go on in the background.
   */
  remove(t: RemovalTarget): Promise<void>;
  stop(): void;
}

export interface ParticipantRemoverDeps {
  config: Config;
  rooms: RoomSessions;
  audit: Audit;
  log: Logger;
  /** Backoff between attempts (ms); tests shorten it. */
  retryDelaysMs?: number[];
}

/** How long remove() waits for LiveKit's first answer before letting its caller go on. */
const INLINE_WAIT_MS = 2000;

/** RoomServiceClient.removeParticipant with retries, audit and the room-session record; undefined without LiveKit. */
export function createParticipantRemover(deps: ParticipantRemoverDeps): ParticipantRemover | undefined {
  const { config, log } = deps;
  if (!config.LIVEKIT_URL || !config.LIVEKIT_API_KEY || !config.LIVEKIT_API_SECRET) return undefined;
  const { LIVEKIT_URL: url, LIVEKIT_API_KEY: key, LIVEKIT_API_SECRET: secret } = config;
  let client: Promise<RoomServiceClient> | undefined;
  const delays = deps.retryDelaysMs ?? [500, 2000, 5000];
  let stopped = false;

  const audit = (t: RemovalTarget, extra: Record<string, unknown>, outcome?: 'failure') => void deps.audit.record({
    type: 'livekit.participant.remove', ...(outcome ? { outcome } : {}), actor: 'system', subject: t.subject,
    details: { room: t.room, identity: t.identity, ...t.details, ...extra },
  });

  /** One attempt: true when done (removed, or already gone), false to retry. */
  async function attempt(t: RemovalTarget, n: number): Promise<unknown> {
    try {
      client ??= livekitSdk().then((sdk) => new sdk.RoomServiceClient(url, key, secret, { requestTimeout: 5, failover: false } as never));
      await (await client).removeParticipant(t.room, t.identity);
      await deps.rooms.recordRemoval(t).catch((err) => log.warn({ err, room: t.room }, 'recording a participant removal failed'));
      audit(t, { attempts: n });
      return undefined;
    } catch (err) {
      // not_found: already gone (left, or the room ended) — nothing to retry.
      if ((err as { code?: string }).code === 'not_found' || (err as { status?: number }).status === 404) {
        audit(t, { result: 'not_found' });
        return undefined;
      }
      return err ?? new Error('removal failed');
    }
  }

  async function retry(t: RemovalTarget, firstError: unknown) {
    let lastError = firstError;
    for (let i = 0; i < delays.length && !stopped; i++) {
      await new Promise((r) => setTimeout(r, delays[i]).unref());
      if (stopped) break;
      lastError = await attempt(t, i + 2);
      if (lastError === undefined) return;
    }
    log.warn({ err: lastError, room: t.room }, 'removing a participant from LiveKit failed');
    audit(t, { error: (lastError as Error)?.message }, 'failure');
  }

  return {
    async remove(t) {
      const first = attempt(t, 1).then((err) => {
        if (err !== undefined) void retry(t, err);
      });
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([first, new Promise<void>((r) => { timer = setTimeout(r, INLINE_WAIT_MS).unref(); })]);
      clearTimeout(timer);
    },
    stop() {
      stopped = true;
    },
  };
}

export interface ParticipantRemovalDeps extends ParticipantRemoverDeps {
  revocations: RevocationService;
  kv: Kv;
}

const REMOVING_KINDS = new Set(['user', 'session', 'grant']);

/**
 * On every user/session/grant revocation (from this node or another), remove the user's live
 * participants. One node does it: the first to take a short lock in the shared store.
 */
export function startParticipantRemoval(deps: ParticipantRemovalDeps, remover = createParticipantRemover(deps)): () => void {
  const { log } = deps;
  if (!remover) return () => {};

  async function takeLock(e: RevocationEvent): Promise<boolean> {
    try {
      return (await deps.kv.incr(`livekit:removal:${e.eventId}`, 300)) === 1;
    } catch {
      // The shared store is down: the node that revoked does it, the others cannot coordinate.
      return e.local;
    }
  }

  async function onRevoked(e: RevocationEvent) {
    if (!REVOKING(e) || !(await takeLock(e))) return;
    const open = await deps.rooms.openSessionsOfUser(e.subject!);
    await Promise.all(open.map((s) => remover!.remove({
      room: s.roomName, identity: s.participantIdentity, subject: e.subject ?? null, participantSid: s.participantSid,
      reason: `revoked_${e.kind}`, details: { revocation: e.kind, reason: e.reason },
    })));
  }

  const unsubscribe = deps.revocations.onRevoked((e) => {
    onRevoked(e).catch((err) => log.warn({ err }, 'participant removal failed'));
  });
  return () => {
    remover.stop();
    unsubscribe();
  };
}

const REVOKING = (e: RevocationEvent) => REMOVING_KINDS.has(e.kind) && Boolean(e.subject);

/** GET /livekit/sessions: the caller's own room sessions (bearer access token). */
export function createRoomSessionsRouter(deps: { config: Config; rooms: RoomSessions; revocations: RevocationService; keys: SigningKeys; provider: () => Provider }): Router {
  const router = new Router({ prefix: '/livekit' });
  let keysFor: { provider: Provider; ring: () => Promise<KeyRing> } | undefined;
  const keyRing = (provider: Provider) => {
    if (keysFor?.provider !== provider) keysFor = { provider, ring: lazyKeyRing(deps) };
    return keysFor.ring();
  };

  async function authenticateUser(ctx: Context): Promise<string> {
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(ctx.get('authorization'));
    const challenge = { 'WWW-Authenticate': 'Bearer error="invalid_token"' };
    if (!m) throw new InvalidToken('a bearer access token is required', { 'WWW-Authenticate': 'Bearer realm="gatehouse"' });
    const provider = deps.provider();
    try {
      const t = await verifyIssuedToken(m[1], 'access token', { provider, issuer: deps.config.ISSUER, keys: await keyRing(provider) });
      if (!t.user || t.act || t.mayAct) throw new InvalidToken("a user's own access token is required", challenge);
      if (await deps.revocations.check({ jti: t.jti, gid: t.gid, sid: t.sid, sub: t.user, iat: t.iat, ojti: t.ojti })) throw new InvalidToken('the access token has been revoked', challenge);
      return t.user;
    } catch (err) {
      if (err instanceof RevocationUnavailableError) throw new TemporarilyUnavailable('revocation status cannot be checked right now; try again', { 'Retry-After': '1' });
      if (err instanceof ExchangeError) throw new InvalidToken(err.message, challenge);
      throw err;
    }
  }

  router.get('/sessions', async function listMyRoomSessions(ctx) {
    ctx.set('Cache-Control', 'no-store');
    const userId = await authenticateUser(ctx);
    const sessions = await deps.rooms.listForUser(userId, { limit: Number(ctx.query.limit ?? 50) });
    ctx.body = {
      sessions: sessions.map((s) => ({
        room: s.roomName,
        participant_identity: s.participantIdentity,
        joined_at: s.joinedAt.toISOString(),
        left_at: s.leftAt?.toISOString() ?? null,
        duration_seconds: s.durationSeconds,
        end_reason: s.endReason,
        // Issue 19.4: Gatehouse took the participant out (revoked, or not a Gatehouse token).
        removed_at: s.removedAt?.toISOString() ?? null,
        removal_reason: s.removalReason,
      })),
    };
  });
  return router;
}

// The record of every LiveKit room token Gatehouse minted (migrations/012_livekit_room_tokens.sql):
// what the webhook-side check (./rejoin.ts) reads to tell whose participant it is and whether its
// user, session or grant has been revoked since.
import type { Queryable } from '../store/db.ts';
import type { IssuedRoomToken, IssuedRoomTokens } from '../exchange/livekit.ts';

interface Row {
  token_id: string;
  participant_identity: string;
  room_name: string;
  user_id: string | null;
  client_id: string | null;
  grant_id: string | null;
  session_id: string | null;
  issued_at: Date;
}

export interface RoomTokenRecord extends IssuedRoomToken {
  issuedAt: Date;
}

/** One sweep per this many records: the table stays bounded without a timer of its own. */
const SWEEP_EVERY = 200;

export function createRoomTokens(db: Queryable, opts: { keepSeconds: number }) {
  let sinceSweep = 0;
  /** Rows older than any revocation of their origin can live (originTtl) are of no more use. */
  async function sweep(): Promise<number> {
    const r = await db.query('DELETE FROM livekit_room_tokens WHERE issued_at < now() - make_interval(secs => $1)', [opts.keepSeconds]);
    return r.rowCount;
  }
  return {
    async record(t: IssuedRoomToken): Promise<void> {
      await db.query(
        `INSERT INTO livekit_room_tokens (token_id, participant_identity, room_name, user_id, client_id, grant_id, session_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [t.tokenId, t.identity, t.room, t.userId ?? null, t.clientId ?? null, t.gid ?? null, t.sid ?? null],
      );
      if (++sinceSweep >= SWEEP_EVERY) {
        sinceSweep = 0;
        await sweep();
      }
    },
    async find(tokenId: string): Promise<RoomTokenRecord | undefined> {
      const { rows } = await db.query<Row>('SELECT * FROM livekit_room_tokens WHERE token_id = $1', [tokenId]);
      const r = rows[0];
      return r && {
        tokenId: r.token_id, identity: r.participant_identity, room: r.room_name, userId: r.user_id ?? undefined,
        clientId: r.client_id ?? undefined, gid: r.grant_id ?? undefined, sid: r.session_id ?? undefined, issuedAt: new Date(r.issued_at),
      };
    },
    sweep,
  } satisfies IssuedRoomTokens & Record<'find' | 'sweep', unknown>;
}
export type RoomTokens = ReturnType<typeof createRoomTokens>;

// LiveKit options per client or per role (migrations/015_livekit_options.sql): the room-name prefix,
// and the room configuration the room token carries (`roomConfig`), which LiveKit applies when the
// join creates the room. A client's option wins over its users' roles' (the app knows its rooms);
// among roles, the first by name that sets it.
import type { Queryable } from '../store/db.ts';
import { Cached, noChanges, type Changes } from '../store/changes.ts';

/** An option out of range; the message names it (the CLI and admin API answer 400 with it). */
export class InvalidLivekitOptions extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidLivekitOptions';
  }
}
const invalidRequest = (m: string) => new InvalidLivekitOptions(m);

export interface LivekitOptions {
  /** Every room name starts with it: a requested name without it gets it prepended. */
  roomPrefix?: string;
  /** RoomConfiguration.max_participants (unset: LiveKit's default, no limit). */
  maxParticipants?: number;
  /** RoomConfiguration.empty_timeout (s): how long a room nobody joined stays open. */
  emptyTimeout?: number;
  /** RoomConfiguration.departure_timeout (s): how long a room stays open after the last one left. */
  departureTimeout?: number;
}

export type OptionsScope = 'client' | 'role';
export interface StoredOptions extends LivekitOptions {
  scope: OptionsScope;
  name: string;
}

interface Row {
  scope: OptionsScope; name: string; room_prefix: string | null; max_participants: number | null; empty_timeout: number | null; departure_timeout: number | null;
}
const FIELDS = ['roomPrefix', 'maxParticipants', 'emptyTimeout', 'departureTimeout'] as const;
const toOptions = (r: Row): StoredOptions => ({
  scope: r.scope, name: r.name,
  ...(r.room_prefix !== null ? { roomPrefix: r.room_prefix } : {}),
  ...(r.max_participants !== null ? { maxParticipants: r.max_participants } : {}),
  ...(r.empty_timeout !== null ? { emptyTimeout: r.empty_timeout } : {}),
  ...(r.departure_timeout !== null ? { departureTimeout: r.departure_timeout } : {}),
});

/** Room-name characters (src/exchange/policy.ts ROOM_NAME), at most 64: a prefix leaves room for the name. */
export const ROOM_PREFIX = /^[A-Za-z0-9][A-Za-z0-9_.:=@-]{0,63}$/;
/** LiveKit's own limits are larger; a day is far past any sensible room timeout. */
const MAX_TIMEOUT = 86_400;

/** Checks options an operator sets (CLI, admin API); the message names the option. */
export function checkOptions(o: LivekitOptions): LivekitOptions {
  if (o.roomPrefix !== undefined && !ROOM_PREFIX.test(o.roomPrefix)) throw invalidRequest('room prefix: 1 to 64 letters, digits and _ . : = @ -, starting with a letter or digit');
  const int = (v: number | undefined, what: string, min: number, max: number) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) throw invalidRequest(`${what} must be a whole number from ${min} to ${max}`);
  };
  int(o.maxParticipants, 'max participants', 1, 100_000);
  // LiveKit reads 0 as "its default", so 0 is not offered: leave the option unset for that.
  int(o.emptyTimeout, 'empty timeout', 1, MAX_TIMEOUT);
  int(o.departureTimeout, 'departure timeout', 1, MAX_TIMEOUT);
  return o;
}

/** Client first, then roles by name: each option from the first that sets it. */
export function mergeOptions(sources: LivekitOptions[]): LivekitOptions {
  const out: LivekitOptions = {};
  for (const f of FIELDS) {
    const from = sources.find((s) => s[f] !== undefined);
    if (from) (out as Record<string, unknown>)[f] = from[f];
  }
  return out;
}

export function createLivekitOptions(db: Queryable, changes: Changes = noChanges) {
  // Read on every room token: answered from memory, all dropped on any change (src/store/changes.ts).
  const resolved = new Cached('livekit.options', changes, async (key) => {
    const [clientId, roles] = JSON.parse(key) as [string, string[]];
    const { rows } = await db.query<Row>(
      `SELECT * FROM livekit_options WHERE (scope = 'client' AND name = $1) OR (scope = 'role' AND name = ANY($2))
        ORDER BY scope, name`, [clientId, roles],
    );
    // 'client' sorts before 'role'.
    return mergeOptions(rows.map(toOptions));
  }).dropOn('livekit_options', 'everything');
  return {
    /** What applies to a participant of `clientId` with `roles`. */
    resolve: (clientId: string | undefined, roles: string[]): Promise<LivekitOptions> => resolved.get(JSON.stringify([clientId ?? '', [...roles].sort()])),
    async get(scope: OptionsScope, name: string): Promise<StoredOptions | undefined> {
      const { rows } = await db.query<Row>('SELECT * FROM livekit_options WHERE scope = $1 AND name = $2', [scope, name]);
      return rows[0] && toOptions(rows[0]);
    },
    async list(): Promise<StoredOptions[]> {
      return (await db.query<Row>('SELECT * FROM livekit_options ORDER BY scope, name')).rows.map(toOptions);
    },
    /** Replaces the options of one client or role (what is not given is unset). */
    async set(o: StoredOptions): Promise<StoredOptions> {
      checkOptions(o);
      const { rows } = await db.query<Row>(
        `INSERT INTO livekit_options (scope, name, room_prefix, max_participants, empty_timeout, departure_timeout)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (scope, name) DO UPDATE SET room_prefix = $3, max_participants = $4, empty_timeout = $5, departure_timeout = $6, updated_at = now()
         RETURNING *`,
        [o.scope, o.name, o.roomPrefix ?? null, o.maxParticipants ?? null, o.emptyTimeout ?? null, o.departureTimeout ?? null],
      );
      return toOptions(rows[0]);
    },
    async delete(scope: OptionsScope, name: string): Promise<boolean> {
      return (await db.query('DELETE FROM livekit_options WHERE scope = $1 AND name = $2', [scope, name])).rowCount > 0;
    },
  };
}
export type LivekitOptionsStore = ReturnType<typeof createLivekitOptions>;

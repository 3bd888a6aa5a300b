-- LiveKit room sessions, recorded from verified webhooks (POST /livekit/webhook): who was in which
-- room, when, for how long. A user's history, and the list of live participants to remove when
-- the user, a session or a grant is revoked.
CREATE TABLE room_sessions (
  -- LiveKit's participant sid is unique per join: repeated webhooks for one join are one row.
  participant_sid      text        PRIMARY KEY,
  room_name            text        NOT NULL,
  room_sid             text,
  participant_identity text        NOT NULL,
  -- NULL for guests and agents (identities that are not <LIVEKIT_IDENTITY_PREFIX><user id>)
  user_id              text,
  joined_at            timestamptz NOT NULL,
  left_at              timestamptz,
  duration_seconds     integer,
  -- why the session ended: participant_left, room_finished
  end_reason           text
);
CREATE INDEX room_sessions_user ON room_sessions (user_id, joined_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX room_sessions_open_by_user ON room_sessions (user_id) WHERE left_at IS NULL;
CREATE INDEX room_sessions_open_by_room ON room_sessions (room_name) WHERE left_at IS NULL;

-- Issue 19.4: no way back into a room after revocation. Every LiveKit room token Gatehouse mints is
-- recorded here with what it was derived from (user, client, grant, session), and carries the row's
-- id in the participant attribute `gatehouse.room_token`. LiveKit renews a connected participant's
-- token by itself and ignores revocation, so on each participant_joined / track_published webhook
-- Gatehouse looks the participant up here and removes it when that origin is revoked (or, in
-- Gatehouse-only rooms, when no row matches: the token was not Gatehouse's).
CREATE TABLE livekit_room_tokens (
  -- random, opaque; visible to everyone in the room (participant attributes), so it grants nothing
  token_id             text        PRIMARY KEY,
  participant_identity text        NOT NULL,
  room_name            text        NOT NULL,
  -- NULL for guests
  user_id              text,
  client_id            text,
  grant_id             text,
  session_id           text,
  issued_at            timestamptz NOT NULL DEFAULT now()
);
-- Kept as long as a revocation of its origin can be (the sweep drops older rows).
CREATE INDEX livekit_room_tokens_issued ON livekit_room_tokens (issued_at);

-- Why and when Gatehouse removed a participant (revoked, not issued by Gatehouse, revocation store down).
ALTER TABLE room_sessions ADD COLUMN removed_at timestamptz;
ALTER TABLE room_sessions ADD COLUMN removal_reason text;

-- LiveKit options per client or per role (docs/livekit.md#options): the room-name prefix and the
-- room configuration carried in the room token (`roomConfig`: participant limit, empty and departure
-- timeouts), which LiveKit applies when the join creates the room. NULL = not set here (LiveKit's
-- default, unless another client/role option sets it).
CREATE TABLE livekit_options (
  -- 'client' (an OAuth client id) or 'role' (a role name)
  scope              text        NOT NULL CHECK (scope IN ('client', 'role')),
  name               text        NOT NULL,
  room_prefix        text,
  max_participants   integer     CHECK (max_participants > 0),
  empty_timeout      integer     CHECK (empty_timeout > 0),
  departure_timeout  integer     CHECK (departure_timeout > 0),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, name)
);

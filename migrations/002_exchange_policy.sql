-- Token-exchange policy (RFC 8693 grant, connection-details). Deny by default: a client without a
-- row here exchanges nothing; a user joins only rooms a LiveKit role policy of theirs admits.

-- Per client: which targets it may exchange to, for which scopes, and whether it may act for users.
CREATE TABLE exchange_client_policies (
  client_id  text        PRIMARY KEY REFERENCES clients (client_id) ON DELETE CASCADE,
  -- may exchange for LiveKit room tokens (and call connection-details with its users' tokens)
  livekit    boolean     NOT NULL DEFAULT false,
  -- registered resource URIs (exactly as registered) it may exchange to
  resources  text[]      NOT NULL DEFAULT '{}',
  -- scopes it may obtain; NULL = whatever the resource offers (still ∩ subject ∩ user's permissions)
  scopes     text[],
  -- may act for a user (delegation, RFC 8693 §4.1) for its resources without the user's may_act
  may_act    boolean     NOT NULL DEFAULT false,
  -- the LiveKit agent name this client runs as; connection-details gives it a delegation token
  agent_name text        UNIQUE,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per role: the LiveKit video grant and the rooms it applies to. Globs: * = any run of characters,
-- {identity} = the participant identity, {sub} = the user id. The role "guest" applies to anonymous
-- guests of connection-details (LIVEKIT_GUESTS=true), who never publish data.
CREATE TABLE livekit_role_policies (
  role             text        PRIMARY KEY,
  room_patterns    text[]      NOT NULL DEFAULT '{}',
  can_publish      boolean     NOT NULL DEFAULT false,
  can_subscribe    boolean     NOT NULL DEFAULT false,
  can_publish_data boolean     NOT NULL DEFAULT false,
  -- roomAdmin only where an operator sets it
  room_admin       boolean     NOT NULL DEFAULT false,
  updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Safe defaults: users talk in their own rooms; admins may join any room (but are not roomAdmin);
-- guests only in guest rooms.
INSERT INTO livekit_role_policies (role, room_patterns, can_publish, can_subscribe, can_publish_data, room_admin) VALUES
  ('user', ARRAY['{identity}_*'], true, true, true, false),
  ('admin', ARRAY['*'], true, true, true, false),
  ('guest', ARRAY['guest_*'], true, true, false, false);

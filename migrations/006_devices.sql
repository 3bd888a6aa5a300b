-- Devices signed in through the device authorization grant (RFC 8628): voice hardware, TVs, boards.
-- One row per completed sign-in; the device's tokens belong to its own grant, so revoking the
-- device revokes exactly that grant. The user lists and revokes them at /account/devices.
CREATE TABLE devices (
  id           text        PRIMARY KEY,
  user_id      text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  client_id    text        NOT NULL,
  grant_id     text        NOT NULL,
  name         text        NOT NULL,
  ip           text,
  user_agent   text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  revoked_at   timestamptz
);
CREATE INDEX devices_user ON devices (user_id, created_at);
CREATE INDEX devices_grant ON devices (grant_id);

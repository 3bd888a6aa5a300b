-- Second factors (issue 7): TOTP authenticators, one-time recovery codes, and the devices a user
-- has completed a login from (a known device is not held back by an account lockout).

-- A user may have several authenticators, each named. Rows exist only once confirmed with a first
-- code. The seed is sealed with the data-encryption key. last_time_step is the RFC 6238 time step of
-- the last accepted code: a code for that step or an earlier one is a replay and refused.
CREATE TABLE mfa_factors (
  id             text        PRIMARY KEY,
  user_id        text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  type           text        NOT NULL DEFAULT 'totp' CHECK (type IN ('totp')),
  name           text        NOT NULL,
  secret_enc     text        NOT NULL,
  last_time_step bigint,
  created_at     timestamptz NOT NULL DEFAULT now(),
  last_used_at   timestamptz
);
CREATE INDEX mfa_factors_user ON mfa_factors (user_id);

-- Recovery codes: SHA-256 of (user id, code); 80 random bits each, so a fast hash is enough.
CREATE TABLE mfa_recovery_codes (
  user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  code_hash  text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  used_at    timestamptz,
  PRIMARY KEY (user_id, code_hash)
);

-- Devices (a random id in a signed cookie, stored hashed) that completed a login for the user.
CREATE TABLE known_devices (
  user_id      text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  device_hash  text        NOT NULL,
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, device_hash)
);

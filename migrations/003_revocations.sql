-- Revocations: the durable record behind the Redis (or in-process) revocation lists. Redis holds
-- the hot copy with TTLs; this table survives a Redis restart or failover and is reloaded into a
-- Redis that comes back empty (src/revocation/store.ts). Rows past expires_at are swept.
CREATE TABLE revocations (
  kind       text        NOT NULL CHECK (kind IN ('jti', 'grant', 'session', 'user')),
  id         text        NOT NULL,
  -- user revocations: tokens issued at or before this instant (epoch seconds) are dead
  cutoff     bigint,
  -- the user the revoked thing belonged to, when known (live-room removal, audit)
  subject    text,
  reason     text        NOT NULL DEFAULT 'unspecified',
  revoked_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (kind, id)
);
CREATE INDEX revocations_expires_at ON revocations (expires_at);

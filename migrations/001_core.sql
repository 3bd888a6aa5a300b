-- Gatehouse core schema: oidc-provider payloads, accounts, clients, resource servers, keys, audit.

-- Every oidc-provider model (Session, Interaction, AuthorizationCode, RefreshToken, Grant,
-- DeviceCode, PushedAuthorizationRequest, ...) in one table keyed by (model, id).
CREATE TABLE oidc_payloads (
  model       text        NOT NULL,
  id          text        NOT NULL,
  payload     jsonb       NOT NULL,
  grant_id    text,
  user_code   text,
  uid         text,
  expires_at  timestamptz,
  consumed_at timestamptz,
  PRIMARY KEY (model, id)
);
CREATE INDEX oidc_payloads_grant_id ON oidc_payloads (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX oidc_payloads_user_code ON oidc_payloads (user_code) WHERE user_code IS NOT NULL;
CREATE INDEX oidc_payloads_uid ON oidc_payloads (uid) WHERE uid IS NOT NULL;
CREATE INDEX oidc_payloads_expires_at ON oidc_payloads (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE users (
  id             text        PRIMARY KEY,
  email          text        NOT NULL,
  name           text,
  password_hash  text,
  active         boolean     NOT NULL DEFAULT true,
  email_verified boolean     NOT NULL DEFAULT false,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  last_login_at  timestamptz,
  password_changed_at timestamptz
);
-- Email is unique case-insensitively.
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));

CREATE TABLE roles (
  name        text   PRIMARY KEY,
  description text   NOT NULL DEFAULT '',
  permissions text[] NOT NULL DEFAULT '{}'
);
CREATE TABLE user_roles (
  user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role    text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
  PRIMARY KEY (user_id, role)
);
INSERT INTO roles (name, description, permissions) VALUES
  ('user', 'Every signed-up user', ARRAY['livekit:join']),
  ('admin', 'Gatehouse administrators', ARRAY['livekit:join', 'livekit:admin', 'gatehouse:admin']);

-- OAuth clients. metadata is oidc-provider client metadata without the secret;
-- the secret is encrypted with the data-encryption key.
CREATE TABLE clients (
  client_id         text        PRIMARY KEY,
  client_secret_enc text,
  metadata          jsonb       NOT NULL,
  first_party       boolean     NOT NULL DEFAULT false,
  origin            text        NOT NULL DEFAULT 'cli',
  created_at        timestamptz NOT NULL DEFAULT now()
);

-- Resource servers (RFC 8707 resources, e.g. MCP servers): tokens for them are RFC 9068 JWTs.
CREATE TABLE resource_servers (
  uri               text        PRIMARY KEY,
  name              text        NOT NULL,
  scopes            text[]      NOT NULL DEFAULT '{}',
  access_token_ttl  integer     NOT NULL DEFAULT 900,
  -- 'jwks' (asymmetric, verified against /jwks) or 'hs256' (shared secret, for servers that cannot fetch JWKS)
  signing           text        NOT NULL DEFAULT 'jwks' CHECK (signing IN ('jwks', 'hs256')),
  hs256_secret_enc  text,
  created_at        timestamptz NOT NULL DEFAULT now()
);

-- Signing keys: private halves encrypted with the data-encryption key.
CREATE TABLE signing_keys (
  kid             text        PRIMARY KEY,
  alg             text        NOT NULL,
  private_jwk_enc text        NOT NULL,
  public_jwk      jsonb       NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  -- set when a newer key of the same alg takes over signing; published until expires_at
  retired_at      timestamptz,
  expires_at      timestamptz
);

-- Generated instance secrets (cookie keys; the data-encryption key when not given by env in
-- PostgreSQL mode), so every process of one deployment agrees on them.
CREATE TABLE instance_secrets (
  name       text        PRIMARY KEY,
  value      text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_events (
  id         bigserial   PRIMARY KEY,
  at         timestamptz NOT NULL DEFAULT now(),
  type       text        NOT NULL,
  outcome    text        NOT NULL DEFAULT 'success',
  actor      text,
  subject    text,
  client_id  text,
  ip         text,
  request_id text,
  details    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_subject ON audit_events (subject, at);

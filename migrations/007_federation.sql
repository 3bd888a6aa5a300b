-- Enterprise SSO (issue 4): upstream OpenID Connect connections and the identities linked through them.

-- One upstream OpenID Provider. The client secret is sealed with the data-encryption key.
-- claim_map names the upstream claims that give email, email_verified, name and groups;
-- role_map maps an upstream group/role value to Gatehouse roles ({"eng": ["developer"]}).
-- password_login=false switches password sign-in off for the connection's email domains.
-- trust_mfa: an upstream amr showing MFA satisfies Gatehouse's MFA policy.
CREATE TABLE federation_connections (
  name              text        PRIMARY KEY,
  display_name      text,
  issuer            text        NOT NULL,
  client_id         text        NOT NULL,
  client_secret_enc text,
  scopes            text        NOT NULL DEFAULT 'openid email profile',
  domains           text[]      NOT NULL DEFAULT '{}',
  jit               boolean     NOT NULL DEFAULT true,
  link_by_email     boolean     NOT NULL DEFAULT false,
  password_login    boolean     NOT NULL DEFAULT true,
  trust_mfa         boolean     NOT NULL DEFAULT false,
  claim_map         jsonb       NOT NULL DEFAULT '{}',
  role_map          jsonb       NOT NULL DEFAULT '{}',
  default_roles     text[]      NOT NULL DEFAULT '{user}',
  enabled           boolean     NOT NULL DEFAULT true,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- A local account reached through a connection, keyed by the upstream (issuer-scoped) subject.
-- managed_roles: the roles this link granted at the last login, so a re-mapping removes only those
-- and never a role an administrator gave the account by hand.
CREATE TABLE federated_identities (
  connection    text        NOT NULL REFERENCES federation_connections (name) ON DELETE CASCADE,
  subject       text        NOT NULL,
  user_id       text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  email         text,
  managed_roles text[]      NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_login_at timestamptz,
  PRIMARY KEY (connection, subject)
);
CREATE INDEX federated_identities_user ON federated_identities (user_id);

-- Passkeys (WebAuthn, issue 19): a user may register several, each named. A passkey signs in alone
-- (a discoverable credential, user verification required) or serves as the second factor.
--
-- credential_id is the authenticator's credential id (base64url), unique across all users: an
-- assertion names it, and the row says whose it is. public_key is the COSE public key (base64url):
-- public by design, so it is stored as is (nothing here is a secret). sign_count is the
-- authenticator's signature counter: an assertion whose counter does not go up (when the
-- authenticator counts at all) is refused as a possible clone (WebAuthn L3 §6.1.1).
CREATE TABLE passkeys (
  id            text        PRIMARY KEY,
  user_id       text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  credential_id text        NOT NULL UNIQUE,
  public_key    text        NOT NULL,
  sign_count    bigint      NOT NULL DEFAULT 0,
  transports    text        NOT NULL DEFAULT '',
  name          text        NOT NULL,
  aaguid        text,
  device_type   text        NOT NULL DEFAULT 'singleDevice' CHECK (device_type IN ('singleDevice', 'multiDevice')),
  backed_up     boolean     NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL DEFAULT now(),
  last_used_at  timestamptz
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- Single-use links sent by mail (src/account/recovery.ts): password reset and email verification.
-- Only the SHA-256 of a link's token is kept; `email` is the address the link was sent to, so a link
-- stops working when the account's address changes.
CREATE TABLE account_tokens (
  token_hash text        PRIMARY KEY,
  user_id    text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  purpose    text        NOT NULL CHECK (purpose IN ('password_reset', 'verify_email')),
  email      text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at    timestamptz
);
CREATE INDEX account_tokens_user ON account_tokens (user_id, purpose);

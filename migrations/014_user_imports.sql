-- Issue 18: accounts brought over by `gatehouse user import`. password_hash_sha256 is the SHA-256
-- of the password hash as imported (never the hash itself, which Gatehouse replaces with argon2id
-- at the user's first sign-in): a rerun of the same file recognises that hash and leaves the
-- password the user now has alone. It cannot check a password (the hash's salt is not in it).
CREATE TABLE user_imports (
  user_id              text        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  password_hash_sha256 text,
  imported_at          timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now()
);

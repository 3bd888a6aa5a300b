-- Issue 20: one normalisation of e-mail addresses. users.email keeps the address as the user gave it
-- (mail goes there); users.email_key holds its compared form (src/accounts/email.ts emailKey: NFKC,
-- full case fold, NFKC) and is what every lookup and the uniqueness use. lower(email) is dropped:
-- its answer for non-ASCII letters depends on the database's locale, and it did not match the code.
ALTER TABLE users ADD COLUMN email_key text;

-- Plain ASCII addresses: NFKC changes nothing and the fold is a-z lower-casing. translate(), not
-- lower(), so no locale (a Turkish one maps 'I' to 'ı') can give another answer than the code.
UPDATE users SET email_key = translate(email, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
  WHERE email ~ '^[ -~]*$';

-- Every other address is keyed by the code step of this migration, in the same transaction
-- (src/store/migrate.ts runs keyStoredEmails after this file), which also resolves addresses that
-- are one address now: the oldest account keeps it, the others are kept but parked and audited.
DROP INDEX users_email_lower;
CREATE UNIQUE INDEX users_email_key ON users (email_key);

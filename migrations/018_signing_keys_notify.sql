-- Issue 16: the signing key set's version is read to verify JWTs (introspection, revocation);
-- cached in each process like the tables in 016, and announced the same way when a key changes.
CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE ON signing_keys
  FOR EACH ROW EXECUTE FUNCTION gatehouse_notify_change('kid');
CREATE TRIGGER signing_keys_truncated AFTER TRUNCATE ON signing_keys
  FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_notify_change('kid');

-- Issue 16: cross-node cache invalidation. Each Gatehouse process keeps clients, exchange and room
-- policies, resource servers and users' roles in memory (src/store/changes.ts); every change to the
-- rows they come from, by any process or by hand in psql, is announced with NOTIFY on commit (never
-- for a change that rolls back), payload `<table>:<key>`, and every process drops that entry.
-- `<table>:*` (TRUNCATE) drops the whole table's entries.
CREATE OR REPLACE FUNCTION gatehouse_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  key_column text := TG_ARGV[0];
  old_key text;
  new_key text;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('gatehouse_changes', TG_TABLE_NAME || ':*');
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN old_key := to_jsonb(OLD) ->> key_column; END IF;
  IF TG_OP <> 'DELETE' THEN new_key := to_jsonb(NEW) ->> key_column; END IF;
  IF old_key IS NOT NULL THEN PERFORM pg_notify('gatehouse_changes', TG_TABLE_NAME || ':' || old_key); END IF;
  IF new_key IS NOT NULL AND new_key IS DISTINCT FROM old_key THEN
    PERFORM pg_notify('gatehouse_changes', TG_TABLE_NAME || ':' || new_key);
  END IF;
  RETURN NULL;
END
$$;

-- One row trigger and one TRUNCATE trigger per table, each naming the table's key column.
DO $$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM (VALUES ('users', 'id'), ('user_roles', 'user_id'), ('roles', 'name'), ('clients', 'client_id'),
      ('exchange_client_policies', 'client_id'), ('livekit_role_policies', 'role'), ('resource_servers', 'uri')) AS v(name, key_column)
  LOOP
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION gatehouse_notify_change(%L)',
      t.name || '_changed', t.name, t.key_column);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_notify_change(%L)',
      t.name || '_truncated', t.name, t.key_column);
  END LOOP;
END
$$;

-- 016's NOTIFY payload is `<table>:<key>`, and PostgreSQL refuses a payload of 8000 bytes or more:
-- a write with a longer key (a 10 kB role name sent to the admin API) failed with a 500 instead of
-- being refused or stored. A key too long to announce announces the whole table (`<table>:*`), so
-- every process drops all of that table's entries: never a failed write, never a stale cache.
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
  IF octet_length(old_key) > 7000 OR octet_length(new_key) > 7000 THEN
    PERFORM pg_notify('gatehouse_changes', TG_TABLE_NAME || ':*');
    RETURN NULL;
  END IF;
  IF old_key IS NOT NULL THEN PERFORM pg_notify('gatehouse_changes', TG_TABLE_NAME || ':' || old_key); END IF;
  IF new_key IS NOT NULL AND new_key IS DISTINCT FROM old_key THEN
    PERFORM pg_notify('gatehouse_changes', TG_TABLE_NAME || ':' || new_key);
  END IF;
  RETURN NULL;
END
$$;

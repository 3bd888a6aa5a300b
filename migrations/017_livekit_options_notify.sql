-- Issue 16: LiveKit options (015) are read on every room token; cached in each process like the
-- tables in 016, and announced the same way when they change.
CREATE TRIGGER livekit_options_changed AFTER INSERT OR UPDATE OR DELETE ON livekit_options
  FOR EACH ROW EXECUTE FUNCTION gatehouse_notify_change('name');
CREATE TRIGGER livekit_options_truncated AFTER TRUNCATE ON livekit_options
  FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_notify_change('name');

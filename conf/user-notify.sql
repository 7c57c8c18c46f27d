-- Tells every robeing-gateway instance at once when a user changes, so a
-- deleted or renamed user, or one who logged out everywhere, is refused
-- within a second instead of after the identity cache's TTL, and a new
-- user is served right after a 404.
-- With `[users] notify_channel = "robeing_user_changed"` in the gateway's
-- configuration, apply once per database:
--   psql "$DATABASE_URL" -f conf/user-notify.sql
-- The payload is the username: the old and the new one on UPDATE.
CREATE OR REPLACE FUNCTION robeing_user_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify(TG_ARGV[0], OLD.username);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify(TG_ARGV[0], NEW.username);
    END IF;
    RETURN NULL;
END
$$;

-- "Log out everywhere": tokens issued before this instant are refused
-- (401 TOKEN_REVOKED) once the gateway's query returns it as a second
-- column:
--   [users] query = 'SELECT id, tokens_valid_after FROM "user" WHERE username = $1'
ALTER TABLE "user" ADD COLUMN IF NOT EXISTS tokens_valid_after timestamptz;

-- To log a user out everywhere (the UPDATE notifies every instance, which
-- refuses the user's older tokens within a second, cached or not):
--   UPDATE "user" SET tokens_valid_after = now() WHERE username = 'alice';

DROP TRIGGER IF EXISTS robeing_user_notify ON "user";
CREATE TRIGGER robeing_user_notify
    AFTER INSERT OR UPDATE OR DELETE ON "user"
    FOR EACH ROW EXECUTE FUNCTION robeing_user_notify('robeing_user_changed');

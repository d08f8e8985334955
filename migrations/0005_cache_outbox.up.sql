-- 0005_cache_outbox: every change of a cached row records the cache entries it makes stale, in the same
-- transaction as the change. The writer invalidates those entries itself right after its commit; the outbox is
-- for when it cannot (killed between commit and invalidation, Redis unreachable): each replica's sweep makes the
-- invalidations left longer than a grace period, then deletes their rows (server/cache/outbox.py). Entries are
-- named by entity and identity; the cache's key format stays in server/cache/keys.py.

CREATE TABLE cache_outbox (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      text        NOT NULL,
    ident       text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- A user's entry, and the entries of their emails: the old one's link, and the new one's (it may hold "no such
-- user" from a lookup before the email was taken).
CREATE FUNCTION record_user_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cache_outbox (entity, ident) VALUES ('user-email', NEW.email);
        RETURN NULL;
    END IF;
    INSERT INTO cache_outbox (entity, ident) VALUES ('user', OLD.id::text), ('user-email', OLD.email);
    IF TG_OP = 'UPDATE' AND NEW.email IS DISTINCT FROM OLD.email THEN
        INSERT INTO cache_outbox (entity, ident) VALUES ('user-email', NEW.email);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION record_user_invalidation();

CREATE FUNCTION record_session_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cache_outbox (entity, ident) VALUES ('session', encode(OLD.token_hash, 'hex'));
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_cache_outbox AFTER UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION record_session_invalidation();
-- Deleting a session that had ended (the purge) makes nothing stale: its revocation was recorded, and no entry
-- outlives a session's expiry. Only a live session's deletion (a user deleted with it) is recorded.
CREATE TRIGGER sessions_cache_outbox_delete AFTER DELETE ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
    EXECUTE FUNCTION record_session_invalidation();

CREATE FUNCTION record_content_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cache_outbox (entity, ident) VALUES ('content', OLD.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER contents_cache_outbox AFTER UPDATE OR DELETE ON contents
    FOR EACH ROW EXECUTE FUNCTION record_content_invalidation();

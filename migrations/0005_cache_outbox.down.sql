-- Reverts 0005_cache_outbox.
DROP TRIGGER contents_cache_outbox ON contents;
DROP FUNCTION record_content_invalidation();
DROP TRIGGER sessions_cache_outbox_delete ON sessions;
DROP TRIGGER sessions_cache_outbox ON sessions;
DROP FUNCTION record_session_invalidation();
DROP TRIGGER users_cache_outbox ON users;
DROP FUNCTION record_user_invalidation();
DROP TABLE cache_outbox;

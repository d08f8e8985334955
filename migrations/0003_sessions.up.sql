-- 0003_sessions: login sessions. A session is found by the SHA-256 digest of its bearer token; the token
-- itself is never stored, so a copy of this table authenticates nobody.

CREATE TABLE sessions (
    id                         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Deleting a user deletes their sessions.
    user_id                    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash                 bytea       NOT NULL,
    -- How far each refresh extends the session; the absolute lifetime caps it at 30 days after created_at.
    ttl                        interval    NOT NULL,
    user_agent                 text        NOT NULL DEFAULT '',
    ip_address                 inet,
    -- request_id of the CreateSession call that made the row, and a digest of what it asked for.
    create_request_id          uuid        UNIQUE,
    create_request_fingerprint bytea,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    expires_at                 timestamptz NOT NULL,
    -- Written at most once a minute per session, so that checking a token is not a write each time.
    last_seen_at               timestamptz NOT NULL DEFAULT now(),
    -- Set by a revocation; revoked and expired rows are never returned and are purged in the background.
    revoked_at                 timestamptz,
    CONSTRAINT sessions_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT sessions_ttl_range CHECK (ttl BETWEEN interval '1 minute' AND interval '30 days'),
    CONSTRAINT sessions_absolute_lifetime CHECK (expires_at <= created_at + interval '30 days'),
    CONSTRAINT sessions_user_agent_length CHECK (char_length(user_agent) <= 512)
);

CREATE UNIQUE INDEX sessions_token_hash_key ON sessions (token_hash);
-- ListSessions walks a user's sessions newest first; the same index serves the cascade from users.
CREATE INDEX sessions_user_id_created_at_id_idx ON sessions (user_id, created_at DESC, id DESC);
-- The purge finds ended sessions by these two.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

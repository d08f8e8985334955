-- 0007_recommendations: what users do with content, their verdicts on recommendations, the ranked lists an ML
-- pipeline stores for them, and a summary of recent popularity refreshed in the background.

CREATE TABLE interactions (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content_id          uuid        NOT NULL REFERENCES contents (id) ON DELETE CASCADE,
    type                text        NOT NULL,
    -- request_id of the RecordInteraction call that made the row, and a digest of what it asked for.
    request_id          uuid        UNIQUE,
    request_fingerprint bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT interactions_type CHECK (type IN ('view', 'like', 'share', 'bookmark', 'dismiss'))
);
-- A user's recent interactions (the taste vector); the cascade from contents; the popularity window.
CREATE INDEX interactions_user_id_created_at_idx ON interactions (user_id, created_at DESC);
CREATE INDEX interactions_content_id_idx ON interactions (content_id);
CREATE INDEX interactions_created_at_idx ON interactions (created_at);

CREATE TABLE recommendation_feedback (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    content_id uuid        NOT NULL REFERENCES contents (id) ON DELETE CASCADE,
    feedback   text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, content_id),
    CONSTRAINT recommendation_feedback_value CHECK (feedback IN ('accepted', 'rejected'))
);
CREATE INDEX recommendation_feedback_content_id_idx ON recommendation_feedback (content_id);

-- One ranked list per user; list_id changes with every PutRecommendations, which ends the pages of the old one.
-- Content deleted since stays in the arrays and is left out when the list is read.
CREATE TABLE precomputed_recommendations (
    user_id     uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    list_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    content_ids uuid[]      NOT NULL,
    scores      float8[]    NOT NULL,
    expire_at   timestamptz NOT NULL,
    CONSTRAINT precomputed_recommendations_lengths CHECK (cardinality(content_ids) = cardinality(scores))
);

-- Interactions of the last 7 days per content and type; RecommendationService weighs the types when it ranks.
-- Refreshed CONCURRENTLY in the background (the unique index allows it), so reads never wait for a refresh.
CREATE MATERIALIZED VIEW content_popularity AS
    SELECT content_id,
           count(*) FILTER (WHERE type = 'view')     AS views,
           count(*) FILTER (WHERE type = 'like')     AS likes,
           count(*) FILTER (WHERE type = 'share')    AS shares,
           count(*) FILTER (WHERE type = 'bookmark') AS bookmarks
    FROM interactions
    WHERE created_at > now() - interval '7 days' AND type <> 'dismiss'
    GROUP BY content_id;
CREATE UNIQUE INDEX content_popularity_content_id_idx ON content_popularity (content_id);

-- A user's cached feed is stale after any change of their interactions, feedback or precomputed list.
CREATE FUNCTION record_recommendations_invalidation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cache_outbox (entity, ident) VALUES ('recommendations', NEW.user_id::text);
    ELSE
        INSERT INTO cache_outbox (entity, ident) VALUES ('recommendations', OLD.user_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER interactions_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON interactions
    FOR EACH ROW EXECUTE FUNCTION record_recommendations_invalidation();
CREATE TRIGGER recommendation_feedback_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON recommendation_feedback
    FOR EACH ROW EXECUTE FUNCTION record_recommendations_invalidation();
CREATE TRIGGER precomputed_recommendations_cache_outbox AFTER INSERT OR UPDATE OR DELETE
    ON precomputed_recommendations FOR EACH ROW EXECUTE FUNCTION record_recommendations_invalidation();

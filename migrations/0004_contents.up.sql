-- 0004_contents: pieces of content written by users, with a full-text search vector kept by PostgreSQL.

CREATE TABLE contents (
    id                         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Deleting a user deletes their content.
    author_id                  uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title                      text        NOT NULL,
    body                       text        NOT NULL DEFAULT '',
    tags                       text[]      NOT NULL DEFAULT '{}',
    metadata                   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status                     text        NOT NULL DEFAULT 'draft',
    -- request_id of the CreateContent call that made the row, and a digest of what it asked for.
    create_request_id          uuid        UNIQUE,
    create_request_fingerprint bytea,
    version                    bigint      NOT NULL DEFAULT 1,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    -- Set when status first becomes 'published', and kept afterwards.
    published_at               timestamptz,
    -- Title words weigh more than body words. Only the first 100,000 characters of the body are indexed: a
    -- tsvector holds at most 1 MiB, which a 1 MiB body of distinct words would overflow.
    search                     tsvector    GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english', left(body, 100000)), 'B')
    ) STORED,
    CONSTRAINT contents_title_length CHECK (char_length(title) BETWEEN 1 AND 300),
    CONSTRAINT contents_body_size CHECK (octet_length(body) <= 1048576),
    CONSTRAINT contents_tags_count CHECK (cardinality(tags) <= 32),
    CONSTRAINT contents_metadata_object CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT contents_status CHECK (status IN ('draft', 'published', 'archived')),
    CONSTRAINT contents_published_at CHECK (status <> 'published' OR published_at IS NOT NULL)
);

-- ListContents orders by creation or update time, ties broken by id; by author it walks the third index,
-- which also serves the cascade from users.
CREATE INDEX contents_created_at_id_idx ON contents (created_at, id);
CREATE INDEX contents_updated_at_id_idx ON contents (updated_at, id);
CREATE INDEX contents_author_id_created_at_id_idx ON contents (author_id, created_at, id);
CREATE INDEX contents_tags_idx ON contents USING gin (tags);
CREATE INDEX contents_search_idx ON contents USING gin (search);

CREATE TRIGGER contents_touch BEFORE UPDATE ON contents FOR EACH ROW EXECUTE FUNCTION touch_row();

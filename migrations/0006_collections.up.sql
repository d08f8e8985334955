-- 0006_collections: the catalogue of embedding collections. Each collection's embeddings live in a table of
-- their own, embeddings.collection_<id>, with a vector column of the collection's type and dimension and its own
-- HNSW index; CreateCollection makes it (server/store/embeddings.py). Nothing here needs pgvector, so the schema
-- migrates on a PostgreSQL without it.

CREATE SCHEMA embeddings;

CREATE TABLE collections (
    id                         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                       text        NOT NULL UNIQUE,
    dimension                  integer     NOT NULL,
    distance_metric            text        NOT NULL,
    half_precision             boolean     NOT NULL DEFAULT false,
    hnsw_m                     integer     NOT NULL,
    hnsw_ef_construction       integer     NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    -- request_id of the CreateCollection call that made the row, and a digest of what it asked for.
    create_request_id          uuid        UNIQUE,
    create_request_fingerprint bytea,
    CONSTRAINT collections_name CHECK (name ~ '^[a-z][a-z0-9_]{0,47}$'),
    CONSTRAINT collections_dimension CHECK (dimension BETWEEN 1 AND CASE WHEN half_precision THEN 4000 ELSE 2000 END),
    CONSTRAINT collections_distance_metric CHECK (distance_metric IN ('cosine', 'l2', 'inner_product')),
    CONSTRAINT collections_hnsw CHECK (hnsw_m BETWEEN 2 AND 100
                                       AND hnsw_ef_construction BETWEEN 4 AND 1000
                                       AND hnsw_ef_construction >= 2 * hnsw_m)
);

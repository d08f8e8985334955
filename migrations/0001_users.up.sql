-- 0001_users: user accounts, and the trigger every table uses to keep updated_at and its etag version.

CREATE FUNCTION touch_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- updated_at records the change; version is the resource's etag and moves on every update.
    NEW.updated_at := now();
    NEW.version := OLD.version + 1;
    RETURN NEW;
END;
$$;

CREATE TABLE users (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email             text        NOT NULL,
    -- The email as compared: lowercased by the service (server.domain.email_key), not by PostgreSQL's
    -- lower(), whose result depends on the database's locale; the cache keys use the same function.
    email_key         text        NOT NULL,
    display_name      text        NOT NULL,
    password_hash     text        NOT NULL,
    preferences       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- request_id of the CreateUser call that made the row: a retry finds it instead of inserting twice.
    create_request_id uuid        UNIQUE,
    version           bigint      NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_email_shape CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 100),
    CONSTRAINT users_preferences_object CHECK (jsonb_typeof(preferences) = 'object'),
    CONSTRAINT users_preferences_size CHECK (pg_column_size(preferences) <= 65536)
);

-- Emails are unique regardless of case; lookups go through this index.
CREATE UNIQUE INDEX users_email_key_key ON users (email_key);
-- Keyset pagination of ListUsers walks (created_at, id).
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch_row();

-- 0002_create_request_fingerprint: what the CreateUser call that made a row asked for, so that a retry with
-- its request_id is told apart from a different request that reuses the id.

-- SHA-256 of the request's fields other than the password (see server.api.users); NULL for rows created
-- before this column existed, whose retries are matched on the email alone.
ALTER TABLE users ADD COLUMN create_request_fingerprint bytea;

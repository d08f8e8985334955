ALTER TABLE users DROP COLUMN create_request_fingerprint;

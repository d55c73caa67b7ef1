-- Defaults, NOT NULLs and checks the crate relies on, new api_keys columns,
-- and indexes for the queries the crate runs. Nothing is renamed or
-- retyped. Rows written by older services are backfilled first so the NOT
-- NULLs hold; a row that cannot be backfilled (an api key without a user,
-- service or hash, an event without a type, a user with neither email nor
-- wallet) makes this migration fail, and nothing of it is applied.

ALTER TABLE users ALTER COLUMN id SET DEFAULT gen_random_uuid();
UPDATE users SET passport_tier = 'visitor' WHERE passport_tier IS NULL;
UPDATE users SET created_at = now() WHERE created_at IS NULL;
UPDATE users SET updated_at = created_at WHERE updated_at IS NULL;
UPDATE users SET metadata = '{}' WHERE metadata IS NULL;
UPDATE users SET preferences = '{}' WHERE preferences IS NULL;
ALTER TABLE users
    ALTER COLUMN passport_tier SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET NOT NULL,
    ALTER COLUMN metadata SET DEFAULT '{}',
    ALTER COLUMN metadata SET NOT NULL,
    ALTER COLUMN preferences SET DEFAULT '{}',
    ALTER COLUMN preferences SET NOT NULL,
    ADD CONSTRAINT users_email_or_wallet_check CHECK (email IS NOT NULL OR wallet_address IS NOT NULL);
-- Emails match case-insensitively; wallet addresses are stored lower case,
-- but rows from older services may not be.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE UNIQUE INDEX users_wallet_address_lower_key ON users (lower(wallet_address));
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

ALTER TABLE api_keys ALTER COLUMN id SET DEFAULT gen_random_uuid();
UPDATE api_keys SET created_at = now() WHERE created_at IS NULL;
ALTER TABLE api_keys
    ALTER COLUMN user_id SET NOT NULL,
    ALTER COLUMN service SET NOT NULL,
    ALTER COLUMN hashed_key SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN created_at SET NOT NULL,
    -- `dnk_` and the first 8 hex digits of keys this crate issues, for display.
    ADD COLUMN key_prefix VARCHAR(16),
    ADD COLUMN expires_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN revoked_at TIMESTAMP WITH TIME ZONE;
-- Validation looks keys up by hash; a revoked key's hash is stored as
-- 'revoked:' || hash, so older services stop matching it too.
CREATE UNIQUE INDEX api_keys_hashed_key_key ON api_keys (hashed_key);
CREATE INDEX api_keys_user_id_created_at_idx ON api_keys (user_id, created_at, id);

ALTER TABLE events ALTER COLUMN id SET DEFAULT gen_random_uuid();
UPDATE events SET created_at = now() WHERE created_at IS NULL;
UPDATE events SET payload = '{}' WHERE payload IS NULL;
ALTER TABLE events
    ALTER COLUMN event_type SET NOT NULL,
    ALTER COLUMN payload SET DEFAULT '{}',
    ALTER COLUMN payload SET NOT NULL,
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN created_at SET NOT NULL;
-- A user's events, newest first.
CREATE INDEX events_user_id_created_at_idx ON events (user_id, created_at DESC, id DESC);
-- Events of one type in a time range, and counts by type.
CREATE INDEX events_event_type_created_at_idx ON events (event_type, created_at DESC, id DESC);
-- Payload containment (@>).
CREATE INDEX events_payload_idx ON events USING GIN (payload jsonb_path_ops);
-- Time-range scans across all events (bucketed counts, global listing).
CREATE INDEX events_created_at_idx ON events (created_at DESC, id DESC);

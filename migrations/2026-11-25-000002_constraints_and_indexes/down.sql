DROP INDEX IF EXISTS events_created_at_idx;
DROP INDEX IF EXISTS events_payload_idx;
DROP INDEX IF EXISTS events_event_type_created_at_idx;
DROP INDEX IF EXISTS events_user_id_created_at_idx;
ALTER TABLE events
    ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN event_type DROP NOT NULL,
    ALTER COLUMN payload DROP DEFAULT,
    ALTER COLUMN payload DROP NOT NULL,
    ALTER COLUMN created_at DROP DEFAULT,
    ALTER COLUMN created_at DROP NOT NULL;

DROP INDEX IF EXISTS api_keys_user_id_created_at_idx;
DROP INDEX IF EXISTS api_keys_hashed_key_key;
ALTER TABLE api_keys
    ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN user_id DROP NOT NULL,
    ALTER COLUMN service DROP NOT NULL,
    ALTER COLUMN hashed_key DROP NOT NULL,
    ALTER COLUMN created_at DROP DEFAULT,
    ALTER COLUMN created_at DROP NOT NULL,
    DROP COLUMN revoked_at,
    DROP COLUMN expires_at,
    DROP COLUMN key_prefix;

DROP INDEX IF EXISTS users_created_at_id_idx;
DROP INDEX IF EXISTS users_wallet_address_lower_key;
DROP INDEX IF EXISTS users_email_lower_key;
ALTER TABLE users
    DROP CONSTRAINT users_email_or_wallet_check,
    ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN passport_tier DROP NOT NULL,
    ALTER COLUMN created_at DROP DEFAULT,
    ALTER COLUMN created_at DROP NOT NULL,
    ALTER COLUMN updated_at DROP DEFAULT,
    ALTER COLUMN updated_at DROP NOT NULL,
    ALTER COLUMN metadata DROP DEFAULT,
    ALTER COLUMN metadata DROP NOT NULL,
    ALTER COLUMN preferences DROP DEFAULT,
    ALTER COLUMN preferences DROP NOT NULL;

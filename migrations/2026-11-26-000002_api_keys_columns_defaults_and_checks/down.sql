-- Back to the services' shape: no crate columns, defaults or checks. The
-- foreign key keeps deleting a user's keys with the user: a foreign key that
-- makes deleting a user fail is not worth restoring.
-- squawk-ignore-file ban-drop-column
-- (Development databases only: the columns exist for this crate alone.)
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
ALTER TABLE api_keys
    ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN created_at DROP DEFAULT,
    DROP COLUMN IF EXISTS key_prefix,
    DROP COLUMN IF EXISTS expires_at,
    DROP COLUMN IF EXISTS revoked_at,
    DROP CONSTRAINT IF EXISTS api_keys_user_id_not_null,
    DROP CONSTRAINT IF EXISTS api_keys_service_not_null,
    DROP CONSTRAINT IF EXISTS api_keys_hashed_key_not_null,
    DROP CONSTRAINT IF EXISTS api_keys_created_at_not_null;

-- api_keys, step 3 of 3: NOT NULL where the crate relies on it, set without a
-- scan thanks to the validated `*_not_null` checks, which are then dropped
-- (see users_not_null).
-- squawk-ignore-file adding-not-nullable-field
-- (squawk cannot see the validated checks; with them this is the no-scan
-- form of SET NOT NULL.)
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

ALTER TABLE api_keys
    ALTER COLUMN user_id SET NOT NULL,
    ALTER COLUMN service SET NOT NULL,
    ALTER COLUMN hashed_key SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL;

ALTER TABLE api_keys
    DROP CONSTRAINT IF EXISTS api_keys_user_id_not_null,
    DROP CONSTRAINT IF EXISTS api_keys_service_not_null,
    DROP CONSTRAINT IF EXISTS api_keys_hashed_key_not_null,
    DROP CONSTRAINT IF EXISTS api_keys_created_at_not_null;

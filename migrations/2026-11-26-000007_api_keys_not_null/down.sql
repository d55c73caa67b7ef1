-- Back to the services' nullable columns (development databases: the crate
-- needs these NOT NULL).
-- squawk-ignore-file ban-drop-not-null
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
ALTER TABLE api_keys
    ALTER COLUMN user_id DROP NOT NULL,
    ALTER COLUMN service DROP NOT NULL,
    ALTER COLUMN hashed_key DROP NOT NULL,
    ALTER COLUMN created_at DROP NOT NULL;

-- Back to the services' nullable columns (development databases: the crate
-- needs these NOT NULL).
-- squawk-ignore-file ban-drop-not-null
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
ALTER TABLE users
    ALTER COLUMN passport_tier DROP NOT NULL,
    ALTER COLUMN created_at DROP NOT NULL,
    ALTER COLUMN updated_at DROP NOT NULL,
    ALTER COLUMN metadata DROP NOT NULL,
    ALTER COLUMN preferences DROP NOT NULL;

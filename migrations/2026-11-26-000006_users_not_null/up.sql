-- users, step 3 of 3: NOT NULL where the crate relies on it. The validated
-- `*_not_null` checks prove there is no NULL, so PostgreSQL 12+ sets
-- NOT NULL without scanning the table: the ACCESS EXCLUSIVE lock is held for
-- milliseconds. The checks are dropped in a second statement: dropped in the
-- same one, they would be gone before PostgreSQL looked for them, and it
-- would scan (statement_timeout stops that within a second). A column that
-- is NOT NULL already stays as it is.
--
-- squawk-ignore-file adding-not-nullable-field
-- (squawk cannot see the validated checks of validate_constraints; with
-- them this is the no-scan form of SET NOT NULL that squawk recommends.)
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

ALTER TABLE users
    ALTER COLUMN passport_tier SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET NOT NULL,
    ALTER COLUMN metadata SET NOT NULL,
    ALTER COLUMN preferences SET NOT NULL;

ALTER TABLE users
    DROP CONSTRAINT IF EXISTS users_passport_tier_not_null,
    DROP CONSTRAINT IF EXISTS users_created_at_not_null,
    DROP CONSTRAINT IF EXISTS users_updated_at_not_null,
    DROP CONSTRAINT IF EXISTS users_metadata_not_null,
    DROP CONSTRAINT IF EXISTS users_preferences_not_null;

-- Back to the services' shape: no crate defaults or checks. The constraint
-- names drizzle-kit gives stay.
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
ALTER TABLE users
    ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN created_at DROP DEFAULT,
    ALTER COLUMN updated_at DROP DEFAULT,
    ALTER COLUMN metadata DROP DEFAULT,
    ALTER COLUMN preferences DROP DEFAULT,
    DROP CONSTRAINT IF EXISTS users_passport_tier_not_null,
    DROP CONSTRAINT IF EXISTS users_created_at_not_null,
    DROP CONSTRAINT IF EXISTS users_updated_at_not_null,
    DROP CONSTRAINT IF EXISTS users_metadata_not_null,
    DROP CONSTRAINT IF EXISTS users_preferences_not_null,
    DROP CONSTRAINT IF EXISTS users_email_or_wallet_check;

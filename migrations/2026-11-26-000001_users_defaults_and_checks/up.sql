-- users, step 1 of 3 (then backfill_nulls, validate_constraints,
-- users_not_null): defaults, and the checks the crate relies on, added
-- NOT VALID. Every statement here only changes the catalog: the table is
-- not scanned, and its ACCESS EXCLUSIVE lock is held for milliseconds.
--
-- A migration that cannot get its lock within lock_timeout fails at once
-- instead of making every query on the table queue behind it;
-- Store::migrate retries it after a pause (and the rollback leaves nothing
-- behind). statement_timeout bounds anything unexpectedly slow.
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

-- Adopting a database whose unique constraints carry PostgreSQL's default
-- names: give them drizzle-kit's, so that `drizzle-kit push` finds what its
-- schema declares and changes nothing. Renaming the index renames its
-- constraint too, under a SHARE UPDATE EXCLUSIVE lock on the index only.
ALTER INDEX IF EXISTS users_email_key RENAME TO users_email_unique;
ALTER INDEX IF EXISTS users_wallet_address_key RENAME TO users_wallet_address_unique;

-- The `*_not_null` checks are temporary: once validated (a scan that blocks
-- no reads or writes), PostgreSQL 12+ sets NOT NULL without scanning the
-- table again, and users_not_null drops them. From now on they refuse new
-- NULLs, so the backfill only ever has fewer rows to fix. DROP ... IF EXISTS
-- before each ADD makes the statement safe to run again.
ALTER TABLE users
    ALTER COLUMN id SET DEFAULT gen_random_uuid(),
    ALTER COLUMN passport_tier SET DEFAULT 'visitor',
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN metadata SET DEFAULT '{}',
    ALTER COLUMN preferences SET DEFAULT '{}',
    DROP CONSTRAINT IF EXISTS users_passport_tier_not_null,
    ADD CONSTRAINT users_passport_tier_not_null CHECK (passport_tier IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS users_created_at_not_null,
    ADD CONSTRAINT users_created_at_not_null CHECK (created_at IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS users_updated_at_not_null,
    ADD CONSTRAINT users_updated_at_not_null CHECK (updated_at IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS users_metadata_not_null,
    ADD CONSTRAINT users_metadata_not_null CHECK (metadata IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS users_preferences_not_null,
    ADD CONSTRAINT users_preferences_not_null CHECK (preferences IS NOT NULL) NOT VALID,
    -- A user has an email, a wallet address, or both. This one stays.
    DROP CONSTRAINT IF EXISTS users_email_or_wallet_check,
    ADD CONSTRAINT users_email_or_wallet_check
        CHECK (email IS NOT NULL OR wallet_address IS NOT NULL) NOT VALID;

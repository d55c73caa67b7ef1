-- api_keys, step 1 of 3 (then backfill_nulls, validate_constraints,
-- api_keys_not_null): defaults, the crate's new columns, temporary
-- NOT NULL checks, and the foreign key that deletes a user's keys with the
-- user. Catalog changes only: no scan, locks held for milliseconds, given
-- up after lock_timeout (Store::migrate retries).
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

ALTER TABLE api_keys
    ALTER COLUMN id SET DEFAULT gen_random_uuid(),
    ALTER COLUMN created_at SET DEFAULT now(),
    -- `dnk_` and the first 8 hex digits of keys this crate issues, for
    -- display. varchar(16), as the Drizzle schema declares it; the column is
    -- never resized.
    -- squawk-ignore prefer-text-field
    ADD COLUMN IF NOT EXISTS key_prefix VARCHAR(16),
    ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS revoked_at TIMESTAMP WITH TIME ZONE,
    -- Temporary, validated then replaced by NOT NULL (see
    -- users_defaults_and_checks). A key without a user, service or hash
    -- cannot be backfilled: validate_constraints stops on it, naming the
    -- constraint.
    DROP CONSTRAINT IF EXISTS api_keys_user_id_not_null,
    ADD CONSTRAINT api_keys_user_id_not_null CHECK (user_id IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS api_keys_service_not_null,
    ADD CONSTRAINT api_keys_service_not_null CHECK (service IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS api_keys_hashed_key_not_null,
    ADD CONSTRAINT api_keys_hashed_key_not_null CHECK (hashed_key IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS api_keys_created_at_not_null,
    ADD CONSTRAINT api_keys_created_at_not_null CHECK (created_at IS NOT NULL) NOT VALID,
    -- Deleting a user deletes their keys, whoever deletes the user. The old
    -- foreign key (PostgreSQL's default name, or drizzle-kit's) is dropped
    -- and the new one added in this one statement: existing rows were held
    -- valid by the old key up to this instant and new ones are checked by the
    -- new key from it, so no orphan can slip in; validate_constraints then
    -- marks it validated with a scan that blocks no writes.
    DROP CONSTRAINT IF EXISTS api_keys_user_id_fkey,
    DROP CONSTRAINT IF EXISTS api_keys_user_id_users_id_fk,
    ADD CONSTRAINT api_keys_user_id_users_id_fk
        FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE NOT VALID;

-- events, step 1 of 3 (then backfill_nulls, validate_constraints,
-- events_not_null): defaults, temporary NOT NULL checks, and the foreign key
-- that detaches a user's events when the user is deleted. Catalog changes
-- only: no scan, locks held for milliseconds, given up after lock_timeout
-- (Store::migrate retries).
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

ALTER TABLE events
    ALTER COLUMN id SET DEFAULT gen_random_uuid(),
    ALTER COLUMN payload SET DEFAULT '{}',
    ALTER COLUMN created_at SET DEFAULT now(),
    -- Temporary, validated then replaced by NOT NULL (see
    -- users_defaults_and_checks). An event without a type cannot be
    -- backfilled: validate_constraints stops on it, naming the constraint.
    DROP CONSTRAINT IF EXISTS events_event_type_not_null,
    ADD CONSTRAINT events_event_type_not_null CHECK (event_type IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS events_payload_not_null,
    ADD CONSTRAINT events_payload_not_null CHECK (payload IS NOT NULL) NOT VALID,
    DROP CONSTRAINT IF EXISTS events_created_at_not_null,
    ADD CONSTRAINT events_created_at_not_null CHECK (created_at IS NOT NULL) NOT VALID,
    -- Deleting a user keeps their events, detached (user_id becomes NULL),
    -- whoever deletes the user. Swapped in one statement as in
    -- api_keys_columns_defaults_and_checks.
    DROP CONSTRAINT IF EXISTS events_user_id_fkey,
    DROP CONSTRAINT IF EXISTS events_user_id_users_id_fk,
    ADD CONSTRAINT events_user_id_users_id_fk
        FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL NOT VALID;

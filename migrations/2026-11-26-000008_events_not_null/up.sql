-- events, step 3 of 3: NOT NULL where the crate relies on it, set without a
-- scan thanks to the validated `*_not_null` checks, which are then dropped
-- (see users_not_null).
-- squawk-ignore-file adding-not-nullable-field
-- (squawk cannot see the validated checks; with them this is the no-scan
-- form of SET NOT NULL.)
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

ALTER TABLE events
    ALTER COLUMN event_type SET NOT NULL,
    ALTER COLUMN payload SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL;

ALTER TABLE events
    DROP CONSTRAINT IF EXISTS events_event_type_not_null,
    DROP CONSTRAINT IF EXISTS events_payload_not_null,
    DROP CONSTRAINT IF EXISTS events_created_at_not_null;

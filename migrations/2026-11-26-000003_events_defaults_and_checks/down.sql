-- Back to the services' shape: no crate defaults or checks. The foreign key
-- keeps detaching a deleted user's events.
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
ALTER TABLE events
    ALTER COLUMN id DROP DEFAULT,
    ALTER COLUMN payload DROP DEFAULT,
    ALTER COLUMN created_at DROP DEFAULT,
    DROP CONSTRAINT IF EXISTS events_event_type_not_null,
    DROP CONSTRAINT IF EXISTS events_payload_not_null,
    DROP CONSTRAINT IF EXISTS events_created_at_not_null;

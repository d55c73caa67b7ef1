-- Back to the services' nullable columns (development databases: the crate
-- needs these NOT NULL).
-- squawk-ignore-file ban-drop-not-null
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
ALTER TABLE events
    ALTER COLUMN event_type DROP NOT NULL,
    ALTER COLUMN payload DROP NOT NULL,
    ALTER COLUMN created_at DROP NOT NULL;

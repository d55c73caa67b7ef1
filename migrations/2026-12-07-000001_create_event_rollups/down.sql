-- squawk-ignore-file ban-drop-table
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- Development databases only: the crate's own tables, which nothing else
-- reads; without them every analytics question reads `events` again.
DROP TABLE IF EXISTS event_period_users;
DROP TABLE IF EXISTS event_daily_types;
DROP TABLE IF EXISTS event_daily_type_users;
DROP TABLE IF EXISTS event_daily_users;
DROP TABLE IF EXISTS event_rollup_days;
DROP FUNCTION IF EXISTS event_rollups_users_gone();
DROP FUNCTION IF EXISTS event_rollups_type_users_gone();

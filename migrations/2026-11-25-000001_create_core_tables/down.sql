-- Drops the platform's tables and every row in them. For development
-- databases only: never run this against the live database.
-- squawk-ignore-file ban-drop-table
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '5s';
DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS users;

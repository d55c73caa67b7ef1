-- squawk-ignore-file ban-drop-table
-- (Development databases only: the sessions are dropped with the table.)
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '5s';
DROP TABLE IF EXISTS sessions;

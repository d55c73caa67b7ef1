-- Dropped CONCURRENTLY: blocks no reads or writes.
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
DROP INDEX CONCURRENTLY IF EXISTS users_display_name_fts_idx;

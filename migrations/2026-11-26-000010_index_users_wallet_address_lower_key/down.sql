-- Dropped CONCURRENTLY: only a SHARE UPDATE EXCLUSIVE lock, then a wait for
-- the transactions using the index; neither blocks reads or writes, so no
-- lock_timeout or statement_timeout.
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
DROP INDEX CONCURRENTLY IF EXISTS users_wallet_address_lower_key;

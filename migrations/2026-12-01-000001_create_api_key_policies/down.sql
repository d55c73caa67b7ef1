-- squawk-ignore-file ban-drop-table
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- Development databases only: dropping the crate's own tables is what a
-- revert means; no other service reads or writes them. `api_keys` itself is
-- untouched.
DROP FUNCTION IF EXISTS dreamnet_spend_key_credits(uuid, bigint, timestamptz);
DROP TABLE IF EXISTS api_key_usage;
DROP TABLE IF EXISTS api_key_policies;

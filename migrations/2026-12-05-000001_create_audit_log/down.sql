-- squawk-ignore-file ban-drop-table
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- Development databases only: dropping the crate's own tables is what a
-- revert means, and no other service reads or writes them.
DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS audit_chain_heads;

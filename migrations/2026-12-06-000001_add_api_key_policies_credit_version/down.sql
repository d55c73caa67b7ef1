-- squawk-ignore-file ban-drop-column
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- Development databases only: the counters are the crate's own.
ALTER TABLE api_key_policies
    DROP COLUMN IF EXISTS credits_seq,
    DROP COLUMN IF EXISTS credits_version;

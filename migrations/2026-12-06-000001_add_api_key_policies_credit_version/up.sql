-- Credits held in Redis (dreamnet-db's one-script verification behind the
-- Redis cache): a key's balance lives in Redis and is written back here in
-- the batched usage flush. Two counters keep those write-backs honest:
--   credits_version: moved by every replacement of the budget
--     (`set_credits`); a write-back made against an older version is
--     dropped, so unflushed spends can never undercut a new budget.
--   credits_seq: how many spends the balance written here had taken; a
--     write-back lands only if it is newer, so batches from several
--     processes, arriving in any order, never move the balance back.
-- Two columns added to the crate's own table (not a shared one), with
-- constant defaults: no rewrite, no scan.
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '5s';

ALTER TABLE api_key_policies
    ADD COLUMN IF NOT EXISTS credits_version bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS credits_seq bigint NOT NULL DEFAULT 0;

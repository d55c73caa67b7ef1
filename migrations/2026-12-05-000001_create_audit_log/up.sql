-- The audit log (dreamnet-db's `Store::audit`): one row per change made
-- through the crate, written in the same transaction as the change. New
-- tables: the existing services have none, so nothing of theirs changes, and
-- creating them takes no lock on any shared table.
--
-- Records are spread over 256 hash chains (`shard`, by the id of the entity
-- the record is about). Each record carries its place in its chain (`seq`),
-- the previous record's hash and its own:
--   hash = SHA-256(content digest || prev_hash)
-- `audit_chain_heads` holds each chain's newest `seq` and `hash`; a writer
-- locks only its chain's head row, so writes about unrelated entities do not
-- wait for one another. `purged_seq` is where a retention purge cut the
-- chain, so that a purge is told apart from a deletion.
--
-- The crate only ever INSERTs into `audit_log`, except for the retention
-- purge (DELETE of the oldest records) and the erasure of a user's personal
-- values (UPDATE setting `personal` and `personal_salt` to NULL): a role for
-- the service needs INSERT and SELECT, plus DELETE and UPDATE only where
-- those run.
-- squawk-ignore-file prefer-text-field
-- (varchar lengths bound what the crate writes; the tables are the crate's
-- own and new, so a later change of length would lock only them.)
-- squawk-ignore-file prefer-bigint-over-smallint
-- (`shard` is 0 to 255.)
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- (New, empty tables that no other service uses: nothing waits on their
-- locks, and building their indexes takes no time.)
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    shard smallint PRIMARY KEY,
    seq bigint NOT NULL DEFAULT 0,
    hash varchar(64) NOT NULL,
    prev_hash varchar(64) NOT NULL,
    purged_seq bigint NOT NULL DEFAULT 0,
    CONSTRAINT audit_chain_heads_shard_range CHECK (shard >= 0 AND shard < 256)
);

INSERT INTO audit_chain_heads (shard, hash, prev_hash)
SELECT s, repeat('0', 64), repeat('0', 64) FROM generate_series(0, 255) AS s
ON CONFLICT (shard) DO NOTHING;

CREATE TABLE IF NOT EXISTS audit_log (
    id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL,
    actor_kind varchar(16) NOT NULL,
    actor_name varchar(100),
    action varchar(64) NOT NULL,
    entity varchar(32) NOT NULL,
    entity_id uuid,
    subject uuid,
    changes jsonb NOT NULL,
    personal jsonb,
    personal_salt varchar(32),
    personal_digest varchar(64),
    shard smallint NOT NULL,
    seq bigint NOT NULL,
    prev_hash varchar(64) NOT NULL,
    hash varchar(64) NOT NULL,
    CONSTRAINT audit_log_shard_seq_key UNIQUE (shard, seq)
);

-- The indexes are created here, in the same migration and without
-- CONCURRENTLY, only because the table is new and empty. Later indexes on
-- `audit_log` must be built CONCURRENTLY in a migration of their own.

-- Newest first, in keyset pages of `(created_at, id)`; time ranges; purges.
CREATE INDEX IF NOT EXISTS audit_log_created_at_idx ON audit_log (created_at, id);
-- By entity, by actor, by action.
CREATE INDEX IF NOT EXISTS audit_log_entity_idx ON audit_log (entity_id, created_at, id);
CREATE INDEX IF NOT EXISTS audit_log_actor_idx ON audit_log (actor_kind, actor_name, created_at, id);
CREATE INDEX IF NOT EXISTS audit_log_action_idx ON audit_log (action, created_at, id);
-- Erasing a user's personal values.
CREATE INDEX IF NOT EXISTS audit_log_subject_idx ON audit_log (subject) WHERE subject IS NOT NULL;

-- Media files (dreamnet-db's `Store::media`). A new table: the existing
-- services have none, so nothing of theirs changes, and creating it takes
-- no lock on any shared table (`owner_id` is deliberately not a foreign key
-- to `users`: adding one would lock `users` against writes while it is
-- checked, and files must be erasable apart from the user row, see
-- `Media::delete_owner`).
--
-- One row per stored object. The bytes live in an object store under
-- `storage_key`, which the crate makes from `id`; `file_name` is the name
-- the client gave, for display only, and never reaches the storage key.
--
-- A row is written `pending` before its object, and marked `complete`
-- (with its type, size and hash) after the object is fully written, so a
-- reader (who only ever sees complete rows) never finds a row whose object
-- is missing. `sweep` removes pending rows older than a bound, with their
-- objects, and objects that have no row.
-- squawk-ignore-file prefer-text-field
-- (varchar lengths bound what the crate writes; the table is the crate's own
-- and new, so a later change of length would lock only `media`.)
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- (A new, empty table that no other service uses: nothing waits on its
-- locks, and building its indexes takes no time.)
CREATE TABLE IF NOT EXISTS media (
    id uuid PRIMARY KEY,
    owner_id uuid,
    status varchar(16) NOT NULL DEFAULT 'pending',
    content_type varchar(255),
    size_bytes bigint,
    sha256 varchar(64),
    file_name varchar(255) NOT NULL,
    storage_key varchar(255) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    CONSTRAINT media_status_known CHECK (status IN ('pending', 'complete')),
    CONSTRAINT media_complete_has_facts CHECK (
        status = 'pending'
        OR (content_type IS NOT NULL AND size_bytes >= 0 AND sha256 IS NOT NULL AND completed_at IS NOT NULL)
    )
);

-- The indexes are created here, in the same migration and without
-- CONCURRENTLY, only because the table is new and empty: building them
-- takes no time and blocks nobody. Later indexes on `media` must be built
-- CONCURRENTLY in a migration of their own.

-- A user's files, newest first, in keyset pages of `(created_at, id)`.
CREATE INDEX IF NOT EXISTS media_owner_created_idx ON media (owner_id, created_at, id)
    WHERE status = 'complete';

-- `sweep`: pending rows older than a bound.
CREATE INDEX IF NOT EXISTS media_pending_created_idx ON media (created_at)
    WHERE status = 'pending';

-- Erasing a user's files (every status).
CREATE INDEX IF NOT EXISTS media_owner_idx ON media (owner_id) WHERE owner_id IS NOT NULL;

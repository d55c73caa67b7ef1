-- Login sessions (dreamnet-db's `Sessions` on PostgreSQL). A new table: the
-- existing services have none, so nothing of theirs changes. Its indexes are
-- built by later migrations, concurrently, so that a sessions table that
-- already exists (Drizzle may create it first) is never locked for writes.
--
-- `id` is the SHA-256 (lower-case hex) of the session token the client
-- holds; the token itself is never stored, so a reader of this table
-- cannot take over a session. `user_id` is whoever the session belongs to,
-- if anyone; it is not a foreign key, so sessions can outlive or precede a
-- row of `users` (`Sessions::delete_user` ends them explicitly).
--
-- squawk-ignore-file prefer-text-field
-- (varchar(64) is the width of a SHA-256 in hex, as the Drizzle schema
-- declares it; the column is never resized.)
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';
CREATE TABLE IF NOT EXISTS sessions (
    id varchar(64),
    user_id uuid,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_data_is_object CHECK (jsonb_typeof(data) = 'object')
);

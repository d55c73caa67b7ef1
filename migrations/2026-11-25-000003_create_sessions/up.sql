-- Login sessions (dreamnet-db's `Sessions` on PostgreSQL). A new table: the
-- existing services have none, so nothing of theirs changes.
--
-- `id` is the SHA-256 (lower-case hex) of the session token the client
-- holds; the token itself is never stored, so a reader of this table
-- cannot take over a session. `user_id` is whoever the session belongs to,
-- if anyone; it is not a foreign key, so sessions can outlive or precede a
-- row of `users` (`Sessions::delete_user` ends them explicitly).
CREATE TABLE IF NOT EXISTS sessions (
    id varchar(64) PRIMARY KEY,
    user_id uuid,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT sessions_data_is_object CHECK (jsonb_typeof(data) = 'object')
);

-- Cleanup deletes `WHERE expires_at <= now`: a range scan of this index.
CREATE INDEX IF NOT EXISTS sessions_expires_at_idx ON sessions (expires_at);

-- "Log out everywhere": every session of one user.
CREATE INDEX IF NOT EXISTS sessions_user_id_idx ON sessions (user_id) WHERE user_id IS NOT NULL;

-- squawk-ignore-file ban-drop-table
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- Development databases only: dropping the crate's own table is what a
-- revert means, and no other service reads or writes `media`, so its lock
-- waits for nobody.
-- Drops the rows only: the objects they point to stay in the object store
-- (remove them with `Media::sweep` before running this, or by hand).
DROP TABLE IF EXISTS media;

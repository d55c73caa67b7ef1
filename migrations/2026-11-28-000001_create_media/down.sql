-- Drops the rows only: the objects they point to stay in the object store
-- (remove them with `Media::sweep` before running this, or by hand).
DROP TABLE IF EXISTS media;

-- The extension stays: other services' objects may use it, and dropping it
-- would drop every index built on it. The indexes of the later migrations
-- have their own down migrations.
SELECT 1;

-- Nothing to undo: the backfilled values stay.
SELECT 1;

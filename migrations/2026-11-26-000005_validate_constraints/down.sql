-- Nothing to undo: validated constraints stay validated.
SELECT 1;

-- Trigram matching (pg_trgm) for the user search's LIKE '%text%' indexes.
-- A trusted extension since PostgreSQL 13 (a database owner may create it)
-- and one Neon offers; IF NOT EXISTS leaves an installed one as it is.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

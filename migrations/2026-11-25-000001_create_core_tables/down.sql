-- Drops the platform's tables and every row in them. For development
-- databases only: never run this against the live database.
DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS users;

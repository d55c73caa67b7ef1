-- Validates what the three *_defaults_and_checks migrations added NOT VALID.
-- VALIDATE CONSTRAINT scans the table under a SHARE UPDATE EXCLUSIVE lock
-- (for a foreign key, ROW SHARE on users as well): reads and writes go on
-- meanwhile, and a request waiting for that lock holds none of them up, so
-- no lock_timeout here: it waits for autovacuum or another migration rather
-- than fail. statement_timeout 0: a large table takes as long as it takes.
--
-- A row the backfill could not fix (an api key without a user, service or
-- hash, an event without a type, a user with neither email nor wallet)
-- stops the migration here with an error naming the constraint; fix or
-- delete the row and start again.
SET LOCAL lock_timeout = 0;
SET LOCAL statement_timeout = 0;

ALTER TABLE users VALIDATE CONSTRAINT users_passport_tier_not_null;
ALTER TABLE users VALIDATE CONSTRAINT users_created_at_not_null;
ALTER TABLE users VALIDATE CONSTRAINT users_updated_at_not_null;
ALTER TABLE users VALIDATE CONSTRAINT users_metadata_not_null;
ALTER TABLE users VALIDATE CONSTRAINT users_preferences_not_null;
ALTER TABLE users VALIDATE CONSTRAINT users_email_or_wallet_check;

ALTER TABLE api_keys VALIDATE CONSTRAINT api_keys_user_id_not_null;
ALTER TABLE api_keys VALIDATE CONSTRAINT api_keys_service_not_null;
ALTER TABLE api_keys VALIDATE CONSTRAINT api_keys_hashed_key_not_null;
ALTER TABLE api_keys VALIDATE CONSTRAINT api_keys_created_at_not_null;
ALTER TABLE api_keys VALIDATE CONSTRAINT api_keys_user_id_users_id_fk;

ALTER TABLE events VALIDATE CONSTRAINT events_event_type_not_null;
ALTER TABLE events VALIDATE CONSTRAINT events_payload_not_null;
ALTER TABLE events VALIDATE CONSTRAINT events_created_at_not_null;
ALTER TABLE events VALIDATE CONSTRAINT events_user_id_users_id_fk;

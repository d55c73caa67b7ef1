-- The platform's three tables, with exactly the columns and types the
-- services that share this database use, and the constraint names
-- drizzle-kit gives them by default (`users_email_unique`,
-- `api_keys_user_id_users_id_fk`), so that a database Drizzle created first
-- and one this crate created from nothing end up the same.
--
-- On a database that has the tables already this does nothing (CREATE TABLE
-- IF NOT EXISTS takes no lock on an existing table), so the crate can adopt
-- the live database; the migrations after it bring an adopted table to the
-- crate's shape without blocking the services' reads and writes.
--
-- squawk-ignore-file prefer-text-field
-- (The varchar columns are the services' own types, which this crate never
-- changes.)
-- Creating api_keys and events takes a SHARE ROW EXCLUSIVE lock on users for
-- their foreign keys: give up quickly rather than queue the services behind
-- it (Store::migrate retries).
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '1s';

CREATE TABLE IF NOT EXISTS users (
    id UUID,
    email VARCHAR(255),
    wallet_address VARCHAR(42),
    passport_tier VARCHAR(50) DEFAULT 'visitor',
    created_at TIMESTAMP WITH TIME ZONE,
    updated_at TIMESTAMP WITH TIME ZONE,
    metadata JSONB,
    preferences JSONB,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_unique UNIQUE (email),
    CONSTRAINT users_wallet_address_unique UNIQUE (wallet_address)
);

CREATE TABLE IF NOT EXISTS api_keys (
    id UUID,
    user_id UUID,
    service VARCHAR(100),
    hashed_key VARCHAR(255),
    created_at TIMESTAMP WITH TIME ZONE,
    last_used TIMESTAMP WITH TIME ZONE,
    CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT api_keys_user_id_users_id_fk FOREIGN KEY (user_id) REFERENCES users (id)
);

CREATE TABLE IF NOT EXISTS events (
    id UUID,
    user_id UUID,
    event_type VARCHAR(100),
    payload JSONB,
    created_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_user_id_users_id_fk FOREIGN KEY (user_id) REFERENCES users (id)
);

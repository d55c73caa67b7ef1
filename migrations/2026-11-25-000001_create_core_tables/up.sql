-- The platform's three tables, exactly as the services that share this
-- database already use them. On a database that has them already this does
-- nothing, so the crate can adopt the live database.
CREATE TABLE IF NOT EXISTS users (
    id UUID PRIMARY KEY,
    email VARCHAR(255) UNIQUE,
    wallet_address VARCHAR(42) UNIQUE,
    passport_tier VARCHAR(50) DEFAULT 'visitor',
    created_at TIMESTAMP WITH TIME ZONE,
    updated_at TIMESTAMP WITH TIME ZONE,
    metadata JSONB,
    preferences JSONB
);

CREATE TABLE IF NOT EXISTS api_keys (
    id UUID PRIMARY KEY,
    user_id UUID REFERENCES users(id),
    service VARCHAR(100),
    hashed_key VARCHAR(255),
    created_at TIMESTAMP WITH TIME ZONE,
    last_used TIMESTAMP WITH TIME ZONE
);

CREATE TABLE IF NOT EXISTS events (
    id UUID PRIMARY KEY,
    user_id UUID REFERENCES users(id),
    event_type VARCHAR(100),
    payload JSONB,
    created_at TIMESTAMP WITH TIME ZONE
);

-- API key policies and usage (dreamnet-db's `ApiKeys::verify`): two new
-- tables beside `api_keys`, keyed by the key's id, instead of new columns
-- on the shared table. A key without a row here (every key other services
-- issue, and this crate's keys issued without a policy) validates exactly
-- as before. Keeping the policy apart leaves `api_keys` as the services
-- declare it, and keeps the credit spends (a write on every verification of
-- a key with a budget) off the rows other services read and lock.
--
-- Both tables reference `api_keys` with ON DELETE CASCADE, so a key deleted
-- by anyone (or with its user) takes its policy and usage with it. Creating
-- the foreign keys takes a short SHARE ROW EXCLUSIVE lock on `api_keys` (no
-- scan: the new tables are empty), given up after lock_timeout
-- (Store::migrate retries).
SET LOCAL lock_timeout = '200ms';
SET LOCAL statement_timeout = '5s';

-- squawk-ignore-file prefer-text-field
-- (varchar lengths bound what the crate writes; the tables are the crate's
-- own and new.)
CREATE TABLE IF NOT EXISTS api_key_policies (
    key_id uuid PRIMARY KEY,
    name varchar(200),
    metadata jsonb,
    -- No default: drizzle-kit cannot compare array defaults (push would
    -- rewrite one every time); the crate always writes the column.
    permissions text[] NOT NULL,
    disabled_at timestamptz,
    -- Credits left; NULL for unlimited.
    credits bigint,
    -- Credits after a refill, and how often ('day' or 'month', UTC).
    refill_amount bigint,
    refill_interval varchar(5),
    -- The start of the last period refilled.
    last_refill_at timestamptz,
    -- Named rate limits: [{"name", "emission_us", "burst"}].
    rate_limits jsonb NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_key_policies_key_id_api_keys_id_fk FOREIGN KEY (key_id)
        REFERENCES api_keys (id) ON DELETE CASCADE,
    CONSTRAINT api_key_policies_credits_not_negative CHECK (credits >= 0),
    CONSTRAINT api_key_policies_refill_positive CHECK (refill_amount > 0),
    CONSTRAINT api_key_policies_refill_interval_known CHECK (refill_interval IN ('day', 'month')),
    CONSTRAINT api_key_policies_refill_complete CHECK (
        (refill_amount IS NULL) = (refill_interval IS NULL)
        AND (refill_amount IS NULL OR credits IS NOT NULL)
    )
);

-- Verification counts per key, UTC hour and outcome; days are sums of
-- hours. Written in batches (one statement per flush), never per request.
CREATE TABLE IF NOT EXISTS api_key_usage (
    key_id uuid NOT NULL,
    hour timestamptz NOT NULL,
    outcome varchar(32) NOT NULL,
    count bigint NOT NULL,
    CONSTRAINT api_key_usage_pkey PRIMARY KEY (key_id, hour, outcome),
    CONSTRAINT api_key_usage_key_id_api_keys_id_fk FOREIGN KEY (key_id)
        REFERENCES api_keys (id) ON DELETE CASCADE,
    CONSTRAINT api_key_usage_count_positive CHECK (count > 0)
);

-- Spends `p_cost` credits of key `p_key` at `p_now`, atomically: refills
-- first if a refill is due (the period holding `p_now` started after the
-- last refill), then spends only if enough are left (and at least one: a
-- key at zero is refused even for a check that costs nothing). One row
-- lock, one statement for the caller. Returns NULL if the key has no budget, the
-- credits left (>= 0) if spent, or -1 - the credits left if there were not
-- enough (nothing is written then).
CREATE OR REPLACE FUNCTION dreamnet_spend_key_credits(p_key uuid, p_cost bigint, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_left bigint;
BEGIN
    UPDATE api_key_policies p
       SET credits = (CASE WHEN p.refill_amount IS NOT NULL
                            AND (p.last_refill_at IS NULL
                                 OR p.last_refill_at < date_trunc(p.refill_interval, p_now, 'UTC'))
                           THEN p.refill_amount ELSE p.credits END) - p_cost,
           last_refill_at = CASE WHEN p.refill_amount IS NOT NULL
                                  AND (p.last_refill_at IS NULL
                                       OR p.last_refill_at < date_trunc(p.refill_interval, p_now, 'UTC'))
                                 THEN date_trunc(p.refill_interval, p_now, 'UTC')
                                 ELSE p.last_refill_at END
     WHERE p.key_id = p_key
       AND p.credits IS NOT NULL
       AND (CASE WHEN p.refill_amount IS NOT NULL
                  AND (p.last_refill_at IS NULL
                       OR p.last_refill_at < date_trunc(p.refill_interval, p_now, 'UTC'))
                 THEN p.refill_amount ELSE p.credits END) >= GREATEST(p_cost, 1)
    RETURNING p.credits INTO v_left;
    IF FOUND THEN
        RETURN v_left;
    END IF;
    SELECT CASE WHEN p.refill_amount IS NOT NULL
                 AND (p.last_refill_at IS NULL
                      OR p.last_refill_at < date_trunc(p.refill_interval, p_now, 'UTC'))
                THEN p.refill_amount ELSE p.credits END
      INTO v_left
      FROM api_key_policies p
     WHERE p.key_id = p_key AND p.credits IS NOT NULL;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN -1 - v_left;
END
$$;

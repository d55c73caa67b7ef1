-- Rows the older services wrote with NULL where the crate now requires a
-- value get the column's default (updated_at: the row's created_at). The
-- `*_not_null` checks added NOT VALID before this refuse new NULLs, so one
-- read of each table finds every row to fix; they are then updated by
-- primary key, 5,000 at a time, one transaction per batch, so no batch
-- holds many row locks for long. Each batch gives up after lock_timeout
-- rather than wait on a row a service keeps locked; Store::migrate then
-- runs this again, and it picks up where it stopped.
--
-- Runs outside a transaction (metadata.toml) as a single statement: a DO
-- block may only COMMIT when it is the whole query.
DO $$
DECLARE
    job record;
    ids uuid[];
    next int;
    batch CONSTANT int := 5000;
BEGIN
    FOR job IN
        SELECT * FROM (VALUES
            ('users',
             'passport_tier = coalesce(passport_tier, ''visitor''), '
             'created_at = coalesce(created_at, now()), '
             'updated_at = coalesce(updated_at, created_at, now()), '
             'metadata = coalesce(metadata, ''{}''), '
             'preferences = coalesce(preferences, ''{}'')',
             'passport_tier IS NULL OR created_at IS NULL OR updated_at IS NULL '
             'OR metadata IS NULL OR preferences IS NULL'),
            ('api_keys',
             'created_at = coalesce(created_at, now())',
             'created_at IS NULL'),
            ('events',
             'payload = coalesce(payload, ''{}''), created_at = coalesce(created_at, now())',
             'payload IS NULL OR created_at IS NULL')
        ) AS jobs (tbl, fill, needed)
    LOOP
        EXECUTE format('SELECT array_agg(id) FROM %I WHERE %s', job.tbl, job.needed) INTO ids;
        COMMIT;
        next := 1;
        WHILE next <= coalesce(cardinality(ids), 0) LOOP
            PERFORM set_config('lock_timeout', '200ms', true);
            EXECUTE format('UPDATE %I SET %s WHERE id = ANY ($1) AND (%s)', job.tbl, job.fill, job.needed)
                USING ids[next:next + batch - 1];
            COMMIT;
            next := next + batch;
        END LOOP;
    END LOOP;
END
$$;

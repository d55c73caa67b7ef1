-- Grants the application and read-only roles their privileges on what the
-- owner owns in the store's schema. Run by the owner (or a superuser) after
-- every migration: `StoreBuilder::grant_roles` does it at the end of each
-- `Store::migrate`. One statement, so one transaction; re-runnable; takes no
-- lock on any table (GRANT and REVOKE change catalog rows only).
--
--   table                         application role                read-only role
--   __diesel_schema_migrations    SELECT                          SELECT
--   append-only (audit_log)       SELECT, INSERT                  SELECT
--   every other table             SELECT, INSERT, UPDATE, DELETE  SELECT
DO $dreamnet_roles$
DECLARE
    owner_role  text := {{owner}};
    app_role    text := {{app}};
    read_role   text := {{readonly}};
    append_only text[] := ARRAY[{{append_only}}]::text[];
    s text := current_schema();
    owner_oid oid;
    ns oid;
    broad text;
    r record;
BEGIN
    SELECT oid INTO owner_oid FROM pg_roles WHERE rolname = owner_role;
    SELECT oid INTO ns FROM pg_namespace WHERE nspname = s;
    IF owner_oid IS NULL OR ns IS NULL THEN
        RAISE EXCEPTION 'no role % or no current schema', owner_role
            USING ERRCODE = 'undefined_object';
    END IF;

    -- Privileges that grants cannot take away would make these roles more
    -- than least: refuse, changing nothing.
    FOREACH broad IN ARRAY ARRAY[app_role, read_role] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = broad AND (rolsuper OR rolbypassrls))
           OR pg_has_role(broad, owner_role, 'USAGE')
           OR (CASE WHEN to_regrole('pg_write_all_data') IS NULL THEN false
                    ELSE pg_has_role(broad, 'pg_write_all_data', 'USAGE') END)
           OR (CASE WHEN to_regrole('neon_superuser') IS NULL THEN false
                    ELSE pg_has_role(broad, 'neon_superuser', 'USAGE') END) THEN
            RAISE EXCEPTION 'role % has privileges beyond its grants (a superuser, BYPASSRLS, '
                'or a member of %, pg_write_all_data or neon_superuser)', broad, owner_role
                USING ERRCODE = 'invalid_grant_operation';
        END IF;
    END LOOP;

    -- Tables and views: the crate's, whichever migration created them.
    -- Owning nothing, neither role may ALTER or DROP; REVOKE ALL takes away
    -- TRUNCATE, REFERENCES and TRIGGER (and MAINTAIN) whoever granted them.
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relname::text AS name
          FROM pg_class c
         WHERE c.relnamespace = ns
           AND c.relowner = owner_oid
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    LOOP
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %I, %I', r.rel, app_role, read_role);
        EXECUTE format('GRANT SELECT ON TABLE %s TO %I, %I', r.rel, app_role, read_role);
        IF r.name = '__diesel_schema_migrations' THEN
            NULL; -- read by the schema check; written by the owner's migrations only
        ELSIF r.name = ANY (append_only) THEN
            EXECUTE format('GRANT INSERT ON TABLE %s TO %I', r.rel, app_role);
        ELSE
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON TABLE %s TO %I', r.rel, app_role);
        END IF;
    END LOOP;

    FOR r IN
        SELECT c.oid::regclass AS rel
          FROM pg_class c
         WHERE c.relnamespace = ns AND c.relowner = owner_oid AND c.relkind = 'S'
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I, %I', r.rel, app_role, read_role);
        EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', r.rel, app_role);
        EXECUTE format('GRANT SELECT ON SEQUENCE %s TO %I', r.rel, read_role);
    END LOOP;

    -- Functions (dreamnet_spend_key_credits runs with its caller's privileges).
    FOR r IN
        SELECT p.oid::regprocedure AS fn
          FROM pg_proc p
         WHERE p.pronamespace = ns AND p.proowner = owner_oid AND p.prokind = 'f'
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', r.fn, app_role);
    END LOOP;

    -- What the owner creates later: never more than SELECT, INSERT until
    -- this script runs again, so a new append-only table is never open to
    -- UPDATE or DELETE, even for a moment.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT, INSERT ON TABLES TO %I',
                   owner_role, s, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON TABLES TO %I',
                   owner_role, s, read_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I',
                   owner_role, s, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON SEQUENCES TO %I',
                   owner_role, s, read_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT EXECUTE ON FUNCTIONS TO %I',
                   owner_role, s, app_role);
END
$dreamnet_roles$;

-- Creates the three roles of a least-privilege deployment and sets the
-- database's and schema's privileges. Run once per database (again at will)
-- by an administrator: a superuser, or on Neon the database's owner
-- (neondb_owner, which may CREATE ROLE). `RoleNames::setup_sql` gives this
-- script with the names filled in; the table privileges come from
-- roles_grant.sql, run by the owner after every migration.
DO $dreamnet_roles$
DECLARE
    owner_role text := {{owner}};
    app_role   text := {{app}};
    read_role  text := {{readonly}};
    s text := current_schema();
    r text;
BEGIN
    -- LOGIN, no password, no attribute (not superuser, no CREATEDB,
    -- CREATEROLE or BYPASSRLS). Existing roles are left as they are.
    -- Passwords are set apart (psql's \password), never in a script.
    FOREACH r IN ARRAY ARRAY[owner_role, app_role, read_role] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', r);
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I, %I',
                   current_database(), owner_role, app_role, read_role);
    -- PostgreSQL before 15 lets everyone create in `public`: nobody but the
    -- owner may here (grant CREATE back to any other role that needs it).
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', s);
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I, %I', s, app_role, read_role);
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', s, owner_role);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I', s, app_role, read_role);
END
$dreamnet_roles$;

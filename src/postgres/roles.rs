//! The SQL that creates the three roles of [`RoleNames`] and grants each its
//! privileges, on PostgreSQL and on Neon alike.
//!
//! The scripts are `sql/roles_setup.sql` and `sql/roles_grant.sql`, one
//! `DO` block each: one statement, so one transaction (a privilege is
//! never half-granted), re-runnable at will, and taking no lock on any
//! table (`GRANT` and `REVOKE` change catalog rows only). They work on the
//! store's schema, `current_schema()` (normally `public`). The names are
//! validated by [`RoleNames::new`] and filled in as string literals; the
//! scripts quote them with `format('%I')` wherever they name a role.

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use crate::error::Result;
use crate::model::{APPEND_ONLY_TABLES, RoleNames};

/// `s` as an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `sql/roles_setup.sql`, with `{{owner}}`, `{{app}}` and `{{readonly}}`
/// to fill in.
const SETUP_SQL: &str = include_str!("../../sql/roles_setup.sql");
/// `sql/roles_grant.sql`, with the same, and `{{append_only}}`.
const GRANT_SQL: &str = include_str!("../../sql/roles_grant.sql");

impl RoleNames {
    /// `template` with the names filled in, as string literals.
    fn fill(&self, template: &str) -> String {
        let append_only = APPEND_ONLY_TABLES
            .iter()
            .map(|t| literal(t))
            .collect::<Vec<_>>()
            .join(", ");
        template
            .replace("{{owner}}", &literal(self.owner()))
            .replace("{{app}}", &literal(self.app()))
            .replace("{{readonly}}", &literal(self.readonly()))
            .replace("{{append_only}}", &append_only)
    }

    /// SQL that creates the roles and sets the database's and schema's
    /// privileges (the crate's `sql/roles_setup.sql`, names filled in), to
    /// run once per database (again at will) by an administrator: a
    /// superuser, or on Neon the database's owner (`neondb_owner`, which
    /// may `CREATE ROLE`).
    ///
    /// - Each role that does not exist yet is created `LOGIN`, without a
    ///   password and without any attribute (not superuser, no `CREATEDB`,
    ///   `CREATEROLE` or `BYPASSRLS`). Existing roles are left as they
    ///   are. Set passwords apart, for instance with psql's
    ///   `\password dreamnet_app` (which sends only a SCRAM verifier), so
    ///   that no password is ever part of a script or a log.
    /// - `CONNECT` on the current database for all three.
    /// - On the schema (`current_schema()`, normally `public`): `CREATE`
    ///   taken from `PUBLIC` (PostgreSQL before 15 gives it to everyone;
    ///   grant it back to any other role that creates tables there) and
    ///   from the application and read-only roles; `USAGE` and `CREATE`
    ///   for the owner, `USAGE` for the others.
    ///
    /// Table privileges come from [`grant_sql`](Self::grant_sql), run by
    /// the owner after the migrations.
    pub fn setup_sql(&self) -> String {
        self.fill(SETUP_SQL)
    }

    /// SQL that grants the application and read-only roles their
    /// privileges on the owner's tables, sequences and functions in the
    /// schema (the crate's `sql/roles_grant.sql`, names filled in), to run
    /// by the owner (or a superuser) after every migration.
    /// [`StoreBuilder::grant_roles`](crate::StoreBuilder::grant_roles) runs
    /// it at the end of every [`Store::migrate`](crate::Store::migrate);
    /// [`Store::grant_roles`](crate::Store::grant_roles) runs it once. One
    /// statement (so one transaction), re-runnable, taking no lock on any
    /// table.
    ///
    /// On every table (and view) the owner owns in the schema, whatever
    /// migration created it, the two roles' privileges are replaced by:
    ///
    /// | table | application role | read-only role |
    /// | --- | --- | --- |
    /// | `__diesel_schema_migrations` | `SELECT` | `SELECT` |
    /// | [`APPEND_ONLY_TABLES`] (`audit_log`) | `SELECT`, `INSERT` | `SELECT` |
    /// | every other table | `SELECT`, `INSERT`, `UPDATE`, `DELETE` | `SELECT` |
    ///
    /// so neither may `TRUNCATE` or add triggers or references, and,
    /// owning nothing, neither may `ALTER` or `DROP`. Sequences: `USAGE,
    /// SELECT` for the application role, `SELECT` for the read-only one;
    /// functions: `EXECUTE` for the application role (the credits spend,
    /// `dreamnet_spend_key_credits`, runs with its caller's privileges).
    ///
    /// Default privileges: what the owner creates later in the schema is
    /// `SELECT, INSERT` for the application role and `SELECT` for the
    /// read-only one until this SQL runs again, never more, so a new
    /// append-only table is never open to `UPDATE` or `DELETE`, even for a
    /// moment.
    ///
    /// Refused, changing nothing, if the application or read-only role is a
    /// superuser, bypasses row-level security, or is a member of the owner,
    /// of `pg_write_all_data` or of Neon's `neon_superuser` (as every role
    /// created in Neon's console is): grants could not make it least.
    pub fn grant_sql(&self) -> String {
        self.fill(GRANT_SQL)
    }
}

/// Runs [`RoleNames::grant_sql`] on `conn`.
pub(super) async fn grant(conn: &mut AsyncPgConnection, roles: &RoleNames) -> Result<()> {
    conn.batch_execute(&roles.grant_sql()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_literals() {
        let roles = RoleNames::new("Owner-1", "app", "read").unwrap();
        let sql = roles.grant_sql();
        assert!(sql.contains("owner_role  text := 'Owner-1';"), "{sql}");
        assert!(sql.contains("ARRAY['audit_log']::text[]"), "{sql}");
        assert!(!sql.contains("{{"), "{sql}");
        let setup = roles.setup_sql();
        assert!(setup.contains("read_role  text := 'read';"), "{setup}");
        assert!(!setup.contains("{{"), "{setup}");
        assert_eq!(literal("a'b"), "'a''b'");
    }
}

//! The names of the three database roles a deployment runs the store under.

use crate::error::{Error, Field, Result};

/// Tables the application role may read and add rows to but never change,
/// delete from or truncate: the audit log. [`RoleNames::grant_sql`] grants
/// a table of this name `SELECT` and `INSERT` only, whichever migration
/// created it; its retention and erasure are the owner's jobs.
pub const APPEND_ONLY_TABLES: &[&str] = &["audit_log"];

/// The longest role name PostgreSQL keeps (`NAMEDATALEN - 1` bytes).
const MAX_ROLE_LEN: usize = 63;

/// The three PostgreSQL roles of a least-privilege deployment:
///
/// - **owner**: owns the schema's tables and runs the migrations (DDL). Its
///   URL is the only one given [`run_migrations(true)`](crate::StoreBuilder::run_migrations).
/// - **app**: what services connect as: reads and writes the crate's tables
///   (`SELECT`, `INSERT`, `UPDATE`, `DELETE`; on [`APPEND_ONLY_TABLES`]
///   `SELECT` and `INSERT` only), runs the crate's functions, reads
///   `__diesel_schema_migrations`; no DDL, no `TRUNCATE`.
/// - **readonly**: `SELECT` on the crate's tables, for analytics and
///   replicas.
///
/// [`setup_sql`](RoleNames::setup_sql) creates them;
/// [`grant_sql`](RoleNames::grant_sql) (or
/// [`StoreBuilder::grant_roles`](crate::StoreBuilder::grant_roles), which
/// runs it after every migration) grants each its privileges. Names are
/// validated here and quoted in the SQL, so no name can change what the SQL
/// does. A name may be an existing role's (Neon's `neondb_owner` as the
/// owner, say).
///
/// ```
/// use dreamnet_db::RoleNames;
///
/// let roles = RoleNames::new("dreamnet_owner", "dreamnet_app", "dreamnet_readonly")?;
/// assert_eq!(roles.app(), "dreamnet_app");
/// assert!(roles.grant_sql().contains("'dreamnet_app'"));
/// assert!(RoleNames::new("dreamnet_owner", "dreamnet_owner", "dreamnet_readonly").is_err());
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleNames {
    owner: String,
    app: String,
    readonly: String,
}

impl RoleNames {
    /// The three roles, by name. Refused with [`Error::InvalidInput`]
    /// ([`Field::Role`]): an empty name, one longer than 63 bytes, one with
    /// a character other than ASCII letters, digits, `_` and `-`, one
    /// starting with `pg_` (reserved by PostgreSQL), or a name given twice.
    pub fn new(
        owner: impl Into<String>,
        app: impl Into<String>,
        readonly: impl Into<String>,
    ) -> Result<Self> {
        let names = RoleNames {
            owner: owner.into(),
            app: app.into(),
            readonly: readonly.into(),
        };
        for name in [&names.owner, &names.app, &names.readonly] {
            check_role(name)?;
        }
        if names.owner == names.app || names.owner == names.readonly || names.app == names.readonly
        {
            return Err(Error::invalid(
                Field::Role,
                "the owner, application and read-only roles must be three different roles",
            ));
        }
        Ok(names)
    }

    /// The role that owns the tables and runs the migrations.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The role services connect as.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The role analytics and replicas connect as.
    pub fn readonly(&self) -> &str {
        &self.readonly
    }
}

fn check_role(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(Field::Role, "a role name cannot be empty"));
    }
    if name.len() > MAX_ROLE_LEN {
        return Err(Error::invalid(
            Field::Role,
            format!("a role name is at most {MAX_ROLE_LEN} bytes"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid(
            Field::Role,
            "a role name may hold ASCII letters, digits, '_' and '-' only",
        ));
    }
    if name.to_ascii_lowercase().starts_with("pg_") {
        return Err(Error::invalid(
            Field::Role,
            "names starting with pg_ are reserved by PostgreSQL",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(RoleNames::new("o", "a", "r").is_ok());
        assert!(RoleNames::new("Owner-1", "app_2", "read_3").is_ok());
        for bad in [
            "",
            "a\"b",
            "a b",
            "a;b",
            "a'b",
            "pg_monitor",
            "PG_x",
            "é",
            &"x".repeat(64),
        ] {
            let e = RoleNames::new(bad, "a", "r").unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidInput {
                        field: Field::Role,
                        ..
                    }
                ),
                "{bad:?}: {e:?}"
            );
        }
        assert!(RoleNames::new("x".repeat(63), "a", "r").is_ok());
        assert!(RoleNames::new("o", "o", "r").is_err());
        assert!(RoleNames::new("o", "a", "a").is_err());
        assert!(RoleNames::new("o", "a", "o").is_err());
    }
}

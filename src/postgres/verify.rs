//! The schema the crate's migrations promise, and the check that the
//! database still has it.
//!
//! The expected shape is the end state of every migration in
//! [`MIGRATIONS`](super::MIGRATIONS): the columns of the crate's tables (type,
//! NOT NULL, default), their constraints (definition, validated) and the
//! indexes the crate's queries use (definition, valid). The check reads
//! PostgreSQL's catalogs for the tables of the current schema and names every
//! difference; objects other services added (columns, indexes, constraints)
//! are not differences. While some of the crate's migrations are not applied
//! the shape is expected to differ, so the check then names only those
//! migrations.
//!
//! It runs at three places:
//! - [`Store::migrate`] (and so `connect` with `run_migrations(true)`), after
//!   applying migrations: a difference fails it with [`Error::Schema`];
//! - `connect` without `run_migrations`: a difference is logged as one
//!   `tracing` error naming every problem, and the store is still returned;
//! - [`Store::verify_schema`], for readiness checks and operators.

use std::collections::{HashMap, HashSet};
use std::fmt;

use diesel::QueryableByName;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::sql_types::{Array, Bool, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::MIGRATIONS;
use crate::error::{Error, Result};

/// The tables the crate reads and writes.
const TABLES: [&str; 6] = [
    "users",
    "api_keys",
    "events",
    "sessions",
    "api_key_policies",
    "api_key_usage",
];

/// A column: table, name, type as `format_type` prints it, NOT NULL, and
/// default as `pg_get_expr` prints it.
type Column = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
);

const UUID: &str = "uuid";
const TSTZ: &str = "timestamp with time zone";
const JSONB: &str = "jsonb";
const NOW: Option<&str> = Some("now()");
const RANDOM_UUID: Option<&str> = Some("gen_random_uuid()");
const EMPTY_OBJECT: Option<&str> = Some("'{}'::jsonb");

const COLUMNS: &[Column] = &[
    ("users", "id", UUID, true, RANDOM_UUID),
    ("users", "email", "character varying(255)", false, None),
    (
        "users",
        "wallet_address",
        "character varying(42)",
        false,
        None,
    ),
    (
        "users",
        "passport_tier",
        "character varying(50)",
        true,
        Some("'visitor'::character varying"),
    ),
    ("users", "created_at", TSTZ, true, NOW),
    ("users", "updated_at", TSTZ, true, NOW),
    ("users", "metadata", JSONB, true, EMPTY_OBJECT),
    ("users", "preferences", JSONB, true, EMPTY_OBJECT),
    ("api_keys", "id", UUID, true, RANDOM_UUID),
    ("api_keys", "user_id", UUID, true, None),
    ("api_keys", "service", "character varying(100)", true, None),
    (
        "api_keys",
        "hashed_key",
        "character varying(255)",
        true,
        None,
    ),
    ("api_keys", "created_at", TSTZ, true, NOW),
    ("api_keys", "last_used", TSTZ, false, None),
    (
        "api_keys",
        "key_prefix",
        "character varying(16)",
        false,
        None,
    ),
    ("api_keys", "expires_at", TSTZ, false, None),
    ("api_keys", "revoked_at", TSTZ, false, None),
    ("events", "id", UUID, true, RANDOM_UUID),
    ("events", "user_id", UUID, false, None),
    ("events", "event_type", "character varying(100)", true, None),
    ("events", "payload", JSONB, true, EMPTY_OBJECT),
    ("events", "created_at", TSTZ, true, NOW),
    ("sessions", "id", "character varying(64)", true, None),
    ("sessions", "user_id", UUID, false, None),
    ("sessions", "data", JSONB, true, EMPTY_OBJECT),
    ("sessions", "created_at", TSTZ, true, NOW),
    ("sessions", "expires_at", TSTZ, true, None),
    ("api_key_policies", "key_id", UUID, true, None),
    (
        "api_key_policies",
        "name",
        "character varying(200)",
        false,
        None,
    ),
    ("api_key_policies", "metadata", JSONB, false, None),
    ("api_key_policies", "permissions", "text[]", true, None),
    ("api_key_policies", "disabled_at", TSTZ, false, None),
    ("api_key_policies", "credits", "bigint", false, None),
    ("api_key_policies", "refill_amount", "bigint", false, None),
    (
        "api_key_policies",
        "refill_interval",
        "character varying(5)",
        false,
        None,
    ),
    ("api_key_policies", "last_refill_at", TSTZ, false, None),
    (
        "api_key_policies",
        "rate_limits",
        JSONB,
        true,
        Some("'[]'::jsonb"),
    ),
    ("api_key_policies", "updated_at", TSTZ, true, NOW),
    (
        "api_key_policies",
        "credits_version",
        "bigint",
        true,
        Some("0"),
    ),
    ("api_key_policies", "credits_seq", "bigint", true, Some("0")),
    ("api_key_usage", "key_id", UUID, true, None),
    ("api_key_usage", "hour", TSTZ, true, None),
    (
        "api_key_usage",
        "outcome",
        "character varying(32)",
        true,
        None,
    ),
    ("api_key_usage", "count", "bigint", true, None),
];

/// A constraint: table, name, definition as `pg_get_constraintdef` prints
/// it. Unique constraints and foreign keys carry drizzle-kit's default names.
const CONSTRAINTS: &[(&str, &str, &str)] = &[
    ("users", "users_pkey", "PRIMARY KEY (id)"),
    ("users", "users_email_unique", "UNIQUE (email)"),
    (
        "users",
        "users_wallet_address_unique",
        "UNIQUE (wallet_address)",
    ),
    (
        "users",
        "users_email_or_wallet_check",
        "CHECK (((email IS NOT NULL) OR (wallet_address IS NOT NULL)))",
    ),
    ("api_keys", "api_keys_pkey", "PRIMARY KEY (id)"),
    (
        "api_keys",
        "api_keys_user_id_users_id_fk",
        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE",
    ),
    ("events", "events_pkey", "PRIMARY KEY (id)"),
    (
        "events",
        "events_user_id_users_id_fk",
        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE SET NULL",
    ),
    ("sessions", "sessions_pkey", "PRIMARY KEY (id)"),
    (
        "api_key_policies",
        "api_key_policies_pkey",
        "PRIMARY KEY (key_id)",
    ),
    (
        "api_key_policies",
        "api_key_policies_key_id_api_keys_id_fk",
        "FOREIGN KEY (key_id) REFERENCES api_keys(id) ON DELETE CASCADE",
    ),
    (
        "api_key_policies",
        "api_key_policies_credits_not_negative",
        "CHECK ((credits >= 0))",
    ),
    (
        "api_key_usage",
        "api_key_usage_pkey",
        "PRIMARY KEY (key_id, hour, outcome)",
    ),
    (
        "api_key_usage",
        "api_key_usage_key_id_api_keys_id_fk",
        "FOREIGN KEY (key_id) REFERENCES api_keys(id) ON DELETE CASCADE",
    ),
    (
        "sessions",
        "sessions_data_is_object",
        "CHECK ((jsonb_typeof(data) = 'object'::text))",
    ),
];

/// An index the crate's queries use: table, name, unique, and what follows
/// `USING` in `pg_get_indexdef`. Each is built by its own migration, named
/// `<version>_index_<name>` (see [`index_migration`]).
pub(super) const INDEXES: &[(&str, &str, bool, &str)] = &[
    (
        "users",
        "users_email_lower_key",
        true,
        "btree (lower((email)::text))",
    ),
    (
        "users",
        "users_wallet_address_lower_key",
        true,
        "btree (lower((wallet_address)::text))",
    ),
    (
        "users",
        "users_created_at_id_idx",
        false,
        "btree (created_at, id)",
    ),
    (
        "api_keys",
        "api_keys_hashed_key_key",
        true,
        "btree (hashed_key)",
    ),
    (
        "api_keys",
        "api_keys_user_id_created_at_idx",
        false,
        "btree (user_id, created_at, id)",
    ),
    (
        "events",
        "events_user_id_created_at_idx",
        false,
        "btree (user_id, created_at DESC, id DESC)",
    ),
    (
        "events",
        "events_event_type_created_at_idx",
        false,
        "btree (event_type, created_at DESC, id DESC)",
    ),
    (
        "events",
        "events_payload_idx",
        false,
        "gin (payload jsonb_path_ops)",
    ),
    (
        "events",
        "events_created_at_idx",
        false,
        "btree (created_at DESC, id DESC)",
    ),
    (
        "events",
        "events_payload_fts_idx",
        false,
        "gin (jsonb_to_tsvector('simple'::regconfig, payload, '[\"string\"]'::jsonb))",
    ),
    (
        "users",
        "users_email_prefix_idx",
        false,
        "btree (lower((email)::text) text_pattern_ops)",
    ),
    (
        "users",
        "users_wallet_address_prefix_idx",
        false,
        "btree (lower((wallet_address)::text) text_pattern_ops)",
    ),
    (
        "users",
        "users_display_name_fts_idx",
        false,
        "gin (to_tsvector('simple'::regconfig, (metadata ->> 'display_name'::text)))",
    ),
    (
        "sessions",
        "sessions_expires_at_idx",
        false,
        "btree (expires_at)",
    ),
    (
        "sessions",
        "sessions_user_id_idx",
        false,
        "btree (user_id) WHERE (user_id IS NOT NULL)",
    ),
];

/// The name of the migration that builds `index`, by the convention that
/// it ends in `_index_<name>`.
pub(super) fn index_migration<'a>(names: &'a [String], index: &str) -> Option<&'a String> {
    let suffix = format!("_index_{index}");
    names.iter().find(|m| m.ends_with(&suffix))
}

/// One way the database differs from what the crate's migrations promise.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaProblem {
    /// A migration the crate ships is not applied (its version).
    PendingMigration(String),
    /// A table the crate uses does not exist.
    MissingTable(String),
    /// A column (`table.column`) does not exist.
    MissingColumn(String),
    /// An index the crate's queries use does not exist (its name).
    MissingIndex(String),
    /// An index is INVALID, as a failed concurrent build leaves it: no query
    /// uses it (its name).
    InvalidIndex(String),
    /// A constraint does not exist (its name).
    MissingConstraint(String),
    /// A constraint was added NOT VALID and never validated: rows older than
    /// it were never checked (its name).
    NotValidated(String),
    /// An object exists with another definition than the migrations give it.
    Differs {
        /// What differs: `column users.created_at`, `index …`, `constraint …`,
        /// or the same with `default`/`type`/`nullability`.
        what: String,
        /// What the migrations give it.
        expected: String,
        /// What the database has.
        found: String,
    },
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaProblem::PendingMigration(v) => write!(f, "migration {v} is not applied"),
            SchemaProblem::MissingTable(t) => write!(f, "table {t} is missing"),
            SchemaProblem::MissingColumn(c) => write!(f, "column {c} is missing"),
            SchemaProblem::MissingIndex(i) => write!(f, "index {i} is missing"),
            SchemaProblem::InvalidIndex(i) => {
                write!(f, "index {i} is invalid (a failed concurrent build)")
            }
            SchemaProblem::MissingConstraint(c) => write!(f, "constraint {c} is missing"),
            SchemaProblem::NotValidated(c) => write!(f, "constraint {c} is not validated"),
            SchemaProblem::Differs {
                what,
                expected,
                found,
            } => write!(f, "{what} is `{found}`, expected `{expected}`"),
        }
    }
}

/// The database does not have the schema the crate's migrations promise:
/// every difference found, by name. The [`Error::Schema`] of
/// [`Store::migrate`](crate::Store::migrate) and
/// [`Store::verify_schema`](crate::Store::verify_schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    problems: Vec<SchemaProblem>,
}

impl SchemaMismatch {
    /// Every difference found, tables first, then columns, constraints and
    /// indexes.
    pub fn problems(&self) -> &[SchemaProblem] {
        &self.problems
    }
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the database schema differs from the crate's migrations: ")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaMismatch {}

impl super::PgBackend {
    /// The check behind [`Store::verify_schema`](crate::Store::verify_schema).
    pub(super) async fn verify_schema(&self) -> Result<()> {
        let problems = on_conn!(self, check,)?;
        into_result(problems)
    }
}

/// `Ok` without problems, [`Error::Schema`] with them.
pub(super) fn into_result(problems: Vec<SchemaProblem>) -> Result<()> {
    crate::telemetry::schema_problems(problems.len());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Schema(SchemaMismatch { problems }))
    }
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    tbl: String,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    ty: String,
    #[diesel(sql_type = Bool)]
    not_null: bool,
    #[diesel(sql_type = Nullable<Text>)]
    dflt: Option<String>,
}

/// An index or a constraint: its definition and whether it is valid.
#[derive(QueryableByName)]
struct ObjectRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    def: String,
    #[diesel(sql_type = Bool)]
    valid: bool,
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = Bool)]
    present: bool,
}

/// The crate's migrations whose version is not in
/// `__diesel_schema_migrations` (all of them when that table is missing).
pub(super) async fn pending(conn: &mut AsyncPgConnection) -> Result<Vec<String>> {
    let bookkept = diesel::sql_query(
        "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS present",
    )
    .get_result::<Present>(conn)
    .await?
    .present;
    let applied: HashSet<String> = if bookkept {
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations")
            .load::<Version>(conn)
            .await?
            .into_iter()
            .map(|v| v.version)
            .collect()
    } else {
        HashSet::new()
    };
    Ok(versions()
        .into_iter()
        .filter(|v| !applied.contains(v))
        .collect())
}

/// The versions of the crate's migrations, in order.
fn versions() -> Vec<String> {
    MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .expect("embedded migrations are readable")
        .iter()
        .map(|m| m.name().version().to_string())
        .collect()
}

/// Every difference between the database and the promised schema.
pub(super) async fn check(conn: &mut AsyncPgConnection) -> Result<Vec<SchemaProblem>> {
    let pending = pending(conn).await?;
    if !pending.is_empty() {
        return Ok(pending
            .into_iter()
            .map(SchemaProblem::PendingMigration)
            .collect());
    }
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let columns = diesel::sql_query(
        "SELECT c.relname::text AS tbl, a.attname::text AS name, \
                format_type(a.atttypid, a.atttypmod) AS ty, a.attnotnull AS not_null, \
                pg_get_expr(d.adbin, d.adrelid) AS dflt \
         FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE n.nspname = current_schema() AND c.relname = ANY ($1) AND c.relkind IN ('r', 'p') \
           AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind::<Array<Text>, _>(&tables)
    .load::<ColumnRow>(conn)
    .await?;
    let constraints = diesel::sql_query(
        "SELECT t.relname || '.' || c.conname AS name, pg_get_constraintdef(c.oid) AS def, \
                c.convalidated AS valid \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname = ANY ($1)",
    )
    .bind::<Array<Text>, _>(&tables)
    .load::<ObjectRow>(conn)
    .await?;
    let indexes = diesel::sql_query(
        "SELECT t.relname || '.' || i.relname AS name, \
                replace(pg_get_indexdef(x.indexrelid), ' ON ' || quote_ident(n.nspname) || '.', ' ON ') AS def, \
                x.indisvalid AS valid \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname = ANY ($1)",
    )
    .bind::<Array<Text>, _>(&tables)
    .load::<ObjectRow>(conn)
    .await?;
    Ok(compare(&columns, &constraints, &indexes))
}

fn compare(
    columns: &[ColumnRow],
    constraints: &[ObjectRow],
    indexes: &[ObjectRow],
) -> Vec<SchemaProblem> {
    let mut problems = Vec::new();
    let tables: HashSet<&str> = columns.iter().map(|c| c.tbl.as_str()).collect();
    let missing_tables: HashSet<&str> =
        TABLES.into_iter().filter(|t| !tables.contains(t)).collect();
    problems.extend(
        TABLES
            .iter()
            .filter(|t| missing_tables.contains(*t))
            .map(|t| SchemaProblem::MissingTable(t.to_string())),
    );
    let present = |table: &str| !missing_tables.contains(table);

    let found: HashMap<(&str, &str), &ColumnRow> = columns
        .iter()
        .map(|c| ((c.tbl.as_str(), c.name.as_str()), c))
        .collect();
    for &(table, name, ty, not_null, default) in COLUMNS.iter().filter(|c| present(c.0)) {
        let what = format!("{table}.{name}");
        let Some(col) = found.get(&(table, name)) else {
            problems.push(SchemaProblem::MissingColumn(what));
            continue;
        };
        if col.ty != ty {
            problems.push(differs(format!("type of column {what}"), ty, &col.ty));
        }
        if col.not_null != not_null {
            let shown = |n: bool| if n { "NOT NULL" } else { "nullable" };
            problems.push(differs(
                format!("column {what}"),
                shown(not_null),
                shown(col.not_null),
            ));
        }
        if col.dflt.as_deref() != default {
            problems.push(differs(
                format!("default of column {what}"),
                default.unwrap_or("none"),
                col.dflt.as_deref().unwrap_or("none"),
            ));
        }
    }

    let expected_constraints = CONSTRAINTS
        .iter()
        .filter(|c| present(c.0))
        .map(|&(table, name, def)| (table, name, def.to_owned()));
    compare_objects(
        "constraint",
        expected_constraints,
        constraints,
        SchemaProblem::MissingConstraint,
        SchemaProblem::NotValidated,
        &mut problems,
    );
    let expected_indexes =
        INDEXES
            .iter()
            .filter(|i| present(i.0))
            .map(|&(table, name, unique, using)| {
                let unique = if unique { "UNIQUE " } else { "" };
                (
                    table,
                    name,
                    format!("CREATE {unique}INDEX {name} ON {table} USING {using}"),
                )
            });
    compare_objects(
        "index",
        expected_indexes,
        indexes,
        SchemaProblem::MissingIndex,
        SchemaProblem::InvalidIndex,
        &mut problems,
    );
    problems
}

/// Each expected object (table, name, definition) against what the catalog
/// has under `table.name`.
fn compare_objects<'a>(
    kind: &str,
    expected: impl Iterator<Item = (&'a str, &'a str, String)>,
    found: &[ObjectRow],
    missing: fn(String) -> SchemaProblem,
    invalid: fn(String) -> SchemaProblem,
    problems: &mut Vec<SchemaProblem>,
) {
    let found: HashMap<&str, &ObjectRow> = found.iter().map(|o| (o.name.as_str(), o)).collect();
    for (table, name, def) in expected {
        match found.get(format!("{table}.{name}").as_str()) {
            None => problems.push(missing(name.to_owned())),
            // A constraint not validated says so at the end of its definition.
            Some(o) if o.def.trim_end_matches(" NOT VALID") != def => {
                let shown = o.def.trim_end_matches(" NOT VALID");
                problems.push(differs(format!("{kind} {name}"), &def, shown));
            }
            Some(o) if !o.valid => problems.push(invalid(name.to_owned())),
            Some(_) => {}
        }
    }
}

fn differs(what: String, expected: &str, found: &str) -> SchemaProblem {
    SchemaProblem::Differs {
        what,
        expected: expected.to_owned(),
        found: found.to_owned(),
    }
}

/// Logs `problems`, found when connecting without migrating: pending
/// migrations as a warning (a `migrate` call may follow), anything else as
/// one error naming every problem.
pub(super) fn report_at_connect(problems: Vec<SchemaProblem>) {
    let pending = problems
        .iter()
        .filter(|p| matches!(p, SchemaProblem::PendingMigration(_)))
        .count();
    if let Err(Error::Schema(mismatch)) = into_result(problems) {
        if pending == mismatch.problems().len() {
            tracing::warn!(
                target: "dreamnet_db",
                pending,
                "{pending} of the crate's migrations are not applied; run Store::migrate (or connect with run_migrations(true))"
            );
        } else {
            tracing::error!(
                target: "dreamnet_db",
                problems = mismatch.problems().len(),
                "{mismatch}; repair the schema, or run Store::migrate to rebuild lost indexes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration_names() -> Vec<String> {
        MigrationSource::<Pg>::migrations(&MIGRATIONS)
            .unwrap()
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }

    #[test]
    fn every_index_has_the_one_migration_that_builds_it() {
        let names = migration_names();
        for (_, index, _, _) in INDEXES {
            let suffix = format!("_index_{index}");
            let building: Vec<_> = names.iter().filter(|m| m.ends_with(&suffix)).collect();
            assert_eq!(building.len(), 1, "{index}: {building:?}");
            assert_eq!(index_migration(&names, index), Some(building[0]));
        }
    }

    #[test]
    fn problems_are_named_in_the_message() {
        let err = into_result(vec![
            SchemaProblem::MissingColumn("api_keys.expires_at".into()),
            SchemaProblem::InvalidIndex("events_payload_idx".into()),
        ])
        .unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("column api_keys.expires_at is missing"),
            "{shown}"
        );
        assert!(
            shown.contains("index events_payload_idx is invalid"),
            "{shown}"
        );
        assert!(into_result(Vec::new()).is_ok());
    }
}

//! Applying the crate's migrations to a database other services are using.
//!
//! The migrations themselves are written for a live database (see
//! `migrations/`): catalog-only changes under a 200 ms `lock_timeout`,
//! batched backfills, validation and index builds that block no reads or
//! writes. [`run`] adds what a plain diesel harness lacks:
//!
//! - **One migrator at a time.** Instances starting together take turns
//!   under an advisory lock, polled with `pg_try_advisory_xact_lock`: a
//!   session blocked in `pg_advisory_lock` would hold a snapshot that a
//!   concurrent index build waits for, while the build's session holds the
//!   lock it waits for (a deadlock PostgreSQL breaks by failing one of
//!   them). The lock is transaction-scoped and held by a connection of its
//!   own, whose transaction stays open (idle, with no snapshot, so no index
//!   build waits for it) until the migrations are done: behind a pooler in
//!   transaction mode that connection keeps its server connection for as
//!   long, where a session lock would stay with whichever server connection
//!   took it. It conflicts with the session lock older versions take.
//! - **Through a transaction pooler.** Every statement that is not a
//!   migration's own SQL (reading the applied versions, recording one,
//!   finding invalid indexes, the final check) runs inside a transaction,
//!   so its prepared statement lives on one server connection; the
//!   session's `SET`s are left out, since they would stay behind on a
//!   shared server connection.
//! - **Retries.** A migration that gave up waiting for a lock (or lost a
//!   deadlock) is rolled back, or, outside a transaction, left where its
//!   idempotent statements can pick up again; it is retried after a pause
//!   growing from 100 ms to 5 s, for up to ten minutes.
//! - **Interrupted index builds.** `CREATE INDEX CONCURRENTLY` that fails or
//!   is interrupted leaves an INVALID index, which `IF NOT EXISTS` would
//!   then skip. Before each attempt the crate's invalid indexes are dropped
//!   (concurrently); after the migrations, any index of the crate that is
//!   missing is built again by its migration.
//! - **No inherited timeouts.** The session runs with `lock_timeout` and
//!   `statement_timeout` at 0, so a role's defaults cannot cut an index
//!   build short; the migrations that must not wait set their own.
//! - **A check.** The result is compared with the schema the migrations
//!   promise (`verify`).

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::sql_types::{Array, Bool, Text};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::connect::ConnectSpec;
use super::{errors, verify};
use crate::error::{Backend as Service, BoxError, Error, Result};
use crate::model::RoleNames;

/// The crate's schema migrations, embedded at build time, for services that
/// run them with their own tooling (each runs with diesel's stock harness;
/// the ones outside a transaction are one statement each).
/// [`Store::migrate`](crate::Store::migrate) applies them with the retries
/// and repairs described in the README.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Migrations of several processes starting at once take turns under this
/// advisory lock.
const MIGRATION_LOCK: i64 = 0x0064_6e65_745f_6462;

/// How long a migration that cannot take its locks is retried.
const LOCK_RETRY_BUDGET: Duration = Duration::from_secs(600);
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// How often a waiting instance asks for the advisory lock.
const TURN_POLL: Duration = Duration::from_millis(250);

type Wrapper = AsyncConnectionWrapper<AsyncPgConnection>;

/// Applies the pending migrations over a connection of its own and checks
/// the result; returns the versions applied. `pooled`: the connection goes
/// through a pooler that shares server connections, so no session state
/// may be set.
/// With `grants`, the roles are granted their privileges on what the
/// migrations created before the next instance may migrate.
pub(super) async fn run(
    spec: &ConnectSpec,
    pooled: bool,
    grants: Option<&RoleNames>,
) -> Result<Vec<String>> {
    let unavailable = |e| Error::Unavailable {
        backend: Service::Postgres,
        source: Box::new(e),
    };
    let turn = wait_for_turn(spec).await?;
    let mut conn = spec.connect().await.map_err(unavailable)?;
    if pooled {
        tracing::info!(
            target: "dreamnet_db",
            "migrating through a transaction pooler: the role's lock_timeout and \
             statement_timeout apply to index builds (give the store a direct \
             migration_url to avoid that)"
        );
    } else {
        conn.batch_execute("SET lock_timeout = 0; SET statement_timeout = 0")
            .await?;
    }
    let (conn, applied) = apply_pending(conn).await?;
    let mut conn = rebuild_missing_indexes(conn).await?;
    if let Some(roles) = grants {
        super::roles::grant(&mut conn, roles).await?;
    }
    let problems = in_transaction(&mut conn).await;
    turn.release().await;
    verify::into_result(problems?)?;
    Ok(applied)
}

/// The schema check, inside a transaction.
async fn in_transaction(conn: &mut AsyncPgConnection) -> Result<Vec<verify::SchemaProblem>> {
    use diesel_async::AsyncConnection as _;
    conn.transaction(async |c| verify::check(c).await).await
}

/// The migration lock, held by an open transaction on a connection of its
/// own.
struct Turn(tokio_postgres::Client);

impl Turn {
    /// Ends the transaction, releasing the lock. (Dropping the connection
    /// would too: the server rolls the transaction back.)
    async fn release(self) {
        let _ = self.0.batch_execute("COMMIT").await;
    }
}

/// Takes the migration lock, polling, so that waiting holds no snapshot.
async fn wait_for_turn(spec: &ConnectSpec) -> Result<Turn> {
    let client = spec.client().await.map_err(|e| Error::Unavailable {
        backend: Service::Postgres,
        source: Box::new(e),
    })?;
    let database = |e: tokio_postgres::Error| Error::Database {
        source: Box::new(e),
    };
    let mut said = false;
    loop {
        // The transaction may sit idle as long as the migrations take.
        let answer = client
            .simple_query(&format!(
                "BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0; \
                 SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK})"
            ))
            .await
            .map_err(database)?;
        let taken = answer.iter().any(
            |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t")),
        );
        if taken {
            return Ok(Turn(client));
        }
        client.batch_execute("ROLLBACK").await.map_err(database)?;
        if !said {
            tracing::info!(target: "dreamnet_db", "another instance is migrating; waiting for it");
            said = true;
        }
        tokio::time::sleep(TURN_POLL).await;
    }
}

/// Runs `f` on the connection, wrapped for diesel's synchronous migration
/// harness, on a blocking thread (so any tokio runtime will do), and hands
/// the connection back.
async fn blocking<T: Send + 'static>(
    conn: AsyncPgConnection,
    f: impl FnOnce(&mut Wrapper) -> T + Send + 'static,
) -> Result<(AsyncPgConnection, T)> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut wrapped = Wrapper::from(conn);
        let out = f(&mut wrapped);
        (wrapped.into_inner(), out)
    })
    .await
    .map_err(|e| Error::Database {
        source: Box::new(e),
    })
}

/// How far one pass over the pending migrations got.
struct Pass {
    applied: Vec<String>,
    failed: Option<(String, BoxError)>,
}

fn apply_pass(conn: &mut Wrapper) -> Pass {
    let mut pass = Pass {
        applied: Vec::new(),
        failed: None,
    };
    use diesel::Connection as _;
    let pending = match conn.transaction(pending_migrations) {
        Ok(p) => p,
        Err(e) => {
            pass.failed = Some(("(reading applied migrations)".to_owned(), e));
            return pass;
        }
    };
    for migration in &pending {
        let name = migration.name().to_string();
        let started = Instant::now();
        let ran = if migration.metadata().run_in_transaction() {
            conn.run_migration(migration.as_ref()).map(|v| v.as_owned())
        } else {
            run_outside_transaction(conn, migration.as_ref())
        };
        match ran {
            Ok(version) => {
                tracing::info!(
                    target: "dreamnet_db",
                    migration = %name,
                    ms = started.elapsed().as_millis() as u64,
                    "migration applied"
                );
                pass.applied.push(version.to_string());
            }
            Err(e) => {
                pass.failed = Some((name, e));
                break;
            }
        }
    }
    pass
}

#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName)]
struct Present {
    #[diesel(sql_type = Bool)]
    present: bool,
}

/// The migrations not yet applied, in order. Once
/// `__diesel_schema_migrations` exists this only reads it (diesel's
/// harness would first run `CREATE TABLE IF NOT EXISTS`, which a role
/// without the schema's `CREATE` privilege may not), so a role that may
/// not migrate finds out that nothing is pending, and is refused only when
/// something is.
fn pending_migrations(
    conn: &mut Wrapper,
) -> std::result::Result<Vec<Box<dyn Migration<Pg>>>, BoxError> {
    let present = diesel::RunQueryDsl::get_result::<Present>(
        diesel::sql_query(
            "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS present",
        ),
        conn,
    )?
    .present;
    if !present {
        return conn.pending_migrations(MIGRATIONS);
    }
    let applied: Vec<String> = diesel::RunQueryDsl::load::<Applied>(
        diesel::sql_query("SELECT version::text AS version FROM __diesel_schema_migrations"),
        conn,
    )?
    .into_iter()
    .map(|a| a.version)
    .collect();
    let mut pending: Vec<Box<dyn Migration<Pg>>> = MigrationSource::<Pg>::migrations(&MIGRATIONS)?
        .into_iter()
        .filter(|m| !applied.contains(&m.name().version().to_string()))
        .collect();
    pending.sort_by_key(|m| m.name().version().to_string());
    Ok(pending)
}

/// Runs a migration that cannot run in a transaction (as diesel's harness
/// does), then records it inside one, so that the recording's prepared
/// statement stays on one server connection behind a pooler.
fn run_outside_transaction(
    conn: &mut Wrapper,
    migration: &dyn Migration<Pg>,
) -> std::result::Result<diesel::migration::MigrationVersion<'static>, BoxError> {
    use diesel::Connection as _;
    migration.run(conn)?;
    let version = migration.name().version().as_owned();
    let recorded = version.to_string();
    conn.transaction(|c| {
        diesel::RunQueryDsl::execute(
            diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1)")
                .bind::<Text, _>(recorded),
            c,
        )
    })?;
    Ok(version)
}

/// Whether a migration failed only for want of a lock: it gave up after
/// `lock_timeout`, or PostgreSQL broke a deadlock by failing it. diesel
/// keeps no SQLSTATE, so these are PostgreSQL's messages (as the connection
/// loss messages of `errors.rs` are).
fn lost_a_lock(e: &BoxError) -> bool {
    let shown = e.to_string();
    ["lock timeout", "could not obtain lock", "deadlock detected"]
        .iter()
        .any(|m| shown.contains(m))
}

/// Applies every pending migration in order, retrying one that could not
/// take its lock; cleans up invalid indexes before each pass.
async fn apply_pending(mut conn: AsyncPgConnection) -> Result<(AsyncPgConnection, Vec<String>)> {
    let started = Instant::now();
    let mut applied = Vec::new();
    let mut pause = FIRST_PAUSE;
    let mut attempt = 0u32;
    loop {
        drop_invalid_indexes(&mut conn).await?;
        let (back, pass) = blocking(conn, apply_pass).await?;
        conn = back;
        applied.extend(pass.applied);
        match pass.failed {
            None => return Ok((conn, applied)),
            Some((name, e)) if lost_a_lock(&e) && started.elapsed() < LOCK_RETRY_BUDGET => {
                attempt += 1;
                tracing::warn!(
                    target: "dreamnet_db",
                    migration = %name,
                    attempt,
                    retry_in_ms = pause.as_millis() as u64,
                    "migration could not take its lock in time; retrying"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            Some((name, e)) => {
                tracing::error!(target: "dreamnet_db", migration = %name, "migration failed");
                return Err(errors::boxed(e));
            }
        }
    }
}

#[derive(QueryableByName)]
struct IndexName {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    valid: bool,
}

/// The crate's indexes present in the current schema, valid or not.
async fn crate_indexes(conn: &mut AsyncPgConnection) -> Result<Vec<IndexName>> {
    use diesel_async::AsyncConnection as _;
    conn.transaction(async |c| crate_indexes_now(c).await).await
}

async fn crate_indexes_now(conn: &mut AsyncPgConnection) -> Result<Vec<IndexName>> {
    let names: Vec<&str> = verify::INDEXES.iter().map(|i| i.1).collect();
    Ok(diesel::sql_query(
        "SELECT i.relname::text AS name, x.indisvalid AS valid \
         FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_namespace n ON n.oid = i.relnamespace \
         WHERE n.nspname = current_schema() AND i.relname = ANY ($1)",
    )
    .bind::<Array<Text>, _>(names)
    .load(conn)
    .await?)
}

/// Drops, concurrently, every index of the crate that a failed or
/// interrupted concurrent build left INVALID; its migration builds it again.
async fn drop_invalid_indexes(conn: &mut AsyncPgConnection) -> Result<()> {
    for index in crate_indexes(conn).await?.into_iter().filter(|i| !i.valid) {
        tracing::warn!(
            target: "dreamnet_db",
            index = %index.name,
            "dropping an invalid index left by an interrupted build; it will be built again"
        );
        conn.batch_execute(&format!(
            "DROP INDEX CONCURRENTLY IF EXISTS \"{}\"",
            index.name
        ))
        .await?;
    }
    Ok(())
}

/// Builds again, by running its (idempotent) migration, every index of the
/// crate that an applied migration built and that is now missing: dropped
/// above as invalid after its migration had been recorded, or by hand.
async fn rebuild_missing_indexes(mut conn: AsyncPgConnection) -> Result<AsyncPgConnection> {
    let present: Vec<String> = crate_indexes(&mut conn)
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let missing: Vec<&str> = verify::INDEXES
        .iter()
        .map(|i| i.1)
        .filter(|name| !present.iter().any(|p| p == name))
        .collect();
    if missing.is_empty() {
        return Ok(conn);
    }
    let pending = {
        use diesel_async::AsyncConnection as _;
        conn.transaction(async |c| verify::pending(c).await).await?
    };
    // (name, version) of each migration; the migrations themselves are not
    // `Send`, so none is held across an await.
    let migrations: Vec<(String, String)> = MigrationSource::<Pg>::migrations(&MIGRATIONS)
        .map_err(|source| Error::Database { source })?
        .iter()
        .map(|m| (m.name().to_string(), m.name().version().to_string()))
        .collect();
    let names: Vec<String> = migrations.iter().map(|m| m.0.clone()).collect();
    for index in missing {
        let Some(position) = verify::index_migration(&names, index)
            .and_then(|name| names.iter().position(|n| n == name))
        else {
            continue;
        };
        let (name, version) = &migrations[position];
        if pending.contains(version) {
            continue;
        }
        tracing::warn!(
            target: "dreamnet_db",
            index,
            migration = %name,
            "an index of an applied migration is missing; building it again"
        );
        // Looked up again on the blocking thread: a migration is not `Send`.
        let (back, built) = blocking(conn, move |c| -> std::result::Result<(), BoxError> {
            MigrationSource::<Pg>::migrations(&MIGRATIONS)?[position].run(c)
        })
        .await?;
        conn = back;
        built.map_err(errors::boxed)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lock_failures_are_retried() {
        let lock: BoxError = "Failed to run x with: canceling statement due to lock timeout".into();
        let deadlock: BoxError = "deadlock detected".into();
        let data: BoxError =
            "check constraint \"events_event_type_not_null\" of relation \"events\" is violated by some row".into();
        assert!(lost_a_lock(&lock) && lost_a_lock(&deadlock));
        assert!(!lost_a_lock(&data));
    }
}

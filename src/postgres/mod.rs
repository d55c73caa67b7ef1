//! The PostgreSQL backend: diesel-async connections in a bb8 pool.

/// Runs `$f(connection, args…)` on a pooled connection of `$backend` (a
/// `PgBackend`); if the call finds the connection gone, the pool drops it
/// instead of handing it out again. Without the statement cache (behind a
/// transaction pooler), the call runs inside a transaction of its own, so
/// that every statement it prepares is parsed, bound, run and closed on
/// one server connection. Defined before the modules so that they can use
/// it too.
macro_rules! on_conn {
    ($backend:ident, $f:path, $($arg:expr),*) => {{
        let mut checkout = $backend.checkout().await?;
        let result = if $backend.pinned() {
            use diesel_async::AsyncConnection as _;
            checkout
                .conn()
                .transaction(async move |conn| $f(conn, $($arg),*).await)
                .await
        } else {
            $f(checkout.conn(), $($arg),*).await
        };
        checkout.settle(result)
    }};
}

/// One batch of a purge, and the rollups of the days it touched forgotten
/// with it (in one transaction, under the rollups' lock), so no question
/// reads a rollup of events that are gone: those days are read from
/// `events` until `refresh_rollups` rolls them up again.
async fn purge_and_forget(
    conn: &mut diesel_async::AsyncPgConnection,
    before: DateTime<Utc>,
    from: Option<DateTime<Utc>>,
    event_type: Option<&EventType>,
    limit: usize,
) -> Result<(u64, Option<DateTime<Utc>>)> {
    use diesel_async::AsyncConnection as _;
    conn.transaction(async move |conn| {
        rollups::lock(conn).await?;
        let (n, last) = events::purge(conn, before, from, event_type, limit).await?;
        if let Some(last) = last {
            let touched = TimeRange {
                since: from,
                until: Some(last + chrono::TimeDelta::microseconds(1)),
            };
            rollups::forget(conn, touched).await?;
        }
        Ok((n, last))
    })
    .await
}

/// [`on_conn!`] for a write: with read replicas, also remembers the
/// write's WAL position so this store's next reads see it.
macro_rules! on_write {
    ($backend:ident, $f:path, $($arg:expr),*) => {{
        let mut checkout = $backend.checkout().await?;
        let result = if $backend.pinned() {
            use diesel_async::AsyncConnection as _;
            checkout
                .conn()
                .transaction(async move |conn| $f(conn, $($arg),*).await)
                .await
        } else {
            $f(checkout.conn(), $($arg),*).await
        };
        if result.is_ok() {
            if let Some(replicas) = &$backend.replicas {
                replicas.wrote(checkout.conn()).await;
            }
        }
        checkout.settle(result)
    }};
}

/// [`on_conn!`] for a read that may go to a replica: on one if a usable
/// one has replayed this store's own writes, else (or if it fails there)
/// on the primary.
macro_rules! on_replica {
    ($backend:ident, $f:path, $($arg:expr),*) => {{
        let read = match &$backend.replicas {
            Some(replicas) => replicas.read().await,
            None => None,
        };
        match read {
            Some(mut read) => match $f(read.conn(), $($arg),*).await {
                Ok(v) => {
                    read.served();
                    Ok(v)
                }
                Err(e) => {
                    read.failed(&e);
                    on_conn!($backend, $f, $($arg),*)
                }
            },
            None => on_conn!($backend, $f, $($arg),*),
        }
    }};
}

/// Runs `$change` (an expression using the connection `$conn`) and
/// appends the audit records `$record` (`|recorder, &result| entries`)
/// makes of its result, in one transaction (the caller's, if it is in
/// one). Without auditing, just `$change`, as it ran before the audit log
/// existed. A macro, not a function taking a closure, so that the
/// transaction's future stays `Send`.
macro_rules! audited {
    ($conn:ident, $change:expr, $record:expr) => {{
        if crate::backend::audit::current().is_none() {
            $change
        } else {
            use diesel_async::AsyncConnection as _;
            $conn
                .transaction(async move |$conn| {
                    let out = $change?;
                    let record = $record;
                    let entries = crate::backend::audit::entries(|r| record(r, &out));
                    crate::postgres::audit::append($conn, entries).await?;
                    Ok(out)
                })
                .await
        }
    }};
}

/// [`audited!`] for a key policy change: one record of `$action` with
/// the key's new values.
macro_rules! audited_key {
    ($conn:ident, $action:expr, $change:expr) => {{
        let action: crate::model::AuditAction = $action;
        audited!(
            $conn,
            $change,
            |r: &crate::backend::audit::Recorder, key: &crate::model::ApiKey| {
                vec![r.entry(
                    action,
                    Some(key.id),
                    crate::model::audit::key_change(action, key),
                    None,
                )]
            }
        )
    }};
}

mod analytics;
mod audit;
mod connect;
mod errors;
mod events;
mod json;
mod keys;
mod media;
mod migrate;
mod pooler;
mod replicas;
mod roles;
mod rollups;
#[rustfmt::skip]
#[allow(missing_docs)]
mod schema;
pub(crate) mod sessions;
mod users;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::backend::{Backend, NewKeyRow, SessionBackend, UsageBatch};
use crate::backend::{PoolState, Settings};
use crate::error::{Backend as Service, Error, Field, Result};
use crate::model::{
    ApiKey, BucketCount, CreditSpend, Cursor, Email, Event, EventFilter, EventType, Json,
    KeyCredits, KeyRateLimit, KeyUsage, TimeBucket, TimeRange, User, UserUpdate, WalletAddress,
};
pub(crate) use connect::PgOptions;
pub(crate) use connect::PgPool;
use connect::{ConnectSpec, LastConnectError, Manager, PgConn, pool};
pub use migrate::MIGRATIONS;
pub use replicas::{DEFAULT_MAX_REPLICA_LAG, DEFAULT_REPLICA_POLL_INTERVAL, MAX_REPLICAS};
pub use verify::{SchemaMismatch, SchemaProblem};

async fn health_check(conn: &mut AsyncPgConnection) -> Result<()> {
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}

/// A pooled connection checked out for one call, holding its turn.
pub(crate) struct Checkout<'a> {
    _turn: tokio::sync::SemaphorePermit<'a>,
    guard: bb8::PooledConnection<'a, Manager>,
}

impl Checkout<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.guard.conn
    }

    /// Passes `result` through; if it says the server is gone, the
    /// connection is dropped when returned instead of handed out again.
    pub(crate) fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        if matches!(result, Err(Error::Unavailable { .. })) {
            self.guard.broken = true;
        }
        result
    }
}

/// The PostgreSQL backend.
pub(crate) struct PgBackend {
    pool: PgPool,
    spec: ConnectSpec,
    connection_timeout: Duration,
    connect_errors: LastConnectError,
    /// One permit per connection, handed out first come, first served, so
    /// that under overload no caller starves while others barge ahead.
    turns: tokio::sync::Semaphore,
    waits: AtomicU64,
    timeouts: AtomicU64,
    /// Read replicas, if any were given.
    replicas: Option<std::sync::Arc<replicas::Replicas>>,
    /// Every call in a transaction of its own (`statement_cache(false)`).
    pinned: bool,
    /// Server connections are shared between clients (a transaction
    /// pooler), as found at start.
    pooled: bool,
    /// Where migrations connect, if not through `spec`.
    migration_spec: Option<ConnectSpec>,
    /// Roles granted their privileges after every migration run.
    grant_roles: Option<crate::model::RoleNames>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("spec", &self.spec)
            .field("pool", &self.pool.state())
            .finish()
    }
}

impl PgBackend {
    /// Builds the pool and checks that a connection can be opened.
    /// With `check_schema`, compares the schema with what the migrations
    /// promise and logs each difference as an error.
    pub(crate) async fn connect(b: &PgOptions, check_schema: bool) -> Result<Self> {
        let url = b
            .database_url
            .as_ref()
            .ok_or_else(|| Error::Config("no database URL was given".to_owned()))?;
        let spec = ConnectSpec::parse(url.expose_secret(), b.statement_cache)?;
        let replicas = replicas::Replicas::new(b)?;
        let migration_spec = match &b.migration_url {
            Some(m) => Some(ConnectSpec::parse(m.expose_secret(), true)?),
            None => None,
        };
        // One connection made here, so that a wrong URL, a refused TLS
        // handshake or a dead server is reported as it is, at start-up.
        let mut first = tokio::time::timeout(b.connection_timeout, spec.connect())
            .await
            .map_err(|_| Error::PoolTimeout {
                waited: b.connection_timeout,
            })?
            .map_err(|e| Error::Unavailable {
                backend: Service::Postgres,
                source: Box::new(e),
            })?;
        // Migrating checks the schema when it is done; otherwise check it
        // now, and say loudly what is missing.
        let pooling = Self::probe(&spec, b).await?;
        if check_schema {
            let checked = if b.statement_cache {
                verify::check(&mut first).await
            } else {
                use diesel_async::AsyncConnection as _;
                first.transaction(async |c| verify::check(c).await).await
            };
            match checked {
                Ok(problems) => verify::report_at_connect(problems),
                Err(e) => {
                    tracing::warn!(target: "dreamnet_db", error = %e, "could not check the schema")
                }
            }
        }
        let connect_errors = LastConnectError::default();
        let pool = pool(&spec, b, connect_errors.clone()).await?;
        // Refused only when the pool is full, which a new pool is not.
        let _ = pool.add(PgConn {
            conn: first,
            broken: false,
        });
        if let Some(replicas) = &replicas {
            replicas.start(pool.clone()).await;
        }
        Ok(PgBackend {
            pool,
            spec,
            connection_timeout: b.connection_timeout,
            connect_errors,
            turns: tokio::sync::Semaphore::new(b.max_connections.max(1) as usize),
            waits: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            replicas,
            pinned: !b.statement_cache,
            pooled: pooling.shared(),
            migration_spec,
            grant_roles: b.grant_roles.clone(),
        })
    }

    /// Finds out whether a pooler shares server connections between
    /// clients and whether prepared statements survive it; refuses, with
    /// [`Error::Config`], the statement cache where they do not.
    async fn probe(spec: &ConnectSpec, b: &PgOptions) -> Result<pooler::Pooling> {
        let found = tokio::time::timeout(b.connection_timeout * 2, pooler::probe(spec)).await;
        let pooling = match found {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(
                    target: "dreamnet_db",
                    error = %e,
                    "could not tell whether a pooler shares server connections"
                );
                return Ok(pooler::Pooling::Session);
            }
            Err(_) => {
                tracing::warn!(
                    target: "dreamnet_db",
                    "could not tell in time whether a pooler shares server connections"
                );
                return Ok(pooler::Pooling::Session);
            }
        };
        match pooling {
            pooler::Pooling::TransactionLosesStatements if b.statement_cache => {
                return Err(Error::Config(
                    "the database URL leads through a pooler in transaction mode that loses \
                     prepared statements between transactions (PgBouncer before 1.21, or with \
                     max_prepared_statements = 0): build the store with statement_cache(false)"
                        .to_owned(),
                ));
            }
            pooler::Pooling::TransactionLosesStatements => tracing::info!(
                target: "dreamnet_db",
                "behind a pooler in transaction mode without prepared statement support: \
                 every call runs in a transaction of its own"
            ),
            pooler::Pooling::TransactionKeepsStatements => tracing::info!(
                target: "dreamnet_db",
                "behind a pooler in transaction mode that keeps prepared statements"
            ),
            pooler::Pooling::Session => {}
        }
        Ok(pooling)
    }

    /// Whether server connections are shared between clients (found at
    /// start).
    #[allow(dead_code)]
    pub(crate) fn pooled(&self) -> bool {
        self.pooled
    }

    /// Whether every call runs in a transaction of its own: without the
    /// statement cache, which is how the crate runs behind a pooler in
    /// transaction mode.
    pub(crate) fn pinned(&self) -> bool {
        self.pinned
    }

    /// Waits, in arrival order, for a turn at one of the pool's
    /// connections: at most `connection_timeout`, then
    /// [`Error::PoolTimeout`].
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        if let Ok(permit) = self.turns.try_acquire() {
            return Ok(permit);
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(self.connection_timeout, self.turns.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Error::PoolTimeout {
                    waited: self.connection_timeout,
                })
            }
        }
    }

    /// A connection for one call, after waiting for a turn.
    pub(crate) async fn checkout(&self) -> Result<Checkout<'_>> {
        let turn = self.turn().await?;
        Ok(Checkout {
            _turn: turn,
            guard: self.conn().await?,
        })
    }

    /// bb8 does not wake a caller waiting for a connection when the
    /// connection it was opening failed, nor when the server comes back:
    /// the caller would wait out the whole `connection_timeout`. So each
    /// wait is cut into rounds of at most [`connect::RETRY_EVERY`], and each
    /// new round asks the pool again, which opens a new connection if it
    /// has none: after a server restart, waiting callers are served within
    /// a round of its return.
    async fn conn(&self) -> Result<bb8::PooledConnection<'_, Manager>> {
        let deadline = std::time::Instant::now() + self.connection_timeout;
        loop {
            match self.pool.get().await {
                Ok(conn) => return Ok(conn),
                Err(bb8::RunError::TimedOut) if std::time::Instant::now() < deadline => {}
                Err(e) => {
                    return Err(errors::checkout(
                        e,
                        self.connection_timeout,
                        self.connect_errors.within(self.connection_timeout),
                    ));
                }
            }
        }
    }

    /// PostgreSQL checks unique indexes in creation order, so a row that
    /// takes both a (differently cased) email and a wallet address is
    /// reported as a wallet conflict. Every backend reports the email first:
    /// on a wallet conflict, look whether the email is taken too.
    async fn email_first<T>(
        &self,
        result: Result<T>,
        email: Option<&Email>,
        this: Option<Uuid>,
    ) -> Result<T> {
        match (result, email) {
            (
                Err(Error::Conflict {
                    field: Field::WalletAddress,
                }),
                Some(email),
            ) => {
                if matches!(self.find_user_by_email(email).await, Ok(Some(other)) if Some(other.id) != this)
                {
                    Err(Error::Conflict {
                        field: Field::Email,
                    })
                } else {
                    Err(Error::Conflict {
                        field: Field::WalletAddress,
                    })
                }
            }
            (result, _) => result,
        }
    }

    /// The pool, for other PostgreSQL-backed parts of the crate.
    #[allow(dead_code)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    async fn create_user(&self, user: User) -> Result<User> {
        let email = user.email.clone();
        let created = on_write!(self, users::create, user);
        self.email_first(created, email.as_ref(), None).await
    }

    async fn create_user_with_key(&self, user: User, key: NewKeyRow) -> Result<(User, ApiKey)> {
        let email = user.email.clone();
        let created = on_write!(self, users::create_with_key, user, key);
        self.email_first(created, email.as_ref(), None).await
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        on_conn!(self, users::get, id)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        on_conn!(self, users::find_by_email, email)
    }

    async fn find_user_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>> {
        on_conn!(self, users::find_by_wallet, wallet)
    }

    async fn update_user(
        &self,
        id: Uuid,
        update: &UserUpdate,
        settings: &Settings,
    ) -> Result<User> {
        let updated = on_write!(self, users::update, id, update, settings);
        let email = update.email.as_ref().and_then(|e| e.as_ref());
        self.email_first(updated, email, Some(id)).await
    }

    async fn delete_user(&self, id: Uuid) -> Result<()> {
        on_write!(self, users::delete, id)
    }

    async fn list_users(&self, after: Option<Cursor>, limit: usize) -> Result<Vec<User>> {
        on_replica!(self, users::list, after, limit)
    }

    async fn insert_key(&self, row: NewKeyRow) -> Result<ApiKey> {
        on_write!(
            self,
            keys::issue,
            keys::KeyInsert::from(&row),
            &row.key.policy
        )
    }

    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        on_conn!(self, keys::find_by_hash, hash)
    }

    async fn revoke_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        on_write!(self, keys::revoke, id, now)
    }

    async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        on_replica!(self, keys::list, user_id)
    }

    async fn rotate_key(&self, old_id: Uuid, new: NewKeyRow, now: DateTime<Utc>) -> Result<ApiKey> {
        on_write!(self, keys::rotate, old_id, new, now)
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        on_conn!(self, keys::get, id)
    }

    async fn disable_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        on_write!(self, keys::disable, id, now)
    }

    async fn enable_key(&self, id: Uuid) -> Result<ApiKey> {
        on_write!(self, keys::enable, id)
    }

    async fn set_key_permissions(
        &self,
        id: Uuid,
        permissions: &std::collections::BTreeSet<String>,
    ) -> Result<ApiKey> {
        on_write!(self, keys::set_permissions, id, permissions)
    }

    async fn set_key_details(
        &self,
        id: Uuid,
        name: Option<&str>,
        metadata: Option<&Json>,
    ) -> Result<ApiKey> {
        on_write!(self, keys::set_details, id, name, metadata)
    }

    async fn set_key_credits(&self, id: Uuid, credits: Option<&KeyCredits>) -> Result<ApiKey> {
        on_write!(self, keys::set_credits, id, credits)
    }

    async fn set_key_rate_limits(&self, id: Uuid, limits: &[KeyRateLimit]) -> Result<ApiKey> {
        on_write!(self, keys::set_rate_limits, id, limits)
    }

    async fn spend_key_credits(
        &self,
        id: Uuid,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend> {
        on_conn!(self, keys::spend, id, cost, now)
    }

    async fn flush_key_usage(&self, batch: &UsageBatch) -> Result<()> {
        on_conn!(self, keys::flush_usage, batch)
    }

    async fn key_credit_state(&self, id: Uuid) -> Result<Option<crate::backend::CreditState>> {
        on_conn!(self, keys::credit_state, id)
    }

    async fn key_usage(
        &self,
        id: Uuid,
        bucket: TimeBucket,
        range: TimeRange,
    ) -> Result<Vec<KeyUsage>> {
        on_conn!(self, keys::usage, id, bucket, range)
    }

    async fn insert_events(&self, batch: &[Event]) -> Result<()> {
        on_write!(self, events::insert, batch)
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        on_replica!(self, events::list, filter, after, limit)
    }

    async fn count_events(&self, event_type: &EventType, range: TimeRange) -> Result<u64> {
        on_replica!(self, events::count, event_type, range)
    }

    async fn count_events_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>> {
        on_replica!(self, events::count_by_bucket, bucket, range, event_type)
    }

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        event_type: Option<&EventType>,
        limit: usize,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        on_conn!(self, purge_and_forget, before, from, event_type, limit)
    }

    /// Applies pending migrations over a dedicated connection (made like
    /// the pool's, TLS included), with the retries and repairs of
    /// `migrate.rs`, then checks the schema.
    async fn migrate(&self) -> Result<Vec<String>> {
        let grants = self.grant_roles.as_ref();
        match &self.migration_spec {
            Some(direct) => migrate::run(direct, false, grants).await,
            None => migrate::run(&self.spec, self.pooled, grants).await,
        }
    }

    async fn grant_roles(&self, roles: &crate::model::RoleNames) -> Result<()> {
        on_conn!(self, roles::grant, roles)
    }

    async fn verify_schema(&self) -> Result<()> {
        PgBackend::verify_schema(self).await
    }

    async fn health(&self) -> Result<()> {
        on_conn!(self, health_check,)
    }

    fn sessions(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn SessionBackend>> {
        Some(std::sync::Arc::new(sessions::PgSessions::new(self)))
    }

    fn media(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::backend::MediaBackend> {
        std::sync::Arc::new(media::PgMedia::new(self))
    }

    fn analytics(
        self: std::sync::Arc<Self>,
    ) -> std::sync::Arc<dyn crate::backend::AnalyticsBackend> {
        self
    }

    fn audit(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::backend::AuditBackend> {
        std::sync::Arc::new(audit::PgAudit::new(self))
    }

    fn pool_state(&self) -> Option<PoolState> {
        let s = self.pool.state();
        Some(PoolState {
            connections: s.connections,
            idle: s.idle_connections,
            in_use: s.connections.saturating_sub(s.idle_connections),
            waits: AtomicU64::load(&self.waits, Ordering::Relaxed) + s.statistics.get_waited,
            timeouts: AtomicU64::load(&self.timeouts, Ordering::Relaxed)
                + s.statistics.get_timed_out,
            primary_reads: self.replicas.as_ref().map_or(0, |r| r.primary_reads()),
            replicas: self.replicas.as_ref().map_or_else(Vec::new, |r| r.states()),
        })
    }
}

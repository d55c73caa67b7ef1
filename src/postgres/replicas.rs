//! Read replicas: a pool per replica, their lag measured in the background,
//! and the choice of the server each lag-tolerant read goes to.
//!
//! - **Lag.** Every `poll_interval` a background task reads the primary's
//!   flushed WAL position (`pg_current_wal_flush_lsn()`), keeping the
//!   recent positions with the time each was seen, and each replica's
//!   replayed position (`pg_last_wal_replay_lsn()`). A replica's lag is the
//!   age of the oldest primary position it has not replayed yet (zero when
//!   it has replayed them all): time, measured, to the polling interval's
//!   resolution, and zero on an idle primary whatever
//!   `pg_last_xact_replay_timestamp()` says.
//! - **Skipping.** A replica is used only while the last poll found it in
//!   recovery with its lag within `max_lag`. One that cannot be reached (or
//!   fails a read for want of a connection) is marked down at once, skipped
//!   until a poll reaches it again, and its checkouts wait at most
//!   `min(connection_timeout, 1 s)`.
//! - **Read-your-writes.** After each write on the primary the backend
//!   reads `pg_current_wal_insert_lsn()` on the same connection (it is at or
//!   past the end of the commit record) and keeps the highest such
//!   position; a replica serves a read only once it has replayed up to it
//!   (checked on the connection about to serve, when the last poll is not
//!   enough). If the position cannot be read, reads go to the primary for
//!   `max_lag` plus a polling interval.
//! - **Failures.** A read that fails on a replica, for whatever reason, is
//!   run again on the primary, so replicas never turn into an error a read
//!   that the primary would have answered.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use diesel::ConnectionError;
use diesel::sql_types::{BigInt, Bool, Nullable};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::PoolableConnection;
use secrecy::{ExposeSecret, SecretString};

use super::connect::{ConnectSpec, LastConnectError, PgConn, PgPool};
use crate::backend::{ReplicaState, ReplicaStatus};
use crate::error::{Error, Result};
use crate::telemetry::{self, Route};

/// The default bound on a replica's lag past which reads leave it: 2 s.
pub const DEFAULT_MAX_REPLICA_LAG: Duration = Duration::from_secs(2);

/// The default interval between two measurements of the replicas: 500 ms.
pub const DEFAULT_REPLICA_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The most read replicas one store takes.
pub const MAX_REPLICAS: usize = 8;

/// The longest a read waits for a replica's connection before going to
/// the primary (less if the store's `connection_timeout` is less).
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// What a connection to a server that is not in recovery is refused with.
const NOT_IN_RECOVERY: &str = "the server is not in recovery, so it is not a replica";

/// The replica part of a builder's options.
#[derive(Clone)]
pub(crate) struct ReplicaOptions {
    pub(crate) urls: Vec<SecretString>,
    pub(crate) max_lag: Duration,
    pub(crate) poll_interval: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            urls: Vec::new(),
            max_lag: DEFAULT_MAX_REPLICA_LAG,
            poll_interval: DEFAULT_REPLICA_POLL_INTERVAL,
        }
    }
}

/// Never shows the URLs: they may hold passwords.
impl fmt::Debug for ReplicaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaOptions")
            .field("urls", &format_args!("[{} REDACTED]", self.urls.len()))
            .field("max_lag", &self.max_lag)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// Opens replica connections, refusing any to a server not in recovery: a
/// connection that serves a routed read was to a replica when opened.
pub(crate) struct ReplicaManager {
    spec: ConnectSpec,
}

impl bb8::ManageConnection for ReplicaManager {
    type Connection = PgConn;
    type Error = ConnectionError;

    async fn connect(&self) -> Result<PgConn, ConnectionError> {
        use diesel_async::RunQueryDsl;
        let mut conn = self.spec.connect().await?;
        let state =
            diesel::sql_query("SELECT pg_is_in_recovery() AS recovering, NULL::bigint AS lsn")
                .get_result::<Position>(&mut conn)
                .await
                .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        if !state.recovering {
            return Err(ConnectionError::BadConnection(NOT_IN_RECOVERY.to_owned()));
        }
        Ok(PgConn {
            conn,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectionError> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn.conn)
            .await
            .map(drop)
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || std::thread::panicking() || conn.conn.is_broken()
    }
}

/// Whether a server is in recovery, and a WAL position (as bytes from
/// `0/0`).
#[derive(diesel::QueryableByName)]
struct Position {
    #[diesel(sql_type = Bool)]
    recovering: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    lsn: Option<i64>,
}

async fn position(conn: &mut AsyncPgConnection, sql: &'static str) -> Result<Position> {
    use diesel_async::RunQueryDsl;
    Ok(diesel::sql_query(sql).get_result::<Position>(conn).await?)
}

const REPLAYED: &str = "SELECT pg_is_in_recovery() AS recovering, \
     (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint AS lsn";
const FLUSHED: &str = "SELECT pg_is_in_recovery() AS recovering, \
     (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint AS lsn";
const INSERTED: &str = "SELECT pg_is_in_recovery() AS recovering, \
     (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS lsn";

const UNKNOWN: u8 = 0;
const USABLE: u8 = 1;
const LAGGING: u8 = 2;
const DOWN: u8 = 3;
const NOT_REPLICA: u8 = 4;

fn status(code: u8) -> ReplicaStatus {
    match code {
        USABLE => ReplicaStatus::Usable,
        LAGGING => ReplicaStatus::Lagging,
        DOWN => ReplicaStatus::Down,
        NOT_REPLICA => ReplicaStatus::NotReplica,
        _ => ReplicaStatus::Unknown,
    }
}

/// No lag measured.
const NO_LAG: u64 = u64::MAX;

/// One replica.
struct Replica {
    index: usize,
    pool: bb8::Pool<ReplicaManager>,
    connect_errors: LastConnectError,
    status: AtomicU8,
    /// Microseconds, or [`NO_LAG`].
    lag_us: AtomicU64,
    /// The highest WAL position seen replayed.
    replayed: AtomicU64,
    reads: AtomicU64,
    failures: AtomicU64,
}

impl Replica {
    fn set_status(&self, code: u8) {
        let before = self.status.swap(code, Ordering::Relaxed);
        if before != code {
            match code {
                USABLE => {
                    tracing::info!(target: "dreamnet_db", replica = self.index, "read replica in use")
                }
                LAGGING => {
                    tracing::warn!(target: "dreamnet_db", replica = self.index, lag_ms = self.lag_us.load(Ordering::Relaxed) / 1000, "read replica lagging: reads go elsewhere until it catches up")
                }
                DOWN => {
                    tracing::warn!(target: "dreamnet_db", replica = self.index, "read replica unreachable: reads go elsewhere until it answers")
                }
                NOT_REPLICA => {
                    tracing::error!(target: "dreamnet_db", replica = self.index, "a replica URL names a server that is not in recovery: it takes no reads")
                }
                _ => {}
            }
        }
    }

    fn down(&self) {
        self.lag_us.store(NO_LAG, Ordering::Relaxed);
        self.set_status(DOWN);
    }

    /// A connection, waiting at most the pool's timeout. A replica that
    /// could not be connected to is marked down (or not a replica, if it
    /// refused for that); one whose connections were all busy is not.
    async fn conn(&self) -> Option<bb8::PooledConnection<'_, ReplicaManager>> {
        let failure = match self.pool.get().await {
            Ok(conn) => return Some(conn),
            Err(bb8::RunError::User(e)) => e.to_string(),
            Err(bb8::RunError::TimedOut) => {
                match self.connect_errors.within(REPLICA_WAIT * 2) {
                    Some(e) => e,
                    // Busy, not broken: the primary serves this read.
                    None => return None,
                }
            }
        };
        if failure.contains(NOT_IN_RECOVERY) {
            self.lag_us.store(NO_LAG, Ordering::Relaxed);
            self.set_status(NOT_REPLICA);
        } else {
            self.down();
        }
        None
    }
}

/// A store's replicas, their measurements, and where its reads went.
pub(crate) struct Replicas {
    list: Vec<Replica>,
    max_lag: Duration,
    poll_interval: Duration,
    /// Where the next read starts looking, so reads spread over replicas.
    next: AtomicUsize,
    /// The highest WAL position of this store's own writes.
    written: AtomicU64,
    /// Until when (microseconds since `epoch`) reads go to the primary,
    /// after a write whose position could not be read.
    sticky_until_us: AtomicU64,
    epoch: Instant,
    primary_reads: AtomicU64,
    /// The primary's flushed positions, oldest first, with when each was
    /// read.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("replicas", &self.list.len())
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

/// A replica's connection chosen for one read.
pub(crate) struct ReplicaRead<'a> {
    replicas: &'a Replicas,
    replica: &'a Replica,
    conn: bb8::PooledConnection<'a, ReplicaManager>,
}

impl ReplicaRead<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn.conn
    }

    /// The read succeeded here.
    pub(crate) fn served(self) {
        self.replica.reads.fetch_add(1, Ordering::Relaxed);
        telemetry::routed_read(Route::Replica);
    }

    /// The read failed here; the caller runs it on the primary.
    pub(crate) fn failed(mut self, e: &Error) {
        self.replica.failures.fetch_add(1, Ordering::Relaxed);
        let gone = matches!(e, Error::Unavailable { .. }) || self.conn.conn.is_broken();
        tracing::warn!(target: "dreamnet_db", replica = self.replica.index, error = %e, "a read failed on a replica: retried on the primary");
        if gone {
            self.conn.broken = true;
            self.replica.down();
        }
        self.replicas.primary_served(Route::ReplicaFailed);
    }
}

impl Replicas {
    /// Builds a pool per replica URL (no connection opened yet).
    pub(crate) fn new(options: &super::PgOptions) -> Result<Option<Arc<Replicas>>> {
        let o = &options.replicas;
        if o.urls.is_empty() {
            return Ok(None);
        }
        if o.urls.len() > MAX_REPLICAS {
            return Err(Error::Config(format!(
                "{} replica URLs given: at most {MAX_REPLICAS}",
                o.urls.len()
            )));
        }
        if o.poll_interval < Duration::from_millis(1) {
            return Err(Error::Config(
                "replica_poll_interval must be at least 1 ms".to_owned(),
            ));
        }
        let wait = options.connection_timeout.min(REPLICA_WAIT);
        let mut list = Vec::with_capacity(o.urls.len());
        for (index, url) in o.urls.iter().enumerate() {
            let spec =
                ConnectSpec::parse(url.expose_secret(), options.statement_cache).map_err(|e| {
                    match e {
                        Error::Config(m) => Error::Config(format!("replica URL {index}: {m}")),
                        other => other,
                    }
                })?;
            let connect_errors = LastConnectError::default();
            let pool = bb8::Pool::builder()
                .max_size(options.max_connections.max(1))
                .min_idle(options.min_idle)
                .idle_timeout(options.idle_timeout)
                .max_lifetime(options.max_lifetime)
                .connection_timeout(wait)
                .test_on_check_out(false)
                .retry_connection(false)
                .error_sink(Box::new(connect_errors.clone()))
                .build_unchecked(ReplicaManager { spec });
            list.push(Replica {
                index,
                pool,
                connect_errors,
                status: AtomicU8::new(UNKNOWN),
                lag_us: AtomicU64::new(NO_LAG),
                replayed: AtomicU64::new(0),
                reads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            });
        }
        Ok(Some(Arc::new(Replicas {
            list,
            max_lag: o.max_lag,
            poll_interval: o.poll_interval,
            next: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            sticky_until_us: AtomicU64::new(0),
            epoch: Instant::now(),
            primary_reads: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::new()),
        })))
    }

    /// Measures once now, then every `poll_interval` in a background task
    /// that ends when the replicas are dropped.
    pub(crate) async fn start(self: &Arc<Self>, primary: PgPool) {
        self.poll(&primary).await;
        let weak: Weak<Replicas> = Arc::downgrade(self);
        let every = self.poll_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(replicas) = weak.upgrade() else {
                    return;
                };
                replicas.poll(&primary).await;
            }
        });
    }

    /// One measurement: the primary's position, then every replica's.
    async fn poll(&self, primary: &PgPool) {
        let wait = self.poll_wait();
        let sample = tokio::time::timeout(wait, async {
            let mut conn = primary.get().await.ok()?;
            let p = position(&mut conn.conn, FLUSHED).await;
            if p.is_err() && conn.conn.is_broken() {
                conn.broken = true;
            }
            p.ok()?.lsn
        })
        .await
        .ok()
        .flatten();
        if let Some(lsn) = sample {
            let now = Instant::now();
            let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            samples.push_back((now, lsn.max(0) as u64));
            let keep = self.max_lag * 2 + self.poll_interval * 4;
            while samples.len() > 1 && samples.front().is_some_and(|(at, _)| now - *at > keep) {
                samples.pop_front();
            }
        }
        futures_util::future::join_all(self.list.iter().map(|r| self.poll_one(r, wait))).await;
    }

    async fn poll_one(&self, replica: &Replica, wait: Duration) {
        let measured = tokio::time::timeout(wait, async {
            let mut conn = replica.conn().await?;
            match position(&mut conn.conn, REPLAYED).await {
                Ok(p) => Some(p),
                Err(_) => {
                    conn.broken = true;
                    replica.down();
                    None
                }
            }
        })
        .await;
        let p = match measured {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(_) => {
                replica.down();
                return;
            }
        };
        let (true, Some(lsn)) = (p.recovering, p.lsn) else {
            replica.lag_us.store(NO_LAG, Ordering::Relaxed);
            replica.set_status(NOT_REPLICA);
            return;
        };
        let replayed = lsn.max(0) as u64;
        replica.replayed.fetch_max(replayed, Ordering::Relaxed);
        let lag = {
            let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
            lag(&samples, replayed, Instant::now())
        };
        replica.lag_us.store(
            lag.as_micros().min(u128::from(NO_LAG - 1)) as u64,
            Ordering::Relaxed,
        );
        replica.set_status(if lag > self.max_lag { LAGGING } else { USABLE });
    }

    /// How long a poll waits for each server.
    fn poll_wait(&self) -> Duration {
        REPLICA_WAIT.max(self.poll_interval)
    }

    /// A replica connection for a read that may go to one, or why the
    /// primary must serve it (counted as such).
    pub(crate) async fn read(&self) -> Option<ReplicaRead<'_>> {
        let now_us = self.epoch.elapsed().as_micros() as u64;
        if now_us < self.sticky_until_us.load(Ordering::Relaxed) {
            self.primary_served(Route::OwnWrites);
            return None;
        }
        let written = self.written.load(Ordering::Relaxed);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.list.len();
        let mut behind = false;
        for i in 0..n {
            let replica = &self.list[(start + i) % n];
            if replica.status.load(Ordering::Relaxed) != USABLE {
                continue;
            }
            let Some(mut conn) = replica.conn().await else {
                continue;
            };
            if replica.replayed.load(Ordering::Relaxed) < written {
                // The last poll is not enough: ask the replica itself.
                match position(&mut conn.conn, REPLAYED).await {
                    Ok(Position {
                        recovering: true,
                        lsn: Some(lsn),
                    }) => {
                        replica
                            .replayed
                            .fetch_max(lsn.max(0) as u64, Ordering::Relaxed);
                        if (lsn.max(0) as u64) < written {
                            behind = true;
                            continue;
                        }
                    }
                    Ok(_) => {
                        replica.set_status(NOT_REPLICA);
                        continue;
                    }
                    Err(_) => {
                        conn.broken = true;
                        replica.down();
                        continue;
                    }
                }
            }
            return Some(ReplicaRead {
                replicas: self,
                replica,
                conn,
            });
        }
        self.primary_served(if behind {
            Route::OwnWrites
        } else {
            Route::NoUsableReplica
        });
        None
    }

    fn primary_served(&self, route: Route) {
        self.primary_reads.fetch_add(1, Ordering::Relaxed);
        telemetry::routed_read(route);
    }

    /// After a write on `conn` (the primary's) succeeded: remembers its
    /// WAL position, so this store's next reads wait for a replica that
    /// has replayed it.
    pub(crate) async fn wrote(&self, conn: &mut AsyncPgConnection) {
        match position(conn, INSERTED).await {
            Ok(Position { lsn: Some(lsn), .. }) => {
                self.written
                    .fetch_max(record_end(lsn.max(0) as u64), Ordering::Relaxed);
            }
            _ => {
                let until = self.epoch.elapsed() + self.max_lag + self.poll_interval;
                self.sticky_until_us
                    .fetch_max(until.as_micros() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Reads the primary served among those that may go to a replica.
    pub(crate) fn primary_reads(&self) -> u64 {
        self.primary_reads.load(Ordering::Relaxed)
    }

    /// Each replica's state.
    pub(crate) fn states(&self) -> Vec<ReplicaState> {
        self.list
            .iter()
            .map(|r| {
                let s = r.pool.state();
                let lag = r.lag_us.load(Ordering::Relaxed);
                ReplicaState {
                    index: r.index,
                    status: status(r.status.load(Ordering::Relaxed)),
                    lag: (lag != NO_LAG).then(|| Duration::from_micros(lag)),
                    connections: s.connections,
                    in_use: s.connections.saturating_sub(s.idle_connections),
                    reads: r.reads.load(Ordering::Relaxed),
                    failures: r.failures.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// The end of the last record inserted, given `pg_current_wal_insert_lsn()`
/// (as bytes). When that record ended exactly at a page boundary, the
/// function points past the next page's header, where a replica that has
/// replayed everything never gets (its replayed position is the record's
/// end): that header is taken off. No record ends right after a page
/// header, so the position is never moved below a record's end; pages
/// (8 KiB, PostgreSQL's default) of other sizes only miss the adjustment,
/// sending reads to the primary until more WAL is written.
fn record_end(inserted: u64) -> u64 {
    const PAGE: u64 = 8192;
    const SEGMENT: u64 = 16 * 1024 * 1024;
    const SHORT_HEADER: u64 = 24;
    const LONG_HEADER: u64 = 40;
    if inserted % SEGMENT == LONG_HEADER {
        inserted - LONG_HEADER
    } else if inserted % PAGE == SHORT_HEADER {
        inserted - SHORT_HEADER
    } else {
        inserted
    }
}

/// The lag of a replica that has replayed up to `replayed`: the age of the
/// oldest primary position in `samples` (oldest first) past it, or zero if
/// it has replayed them all.
fn lag(samples: &VecDeque<(Instant, u64)>, replayed: u64, now: Instant) -> Duration {
    samples
        .iter()
        .find(|(_, lsn)| *lsn > replayed)
        .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_position_not_replayed() {
        let now = Instant::now();
        let at = |ms: u64| now - Duration::from_millis(ms);
        let samples: VecDeque<_> = [(at(3000), 100), (at(2000), 200), (at(1000), 300)].into();
        assert_eq!(lag(&samples, 300, now), Duration::ZERO);
        assert_eq!(lag(&samples, 400, now), Duration::ZERO);
        assert_eq!(lag(&samples, 250, now), Duration::from_millis(1000));
        assert_eq!(lag(&samples, 150, now), Duration::from_millis(2000));
        assert_eq!(lag(&samples, 0, now), Duration::from_millis(3000));
        assert_eq!(lag(&VecDeque::new(), 0, now), Duration::ZERO);
    }

    #[test]
    fn a_position_past_a_page_header_is_the_record_end_before_it() {
        assert_eq!(record_end(8192 * 5 + 24), 8192 * 5);
        assert_eq!(record_end(16 * 1024 * 1024 * 3 + 40), 16 * 1024 * 1024 * 3);
        assert_eq!(record_end(8192 * 5 + 48), 8192 * 5 + 48);
        assert_eq!(record_end(8192 * 5), 8192 * 5);
        assert_eq!(record_end(0), 0);
    }

    #[test]
    fn options_never_show_urls() {
        let o = ReplicaOptions {
            urls: vec![SecretString::from("postgres://u:hunter2@h/db")],
            ..Default::default()
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("1 REDACTED"), "{shown}");
    }
}

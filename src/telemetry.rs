//! What the crate reports: a `tracing` span per call and metrics through the
//! [`metrics`] facade. The crate installs no exporter: a service installs a
//! recorder (for Prometheus, `metrics-exporter-prometheus`) and every store,
//! session store and rate limiter in the process reports to it. With no
//! recorder installed, recording costs a call a thread-local read and an
//! atomic load.
//!
//! # Traces
//!
//! Every call of the store's repositories and of [`Sessions`] runs in a
//! `dreamnet_db` span (level `DEBUG`) recording `op`, `table`, `outcome` and
//! `duration_us`, and never its arguments.
//!
//! # Metrics
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `dreamnet_db_calls_total` | counter | `op`, `table`, `outcome` | calls of the store and of sessions, by how they ended |
//! | `dreamnet_db_call_duration_seconds` | histogram | `op`, `table`, `outcome` | how long those calls took |
//! | `dreamnet_db_pool_connections` | gauge | `state` | PostgreSQL connections open, `idle` or `in_use` (sum them for the total) |
//! | `dreamnet_db_pool_waits_total` | counter | | checkouts that had to wait for a connection |
//! | `dreamnet_db_pool_timeouts_total` | counter | | checkouts that gave up waiting (`Error::PoolTimeout`) |
//! | `dreamnet_db_routed_reads_total` | counter | `server`, `reason` | reads that may go to a read replica, by the server that served them: `replica` (`reason="routed"`), or `primary` because the replicas had not replayed this store's own writes (`own_writes`), none was usable (`no_usable_replica`) or the replica failed (`replica_failed`) |
//! | `dreamnet_db_replica_reads_total` | counter | `replica` | reads each replica served (`replica` is its index, `0` to `7`) |
//! | `dreamnet_db_replica_lag_seconds` | gauge | `replica` | each replica's lag at the last measurement; NaN before the first one and while it is down |
//! | `dreamnet_db_replica_usable` | gauge | `replica` | 1 while a replica takes reads, 0 while it is skipped (lagging, down or not a replica) |
//! | `dreamnet_db_cache_reads_total` | counter | `result` | cached reads: `hit`, `miss` (read the database and filled), `bypassed` (Redis failing or invalidations pending) |
//! | `dreamnet_db_cache_errors_total` | counter | | Redis calls of the cache that failed or timed out |
//! | `dreamnet_db_cache_fills_total` | counter | `result` | records written to Redis after a miss (`filled`), or refused because a write invalidated them meanwhile (`refused_stale`) |
//! | `dreamnet_db_cache_invalidations_total` | counter | `result` | invalidations carried out in Redis (`applied`), or kept pending because Redis could not be reached (`deferred`) |
//! | `dreamnet_db_cache_invalidations_pending` | gauge | | invalidations waiting for Redis now; non-zero means this process reads from the database only |
//! | `dreamnet_db_rate_limit_decisions_total` | counter | `backend`, `decision`, `degraded` | rate-limit checks, `allowed` or `refused`; `degraded="true"` when the limiter's store was unreachable and its failure mode decided |
//! | `dreamnet_db_session_operations_total` | counter | `backend`, `op`, `result` | session calls: `ok`, `absent` (no live session for the token) or `error` |
//!
//! Every label takes its values from a finite set, listed in [`FAMILIES`]
//! (and the constants beside it): operation and table names, outcomes,
//! backends. No label ever carries an id, an email, a key, a token, a
//! session id, a URL or an error message. Prometheus conventions apply:
//! counters end in `_total`, durations are histograms in seconds (set their
//! buckets in the exporter, for instance to [`DURATION_BUCKETS`]).
//!
//! Call [`describe`] once after installing the recorder to give every family
//! its help text.
//!
//! # Keeping the numbers current, and what a call pays
//!
//! - Counters and histograms are recorded when their event happens: a call
//!   ending, a cache read, an invalidation, a rate-limit decision. Their
//!   label sets are static arrays built at compile time (one per call site
//!   and outcome), so recording allocates nothing and hashes nothing: with a
//!   recorder installed, a call pays two registry look-ups under one
//!   thread-local read.
//! - The pool's connection gauges and its wait and timeout counts are read
//!   from the pool when [`Store::record_metrics`] is called: call it where
//!   the service renders its metrics (in the `/metrics` handler, before
//!   rendering), or on a timer when the exporter serves scrapes itself.
//!   Nothing is recorded per call for the pool, so its numbers cost nothing
//!   between scrapes and are exact at each one.
//! - The pending-invalidations gauge moves by the change in the pending set
//!   whenever it changes (rarely: only while Redis is unreachable), so
//!   several stores in one process add up.
//!
//! The pool metrics describe one PostgreSQL store per process: two stores
//! calling [`Store::record_metrics`] overwrite each other's gauges.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # async fn demo() -> dreamnet_db::Result<()> {
//! use dreamnet_db::{Store, telemetry};
//!
//! // With `metrics-exporter-prometheus`:
//! //   let handle = PrometheusBuilder::new()
//! //       .set_buckets_for_metric(Matcher::Full(telemetry::CALL_DURATION.into()), telemetry::DURATION_BUCKETS)?
//! //       .install_recorder()?;
//! telemetry::describe();
//! let store = Store::in_memory();
//! // In the `/metrics` handler:
//! store.record_metrics();
//! //   handle.render()
//! # Ok(()) }
//! ```
//!
//! [`Sessions`]: crate::Sessions
//! [`Store::record_metrics`]: crate::Store::record_metrics

use std::future::Future;
use std::time::{Duration, Instant};

use metrics::{Key, KeyName, Label, Level, Metadata, SharedString};
use tracing::Instrument;

use crate::backend::PoolState;
use crate::error::{Error, Result};

/// `dreamnet_db_calls_total`: calls by operation, table and outcome.
pub const CALLS: &str = "dreamnet_db_calls_total";
/// `dreamnet_db_call_duration_seconds`: call durations, by operation, table
/// and outcome.
pub const CALL_DURATION: &str = "dreamnet_db_call_duration_seconds";
/// `dreamnet_db_pool_connections`: PostgreSQL connections by `state`.
pub const POOL_CONNECTIONS: &str = "dreamnet_db_pool_connections";
/// `dreamnet_db_pool_waits_total`: checkouts that waited for a connection.
pub const POOL_WAITS: &str = "dreamnet_db_pool_waits_total";
/// `dreamnet_db_pool_timeouts_total`: checkouts that gave up waiting.
pub const POOL_TIMEOUTS: &str = "dreamnet_db_pool_timeouts_total";
/// `dreamnet_db_routed_reads_total`: reads that may go to a replica, by
/// `server` and `reason`.
pub const ROUTED_READS: &str = "dreamnet_db_routed_reads_total";
/// `dreamnet_db_replica_reads_total`: reads each replica served.
pub const REPLICA_READS: &str = "dreamnet_db_replica_reads_total";
/// `dreamnet_db_replica_lag_seconds`: each replica's last measured lag.
pub const REPLICA_LAG: &str = "dreamnet_db_replica_lag_seconds";
/// `dreamnet_db_replica_usable`: 1 while a replica takes reads, else 0.
pub const REPLICA_USABLE: &str = "dreamnet_db_replica_usable";
/// `dreamnet_db_cache_reads_total`: cached reads by `result`.
pub const CACHE_READS: &str = "dreamnet_db_cache_reads_total";
/// `dreamnet_db_cache_errors_total`: failed or timed-out Redis calls.
pub const CACHE_ERRORS: &str = "dreamnet_db_cache_errors_total";
/// `dreamnet_db_cache_fills_total`: cache fills by `result`.
pub const CACHE_FILLS: &str = "dreamnet_db_cache_fills_total";
/// `dreamnet_db_cache_invalidations_total`: invalidations by `result`.
pub const CACHE_INVALIDATIONS: &str = "dreamnet_db_cache_invalidations_total";
/// `dreamnet_db_cache_invalidations_pending`: invalidations waiting for
/// Redis.
pub const CACHE_PENDING: &str = "dreamnet_db_cache_invalidations_pending";
/// Gauge: differences between the database's schema and what the applied
/// migrations promise, found by the last check (at connect, after
/// migrating, or by `Store::verify_schema`); anything but 0 needs a look.
pub const SCHEMA_PROBLEMS: &str = "dreamnet_db_schema_problems";
/// `dreamnet_db_rate_limit_decisions_total`: rate-limit decisions.
pub const RATE_LIMIT_DECISIONS: &str = "dreamnet_db_rate_limit_decisions_total";
/// `dreamnet_db_session_operations_total`: session calls by backend,
/// operation and result.
pub const SESSION_OPERATIONS: &str = "dreamnet_db_session_operations_total";

/// Every `op` label value: the operations of the store's repositories, of
/// the store itself, and of sessions.
pub const OPERATIONS: &[&str] = &[
    // users
    "create",
    "create_with_key",
    "get",
    "find_by_email",
    "find_by_wallet",
    "update",
    "delete",
    "list",
    // api_keys
    "issue",
    "validate",
    "revoke",
    "list_for_user",
    "rotate",
    "verify",
    "disable",
    "enable",
    "set_permissions",
    "set_details",
    "set_credits",
    "set_rate_limits",
    "usage",
    "flush_usage",
    // events
    "record",
    "record_many",
    "count",
    "count_by_bucket",
    // analytics
    "active_users",
    "funnel",
    "retention",
    "breakdown",
    "top_event_types",
    "refresh_rollups",
    "rebuild_rollups",
    "search_events",
    "search_users",
    "purge_before",
    // audit_log
    "erase_personal",
    // the store
    "migrate",
    "verify_schema",
    "grant_roles",
    "health",
    // sessions
    "load",
    "save",
    "extend",
    "delete_user",
    "delete_expired",
    // media
    "upload",
    "head",
    "get_range",
    "delete_owner",
    "signed_url",
    "sweep",
];

/// Every `table` label value (`-` for a call that touches none: `health`).
pub const TABLES: &[&str] = &[
    "users",
    "api_keys",
    "api_key_usage",
    "events",
    "sessions",
    "media",
    "audit_log",
    "__diesel_schema_migrations",
    "-",
];

/// Every `outcome` label value: `ok`, or the kind of [`Error`] the call
/// returned.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "not_found",
    "conflict",
    "invalid_input",
    "unauthorized",
    "pool_timeout",
    "unavailable",
    "config",
    "database_error",
    "upload_interrupted",
    "schema",
    "permission_denied",
];

/// The `state` values of [`POOL_CONNECTIONS`].
pub const POOL_STATES: &[&str] = &["idle", "in_use"];
/// The `server` values of [`ROUTED_READS`].
pub const SERVERS: &[&str] = &["primary", "replica"];
/// The `reason` values of [`ROUTED_READS`].
pub const ROUTE_REASONS: &[&str] = &[
    "routed",
    "own_writes",
    "no_usable_replica",
    "replica_failed",
];
/// The `replica` values of the replica metrics: indexes below
/// [`MAX_REPLICAS`](crate::MAX_REPLICAS).
pub const REPLICA_INDEXES: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7"];
const _: () = assert!(REPLICA_INDEXES.len() == crate::MAX_REPLICAS);
/// The `result` values of [`CACHE_READS`].
pub const CACHE_READ_RESULTS: &[&str] = &["hit", "miss", "bypassed"];
/// The `result` values of [`CACHE_FILLS`].
pub const CACHE_FILL_RESULTS: &[&str] = &["filled", "refused_stale"];
/// The `result` values of [`CACHE_INVALIDATIONS`].
pub const CACHE_INVALIDATION_RESULTS: &[&str] = &["applied", "deferred"];
/// The `backend` values of [`RATE_LIMIT_DECISIONS`].
pub const RATE_LIMIT_BACKENDS: &[&str] = &["memory", "redis"];
/// The `decision` values of [`RATE_LIMIT_DECISIONS`].
pub const DECISIONS: &[&str] = &["allowed", "refused"];
/// The `degraded` values of [`RATE_LIMIT_DECISIONS`].
pub const DEGRADED: &[&str] = &["false", "true"];
/// The `backend` values of [`SESSION_OPERATIONS`].
pub const SESSION_BACKENDS: &[&str] = &["memory", "redis", "postgres"];
/// The `op` values of [`SESSION_OPERATIONS`].
pub const SESSION_OPERATION_NAMES: &[&str] = &[
    "create",
    "load",
    "save",
    "extend",
    "delete",
    "delete_user",
    "delete_expired",
];
/// The `result` values of [`SESSION_OPERATIONS`].
pub const SESSION_RESULTS: &[&str] = &["ok", "absent", "error"];

/// Suggested histogram buckets for [`CALL_DURATION`], in seconds: from
/// 50 µs (an in-memory call) to 5 s (past the default pool timeout).
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// One metric family the crate records: its name, type, help text, and
/// each label with every value it can take.
#[derive(Debug, Clone, Copy)]
pub struct MetricFamily {
    /// The metric's name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricType,
    /// What it counts or measures.
    pub help: &'static str,
    /// Each label's key and the finite set of its values.
    pub labels: &'static [(&'static str, &'static [&'static str])],
}

/// Every metric family the crate records.
pub const FAMILIES: &[MetricFamily] = &[
    MetricFamily {
        name: CALLS,
        kind: MetricType::Counter,
        help: "Calls of the store and of sessions, by operation, table and outcome.",
        labels: &[("op", OPERATIONS), ("table", TABLES), ("outcome", OUTCOMES)],
    },
    MetricFamily {
        name: CALL_DURATION,
        kind: MetricType::Histogram,
        help: "How long calls of the store and of sessions took, in seconds.",
        labels: &[("op", OPERATIONS), ("table", TABLES), ("outcome", OUTCOMES)],
    },
    MetricFamily {
        name: POOL_CONNECTIONS,
        kind: MetricType::Gauge,
        help: "PostgreSQL connections open, by state (idle or in use).",
        labels: &[("state", POOL_STATES)],
    },
    MetricFamily {
        name: POOL_WAITS,
        kind: MetricType::Counter,
        help: "Connection checkouts that had to wait for a connection.",
        labels: &[],
    },
    MetricFamily {
        name: SCHEMA_PROBLEMS,
        kind: MetricType::Gauge,
        help: "Differences between the database's schema and what the migrations promise, at the last check.",
        labels: &[],
    },
    MetricFamily {
        name: POOL_TIMEOUTS,
        kind: MetricType::Counter,
        help: "Connection checkouts that gave up waiting.",
        labels: &[],
    },
    MetricFamily {
        name: ROUTED_READS,
        kind: MetricType::Counter,
        help: "Reads that may go to a read replica, by the server that served them and why.",
        labels: &[("server", SERVERS), ("reason", ROUTE_REASONS)],
    },
    MetricFamily {
        name: REPLICA_READS,
        kind: MetricType::Counter,
        help: "Reads each read replica served.",
        labels: &[("replica", REPLICA_INDEXES)],
    },
    MetricFamily {
        name: REPLICA_LAG,
        kind: MetricType::Gauge,
        help: "Each read replica's lag behind the primary at the last measurement, in seconds.",
        labels: &[("replica", REPLICA_INDEXES)],
    },
    MetricFamily {
        name: REPLICA_USABLE,
        kind: MetricType::Gauge,
        help: "1 while a read replica takes reads, 0 while it is skipped.",
        labels: &[("replica", REPLICA_INDEXES)],
    },
    MetricFamily {
        name: CACHE_READS,
        kind: MetricType::Counter,
        help: "Reads through the Redis cache: hit, miss, or bypassed.",
        labels: &[("result", CACHE_READ_RESULTS)],
    },
    MetricFamily {
        name: CACHE_ERRORS,
        kind: MetricType::Counter,
        help: "Redis calls of the cache that failed or timed out.",
        labels: &[],
    },
    MetricFamily {
        name: CACHE_FILLS,
        kind: MetricType::Counter,
        help: "Cache fills after a miss: filled, or refused as stale.",
        labels: &[("result", CACHE_FILL_RESULTS)],
    },
    MetricFamily {
        name: CACHE_INVALIDATIONS,
        kind: MetricType::Counter,
        help: "Cache invalidations: applied in Redis, or deferred while it was unreachable.",
        labels: &[("result", CACHE_INVALIDATION_RESULTS)],
    },
    MetricFamily {
        name: CACHE_PENDING,
        kind: MetricType::Gauge,
        help: "Cache invalidations waiting for Redis; non-zero means reads go to the database.",
        labels: &[],
    },
    MetricFamily {
        name: RATE_LIMIT_DECISIONS,
        kind: MetricType::Counter,
        help: "Rate-limit decisions; degraded when the limiter's store was unreachable.",
        labels: &[
            ("backend", RATE_LIMIT_BACKENDS),
            ("decision", DECISIONS),
            ("degraded", DEGRADED),
        ],
    },
    MetricFamily {
        name: SESSION_OPERATIONS,
        kind: MetricType::Counter,
        help: "Session calls by backend, operation and result (ok, absent, error).",
        labels: &[
            ("backend", SESSION_BACKENDS),
            ("op", SESSION_OPERATION_NAMES),
            ("result", SESSION_RESULTS),
        ],
    },
];

/// Gives every family in [`FAMILIES`] its help text with the recorder
/// installed now (a global one, or a local one on this thread). Call it
/// once after installing the recorder; without one it does nothing.
pub fn describe() {
    metrics::with_recorder(|r| {
        for family in FAMILIES {
            let name = KeyName::from_const_str(family.name);
            let help = SharedString::const_str(family.help);
            match family.kind {
                MetricType::Counter => r.describe_counter(name, None, help),
                MetricType::Gauge => r.describe_gauge(name, None, help),
                MetricType::Histogram => r.describe_histogram(name, None, help),
            }
        }
    });
}

static METADATA: Metadata<'static> = Metadata::new("dreamnet_db", Level::INFO, None);

/// Whether `set` holds `value`, at compile time.
const fn contains(set: &[&str], value: &str) -> bool {
    let mut i = 0;
    while i < set.len() {
        if eq(set[i], value) {
            return true;
        }
        i += 1;
    }
    false
}

const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn label(key: &'static str, set: &'static [&'static str], value: &'static str) -> Label {
    assert!(
        contains(set, value),
        "a metric label value outside its documented set"
    );
    Label::from_static_parts(key, value)
}

// ---- calls ----

const N_OUTCOMES: usize = 12;
const _: () = assert!(OUTCOMES.len() == N_OUTCOMES);

/// The labels of one call site, one set per outcome.
pub(crate) type CallLabels = [[Label; 3]; N_OUTCOMES];

/// The labels of the call site `op` on `table`, built at compile time; an
/// operation or table outside [`OPERATIONS`] or [`TABLES`] does not compile.
pub(crate) const fn call_labels(op: &'static str, table: &'static str) -> CallLabels {
    const fn one(op: &'static str, table: &'static str, outcome: usize) -> [Label; 3] {
        [
            label("op", OPERATIONS, op),
            label("table", TABLES, table),
            label("outcome", OUTCOMES, OUTCOMES[outcome]),
        ]
    }
    [
        one(op, table, 0),
        one(op, table, 1),
        one(op, table, 2),
        one(op, table, 3),
        one(op, table, 4),
        one(op, table, 5),
        one(op, table, 6),
        one(op, table, 7),
        one(op, table, 8),
        one(op, table, 9),
        one(op, table, 10),
        one(op, table, 11),
    ]
}

/// One place in the code that makes calls: their operation and table, and
/// the metric keys of each outcome, all static.
#[derive(Debug)]
pub(crate) struct Site {
    op: &'static str,
    table: &'static str,
    calls: [Key; N_OUTCOMES],
    durations: [Key; N_OUTCOMES],
}

impl Site {
    pub(crate) const fn new(
        op: &'static str,
        table: &'static str,
        labels: &'static CallLabels,
    ) -> Self {
        const fn keys(name: &'static str, l: &'static CallLabels) -> [Key; N_OUTCOMES] {
            [
                Key::from_static_parts(name, &l[0]),
                Key::from_static_parts(name, &l[1]),
                Key::from_static_parts(name, &l[2]),
                Key::from_static_parts(name, &l[3]),
                Key::from_static_parts(name, &l[4]),
                Key::from_static_parts(name, &l[5]),
                Key::from_static_parts(name, &l[6]),
                Key::from_static_parts(name, &l[7]),
                Key::from_static_parts(name, &l[8]),
                Key::from_static_parts(name, &l[9]),
                Key::from_static_parts(name, &l[10]),
                Key::from_static_parts(name, &l[11]),
            ]
        }
        Site {
            op,
            table,
            calls: keys(CALLS, labels),
            durations: keys(CALL_DURATION, labels),
        }
    }

    fn record(&self, outcome: usize, took: Duration) {
        metrics::with_recorder(|r| {
            r.register_counter(&self.calls[outcome], &METADATA)
                .increment(1);
            r.register_histogram(&self.durations[outcome], &METADATA)
                .record(took.as_secs_f64());
        });
    }
}

/// The static [`Site`] of the operation `$op` on `$table` (string
/// literals, from [`OPERATIONS`] and [`TABLES`]).
macro_rules! site {
    ($op:literal, $table:literal) => {{
        static LABELS: $crate::telemetry::CallLabels = $crate::telemetry::call_labels($op, $table);
        static SITE: $crate::telemetry::Site = $crate::telemetry::Site::new($op, $table, &LABELS);
        &SITE
    }};
}
pub(crate) use site;

/// Runs `fut` as one call of `site`: in a `dreamnet_db` span recording the
/// operation, the table, how long it took and how it ended, counted and
/// timed in the call metrics. Never records arguments, so no secret reaches
/// a log or a metric.
pub(crate) async fn traced<T>(
    site: &'static Site,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::debug_span!(
        "dreamnet_db",
        op = site.op,
        table = site.table,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty
    );
    let start = Instant::now();
    let result = fut.instrument(span.clone()).await;
    let took = start.elapsed();
    let outcome = match &result {
        Ok(_) => 0,
        Err(e) => error_kind(e),
    };
    span.record("outcome", OUTCOMES[outcome]);
    span.record("duration_us", took.as_micros() as u64);
    site.record(outcome, took);
    result
}

/// The index in [`OUTCOMES`] of the kind of `e`.
fn error_kind(e: &Error) -> usize {
    match e {
        Error::NotFound { .. } => 1,
        Error::Conflict { .. } => 2,
        Error::InvalidInput { .. } => 3,
        Error::Unauthorized(_) => 4,
        Error::PoolTimeout { .. } => 5,
        Error::Unavailable { .. } => 6,
        Error::Config(_) => 7,
        Error::Database { .. } => 8,
        Error::UploadInterrupted { .. } => 9,
        Error::Schema(_) => 10,
        Error::PermissionDenied { .. } => 11,
    }
}

// ---- sessions ----

/// Which storage a session store or rate limiter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    Memory = 0,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Redis = 1,
    Postgres = 2,
}

const N_BACKENDS: usize = 3;
const N_SESSION_RESULTS: usize = 3;
const _: () = assert!(SESSION_BACKENDS.len() == N_BACKENDS);
const _: () = assert!(SESSION_RESULTS.len() == N_SESSION_RESULTS);

/// The labels of one session operation, per backend and result.
pub(crate) type SessionLabels = [[[Label; 3]; N_SESSION_RESULTS]; N_BACKENDS];

/// The labels of the session operation `op`, built at compile time.
pub(crate) const fn session_labels(op: &'static str) -> SessionLabels {
    const fn one(backend: usize, op: &'static str, result: usize) -> [Label; 3] {
        [
            label("backend", SESSION_BACKENDS, SESSION_BACKENDS[backend]),
            label("op", SESSION_OPERATION_NAMES, op),
            label("result", SESSION_RESULTS, SESSION_RESULTS[result]),
        ]
    }
    const fn row(backend: usize, op: &'static str) -> [[Label; 3]; N_SESSION_RESULTS] {
        [
            one(backend, op, 0),
            one(backend, op, 1),
            one(backend, op, 2),
        ]
    }
    [row(0, op), row(1, op), row(2, op)]
}

/// A session operation's call site and its static metric keys.
#[derive(Debug)]
pub(crate) struct SessionSite {
    call: &'static Site,
    keys: [[Key; N_SESSION_RESULTS]; N_BACKENDS],
}

impl SessionSite {
    pub(crate) const fn new(call: &'static Site, l: &'static SessionLabels) -> Self {
        const fn row(l: &'static [[Label; 3]; N_SESSION_RESULTS]) -> [Key; N_SESSION_RESULTS] {
            [
                Key::from_static_parts(SESSION_OPERATIONS, &l[0]),
                Key::from_static_parts(SESSION_OPERATIONS, &l[1]),
                Key::from_static_parts(SESSION_OPERATIONS, &l[2]),
            ]
        }
        SessionSite {
            call,
            keys: [row(&l[0]), row(&l[1]), row(&l[2])],
        }
    }
}

/// The static [`SessionSite`] of the session operation `$op`.
macro_rules! session_site {
    ($op:literal) => {{
        static LABELS: $crate::telemetry::SessionLabels = $crate::telemetry::session_labels($op);
        static SITE: $crate::telemetry::SessionSite =
            $crate::telemetry::SessionSite::new($crate::telemetry::site!($op, "sessions"), &LABELS);
        &SITE
    }};
}
pub(crate) use session_site;

/// Runs `fut` as a session call of `site` on `storage`: traced as any call,
/// and counted in [`SESSION_OPERATIONS`] as `ok`, `absent` (when `live`
/// says the answer found no live session) or `error`.
pub(crate) async fn traced_session<T>(
    site: &'static SessionSite,
    storage: Storage,
    live: fn(&T) -> bool,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let result = traced(site.call, fut).await;
    let outcome = match &result {
        Ok(value) if live(value) => 0,
        Ok(_) => 1,
        Err(_) => 2,
    };
    increment(&site.keys[storage as usize][outcome], 1);
    result
}

// ---- rate limits ----

/// Rate-limit decision keys, by backend (memory, redis), decision
/// (allowed, refused) and degraded (false, true).
static DECISION_KEYS: [[[Key; 2]; 2]; 2] = {
    static L: [[[[Label; 3]; 2]; 2]; 2] = {
        const fn one(b: usize, d: usize, g: usize) -> [Label; 3] {
            [
                label("backend", RATE_LIMIT_BACKENDS, RATE_LIMIT_BACKENDS[b]),
                label("decision", DECISIONS, DECISIONS[d]),
                label("degraded", DEGRADED, DEGRADED[g]),
            ]
        }
        const fn by_decision(b: usize) -> [[[Label; 3]; 2]; 2] {
            [[one(b, 0, 0), one(b, 0, 1)], [one(b, 1, 0), one(b, 1, 1)]]
        }
        [by_decision(0), by_decision(1)]
    };
    const fn by_decision(l: &'static [[[Label; 3]; 2]; 2]) -> [[Key; 2]; 2] {
        const fn k(l: &'static [Label; 3]) -> Key {
            Key::from_static_parts(RATE_LIMIT_DECISIONS, l)
        }
        [[k(&l[0][0]), k(&l[0][1])], [k(&l[1][0]), k(&l[1][1])]]
    }
    [by_decision(&L[0]), by_decision(&L[1])]
};

/// Counts one rate-limit decision of a limiter on `storage` (memory or
/// Redis).
pub(crate) fn rate_limit_decision(storage: Storage, allowed: bool, degraded: bool) {
    let backend = match storage {
        Storage::Redis => 1,
        _ => 0,
    };
    let key = &DECISION_KEYS[backend][usize::from(!allowed)][usize::from(degraded)];
    increment(key, 1);
}

// ---- the cache ----

/// Something the Redis cache counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum CacheEvent {
    Hit,
    Miss,
    Bypassed,
    Error,
    Fill,
    StaleFillRefused,
    Invalidation,
    InvalidationDeferred,
}

/// A key with one static label.
macro_rules! key1 {
    ($name:expr, $k:literal, $set:expr, $v:literal) => {{
        static L: [Label; 1] = [label($k, $set, $v)];
        Key::from_static_parts($name, &L)
    }};
}

static CACHE_KEYS: [Key; 8] = [
    key1!(CACHE_READS, "result", CACHE_READ_RESULTS, "hit"),
    key1!(CACHE_READS, "result", CACHE_READ_RESULTS, "miss"),
    key1!(CACHE_READS, "result", CACHE_READ_RESULTS, "bypassed"),
    Key::from_static_name(CACHE_ERRORS),
    key1!(CACHE_FILLS, "result", CACHE_FILL_RESULTS, "filled"),
    key1!(CACHE_FILLS, "result", CACHE_FILL_RESULTS, "refused_stale"),
    key1!(
        CACHE_INVALIDATIONS,
        "result",
        CACHE_INVALIDATION_RESULTS,
        "applied"
    ),
    key1!(
        CACHE_INVALIDATIONS,
        "result",
        CACHE_INVALIDATION_RESULTS,
        "deferred"
    ),
];
static CACHE_PENDING_KEY: Key = Key::from_static_name(CACHE_PENDING);

/// Counts `n` cache events of one kind.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn cache_event(event: CacheEvent, n: u64) {
    increment(&CACHE_KEYS[event as usize], n);
}

/// Moves the pending-invalidations gauge from `before` to `now`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn cache_pending(before: u64, now: u64) {
    if before != now {
        let delta = now as f64 - before as f64;
        metrics::with_recorder(|r| {
            r.register_gauge(&CACHE_PENDING_KEY, &METADATA)
                .increment(delta)
        });
    }
}

// ---- the schema ----

static SCHEMA_PROBLEMS_KEY: Key = Key::from_static_name(SCHEMA_PROBLEMS);

/// Records how many schema differences the last check found.
pub(crate) fn schema_problems(n: usize) {
    metrics::with_recorder(|r| {
        r.register_gauge(&SCHEMA_PROBLEMS_KEY, &METADATA)
            .set(n as f64)
    });
}

// ---- the pool ----

static POOL_IDLE: Key = key1!(POOL_CONNECTIONS, "state", POOL_STATES, "idle");
static POOL_IN_USE: Key = key1!(POOL_CONNECTIONS, "state", POOL_STATES, "in_use");
static POOL_WAITS_KEY: Key = Key::from_static_name(POOL_WAITS);
static POOL_TIMEOUTS_KEY: Key = Key::from_static_name(POOL_TIMEOUTS);

/// Sets the pool's gauges and counters to `state`.
pub(crate) fn record_pool(state: &PoolState) {
    metrics::with_recorder(|r| {
        for replica in &state.replicas {
            let i = replica.index;
            if i >= REPLICA_INDEXES.len() {
                continue;
            }
            r.register_counter(&REPLICA_READS_KEYS[i], &METADATA)
                .absolute(replica.reads);
            r.register_gauge(&REPLICA_USABLE_KEYS[i], &METADATA).set(
                if replica.status == crate::backend::ReplicaStatus::Usable {
                    1.0
                } else {
                    0.0
                },
            );
            match replica.lag {
                Some(lag) => r
                    .register_gauge(&REPLICA_LAG_KEYS[i], &METADATA)
                    .set(lag.as_secs_f64()),
                None => r
                    .register_gauge(&REPLICA_LAG_KEYS[i], &METADATA)
                    .set(f64::NAN),
            }
        }
        r.register_gauge(&POOL_IDLE, &METADATA)
            .set(f64::from(state.idle));
        r.register_gauge(&POOL_IN_USE, &METADATA)
            .set(f64::from(state.in_use));
        r.register_counter(&POOL_WAITS_KEY, &METADATA)
            .absolute(state.waits);
        r.register_counter(&POOL_TIMEOUTS_KEY, &METADATA)
            .absolute(state.timeouts);
    });
}

// ---- read replicas ----

/// Which server served a read that may go to a replica, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A replica.
    Replica = 0,
    /// The primary: no usable replica had replayed this store's writes.
    OwnWrites = 1,
    /// The primary: no replica was usable.
    NoUsableReplica = 2,
    /// The primary, after the read failed on a replica.
    ReplicaFailed = 3,
}

/// A key with two static labels.
macro_rules! key2 {
    ($name:expr, $k1:literal, $s1:expr, $v1:literal, $k2:literal, $s2:expr, $v2:literal) => {{
        static L: [Label; 2] = [label($k1, $s1, $v1), label($k2, $s2, $v2)];
        Key::from_static_parts($name, &L)
    }};
}

static ROUTE_KEYS: [Key; 4] = [
    key2!(
        ROUTED_READS,
        "server",
        SERVERS,
        "replica",
        "reason",
        ROUTE_REASONS,
        "routed"
    ),
    key2!(
        ROUTED_READS,
        "server",
        SERVERS,
        "primary",
        "reason",
        ROUTE_REASONS,
        "own_writes"
    ),
    key2!(
        ROUTED_READS,
        "server",
        SERVERS,
        "primary",
        "reason",
        ROUTE_REASONS,
        "no_usable_replica"
    ),
    key2!(
        ROUTED_READS,
        "server",
        SERVERS,
        "primary",
        "reason",
        ROUTE_REASONS,
        "replica_failed"
    ),
];

/// Counts one read that may go to a replica.
pub(crate) fn routed_read(route: Route) {
    increment(&ROUTE_KEYS[route as usize], 1);
}

/// One key per replica index.
macro_rules! per_replica {
    ($name:expr) => {
        [
            key1!($name, "replica", REPLICA_INDEXES, "0"),
            key1!($name, "replica", REPLICA_INDEXES, "1"),
            key1!($name, "replica", REPLICA_INDEXES, "2"),
            key1!($name, "replica", REPLICA_INDEXES, "3"),
            key1!($name, "replica", REPLICA_INDEXES, "4"),
            key1!($name, "replica", REPLICA_INDEXES, "5"),
            key1!($name, "replica", REPLICA_INDEXES, "6"),
            key1!($name, "replica", REPLICA_INDEXES, "7"),
        ]
    };
}

static REPLICA_READS_KEYS: [Key; 8] = per_replica!(REPLICA_READS);
static REPLICA_LAG_KEYS: [Key; 8] = per_replica!(REPLICA_LAG);
static REPLICA_USABLE_KEYS: [Key; 8] = per_replica!(REPLICA_USABLE);

fn increment(key: &'static Key, n: u64) {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(n));
}

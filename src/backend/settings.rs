//! The settings and state types every backend shares: the rules a store's
//! backends follow ([`Settings`]) and what a pool reports ([`PoolState`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::{SharedClock, now_micros};

/// The default largest event payload (and user metadata or preferences
/// document), in bytes of JSON as `jsonb` prints it without spaces: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The default resolution of `api_keys.last_used`: a minute.
pub const DEFAULT_LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Rules every backend of one store follows.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub clock: SharedClock,
    pub max_payload_bytes: usize,
    pub last_used_resolution: Duration,
    /// Whether changes are written to the audit log.
    pub audit: bool,
}

impl Settings {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        now_micros(self.clock.as_ref())
    }
}

/// The state of a store's connection pool: the primary's, and, with read
/// replicas (`StoreBuilder::replica_url`), each replica's and which server
/// served the reads that may go to one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolState {
    /// Connections open, in use or idle.
    pub connections: u32,
    /// Connections idle in the pool.
    pub idle: u32,
    /// Connections handed out and not yet returned.
    pub in_use: u32,
    /// Checkouts so far that had to wait for a connection.
    pub waits: u64,
    /// Checkouts so far that gave up waiting ([`Error::PoolTimeout`](crate::Error::PoolTimeout)).
    pub timeouts: u64,
    /// Reads that may go to a replica but that the primary served (no
    /// replica usable, none caught up with this store's own writes, or the
    /// replica failed): see [`ReplicaState::reads`] for the rest. Always 0
    /// without replicas.
    pub primary_reads: u64,
    /// Each replica, in the order they were given to the builder; empty
    /// without replicas.
    pub replicas: Vec<ReplicaState>,
}

/// One read replica: its pool, its health, its lag, and the reads it served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// Its place (from 0) in the order the replicas were given; the
    /// `replica` label of its metrics.
    pub index: usize,
    /// Whether reads go to it now, and if not, why.
    pub status: ReplicaStatus,
    /// How far behind the primary it was at the last measurement (to the
    /// polling interval's resolution); `None` before the first one or
    /// while it is down.
    pub lag: Option<Duration>,
    /// Connections open to it, in use or idle.
    pub connections: u32,
    /// Connections to it handed out and not yet returned.
    pub in_use: u32,
    /// Reads it served.
    pub reads: u64,
    /// Reads it was chosen for that failed there (and were then served by
    /// the primary).
    pub failures: u64,
}

/// Whether a read replica takes reads, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaStatus {
    /// Not measured yet: takes no reads until it is.
    Unknown,
    /// Takes reads: reachable, in recovery, lag within the bound.
    Usable,
    /// Skipped: its lag passed `max_replica_lag`; used again once it is
    /// back within it.
    Lagging,
    /// Skipped: it could not be reached or failed a read; measured again
    /// at every poll, and used again once it answers.
    Down,
    /// Skipped: the server is not in recovery (a primary, or a promoted
    /// replica), so it does not follow this store's primary.
    NotReplica,
}

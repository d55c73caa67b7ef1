//! The settings and state types every backend shares: the rules a store's
//! backends follow ([`Settings`]) and what a pool reports ([`PoolState`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::{SharedClock, now_micros};

/// The default largest event payload (and user metadata or preferences
/// document), in bytes of serialized JSON: 64 KiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// The default resolution of `api_keys.last_used`: a minute.
pub const DEFAULT_LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// Rules every backend of one store follows.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub clock: SharedClock,
    pub max_payload_bytes: usize,
    pub last_used_resolution: Duration,
}

impl Settings {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        now_micros(self.clock.as_ref())
    }
}

/// The state of a store's connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
}

//! Where the store's notion of "now" comes from.
//!
//! Every timestamp the store writes (`created_at`, `updated_at`,
//! `last_used`) and every expiry it checks comes from a [`Clock`], on every
//! backend. Tests hand the store a [`ManualClock`] and move time forward
//! exactly, without sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SubsecRound, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time. Implementations need not truncate; the store
    /// truncates to microseconds, PostgreSQL's precision.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until told to move. Clones share one time.
///
/// ```
/// use dreamnet_db::{Clock, ManualClock};
/// use chrono::Duration;
///
/// let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
/// let start = clock.now();
/// clock.advance(Duration::seconds(90));
/// assert_eq!(clock.now() - start, Duration::seconds(90));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The clock's time truncated to microseconds, the precision PostgreSQL
/// stores, so that every backend returns identical timestamps.
pub(crate) fn now_micros(clock: &dyn Clock) -> DateTime<Utc> {
    clock.now().trunc_subsecs(6)
}

/// A clock shared by every part of a store.
pub(crate) type SharedClock = Arc<dyn Clock>;

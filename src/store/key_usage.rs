//! What a store keeps for API key verifications between database writes:
//! the usage counts and `last_used` times, buffered in memory and written
//! in one statement per flush; and the rate limiter per-key limits go
//! through.
//!
//! # The buffer
//!
//! Each verification that found its key adds one to the count of (key,
//! UTC hour, outcome), and an accepted one whose `last_used` is older than
//! the store's `last_used_resolution` records the time. Nothing is written
//! on the request's path. A background task (started with the first
//! verification) writes the buffer every [`USAGE_FLUSH_EVERY`], sooner
//! when it holds [`USAGE_FLUSH_AT`] counts, and
//! [`Store::shutdown`](crate::Store::shutdown) writes it at once.
//!
//! Memory is bounded: at most [`MAX_BUFFERED_USAGE`] counts and as many
//! keys' times are held; past that (the database unreachable for long)
//! further counts are dropped, and counted in
//! [`ApiKeys::usage_dropped`](crate::ApiKeys::usage_dropped). A failed
//! write keeps its batch for the next one.
//!
//! What a crash loses: the counts and `last_used` times of at most one
//! flush interval (plus what piled up while the database was unreachable,
//! within the bound).
//!
//! # Credits held in Redis
//!
//! Behind the Redis cache, a key's credits are spent in Redis (see
//! [`ApiKeys::verify`](crate::ApiKeys::verify)); the balance each spend
//! left is kept here, the newest per key, and written back to
//! `api_key_policies` in the same statement as the counts. A write-back
//! lands only for the budget version it was spent against and only if it
//! counts more spends than the stored balance, so batches of several
//! processes arriving in any order never move a balance back, and a
//! budget replaced meanwhile is never undercut. The database's balance
//! lags Redis by at most one flush interval; it matters only when Redis
//! loses the balance (the next verification seeds it again from the
//! database): the budget can then be overspent by the spends not yet
//! written back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::{Backend, CreditWrite, Settings, UsageBatch};
use crate::error::Result;
use crate::model::{ApiKey, KeyOutcome, TimeBucket};
use crate::rate_limit::RateLimiter;

/// How often buffered usage is written.
pub const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A buffer holding this many counts is written at once.
pub const USAGE_FLUSH_AT: usize = 10_000;

/// The most counts (and, separately, `last_used` times) a store buffers.
pub const MAX_BUFFERED_USAGE: usize = 100_000;

/// A `last_used` time waiting to be written, or written and remembered
/// (so that the next verifications of the key within the resolution write
/// nothing).
#[derive(Debug, Clone, Copy)]
struct Touch {
    at: DateTime<Utc>,
    written: bool,
}

#[derive(Debug, Default)]
struct Buffered {
    counts: HashMap<(Uuid, DateTime<Utc>, KeyOutcome), u64>,
    touches: HashMap<Uuid, Touch>,
    /// Balances held in Redis waiting to be written back, the newest per
    /// key.
    credits: HashMap<Uuid, CreditWrite>,
}

/// Keeps the newer of two write-backs of one key's balance.
fn keep_newest(held: &mut HashMap<Uuid, CreditWrite>, write: CreditWrite) {
    match held.get_mut(&write.key) {
        Some(w) if (w.version, w.seq) >= (write.version, write.seq) => {}
        Some(w) => *w = write,
        None => {
            held.insert(write.key, write);
        }
    }
}

/// The buffer of one store (shared by its clones).
pub(crate) struct UsageBuffer {
    backend: Arc<dyn Backend>,
    settings: Arc<Settings>,
    state: Mutex<Buffered>,
    /// One flush at a time, so batches land in order.
    flushing: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    task: OnceLock<()>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for UsageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("UsageBuffer")
            .field("counts", &state.counts.len())
            .field("touches", &state.touches.len())
            .finish_non_exhaustive()
    }
}

impl UsageBuffer {
    pub(crate) fn new(backend: Arc<dyn Backend>, settings: Arc<Settings>) -> Self {
        UsageBuffer {
            backend,
            settings,
            state: Mutex::default(),
            flushing: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            task: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffered> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn resolution(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.last_used_resolution).unwrap_or_default()
    }

    /// Starts the background writer, once, if there is a runtime to run it.
    fn start(self: &Arc<Self>) {
        self.task.get_or_init(|| {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let weak = Arc::downgrade(self);
            handle.spawn(writer(weak));
        });
    }

    /// Counts one verification of `key` with `outcome` at `now`.
    pub(crate) fn count(self: &Arc<Self>, key: Uuid, outcome: KeyOutcome, now: DateTime<Utc>) {
        self.start();
        let hour = TimeBucket::Hour.start_of(now);
        let len = {
            let mut state = self.lock();
            let full = state.counts.len() >= MAX_BUFFERED_USAGE;
            match state.counts.get_mut(&(key, hour, outcome)) {
                Some(n) => *n += 1,
                None if full => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    state.counts.insert((key, hour, outcome), 1);
                }
            }
            state.counts.len()
        };
        if len >= USAGE_FLUSH_AT {
            self.wake.notify_one();
        }
    }

    /// The `last_used` to report for `key`, accepted at `now`: the newest
    /// of the record's and this buffer's, or `now` (buffered for the next
    /// flush) if both are older than the resolution.
    pub(crate) fn touch(&self, key: &ApiKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let stale_before = now - self.resolution();
        let mut state = self.lock();
        let known = state.touches.get(&key.id).map(|t| t.at).max(key.last_used);
        if known.is_some_and(|t| t >= stale_before) {
            return known;
        }
        if state.touches.len() >= MAX_BUFFERED_USAGE && !state.touches.contains_key(&key.id) {
            state
                .touches
                .retain(|_, t| !(t.written && t.at < stale_before));
            if state.touches.len() >= MAX_BUFFERED_USAGE {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Some(now);
            }
        }
        state.touches.insert(
            key.id,
            Touch {
                at: now,
                written: false,
            },
        );
        Some(now)
    }

    /// `key` with the `last_used` this process knows of, if newer than the
    /// record's.
    pub(crate) fn overlay(&self, mut key: ApiKey) -> ApiKey {
        if let Some(t) = self.lock().touches.get(&key.id) {
            if key.last_used.is_none_or(|at| at < t.at) {
                key.last_used = Some(t.at);
            }
        }
        key
    }

    /// Keeps the balance a spend in Redis left, for the next flush.
    pub(crate) fn credits(self: &Arc<Self>, write: CreditWrite) {
        self.start();
        let mut state = self.lock();
        if state.credits.len() >= MAX_BUFFERED_USAGE && !state.credits.contains_key(&write.key) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        keep_newest(&mut state.credits, write);
    }

    /// Whether a balance of `key` (or of any key, for `None`) waits to be
    /// written back.
    pub(crate) fn credits_pending(&self, key: Option<Uuid>) -> bool {
        let state = self.lock();
        match key {
            Some(id) => state.credits.contains_key(&id),
            None => !state.credits.is_empty(),
        }
    }

    /// Forgets the balance of `key` waiting to be written back (its budget
    /// was replaced: the write-back would be dropped anyway).
    pub(crate) fn forget_credits(&self, key: Uuid) {
        self.lock().credits.remove(&key);
    }

    /// Counts and touches dropped because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes everything buffered, in one statement. On failure the batch
    /// is kept (within the bound) for the next flush.
    pub(crate) async fn flush(&self) -> Result<()> {
        let _one = self.flushing.lock().await;
        let (counts, batch) = {
            let mut state = self.lock();
            let counts = std::mem::take(&mut state.counts);
            let credits: Vec<CreditWrite> =
                std::mem::take(&mut state.credits).into_values().collect();
            let last_used: Vec<(Uuid, DateTime<Utc>)> = state
                .touches
                .iter()
                .filter(|(_, t)| !t.written)
                .map(|(id, t)| (*id, t.at))
                .collect();
            let batch = UsageBatch {
                last_used,
                counts: counts
                    .iter()
                    .map(|(&(key, hour, outcome), &n)| (key, hour, outcome, n))
                    .collect(),
                credits,
            };
            (counts, batch)
        };
        if batch.is_empty() {
            return Ok(());
        }
        match self.backend.flush_key_usage(&batch).await {
            Ok(()) => {
                let stale_before = self.settings.now() - self.resolution();
                let mut state = self.lock();
                for (id, at) in &batch.last_used {
                    if let Some(t) = state.touches.get_mut(id) {
                        if t.at == *at {
                            t.written = true;
                        }
                    }
                }
                state
                    .touches
                    .retain(|_, t| !(t.written && t.at < stale_before));
                Ok(())
            }
            Err(e) => {
                let mut state = self.lock();
                for w in &batch.credits {
                    keep_newest(&mut state.credits, *w);
                }
                for (k, n) in counts {
                    let full = state.counts.len() >= MAX_BUFFERED_USAGE;
                    match state.counts.get_mut(&k) {
                        Some(m) => *m += n,
                        None if full => {
                            self.dropped.fetch_add(n, Ordering::Relaxed);
                        }
                        None => {
                            state.counts.insert(k, n);
                        }
                    }
                }
                Err(e)
            }
        }
    }
}

/// Last chance: a store dropped with usage buffered writes it from a task
/// of its own, if a runtime is still there to run it.
impl Drop for UsageBuffer {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.lock());
        let batch = UsageBatch {
            last_used: state
                .touches
                .iter()
                .filter(|(_, t)| !t.written)
                .map(|(id, t)| (*id, t.at))
                .collect(),
            counts: state
                .counts
                .into_iter()
                .map(|((key, hour, outcome), n)| (key, hour, outcome, n))
                .collect(),
            credits: state.credits.into_values().collect(),
        };
        if batch.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let backend = self.backend.clone();
            handle.spawn(async move {
                if let Err(e) = backend.flush_key_usage(&batch).await {
                    tracing::warn!(error = %e, "api key usage buffered at shutdown was lost");
                }
            });
        }
    }
}

/// Writes the buffer every [`USAGE_FLUSH_EVERY`] or when woken, until the
/// store is gone.
async fn writer(buffer: Weak<UsageBuffer>) {
    let mut warned = false;
    loop {
        // Holding the buffer while waiting keeps it (and the backend) alive
        // for at most one interval after the store is dropped, and that
        // last round writes what the store left.
        let Some(b) = buffer.upgrade() else { return };
        let _ = tokio::time::timeout(USAGE_FLUSH_EVERY, b.wake.notified()).await;
        match b.flush().await {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "api key usage could not be written; kept for the next try");
            }
            Err(_) => {}
        }
    }
}

/// The store's API key runtime: the usage buffer and the limiter.
#[derive(Debug)]
pub(crate) struct KeyRuntime {
    pub(crate) usage: Arc<UsageBuffer>,
    pub(crate) limiter: Option<RateLimiter>,
    /// The limiter's key prefix when it is a Redis limiter on the Redis
    /// cache's own Redis: the cache's verification script then applies
    /// keys' limits itself, on the limiter's keys.
    pub(crate) limits_in_script: Option<String>,
}

impl KeyRuntime {
    pub(crate) fn new(backend: Arc<dyn Backend>, settings: Arc<Settings>) -> Self {
        #[cfg(feature = "memory")]
        let limiter = Some(RateLimiter::in_memory_with_clock(
            crate::rate_limit::RateLimitPolicy::per_second(1).unwrap_or_else(|_| unreachable!()),
            ClockRef(settings.clock.clone()),
        ));
        #[cfg(not(feature = "memory"))]
        let limiter = None;
        KeyRuntime {
            usage: Arc::new(UsageBuffer::new(backend, settings)),
            limiter,
            limits_in_script: None,
        }
    }
}

/// The store's clock, handed to the default in-memory limiter.
#[cfg(feature = "memory")]
#[derive(Debug, Clone)]
struct ClockRef(crate::clock::SharedClock);

#[cfg(feature = "memory")]
impl crate::Clock for ClockRef {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

//! The Redis cache (feature `redis`): the hottest reads, "who is this user"
//! and "is this API key valid", answered from Redis, and never stale after a
//! write that returned success.
//!
//! The cache is a decorator: `CachedBackend` is itself a storage backend
//! that wraps another (PostgreSQL, or memory in tests), so the [`Store`]
//! and handler code are the same with or without it. Turn it on with
//! [`StoreBuilder::redis_url`]; [`Store::cache_stats`] shows how it does.
//!
//! # What is cached
//!
//! - Users by id (the record), by email and by wallet address (an index
//!   entry holding the user's id, which leads to the record).
//! - API keys by hash (an index entry holding the key's id) and by id (the
//!   key's record, without any hash). The store still checks revocation,
//!   expiry and the service against its clock on every validation, so a
//!   cached record never outlives its key's expiry.
//! - Misses are never cached: a lookup that finds nothing asks the database
//!   again next time, so creating a user or issuing a key has nothing to
//!   invalidate.
//!
//! Index entries are checked, not trusted: a user found through the email
//! index is used only if the record says it has that email, and key ids
//! never change for a hash. So only records need invalidating, and an index
//! entry left over from an old email or wallet address can cost a database
//! read but never returns the wrong user.
//!
//! # Invalidation, and the stale-fill race
//!
//! Every write that changes a cached record deletes it from Redis after the
//! database has committed: updating or deleting a user; revoking, rotating,
//! disabling or enabling a key, or changing its permissions, name and
//! metadata, credits or rate limits; and deleting a user's keys with them.
//!
//! Two writes leave the cached key record as it is, because they do not
//! decide a verification from it: spending credits (from the key's balance
//! held in Redis, see `verify.rs`, or in the database when Redis is
//! unreachable; the record's credit count is the count when it was read)
//! and the batched usage flush that moves `last_used` forward
//! (the store compares `last_used` with its own buffer on every
//! validation, so an older cached value costs nothing but that
//! comparison).
//!
//! Deleting is not enough on its own. A reader that misses, reads the
//! database, and is then overtaken by a writer that commits and deletes,
//! would put the old value back. Fills are therefore leased: a reader that
//! misses first sets `{record}:lease` to a random token (`SET NX PX`), then
//! reads the database, then fills with a Lua script that writes the record
//! only if the lease still holds its token. An invalidation deletes the
//! record *and* its lease, so a fill that started before it is refused. The
//! lease's expiry can only make a fill fail, never succeed: no clock
//! decides correctness. Keys leave their user's deletion no way back in
//! either: a deleted user gets a tombstone that outlives every lease taken
//! before it, and a key record is filled only if its user has none.
//!
//! Every invalidation also publishes the names of the records it dropped
//! on the channel `{prefix}inv`, in the same script as the deletion.
//!
//! # The local tier (feature `local-cache`)
//!
//! [`StoreBuilder::local_cache`] adds a process-local tier (moka) in front
//! of all this, for users and API key records. It subscribes to the
//! invalidation channel and serves only while subscribed: a lost channel
//! (Redis restarted, the connection cut, a `PING` unanswered) empties it at
//! once. Fills race the messages and are checked against them after they
//! land (see `local.rs`). It holds records only: credits, per-key rate
//! limits and any other rule decided atomically across processes are never
//! answered from it, and must not be added to a cached record. Invalidations
//! that a future write path needs go through the one `RedisCache::invalidate`,
//! which drops this process's local entries, deletes the Redis entries and
//! publishes, so every tier follows.
//!
//! # When Redis is down or slow
//!
//! Every Redis call is bounded by [`StoreBuilder::redis_timeout`]. A call
//! that fails or times out counts an error, logs a `warn` (at most once per
//! outage) and answers from the database; the cache is then skipped for a
//! quarter of a second before Redis is tried again. Writes still succeed.
//!
//! An invalidation that cannot reach Redis is not dropped: it is kept in
//! this process's pending set, and until every pending invalidation has been
//! carried out in Redis, this process reads from the database only (and
//! fills nothing). The set is flushed before the next Redis call and by a
//! background task every 200 ms, so it is applied as soon as Redis answers
//! again. (Past 100,000 pending invalidations, the set is replaced by one
//! sweep of every entry under the prefix.)
//!
//! What other processes may see meanwhile, honestly: until this process
//! reaches Redis again, another process that *can* reach it (a partition,
//! not an outage) may read an entry that this process's write made stale,
//! for at most the cache TTL. If Redis was really down, it has usually lost
//! or still holds exactly what this process will delete on its return, and
//! the pending set is flushed within ~200 ms of it answering; a window
//! remains between Redis answering other processes and this one's flush. If
//! this process exits with invalidations pending, they are lost and the
//! entries expire with their TTL. Keep the TTL as short as the hit ratio
//! allows if that window matters.
//!
//! # What Redis holds
//!
//! JSON records of users and API keys, without any hash; index names derived
//! from emails, wallet addresses and key hashes by hashing them again under
//! a domain tag (see `keys.rs`). Nothing in Redis is a key or lets a reader
//! of Redis forge one. A client that can *write* to the cache's Redis can
//! change what the store answers, as with any cache: give the cache a Redis
//! (or an ACL user and key prefix) of its own.
//!
//! Supported servers: a standalone Redis (or a primary with replicas), 6.2
//! or newer. Redis Cluster is not supported (the scripts touch keys they
//! derive).
//!
//! [`Store`]: crate::Store
//! [`Store::cache_stats`]: crate::Store::cache_stats
//! [`StoreBuilder::redis_url`]: crate::StoreBuilder::redis_url
//! [`StoreBuilder::redis_timeout`]: crate::StoreBuilder::redis_timeout
//! [`StoreBuilder::local_cache`]: https://docs.rs/dreamnet-db/latest/dreamnet_db/struct.StoreBuilder.html#method.local_cache

#[cfg(feature = "redis")]
mod backend;
#[cfg(feature = "redis")]
mod client;
#[cfg(feature = "redis")]
mod keys;
#[cfg(feature = "local-cache")]
mod local;
#[cfg(all(test, feature = "redis", feature = "memory"))]
mod tests;
#[cfg(feature = "redis")]
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "redis")]
use crate::telemetry::CacheEvent;

#[cfg(feature = "redis")]
pub use self::settings::{DEFAULT_CACHE_TTL, DEFAULT_REDIS_TIMEOUT};
#[cfg(feature = "redis")]
pub use keys::DEFAULT_CACHE_PREFIX;
#[cfg(feature = "local-cache")]
pub use local::DEFAULT_LOCAL_CACHE_TTL;
#[cfg(feature = "local-cache")]
pub(crate) use local::LocalSettings;
#[cfg(feature = "redis")]
pub(crate) use settings::{CacheSettings, layer};

/// How a store's Redis cache has done since the store was built: see
/// [`Store::cache_stats`](crate::Store::cache_stats).
///
/// Counts are per store (per process) and only grow, except
/// [`pending_invalidations`](Self::pending_invalidations), which is the
/// current size of the pending set. The same counts are recorded as they
/// happen in the `dreamnet_db_cache_*` metrics (see [`crate::telemetry`]).
/// A service watches [`hit_ratio`](Self::hit_ratio), `errors` and
/// `pending_invalidations` (non-zero means this process reads from the
/// database only until Redis answers again).
///
/// ```
/// use dreamnet_db::{CacheStats, Store};
///
/// fn report(store: &Store) {
///     if let Some(stats) = store.cache_stats() {
///         let ratio = stats.hit_ratio().unwrap_or(0.0);
///         println!("cache hit ratio {:.1} %, {} Redis errors", 100.0 * ratio, stats.errors);
///     }
/// }
/// assert_eq!(CacheStats::default().hit_ratio(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Cached reads (users by id, email or wallet; keys by hash) answered
    /// from Redis.
    pub hits: u64,
    /// Cached reads that asked Redis, found nothing usable, and read the
    /// database.
    pub misses: u64,
    /// Cached reads that went straight to the database because Redis was
    /// failing, or this process had invalidations pending.
    pub bypassed: u64,
    /// Redis calls that failed or timed out.
    pub errors: u64,
    /// Records written to Redis after a miss.
    pub fills: u64,
    /// Fills refused because a write invalidated the record while it was
    /// being read from the database (the stale-fill race, averted).
    pub stale_fills_refused: u64,
    /// Invalidations carried out in Redis, at once or from the pending set.
    pub invalidations: u64,
    /// Invalidations that could not reach Redis when their write committed,
    /// and went to the pending set.
    pub invalidations_deferred: u64,
    /// Invalidations waiting in the pending set now.
    pub pending_invalidations: u64,
    /// Reads answered by the process-local tier (feature `local-cache`,
    /// [`StoreBuilder::local_cache`](crate::StoreBuilder::local_cache))
    /// without asking Redis. Not counted in `hits`, `misses` or `bypassed`.
    pub local_hits: u64,
    /// Reads the local tier could not answer while serving (they went on
    /// to Redis and are counted there too).
    pub local_misses: u64,
    /// Local fills taken out again because an invalidation of the record,
    /// or the loss of the channel, came while Redis was being read.
    pub local_fills_refused: u64,
    /// Times the local tier emptied because its invalidation channel was
    /// lost.
    pub local_resets: u64,
    /// Users and key records the local tier holds now.
    pub local_entries: u64,
    /// Whether the local tier is serving now (its channel is subscribed).
    pub local_serving: bool,
}

impl CacheStats {
    /// `hits / (hits + misses + bypassed)`: the share of cached reads that
    /// Redis answered. `None` before the first cached read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses + self.bypassed;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }

    /// `local_hits / (local_hits + local_misses)`: the share of reads the
    /// local tier answered while it was serving. `None` before the first.
    pub fn local_hit_ratio(&self) -> Option<f64> {
        let reads = self.local_hits + self.local_misses;
        (reads > 0).then(|| self.local_hits as f64 / reads as f64)
    }
}

/// The live counters behind [`CacheStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) fills: AtomicU64,
    pub(crate) stale_fills_refused: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) invalidations_deferred: AtomicU64,
    pub(crate) pending: AtomicU64,
    #[cfg(feature = "local-cache")]
    pub(crate) local: std::sync::OnceLock<std::sync::Arc<local::LocalTier>>,
}

impl Counters {
    /// Counts `n` events, here and in the cache metrics.
    #[cfg(feature = "redis")]
    pub(crate) fn add(&self, event: CacheEvent, n: u64) {
        let counter = match event {
            CacheEvent::Hit => &self.hits,
            CacheEvent::Miss => &self.misses,
            CacheEvent::Bypassed => &self.bypassed,
            CacheEvent::Error => &self.errors,
            CacheEvent::Fill => &self.fills,
            CacheEvent::StaleFillRefused => &self.stale_fills_refused,
            CacheEvent::Invalidation => &self.invalidations,
            CacheEvent::InvalidationDeferred => &self.invalidations_deferred,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        crate::telemetry::cache_event(event, n);
    }

    /// Sets the size of the pending set, here and in its gauge. Called
    /// under the pending set's lock, so the gauge moves by exact steps.
    #[cfg(feature = "redis")]
    pub(crate) fn set_pending(&self, len: u64) {
        let before = self.pending.swap(len, Ordering::Relaxed);
        crate::telemetry::cache_pending(before, len);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            bypassed: get(&self.bypassed),
            errors: get(&self.errors),
            fills: get(&self.fills),
            stale_fills_refused: get(&self.stale_fills_refused),
            invalidations: get(&self.invalidations),
            invalidations_deferred: get(&self.invalidations_deferred),
            pending_invalidations: get(&self.pending),
            ..self.local_snapshot()
        }
    }

    #[cfg(not(feature = "local-cache"))]
    fn local_snapshot(&self) -> CacheStats {
        CacheStats::default()
    }

    #[cfg(feature = "local-cache")]
    fn local_snapshot(&self) -> CacheStats {
        let Some(tier) = self.local.get() else {
            return CacheStats::default();
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &tier.counters;
        CacheStats {
            local_hits: get(&c.hits),
            local_misses: get(&c.misses),
            local_fills_refused: get(&c.fills_refused),
            local_resets: get(&c.resets),
            local_entries: tier.entries(),
            local_serving: tier.live(),
            ..CacheStats::default()
        }
    }
}

#[cfg(feature = "redis")]
mod settings {
    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;

    use super::Counters;
    use super::backend::CachedBackend;
    use super::client::RedisCache;
    use super::keys::DEFAULT_CACHE_PREFIX;
    use crate::backend::Backend;
    use crate::error::{Error, Result};

    /// How long a cached record lives in Redis by default: five minutes.
    pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

    /// The default bound on every Redis call: 100 ms.
    pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

    /// The cache's part of a [`StoreBuilder`].
    #[derive(Clone)]
    pub(crate) struct CacheSettings {
        pub(crate) redis_url: Option<SecretString>,
        pub(crate) ttl: Duration,
        pub(crate) timeout: Duration,
        pub(crate) prefix: String,
        /// The process-local tier's size, if asked for.
        #[cfg(feature = "local-cache")]
        pub(crate) local_entries: Option<u64>,
        #[cfg(feature = "local-cache")]
        pub(crate) local_ttl: Duration,
    }

    impl Default for CacheSettings {
        fn default() -> Self {
            CacheSettings {
                redis_url: None,
                ttl: DEFAULT_CACHE_TTL,
                timeout: DEFAULT_REDIS_TIMEOUT,
                prefix: DEFAULT_CACHE_PREFIX.to_owned(),
                #[cfg(feature = "local-cache")]
                local_entries: None,
                #[cfg(feature = "local-cache")]
                local_ttl: super::DEFAULT_LOCAL_CACHE_TTL,
            }
        }
    }

    /// Never shows the URL: it may hold a password.
    impl fmt::Debug for CacheSettings {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut d = f.debug_struct("CacheSettings");
            d.field("redis_url", &self.redis_url.as_ref().map(|_| "[REDACTED]"))
                .field("ttl", &self.ttl)
                .field("timeout", &self.timeout)
                .field("prefix", &self.prefix);
            #[cfg(feature = "local-cache")]
            d.field("local_entries", &self.local_entries)
                .field("local_ttl", &self.local_ttl);
            d.finish()
        }
    }

    impl CacheSettings {
        /// The local tier's settings, if it is on.
        #[cfg(feature = "local-cache")]
        pub(crate) fn local(&self) -> Option<super::LocalSettings> {
            self.local_entries.map(|entries| super::LocalSettings {
                entries,
                ttl: self.local_ttl,
            })
        }

        fn check(&self) -> Result<()> {
            if self.ttl < Duration::from_millis(1) {
                return Err(Error::Config("cache_ttl must be at least 1 ms".into()));
            }
            if self.timeout.is_zero() {
                return Err(Error::Config("redis_timeout must not be zero".into()));
            }
            if self.prefix.is_empty() {
                return Err(Error::Config("cache_prefix must not be empty".into()));
            }
            #[cfg(feature = "local-cache")]
            if let Some(local) = self.local() {
                if local.entries == 0 {
                    return Err(Error::Config(
                        "local_cache must hold at least 1 entry".into(),
                    ));
                }
                if local.ttl < Duration::from_millis(1) {
                    return Err(Error::Config(
                        "local_cache_ttl must be at least 1 ms".into(),
                    ));
                }
            }
            Ok(())
        }
    }

    /// Puts the Redis cache in front of `backend` if a Redis URL is set.
    pub(crate) async fn layer(
        settings: &CacheSettings,
        backend: Arc<dyn Backend>,
    ) -> Result<(Arc<dyn Backend>, Option<Arc<Counters>>)> {
        let Some(url) = &settings.redis_url else {
            return Ok((backend, None));
        };
        settings.check()?;
        let cache = RedisCache::connect(url, settings).await?;
        let counters = cache.counters().clone();
        #[cfg(feature = "local-cache")]
        if let Some(tier) = cache.local_tier() {
            let _ = counters.local.set(tier.clone());
        }
        Ok((Arc::new(CachedBackend::new(backend, cache)), Some(counters)))
    }
}

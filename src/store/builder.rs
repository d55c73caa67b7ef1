//! [`StoreBuilder`]: every knob of a [`Store`], with the platform's defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::MediaState;
use super::Store;
use crate::backend::{
    Backend, DEFAULT_LAST_USED_RESOLUTION, DEFAULT_MAX_PAYLOAD_BYTES, MediaStorage, Settings,
};
#[cfg(feature = "redis")]
use crate::cache::CacheSettings;
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::error::Result;
use crate::model::{DEFAULT_ALLOWED_TYPES, DEFAULT_MAX_MEDIA_BYTES, RoleNames};
use crate::postgres::PgOptions;

/// Builds a [`Store`]. Every knob has the platform's default.
///
/// ```no_run
/// # async fn demo() -> dreamnet_db::Result<()> {
/// use std::time::Duration;
/// use dreamnet_db::Store;
///
/// let store = Store::builder()
///     .database_url("postgres://app:secret@db.example.com/dreamnet?sslmode=require")
///     .max_connections(20)
///     .connection_timeout(Duration::from_secs(5))
///     .run_migrations(true)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StoreBuilder {
    pg: PgOptions,
    run_migrations: bool,
    max_payload_bytes: usize,
    last_used_resolution: Duration,
    clock: SharedClock,
    media_storage: Option<MediaStorage>,
    media_max_bytes: u64,
    media_allowed_types: Vec<String>,
    media_part_bytes: usize,
    key_limiter: Option<crate::RateLimiter>,
    audit: bool,
    #[cfg(feature = "redis")]
    cache: CacheSettings,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            pg: PgOptions::default(),
            run_migrations: false,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            last_used_resolution: DEFAULT_LAST_USED_RESOLUTION,
            clock: Arc::new(SystemClock),
            media_storage: None,
            media_max_bytes: DEFAULT_MAX_MEDIA_BYTES,
            media_allowed_types: DEFAULT_ALLOWED_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            media_part_bytes: super::DEFAULT_MEDIA_PART_BYTES,
            key_limiter: None,
            audit: true,
            #[cfg(feature = "redis")]
            cache: Default::default(),
        }
    }
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StoreBuilder");
        d.field("pg", &self.pg)
            .field("run_migrations", &self.run_migrations)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("last_used_resolution", &self.last_used_resolution)
            .field("clock", &self.clock)
            .field("media_storage", &self.media_storage)
            .field("media_max_bytes", &self.media_max_bytes)
            .field("media_allowed_types", &self.media_allowed_types)
            .field("media_part_bytes", &self.media_part_bytes)
            .field("key_limiter", &self.key_limiter)
            .field("audit", &self.audit);
        #[cfg(feature = "redis")]
        d.field("cache", &self.cache);
        d.finish()
    }
}

impl StoreBuilder {
    /// The PostgreSQL URL, `postgres://user:password@host:port/db?params`.
    /// `sslmode` is honoured as libpq does (`disable`, `prefer` (the
    /// default), `require`, `verify-ca`, `verify-full`), with `sslrootcert`
    /// naming a PEM file of trusted roots for the verifying modes (the
    /// Mozilla roots otherwise). The password never appears in `Debug`
    /// output, logs or errors.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.pg.database_url = Some(SecretString::from(url.into()));
        self
    }

    /// The most connections the pool opens. Default 100.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.pg.max_connections = n;
        self
    }

    /// Idle connections the pool keeps open even when unused. Default none.
    pub fn min_idle(mut self, n: Option<u32>) -> Self {
        self.pg.min_idle = n;
        self
    }

    /// How long a connection may sit idle before it is closed. Default 30 s.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.pg.idle_timeout = t;
        self
    }

    /// How long a caller waits for a connection (opening one included)
    /// before getting [`Error::PoolTimeout`](crate::Error::PoolTimeout). Default 2 s.
    pub fn connection_timeout(mut self, t: Duration) -> Self {
        self.pg.connection_timeout = t;
        self
    }

    /// How long a connection lives before it is replaced. Default 30 min.
    pub fn max_lifetime(mut self, t: Option<Duration>) -> Self {
        self.pg.max_lifetime = t;
        self
    }

    /// Whether each connection caches its prepared statements. Default on.
    /// Turn it off behind a PgBouncer in transaction mode that does not
    /// support prepared statements (before 1.21, or with
    /// `max_prepared_statements = 0`): then every call runs in a
    /// transaction of its own, so each statement is prepared, run and
    /// closed on one server connection (a round trip more per call).
    ///
    /// [`connect`](Self::connect) finds out whether such a pooler is in
    /// the way and, with the cache on, fails with
    /// [`Error::Config`](crate::Error::Config) saying so, instead of
    /// failing later with `prepared statement "s1" does not exist`.
    pub fn statement_cache(mut self, on: bool) -> Self {
        self.pg.statement_cache = on;
        self
    }

    /// Adds a read replica (a streaming replica of the primary, such as a
    /// Neon read replica), in the form of
    /// [`database_url`](Self::database_url), with the same pool settings.
    /// Call it once per replica (at most [`MAX_REPLICAS`](crate::MAX_REPLICAS)),
    /// or use [`replica_urls`](Self::replica_urls). None by default: every
    /// read goes to the primary.
    ///
    /// Reads that can stand a little lag go to a replica: listing and
    /// counting events (with any filter, payload containment included),
    /// counts per bucket, listing users, listing a user's keys. Everything
    /// else goes to the primary: writes, key validation, `get` and the
    /// `find_by_*` lookups, sessions and media. The README's "Read
    /// replicas" section has the table.
    ///
    /// - A replica is used only while its measured lag (polled every
    ///   [`replica_poll_interval`](Self::replica_poll_interval)) is within
    ///   [`max_replica_lag`](Self::max_replica_lag), and only if the
    ///   server is in recovery (a URL naming a primary is refused).
    /// - A replica that cannot be reached is skipped from the first
    ///   failure (a read waits at most `min(connection_timeout, 1 s)` for
    ///   its connection) and tried again at every poll.
    /// - With no replica usable, reads go to the primary, and a read that
    ///   fails on a replica is run again on the primary: replicas never
    ///   make a read fail that the primary would answer.
    /// - Read-your-writes: after any write of this store (and its clones)
    ///   returns, its routed reads go only to a replica that has replayed
    ///   that write's WAL position, else to the primary. Each write pays
    ///   one more round trip for it (`pg_current_wal_insert_lsn()`).
    ///
    /// [`Store::pool_state`](crate::Store::pool_state) and the metrics
    /// tell which server served what. A replica that is down at
    /// [`connect`](Self::connect) does not make it fail.
    ///
    /// ```no_run
    /// # async fn demo() -> dreamnet_db::Result<()> {
    /// use dreamnet_db::Store;
    ///
    /// let store = Store::builder()
    ///     .database_url("postgres://app:secret@primary.example.com/dreamnet")
    ///     .replica_url("postgres://app:secret@replica.example.com/dreamnet")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn replica_url(mut self, url: impl Into<String>) -> Self {
        self.pg.replicas.urls.push(SecretString::from(url.into()));
        self
    }

    /// Adds each of `urls` as a [`replica_url`](Self::replica_url); for
    /// instance the comma-separated `DATABASE_REPLICA_URLS` split on
    /// commas (blank items are skipped).
    pub fn replica_urls<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        for url in urls {
            let url = url.into();
            if !url.trim().is_empty() {
                self = self.replica_url(url.trim().to_owned());
            }
        }
        self
    }

    /// How far behind the primary a replica may be and still take reads.
    /// Default [`DEFAULT_MAX_REPLICA_LAG`](crate::DEFAULT_MAX_REPLICA_LAG)
    /// (2 s). Lag is measured to the resolution of
    /// [`replica_poll_interval`](Self::replica_poll_interval).
    pub fn max_replica_lag(mut self, lag: Duration) -> Self {
        self.pg.replicas.max_lag = lag;
        self
    }

    /// How often the replicas' lag and health are measured (one short
    /// query on the primary and one per replica, in the background).
    /// Default [`DEFAULT_REPLICA_POLL_INTERVAL`](crate::DEFAULT_REPLICA_POLL_INTERVAL)
    /// (500 ms); at least 1 ms.
    pub fn replica_poll_interval(mut self, every: Duration) -> Self {
        self.pg.replicas.poll_interval = every;
        self
    }

    /// A URL that reaches PostgreSQL directly (not through a pooler), for
    /// migrations only. Default: migrations use
    /// [`database_url`](Self::database_url). Through a pooler in
    /// transaction mode migrations are still correct (instances take turns
    /// under a transaction-scoped lock; every bookkeeping statement runs
    /// in a transaction), but the session settings they make on a direct
    /// connection (no `lock_timeout` or `statement_timeout` for index
    /// builds) cannot be made there; a direct URL gives them back. Never
    /// shown in `Debug` output, logs or errors.
    pub fn migration_url(mut self, url: impl Into<String>) -> Self {
        self.pg.migration_url = Some(SecretString::from(url.into()));
        self
    }

    /// After every migration run ([`run_migrations(true)`](Self::run_migrations)
    /// or [`Store::migrate`]), grants the application and read-only roles
    /// of `roles` their privileges on the tables, sequences and functions
    /// the owner owns ([`RoleNames::grant_sql`], on the migrating
    /// connection, before the next instance may migrate), so that a table
    /// a new migration created is theirs before any service uses it. Give
    /// it to the owner's store only. Default: no grants.
    pub fn grant_roles(mut self, roles: RoleNames) -> Self {
        self.pg.grant_roles = Some(roles);
        self
    }

    /// Whether [`connect`](Self::connect) applies pending migrations.
    /// Default off.
    pub fn run_migrations(mut self, on: bool) -> Self {
        self.run_migrations = on;
        self
    }

    /// The largest event payload, user metadata or preferences document, in
    /// bytes of JSON as PostgreSQL's `jsonb` prints it, less the spaces it
    /// puts after `,` and `:` (so numbers count as `numeric` prints them:
    /// `1e400` is 401 bytes). Default 64 KiB.
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }

    /// How stale `api_keys.last_used` may get: a validation writes it only
    /// if it is older than this. Default one minute.
    pub fn last_used_resolution(mut self, t: Duration) -> Self {
        self.last_used_resolution = t;
        self
    }

    /// Where the store's time comes from. Default the system clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Where media bytes go. Default: the folder `./media` (created on
    /// first use) for a PostgreSQL store, memory for
    /// [`in_memory`](Self::in_memory).
    pub fn media_storage(mut self, storage: MediaStorage) -> Self {
        self.media_storage = Some(storage);
        self
    }

    /// The largest media upload, in bytes, enforced while the bytes
    /// stream in. Default 25 MiB.
    pub fn media_max_bytes(mut self, n: u64) -> Self {
        self.media_max_bytes = n;
        self
    }

    /// The content types (as sniffed from the bytes) uploads may have.
    /// Default [`DEFAULT_ALLOWED_TYPES`](crate::DEFAULT_ALLOWED_TYPES).
    pub fn media_allowed_types<S: Into<String>>(
        mut self,
        types: impl IntoIterator<Item = S>,
    ) -> Self {
        self.media_allowed_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// The size of each part of a multipart upload (at least 5 MiB, S3's
    /// minimum); files smaller than one part go up in one request. Memory
    /// per upload is about three parts. Default 8 MiB.
    pub fn media_part_bytes(mut self, n: usize) -> Self {
        self.media_part_bytes = n;
        self
    }

    /// The limiter that API keys' own rate limits
    /// ([`KeyPolicy::rate_limit`](crate::KeyPolicy::rate_limit)) go
    /// through, under the key's id and the limit's name (the limiter's own
    /// policy is not used). Give every process the same Redis limiter
    /// ([`RateLimiter::redis`](crate::RateLimiter::redis)) so that they
    /// share the counts; the default is an in-memory limiter on the
    /// store's clock, which counts for this process only.
    pub fn key_rate_limiter(mut self, limiter: crate::RateLimiter) -> Self {
        self.key_limiter = Some(limiter);
        self
    }

    /// Whether every change to users and API keys writes an audit record
    /// in the same transaction (see [`Store::audit`](crate::Store::audit)).
    /// Default on; turn it off for tests, or for services that keep no
    /// audit trail. Records already written stay readable.
    pub fn audit(mut self, on: bool) -> Self {
        self.audit = on;
        self
    }

    fn media(&self, default: impl FnOnce() -> MediaStorage) -> MediaState {
        MediaState::new(
            self.media_storage.clone().unwrap_or_else(default),
            self.media_max_bytes,
            self.media_allowed_types.clone(),
            self.media_part_bytes,
        )
    }

    /// The Redis cache's URL, if the store has the cache.
    fn cache_url(&self) -> Option<&str> {
        #[cfg(feature = "redis")]
        {
            use secrecy::ExposeSecret;
            self.cache.redis_url.as_ref().map(|u| u.expose_secret())
        }
        #[cfg(not(feature = "redis"))]
        None
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            clock: self.clock.clone(),
            max_payload_bytes: self.max_payload_bytes,
            last_used_resolution: self.last_used_resolution,
            audit: self.audit,
        }
    }

    /// Connects to PostgreSQL: builds the pool, checks that a connection can
    /// be made, and applies migrations if asked to.
    pub async fn connect(self) -> Result<Store> {
        let backend: Arc<dyn Backend> =
            Arc::new(crate::postgres::PgBackend::connect(&self.pg, !self.run_migrations).await?);
        #[cfg(feature = "redis")]
        let (backend, cache) = crate::cache::layer(&self.cache, backend).await?;
        #[cfg(not(feature = "redis"))]
        let cache = None;
        let store = Store::from_backend(backend, self.settings())
            .with_cache(cache)
            .with_key_limiter(self.key_limiter.clone(), self.cache_url())
            .with_media(self.media(MediaStorage::default));
        if self.run_migrations {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// A store kept in this process's memory.
    #[cfg(feature = "memory")]
    pub fn in_memory(self) -> Store {
        let settings = self.settings();
        Store::from_backend(Arc::new(crate::memory::MemoryBackend::new()), settings)
            .with_media(self.media(MediaStorage::in_memory))
            .with_key_limiter(self.key_limiter.clone(), None)
    }
}

#[cfg(feature = "redis")]
/// The Redis cache's knobs (feature `redis`).
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl StoreBuilder {
    /// Puts a Redis cache in front of user and API key reads:
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for
    /// TLS. Services usually pass their `REDIS_URL`. Off (no cache) by
    /// default. The URL, which may hold a password, never appears in
    /// `Debug` output, logs or errors. Handler code does not change.
    ///
    /// **What is cached**: users by id, email and wallet address, and API
    /// key records by key hash, for [`cache_ttl`](Self::cache_ttl).
    /// Lookups that find nothing are not cached. Validation still checks
    /// revocation, expiry and the service against the store's clock on
    /// every call.
    ///
    /// **Never stale after a write**: every write that changes a cached
    /// record (updating or deleting a user, revoking, rotating or
    /// touching a key, a user's keys deleted with them) deletes it from
    /// Redis once the database has committed, so the next read through
    /// any store sharing the Redis and [`cache_prefix`](Self::cache_prefix)
    /// gets the new value: a revoked key is refused on the very next
    /// validation. A reader that read the old value before such a write
    /// cannot put it back afterwards: fills are leased, and an
    /// invalidation revokes the lease.
    ///
    /// **Redis down or slow**: every Redis call is bounded by
    /// [`redis_timeout`](Self::redis_timeout); reads then come from the
    /// database and writes still succeed (a `warn` is logged and
    /// [`CacheStats::errors`](crate::CacheStats::errors) counts it). An
    /// invalidation that cannot reach Redis is kept and retried (every
    /// 200 ms, and before any other Redis call); until it is carried
    /// out, this store reads from the database only, so it never serves
    /// what its own write made stale. Another process that can still
    /// reach Redis while this one cannot (a partition rather than an
    /// outage) may read such an entry until this process reaches Redis
    /// again, or the entry's TTL ends; if this process exits first, the
    /// TTL alone bounds it.
    ///
    /// **What Redis holds**: JSON records without any hash, under names
    /// that hash emails, wallet addresses and key hashes again under a
    /// domain tag: nothing in Redis is a key or lets a reader forge one.
    /// (A client that can *write* to this Redis can change what the
    /// store answers, as with any cache: give the cache a Redis, or an
    /// ACL user and prefix, of its own.) A standalone Redis 6.2 or newer
    /// (or a primary with replicas) is supported; Redis Cluster is not.
    ///
    /// [`connect`](Self::connect) does not fail when Redis is
    /// unreachable: the store reads from the database until Redis
    /// answers. [`Store::cache_stats`](crate::Store::cache_stats) shows
    /// how the cache does.
    ///
    /// ```no_run
    /// # async fn demo() -> dreamnet_db::Result<()> {
    /// use std::time::Duration;
    /// use dreamnet_db::Store;
    ///
    /// let store = Store::builder()
    ///     .database_url(std::env::var("DATABASE_URL").unwrap_or_default())
    ///     .redis_url(std::env::var("REDIS_URL").unwrap_or_default())
    ///     .cache_ttl(Duration::from_secs(60))
    ///     .connect()
    ///     .await?;
    /// let user = store.users().get(uuid::Uuid::nil()).await; // from Redis when cached
    /// println!("{:?}", store.cache_stats());
    /// # Ok(()) }
    /// ```
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.cache.redis_url = Some(SecretString::from(url.into()));
        self
    }

    /// How long a cached record lives in Redis before it is read from
    /// the database again. Writes through any store invalidate at once;
    /// the TTL bounds only what a process that could not reach Redis
    /// may leave behind (see the [`cache_stats`](crate::Store::cache_stats)
    /// docs). Default five minutes; at least 1 ms.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.ttl = ttl;
        self
    }

    /// The bound on every Redis call, connecting included. A call that
    /// takes longer is abandoned and the read goes to the database.
    /// Default 100 ms.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.cache.timeout = timeout;
        self
    }

    /// The prefix of every Redis key the cache writes, so that
    /// applications (or test runs) can share one Redis. Stores that
    /// share a database must share a prefix, or they will not see each
    /// other's invalidations. Default `dreamnet:v1:`.
    pub fn cache_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cache.prefix = prefix.into();
        self
    }

    /// The in-memory backend behind the Redis cache, for testing the
    /// cache without PostgreSQL. Each such store has its own data, so
    /// two of them must not share a [`cache_prefix`](Self::cache_prefix).
    /// Without a [`redis_url`](Self::redis_url), the same as
    /// [`in_memory`](Self::in_memory).
    #[cfg(feature = "memory")]
    pub async fn in_memory_cached(self) -> Result<Store> {
        let backend: Arc<dyn Backend> = Arc::new(crate::memory::MemoryBackend::new());
        let (backend, counters) = crate::cache::layer(&self.cache, backend).await?;
        Ok(Store::from_backend(backend, self.settings())
            .with_cache(counters)
            .with_key_limiter(self.key_limiter.clone(), self.cache_url())
            .with_media(self.media(MediaStorage::in_memory)))
    }
}

#[cfg(feature = "local-cache")]
/// The process-local tier's knobs (feature `local-cache`).
#[cfg_attr(docsrs, doc(cfg(feature = "local-cache")))]
impl StoreBuilder {
    /// Puts a process-local tier in front of the Redis cache (which must be
    /// on: [`redis_url`](Self::redis_url)): up to `entries` users and
    /// `entries` API key records kept in this process's memory (moka:
    /// TinyLFU admission, LRU eviction, so the hot set stays), each for at
    /// most [`local_cache_ttl`](Self::local_cache_ttl). Hot key
    /// validations and user reads are then answered without a Redis round
    /// trip. Off by default; without it nothing changes.
    ///
    /// **The guarantee**: a revoked key (or any other invalidated user or
    /// key record) is refused in every process within the invalidation
    /// delay, instead of on the very next validation. Every invalidation
    /// is published by Redis in the same script that deletes the record,
    /// and every tier drops the named records when the message arrives
    /// (p99 3.8 ms between two processes on one loaded machine, see BENCHMARKS.md); the process
    /// that wrote drops them before its write returns. If the tier's
    /// subscription is lost (Redis restarted, the connection cut, a `PING`
    /// unanswered within [`redis_timeout`](Self::redis_timeout)), the tier
    /// empties at once and serves nothing until it has subscribed again:
    /// reads then behave as without it.
    ///
    /// **Rollout**: stores of this version publish every invalidation,
    /// with or without a tier. A process of an older version writing to
    /// the same database and Redis does not; turn tiers on only once every
    /// writer runs this version.
    ///
    /// **What it never answers**: only records are held (the user; the
    /// key's identity, owner, service, status, expiry). Whatever must be
    /// decided atomically across processes, such as credits or per-key rate
    /// limits, is never read from the tier: those rules run in Redis or
    /// PostgreSQL on every validation.
    ///
    /// ```no_run
    /// # async fn demo() -> dreamnet_db::Result<()> {
    /// use std::time::Duration;
    /// use dreamnet_db::Store;
    ///
    /// let store = Store::builder()
    ///     .database_url(std::env::var("DATABASE_URL").unwrap_or_default())
    ///     .redis_url(std::env::var("REDIS_URL").unwrap_or_default())
    ///     .local_cache(10_000)
    ///     .local_cache_ttl(Duration::from_secs(30))
    ///     .connect()
    ///     .await?;
    /// let stats = store.cache_stats().unwrap_or_default();
    /// println!("local tier serving: {}, hits {}", stats.local_serving, stats.local_hits);
    /// # Ok(()) }
    /// ```
    pub fn local_cache(mut self, entries: u64) -> Self {
        self.cache.local_entries = Some(entries);
        self
    }

    /// How long a record may stay in the local tier: the backstop should
    /// an invalidation ever be missed without the channel noticing.
    /// Default one minute; at least 1 ms. Has no effect without
    /// [`local_cache`](Self::local_cache).
    pub fn local_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache.local_ttl = ttl;
        self
    }
}

//! The [`Store`]: one handle, cloned into every handler, over whichever
//! backend it was built with.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tracing::Instrument;
use uuid::Uuid;

use crate::backend::{Backend, NewKeyRow};
use crate::clock::{Clock, SharedClock, SystemClock, now_micros};
use crate::error::{Entity, Error, Field, KeyRejection, Result};
use crate::model::json::check_document;
use crate::model::{
    ApiKey, ApiKeySecret, BucketCount, Cursor, Email, Event, EventFilter, EventType, IssuedKey,
    NewEvent, NewUser, Page, TimeBucket, TimeRange, User, UserUpdate, WalletAddress, check_limit,
    check_service, page_from,
};

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
    /// Checkouts so far that gave up waiting ([`Error::PoolTimeout`]).
    pub timeouts: u64,
}

/// DreamNet's data store: users, API keys and events.
///
/// Build it once, then clone it freely (clones share one pool). Handler code
/// is the same whichever backend it was built with.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # async fn demo() -> dreamnet_db::Result<()> {
/// use dreamnet_db::{NewUser, Store};
///
/// let store = Store::in_memory(); // or Store::connect(&database_url).await?
/// let user = store.users().create(NewUser::with_email("ada@example.com".parse()?)).await?;
/// let issued = store.api_keys().issue(user.id, "billing", None).await?;
/// let key = store.api_keys().validate(issued.secret.expose_secret()).await?;
/// assert_eq!(key.user_id, user.id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    settings: Arc<Settings>,
    cache: Option<Arc<crate::cache::Counters>>,
}

// A store is shared across tasks and threads: keep it so.
const _: () = {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    let _ = shareable::<Store>;
};

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A builder with the platform's defaults.
    pub fn builder() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// Connects to PostgreSQL at `database_url` with the default settings.
    /// See [`StoreBuilder`] for the knobs and [`StoreBuilder::database_url`]
    /// for the URL's form.
    pub async fn connect(database_url: &str) -> Result<Store> {
        Store::builder().database_url(database_url).connect().await
    }

    /// A store kept in this process's memory, with the default settings.
    #[cfg(feature = "memory")]
    pub fn in_memory() -> Store {
        Store::builder().in_memory()
    }

    pub(crate) fn from_backend(backend: Arc<dyn Backend>, settings: Settings) -> Store {
        Store {
            backend,
            settings: Arc::new(settings),
            cache: None,
        }
    }

    /// The store with the counters of the cache its backend is wrapped in.
    pub(crate) fn with_cache(mut self, cache: Option<Arc<crate::cache::Counters>>) -> Store {
        self.cache = cache;
        self
    }

    /// Users.
    pub fn users(&self) -> Users<'_> {
        Users { store: self }
    }

    /// Hashed API keys.
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys { store: self }
    }

    /// Events.
    pub fn events(&self) -> Events<'_> {
        Events { store: self }
    }

    /// Applies the crate's pending schema migrations and returns the versions
    /// it applied (none for the in-memory backend), then checks the schema
    /// as [`verify_schema`](Store::verify_schema) does: [`Error::Schema`]
    /// names what the database lacks.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        traced(
            "migrate",
            "__diesel_schema_migrations",
            self.backend.migrate(),
        )
        .await
    }

    /// `Ok` when the backend can serve requests: for PostgreSQL, a
    /// connection was checked out and answered a query. For readiness
    /// probes.
    pub async fn health(&self) -> Result<()> {
        traced("health", "-", self.backend.health()).await
    }

    /// The connection pool's state; `None` for the in-memory backend.
    pub fn pool_state(&self) -> Option<PoolState> {
        self.backend.pool_state()
    }

    /// How the Redis cache has done since the store was built: hits,
    /// misses, errors, pending invalidations. `None` without a cache (see
    /// `StoreBuilder::redis_url`, feature `redis`).
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.cache.as_ref().map(|c| c.snapshot())
    }

    fn now(&self) -> DateTime<Utc> {
        self.settings.now()
    }

    /// The PostgreSQL backend underneath, if the store has one.
    #[allow(dead_code)]
    pub(crate) fn postgres(&self) -> Option<&crate::postgres::PgBackend> {
        self.backend.postgres()
    }

    /// The clock every part of this store reads.
    pub(crate) fn clock(&self) -> crate::clock::SharedClock {
        self.settings.clock.clone()
    }
}

/// Runs `fut` in a `dreamnet_db` span recording the operation, the table,
/// how long it took and how it ended. Never records arguments, so no secret
/// reaches a log.
pub(crate) async fn traced<T>(
    op: &'static str,
    table: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::debug_span!(
        "dreamnet_db",
        op,
        table,
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty
    );
    let start = Instant::now();
    let result = fut.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => error_kind(e),
    };
    span.record("outcome", outcome);
    span.record("duration_us", start.elapsed().as_micros() as u64);
    result
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "not_found",
        Error::Conflict { .. } => "conflict",
        Error::InvalidInput { .. } => "invalid_input",
        Error::Unauthorized(_) => "unauthorized",
        Error::PoolTimeout { .. } => "pool_timeout",
        Error::Unavailable { .. } => "unavailable",
        Error::Config(_) => "config",
        Error::Schema(_) => "schema",
        Error::Database { .. } => "database_error",
    }
}

fn not_found(entity: Entity, id: Uuid) -> Error {
    Error::NotFound { entity, id }
}

/// A fresh time-ordered id (UUIDv7) stamped with `at`. Ids made within
/// one millisecond still increase (a shared counter orders them), so the
/// events of one batch list in the order they were given.
pub(crate) fn new_id(at: DateTime<Utc>) -> Uuid {
    static CONTEXT: std::sync::Mutex<uuid::ContextV7> =
        std::sync::Mutex::new(uuid::ContextV7::new());
    let context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    let ts = uuid::Timestamp::from_unix(
        &*context,
        at.timestamp().max(0) as u64,
        at.timestamp_subsec_nanos(),
    );
    Uuid::new_v7(ts)
}

/// Users: create, read, update, delete and list. Get one from
/// [`Store::users`].
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    store: &'a Store,
}

impl Users<'_> {
    /// Creates a user. `Conflict` names the field if the email (compared
    /// case-insensitively) or wallet address is taken; `InvalidInput` if the
    /// user has neither, or a document is not a JSON object or too large.
    pub async fn create(&self, new: NewUser) -> Result<User> {
        let s = self.store;
        traced("create", "users", async {
            let now = s.now();
            let user = new.into_user(new_id(now), now, s.settings.max_payload_bytes)?;
            s.backend.create_user(user).await
        })
        .await
    }

    /// Creates a user and issues their first API key for `service`, in one
    /// transaction: if either fails, neither exists.
    pub async fn create_with_key(
        &self,
        new: NewUser,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(User, IssuedKey)> {
        let s = self.store;
        traced("create_with_key", "users", async {
            let now = s.now();
            let user = new.into_user(new_id(now), now, s.settings.max_payload_bytes)?;
            let (row, secret) = s.api_keys().new_row(user.id, service, expires_at, now)?;
            let (user, key) = s.backend.create_user_with_key(user, row).await?;
            Ok((user, IssuedKey { key, secret }))
        })
        .await
    }

    /// The user with this id; `NotFound` if there is none.
    pub async fn get(&self, id: Uuid) -> Result<User> {
        traced("get", "users", async {
            self.store
                .backend
                .get_user(id)
                .await?
                .ok_or(not_found(Entity::User, id))
        })
        .await
    }

    /// The user with this email address (matched case-insensitively).
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<User>> {
        traced(
            "find_by_email",
            "users",
            self.store.backend.find_user_by_email(email),
        )
        .await
    }

    /// The user with this wallet address.
    pub async fn find_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>> {
        traced(
            "find_by_wallet",
            "users",
            self.store.backend.find_user_by_wallet(wallet),
        )
        .await
    }

    /// Applies `update` and returns the user as it now is. `updated_at`
    /// always moves forward. `NotFound`, `Conflict` and `InvalidInput` as
    /// for [`create`](Self::create); nothing is written when it fails.
    pub async fn update(&self, id: Uuid, update: UserUpdate) -> Result<User> {
        let s = self.store;
        traced("update", "users", async {
            update.check(s.settings.max_payload_bytes)?;
            s.backend.update_user(id, &update, &s.settings).await
        })
        .await
    }

    /// Deletes the user. Their API keys are deleted with them (so they stop
    /// validating at once) and their events are kept, detached
    /// (`user_id` becomes null), as an anonymous audit trail. Rows pointing
    /// at the user never make this fail. `NotFound` if there is no such
    /// user.
    pub async fn delete(&self, id: Uuid) -> Result<()> {
        traced("delete", "users", self.store.backend.delete_user(id)).await
    }

    /// A page of at most `limit` (1 to 1000) users, oldest first, after
    /// `after` (the previous page's [`Page::next`]).
    pub async fn list(&self, limit: usize, after: Option<Cursor>) -> Result<Page<User>> {
        traced("list", "users", async {
            check_limit(limit)?;
            let users = self.store.backend.list_users(after, limit + 1).await?;
            Ok(page_from(users, limit, |u| Cursor::new(u.created_at, u.id)))
        })
        .await
    }
}

/// Hashed API keys: issue, validate, revoke, list and rotate. Get one from
/// [`Store::api_keys`].
///
/// Keys are `dnk_` and 64 hex digits (256 bits from the operating system's
/// random source). Only their SHA-256, as lower-case hex, is stored, in
/// `api_keys.hashed_key`, so keys issued by other services the same way
/// (any string, no prefix) validate too.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys<'a> {
    store: &'a Store,
}

impl ApiKeys<'_> {
    fn new_row(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(NewKeyRow, ApiKeySecret)> {
        check_service(service)?;
        // Stored to the microsecond, like every timestamp: compare it so.
        let expires_at = expires_at.map(|t| chrono::SubsecRound::trunc_subsecs(t, 6));
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Error::invalid(Field::ExpiresAt, "must be in the future"));
        }
        let secret = ApiKeySecret::generate()?;
        let key = ApiKey {
            id: new_id(now),
            user_id,
            service: service.to_owned(),
            prefix: secret.display_prefix(),
            created_at: now,
            last_used: None,
            expires_at,
            revoked_at: None,
        };
        let hash = secret.hash();
        Ok((NewKeyRow { key, hash }, secret))
    }

    /// Issues a key for `user_id` and `service`, valid until `expires_at`
    /// (or until revoked). The plain text is in the returned
    /// [`IssuedKey::secret`], this once. `NotFound` if the user does not
    /// exist.
    pub async fn issue(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey> {
        let s = self.store;
        traced("issue", "api_keys", async {
            let (row, secret) = self.new_row(user_id, service, expires_at, s.now())?;
            let key = s.backend.insert_key(row).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }

    /// Validates a presented key for any service. See
    /// [`validate_for`](Self::validate_for).
    pub async fn validate(&self, presented: &str) -> Result<ApiKey> {
        traced("validate", "api_keys", self.check(presented, None)).await
    }

    /// Validates a presented key, which must have been issued for
    /// `service`. Returns the key's record, or `Unauthorized` with why:
    /// malformed, unknown, revoked, expired, or for another service.
    ///
    /// `last_used` is written at most once per `last_used_resolution` (a
    /// minute by default) per key, not on every call.
    pub async fn validate_for(&self, presented: &str, service: &str) -> Result<ApiKey> {
        traced("validate", "api_keys", self.check(presented, Some(service))).await
    }

    async fn check(&self, presented: &str, service: Option<&str>) -> Result<ApiKey> {
        let s = self.store;
        let secret = ApiKeySecret::parse(presented)?;
        let mut key = s
            .backend
            .find_key_by_hash(&secret.hash())
            .await?
            .ok_or(Error::Unauthorized(KeyRejection::Unknown))?;
        let now = s.now();
        if let Some(why) = key.rejection(now, service) {
            return Err(Error::Unauthorized(why));
        }
        let resolution =
            chrono::Duration::from_std(s.settings.last_used_resolution).unwrap_or_default();
        let stale_before = now - resolution;
        if key.last_used.is_none_or(|t| t < stale_before) {
            s.backend.touch_key(key.id, now, stale_before).await?;
            key.last_used = Some(now);
        }
        Ok(key)
    }

    /// The key with this id (revoked or not); `NotFound` if there is none.
    pub async fn get(&self, id: Uuid) -> Result<ApiKey> {
        traced("get", "api_keys", async {
            self.store
                .backend
                .get_key(id)
                .await?
                .ok_or(not_found(Entity::ApiKey, id))
        })
        .await
    }

    /// Revokes the key: it is refused from the next validation on, here and
    /// in services that look keys up by hash themselves. Revoking a revoked
    /// key changes nothing. `NotFound` if there is no such key.
    pub async fn revoke(&self, id: Uuid) -> Result<ApiKey> {
        let s = self.store;
        traced("revoke", "api_keys", s.backend.revoke_key(id, s.now())).await
    }

    /// A user's keys, revoked ones included, oldest first. Hashes are never
    /// returned.
    pub async fn list_for_user(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        traced(
            "list_for_user",
            "api_keys",
            self.store.backend.list_keys(user_id),
        )
        .await
    }

    /// Issues a replacement for key `id` (same user and service, expiring
    /// at `expires_at`) and revokes the old one, in one transaction.
    /// `NotFound` if there is no such key; `InvalidInput` (field `id`) if it
    /// is already revoked.
    pub async fn rotate(&self, id: Uuid, expires_at: Option<DateTime<Utc>>) -> Result<IssuedKey> {
        let s = self.store;
        traced("rotate", "api_keys", async {
            let old = s
                .backend
                .get_key(id)
                .await?
                .ok_or(not_found(Entity::ApiKey, id))?;
            let now = s.now();
            let (row, secret) = self.new_row(old.user_id, &old.service, expires_at, now)?;
            let key = s.backend.rotate_key(id, row, now).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }
}

/// Events: record, list and count. Get one from [`Store::events`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    store: &'a Store,
}

impl Events<'_> {
    fn event_row(&self, new: NewEvent, now: DateTime<Utc>) -> Result<Event> {
        check_document(
            Field::Payload,
            &new.payload,
            self.store.settings.max_payload_bytes,
        )?;
        Ok(Event {
            id: new_id(now),
            user_id: new.user_id,
            event_type: new.event_type,
            payload: new.payload,
            created_at: now,
        })
    }

    /// Records one event. `InvalidInput` if the payload is over the limit
    /// (64 KiB by default) or holds `\u0000`; `NotFound` if the user does
    /// not exist.
    pub async fn record(&self, new: NewEvent) -> Result<Event> {
        traced("record", "events", async {
            let event = self.event_row(new, self.store.now())?;
            self.store
                .backend
                .insert_events(std::slice::from_ref(&event))
                .await?;
            Ok(event)
        })
        .await
    }

    /// Records many events in one round trip and one transaction: all of
    /// them or, if any is refused, none. Returns their ids in order.
    pub async fn record_many(&self, batch: Vec<NewEvent>) -> Result<Vec<Uuid>> {
        traced("record_many", "events", async {
            let now = self.store.now();
            let rows = batch
                .into_iter()
                .map(|e| self.event_row(e, now))
                .collect::<Result<Vec<_>>>()?;
            if !rows.is_empty() {
                self.store.backend.insert_events(&rows).await?;
            }
            Ok(rows.into_iter().map(|e| e.id).collect())
        })
        .await
    }

    /// A page of at most `limit` (1 to 1000) events passing `filter`, newest
    /// first, after `after` (the previous page's [`Page::next`]).
    pub async fn list(
        &self,
        filter: &EventFilter,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Page<Event>> {
        traced("list", "events", async {
            check_limit(limit)?;
            filter.range.check()?;
            if let Some(v) = &filter.payload_contains {
                check_document(Field::Payload, v, self.store.settings.max_payload_bytes)?;
            }
            let events = self
                .store
                .backend
                .list_events(filter, after, limit + 1)
                .await?;
            Ok(page_from(events, limit, |e| {
                Cursor::new(e.created_at, e.id)
            }))
        })
        .await
    }

    /// How many events of `event_type` fall in `range`.
    pub async fn count(&self, event_type: &EventType, range: TimeRange) -> Result<u64> {
        traced("count", "events", async {
            range.check()?;
            self.store.backend.count_events(event_type, range).await
        })
        .await
    }

    /// Counts of events per type per UTC hour or day in `range` (only of
    /// `event_type`, if given), ordered by bucket then type. Buckets with no
    /// events are left out.
    pub async fn count_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>> {
        traced("count_by_bucket", "events", async {
            range.check()?;
            self.store
                .backend
                .count_events_by_bucket(bucket, range, event_type)
                .await
        })
        .await
    }
}

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
    pub(crate) database_url: Option<SecretString>,
    pub(crate) max_connections: u32,
    pub(crate) min_idle: Option<u32>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) connection_timeout: Duration,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) statement_cache: bool,
    pub(crate) run_migrations: bool,
    pub(crate) max_payload_bytes: usize,
    pub(crate) last_used_resolution: Duration,
    pub(crate) clock: SharedClock,
    #[cfg(feature = "redis")]
    pub(crate) cache: crate::cache::CacheSettings,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            database_url: None,
            max_connections: 100,
            min_idle: None,
            idle_timeout: Some(Duration::from_secs(30)),
            connection_timeout: Duration::from_secs(2),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            statement_cache: true,
            run_migrations: false,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            last_used_resolution: DEFAULT_LAST_USED_RESOLUTION,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "redis")]
            cache: Default::default(),
        }
    }
}

impl fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StoreBuilder");
        d.field(
            "database_url",
            &self.database_url.as_ref().map(|_| "[REDACTED]"),
        )
        .field("max_connections", &self.max_connections)
        .field("min_idle", &self.min_idle)
        .field("idle_timeout", &self.idle_timeout)
        .field("connection_timeout", &self.connection_timeout)
        .field("max_lifetime", &self.max_lifetime)
        .field("statement_cache", &self.statement_cache)
        .field("run_migrations", &self.run_migrations)
        .field("max_payload_bytes", &self.max_payload_bytes)
        .field("last_used_resolution", &self.last_used_resolution)
        .field("clock", &self.clock);
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
        self.database_url = Some(SecretString::from(url.into()));
        self
    }

    /// The most connections the pool opens. Default 100.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Idle connections the pool keeps open even when unused. Default none.
    pub fn min_idle(mut self, n: Option<u32>) -> Self {
        self.min_idle = n;
        self
    }

    /// How long a connection may sit idle before it is closed. Default 30 s.
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.idle_timeout = t;
        self
    }

    /// How long a caller waits for a connection (opening one included)
    /// before getting [`Error::PoolTimeout`]. Default 2 s.
    pub fn connection_timeout(mut self, t: Duration) -> Self {
        self.connection_timeout = t;
        self
    }

    /// How long a connection lives before it is replaced. Default 30 min.
    pub fn max_lifetime(mut self, t: Option<Duration>) -> Self {
        self.max_lifetime = t;
        self
    }

    /// Whether each connection caches its prepared statements. Default on.
    /// Turn it off behind a PgBouncer in transaction mode that does not
    /// support prepared statements (before 1.21, or with
    /// `max_prepared_statements = 0`).
    pub fn statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// Whether [`connect`](Self::connect) applies pending migrations.
    /// Default off.
    pub fn run_migrations(mut self, on: bool) -> Self {
        self.run_migrations = on;
        self
    }

    /// The largest event payload, user metadata or preferences document, in
    /// bytes of serialized JSON. Default 64 KiB.
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

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            clock: self.clock.clone(),
            max_payload_bytes: self.max_payload_bytes,
            last_used_resolution: self.last_used_resolution,
        }
    }

    /// Connects to PostgreSQL: builds the pool, checks that a connection can
    /// be made, and applies migrations if asked to.
    pub async fn connect(self) -> Result<Store> {
        let backend: Arc<dyn Backend> = Arc::new(crate::postgres::PgBackend::connect(&self).await?);
        #[cfg(feature = "redis")]
        let (backend, cache) = crate::cache::layer(&self.cache, backend).await?;
        #[cfg(not(feature = "redis"))]
        let cache = None;
        let store = Store::from_backend(backend, self.settings()).with_cache(cache);
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
    }
}

//! The [`Store`]: one handle, cloned into every handler, over whichever
//! backend it was built with, and its repositories' facades, one file each:
//! [`users`](Users), [`api_keys`](ApiKeys), [`events`](Events). A facade
//! validates input, fills in ids and timestamps, and traces the call; the
//! backend underneath (`crate::backend::Backend`) stores and fetches.

mod analytics;
mod api_keys;
mod audit;
mod builder;
mod events;
mod key_usage;
mod media;
mod users;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::analytics::Analytics;
pub use self::api_keys::ApiKeys;
pub use self::audit::{Audit, AuditPurge, DEFAULT_AUDIT_PURGE_BATCH, MAX_AUDIT_PURGE_BATCH};
pub use self::builder::StoreBuilder;
pub use self::events::{DEFAULT_PURGE_BATCH, Events, MAX_PURGE_BATCH, Purge, PurgeReport};
pub use self::key_usage::{MAX_BUFFERED_USAGE, USAGE_FLUSH_AT, USAGE_FLUSH_EVERY};
pub(crate) use self::media::MediaState;
pub use self::media::{
    DEFAULT_MEDIA_PART_BYTES, MAX_SIGNED_URL_TTL, MediaDownload, MediaFiles, SweepReport,
};
pub use self::users::Users;
use crate::backend::{Backend, PoolState, Settings};
use crate::error::{Entity, Error, Result};
use crate::model::RoleNames;
use crate::telemetry::{site, traced};

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
    media: Arc<MediaState>,
    keys: Arc<key_usage::KeyRuntime>,
    /// Who this handle's changes are recorded as made by.
    actor: crate::model::Actor,
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
        let settings = Arc::new(settings);
        Store {
            keys: Arc::new(key_usage::KeyRuntime::new(
                backend.clone(),
                settings.clone(),
            )),
            backend,
            settings,
            cache: None,
            actor: crate::model::Actor::Unknown,
            media: Arc::new(MediaState::defaults(
                crate::backend::MediaStorage::in_memory(),
            )),
        }
    }

    /// The store with these media settings.
    pub(crate) fn with_media(mut self, media: MediaState) -> Store {
        self.media = Arc::new(media);
        self
    }

    /// The store with this limiter for API keys' own rate limits, and the
    /// Redis cache's URL (if it has the cache): a Redis limiter on the same
    /// URL lets the cache apply the limits in its verification script.
    pub(crate) fn with_key_limiter(
        mut self,
        limiter: Option<crate::RateLimiter>,
        cache_url: Option<&str>,
    ) -> Store {
        if let Some(limiter) = limiter {
            let limits_in_script = cache_url
                .and_then(|url| limiter.redis_prefix_on(url))
                .map(str::to_owned);
            self.keys = Arc::new(key_usage::KeyRuntime {
                usage: self.keys.usage.clone(),
                limiter: Some(limiter),
                limits_in_script,
            });
        }
        self
    }

    /// The store with the counters of the cache its backend is wrapped in.
    pub(crate) fn with_cache(mut self, cache: Option<Arc<crate::cache::Counters>>) -> Store {
        self.cache = cache;
        self
    }

    /// A handle on the same store whose changes are recorded in the audit
    /// log as made by `actor` (a clone: cheap, sharing the pool). Changes
    /// made through a handle that never said are recorded as made by
    /// [`Actor::Unknown`](crate::Actor::Unknown), never refused.
    ///
    /// ```
    /// # #[cfg(feature = "memory")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dreamnet_db::Result<()> {
    /// use dreamnet_db::{Actor, AuditAction, AuditQuery, NewUser, Store};
    ///
    /// let store = Store::in_memory();
    /// let billing = store.acting_as(Actor::service("billing")?);
    /// let user = billing.users().create(NewUser::with_email("ada@example.com".parse()?)).await?;
    /// let page = store.audit().list(&AuditQuery::new().action(AuditAction::UserCreated), 10, None).await?;
    /// assert_eq!(page.items[0].actor, Actor::service("billing")?);
    /// assert_eq!(page.items[0].entity_id, Some(user.id));
    /// # Ok(()) }
    /// # #[cfg(not(feature = "memory"))]
    /// # fn main() {}
    /// ```
    pub fn acting_as(&self, actor: crate::model::Actor) -> Store {
        let mut store = self.clone();
        store.actor = actor;
        store
    }

    /// Who this handle's changes are recorded as made by.
    pub fn actor(&self) -> &crate::model::Actor {
        &self.actor
    }

    /// The audit log: list, verify, purge, erase personal values.
    pub fn audit(&self) -> Audit<'_> {
        Audit { store: self }
    }

    /// Runs `f` (a backend call that changes something) with this handle's
    /// audit context: its actor and the store's time, or none if auditing
    /// is off.
    pub(crate) async fn audited<F: Future>(&self, f: F) -> F::Output {
        let ctx = self
            .settings
            .audit
            .then(|| crate::backend::audit::AuditContext {
                actor: self.actor.clone(),
                at: self.now(),
            });
        crate::backend::audit::scope(ctx, f).await
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

    /// Analytics (active users, funnels, retention, breakdowns, top types)
    /// and full-text search over events and users.
    pub fn analytics(&self) -> Analytics<'_> {
        Analytics { store: self }
    }

    /// Media files: rows in this store's backend, bytes in its object
    /// store (`StoreBuilder::media_storage`).
    pub fn media(&self) -> MediaFiles<'_> {
        MediaFiles { store: self }
    }

    /// Applies the crate's pending schema migrations and returns the versions
    /// it applied (none for the in-memory backend), then checks the schema
    /// as [`verify_schema`](Store::verify_schema) does: [`Error::Schema`]
    /// names what the database lacks.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        traced(
            site!("migrate", "__diesel_schema_migrations"),
            self.backend.migrate(),
        )
        .await
    }

    /// Grants the application and read-only roles of `roles` their
    /// privileges on every table, sequence and function the owner owns in
    /// the store's schema, over one connection of the pool, now: runs
    /// [`RoleNames::grant_sql`]. The store must be connected as the owner
    /// (or a superuser); any other role is refused with
    /// [`Error::PermissionDenied`]. [`StoreBuilder::grant_roles`] does the
    /// same at the end of every [`migrate`](Store::migrate). Does nothing
    /// for the in-memory backend.
    ///
    /// [`StoreBuilder::grant_roles`]: crate::StoreBuilder::grant_roles
    pub async fn grant_roles(&self, roles: &RoleNames) -> Result<()> {
        traced(site!("grant_roles", "-"), self.backend.grant_roles(roles)).await
    }

    /// Checks that the database has the schema the crate's migrations
    /// promise: every migration applied, and the columns (types, NOT NULL,
    /// defaults), constraints and indexes of the crate's tables as they
    /// leave them. `Err(Error::Schema)` names each difference: a dropped
    /// column, index or constraint, a column that lost its NOT NULL, an
    /// index a failed concurrent build left invalid. Columns, indexes and
    /// constraints other services added are not differences. Always `Ok`
    /// for the in-memory backend.
    ///
    /// [`migrate`](Store::migrate) runs the same check after applying
    /// migrations, and `connect` without `run_migrations` logs what it
    /// finds as a `tracing` error.
    pub async fn verify_schema(&self) -> Result<()> {
        traced(site!("verify_schema", "-"), self.backend.verify_schema()).await
    }

    /// `Ok` when the backend can serve requests: for PostgreSQL, a
    /// connection was checked out and answered a query. For readiness
    /// probes.
    pub async fn health(&self) -> Result<()> {
        traced(site!("health", "-"), self.backend.health()).await
    }

    /// The connection pool's state; `None` for the in-memory backend.
    pub fn pool_state(&self) -> Option<PoolState> {
        self.backend.pool_state()
    }

    /// Records the connection pool's state in the pool metrics
    /// (`dreamnet_db_pool_connections`, `dreamnet_db_pool_waits_total`,
    /// `dreamnet_db_pool_timeouts_total`; see [`crate::telemetry`]) with the
    /// metrics recorder installed now. Call it where the service renders its
    /// metrics, before rendering, or on a timer: the pool is not measured on
    /// every call. Does nothing for the in-memory backend or without a
    /// recorder.
    pub fn record_metrics(&self) {
        if let Some(state) = self.pool_state() {
            crate::telemetry::record_pool(&state);
        }
    }

    /// How the Redis cache has done since the store was built: hits,
    /// misses, errors, pending invalidations. `None` without a cache (see
    /// `StoreBuilder::redis_url`, feature `redis`).
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.cache.as_ref().map(|c| c.snapshot())
    }

    /// Writes what the store buffers (API key usage counts and
    /// `last_used` times, see [`ApiKeys::usage`]) to the database now. Call
    /// it when the service shuts down gracefully; a store dropped with
    /// something buffered also tries to write it from a task of its own,
    /// if the runtime is still running.
    pub async fn shutdown(&self) -> Result<()> {
        traced(
            site!("flush_usage", "api_key_usage"),
            self.keys.usage.flush(),
        )
        .await
    }

    fn now(&self) -> DateTime<Utc> {
        self.settings.now()
    }

    /// The sessions kept by the store's own storage, if it keeps any.
    pub(crate) fn session_backend(&self) -> Option<Arc<dyn crate::backend::SessionBackend>> {
        self.backend.clone().sessions()
    }

    /// The clock every part of this store reads.
    pub(crate) fn clock(&self) -> crate::clock::SharedClock {
        self.settings.clock.clone()
    }
}

fn not_found(entity: Entity, id: Uuid) -> Error {
    Error::NotFound { entity, id }
}

pub(crate) use crate::model::new_id;

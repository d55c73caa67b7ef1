//! # dreamnet-db
//!
//! DreamNet's data layer: typed async repositories for users, hashed API
//! keys and events, over a pooled async Diesel connection to PostgreSQL
//! (diesel + diesel-async + bb8), with an in-memory backend (feature
//! `memory`, on by default) that behaves the same. Beside the repositories:
//! [`RateLimiter`] and [`Sessions`], in memory or on Redis (feature
//! `redis`), sessions in PostgreSQL too, and `TowerSessionStore` for
//! axum and tower (feature `tower-sessions`).
//!
//! Build one [`Store`], clone it into every handler, and reach the
//! repositories through [`Store::users`], [`Store::api_keys`] and
//! [`Store::events`]:
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dreamnet_db::Result<()> {
//! use dreamnet_db::{Error, EventFilter, KeyRejection, NewEvent, NewUser, Store};
//! use serde_json::json;
//!
//! let store = match std::env::var("DATABASE_URL") {
//!     Ok(url) => Store::builder().database_url(url).run_migrations(true).connect().await?,
//!     Err(_) => Store::in_memory(),
//! };
//! let user = store.users().create(NewUser::with_email("ada@example.com".parse()?)).await?;
//!
//! let issued = store.api_keys().issue(user.id, "billing", None).await?;
//! let key = store.api_keys().validate_for(issued.secret.expose_secret(), "billing").await?;
//! assert_eq!(key.user_id, user.id);
//!
//! store.api_keys().revoke(key.id).await?;
//! let refused = store.api_keys().validate(issued.secret.expose_secret()).await;
//! assert!(matches!(refused, Err(Error::Unauthorized(KeyRejection::Revoked))));
//!
//! store.events().record(NewEvent::new("user.login".parse()?, json!({"ip": "203.0.113.7"})).user(user.id)).await?;
//! let page = store.events().list(&EventFilter::for_user(user.id), 50, None).await?;
//! assert_eq!(page.items.len(), 1);
//! # store.users().delete(user.id).await?;
//! # Ok(()) }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The crate in layers, each pointing only down:
//
// - `store` (one facade file per repository: `store/users.rs`,
//   `store/api_keys.rs`, `store/events.rs`, `store/audit.rs`;
//   `store/builder.rs`),
//   `session` and `rate_limit`: what callers use.
// - `postgres`, `memory`, `cache` (a decorator over any backend): the
//   backends, one module each, implementing the contract below.
// - `backend`: the contract (`Backend`, `SessionBackend`) with the settings
//   and state types it needs.
// - `model`, `error`, `clock`, `telemetry`: validated types, records,
//   errors, time and tracing, used by every layer above.
mod store;

mod rate_limit;
mod session;

mod cache;
#[cfg(feature = "memory")]
mod memory;
mod postgres;
#[cfg(feature = "redis")]
mod redis_conn;

mod backend;

mod clock;
mod error;
mod model;
pub mod telemetry;

pub use backend::{
    DEFAULT_KEY_PREFIX, DEFAULT_LAST_USED_RESOLUTION, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MEDIA_ROOT, MediaStorage, PoolState, ReplicaState, ReplicaStatus,
};
pub use cache::CacheStats;
#[cfg(feature = "local-cache")]
pub use cache::DEFAULT_LOCAL_CACHE_TTL;
#[cfg(feature = "redis")]
pub use cache::{DEFAULT_CACHE_PREFIX, DEFAULT_CACHE_TTL, DEFAULT_REDIS_TIMEOUT};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Backend, BoxError, Entity, Error, Field, KeyRejection, Result};
pub use model::{
    APPEND_ONLY_TABLES, ApiKey, ApiKeySecret, BucketCount, Cursor, DEFAULT_ALLOWED_TYPES,
    DEFAULT_MAX_MEDIA_BYTES, Email, Event, EventFilter, EventType, IssuedKey, Json, JsonChange,
    KEY_PREFIX, KeyCheck, KeyCredits, KeyOutcome, KeyPolicy, KeyRateLimit, KeyUsage, KeyVerdict,
    MAX_EMAIL_LEN, MAX_FILE_NAME_BYTES, MAX_JSON_DEPTH, MAX_KEY_METADATA_BYTES, MAX_KEY_NAME_LEN,
    MAX_KEY_RATE_LIMITS, MAX_PAGE_SIZE, MAX_PERMISSION_LEN, MAX_PERMISSIONS, MAX_PRESENTED_KEY_LEN,
    MAX_RATE_LIMIT_NAME_LEN, MAX_SERVICE_LEN, Media, NewEvent, NewMedia, NewUser, Page,
    PassportTier, Refill, RefillInterval, RoleNames, TimeBucket, TimeRange, User, UserUpdate,
    WalletAddress, earliest_timestamp,
};
pub use model::{
    AUDIT_SHARDS, Actor, AuditAction, AuditBreak, AuditBreakReason, AuditEntity, AuditQuery,
    AuditRecord, AuditVerification, MAX_ACTOR_LEN,
};
pub use model::{
    ActiveUsers, Breakdown, Cohort, DEFAULT_SEARCH_CANDIDATES, EventSearch, Funnel, FunnelStep,
    MAX_ACTIVITY_BUCKETS, MAX_COHORTS, MAX_FUNNEL_STEPS, MAX_FUNNEL_WINDOW, MAX_PAYLOAD_KEY_LEN,
    MAX_SEARCH_CANDIDATES, MAX_SEARCH_LEN, MAX_SEARCH_WORDS, MAX_TOP, MIN_USER_SEARCH_LEN, Period,
    ROLLUP_GRACE, Retention, SearchCursor, SearchHit, SearchOrder, SearchPage, TypeCount,
    ValueCount,
};
pub use object_store;
pub use postgres::{
    DEFAULT_MAX_REPLICA_LAG, DEFAULT_REPLICA_POLL_INTERVAL, MAX_REPLICAS, MIGRATIONS,
    SchemaMismatch, SchemaProblem,
};
#[cfg(feature = "redis")]
pub use rate_limit::RedisLimiterOptions;
pub use rate_limit::{FailureMode, RateLimitDecision, RateLimitPolicy, RateLimiter};
#[cfg(feature = "redis")]
pub use session::RedisSessionOptions;
#[cfg(feature = "tower-sessions")]
pub use session::TowerSessionStore;
pub use session::{
    CreatedSession, DEFAULT_MAX_SESSION_BYTES, MAX_SESSION_TTL, NewSession, Session, SessionId,
    Sessions,
};
pub use store::{
    Analytics, ApiKeys, Audit, AuditPurge, DEFAULT_AUDIT_PURGE_BATCH, DEFAULT_MEDIA_PART_BYTES,
    DEFAULT_PURGE_BATCH, Events, MAX_AUDIT_PURGE_BATCH, MAX_BUFFERED_USAGE, MAX_PURGE_BATCH,
    MAX_SIGNED_URL_TTL, MediaDownload, MediaFiles, Purge, PurgeReport, Store, StoreBuilder,
    SweepReport, USAGE_FLUSH_AT, USAGE_FLUSH_EVERY, Users,
};

/// The README's examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

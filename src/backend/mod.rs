//! What a storage backend must do. The [`Store`](crate::Store) validates
//! input, fills in ids and timestamps, and traces every call; a backend only
//! stores and fetches, with the semantics documented on each method. The
//! conformance suite in `tests/conformance` holds every backend to them.

mod analytics;
pub(crate) mod audit;
mod media;
mod objects;
mod sessions;
mod settings;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub(crate) use self::analytics::AnalyticsBackend;
pub(crate) use self::audit::AuditBackend;
pub(crate) use self::media::MediaBackend;
pub use self::objects::{DEFAULT_KEY_PREFIX, DEFAULT_MEDIA_ROOT, MediaStorage};
pub(crate) use self::objects::{Objects, object_error};
pub(crate) use self::sessions::SessionBackend;
pub(crate) use self::settings::Settings;
pub use self::settings::{
    DEFAULT_LAST_USED_RESOLUTION, DEFAULT_MAX_PAYLOAD_BYTES, PoolState, ReplicaState, ReplicaStatus,
};
use crate::error::Result;
use crate::model::{
    ApiKey, BucketCount, CreditSpend, Cursor, Email, Event, EventFilter, EventType, Json,
    KeyCredits, KeyOutcome, KeyRateLimit, KeyUsage, TimeBucket, TimeRange, User, UserUpdate,
    WalletAddress,
};

/// A key row to insert: the record and the hash stored beside it.
#[derive(Debug, Clone)]
pub(crate) struct NewKeyRow {
    pub key: ApiKey,
    pub hash: String,
}

/// Verification counts and `last_used` times buffered by a store, written
/// in one statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UsageBatch {
    /// Keys whose `last_used` moves forward to the time given (never
    /// backward).
    pub last_used: Vec<(Uuid, DateTime<Utc>)>,
    /// Counts to add: key, hour (UTC, truncated), outcome, count. At most
    /// one entry per (key, hour, outcome).
    pub counts: Vec<(Uuid, DateTime<Utc>, KeyOutcome, u64)>,
    /// Key balances held in Redis, written back: each lands only for the
    /// budget version it was spent against, and only if it counts more
    /// spends than what is stored. At most one entry per key.
    pub credits: Vec<CreditWrite>,
}

impl UsageBatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.last_used.is_empty() && self.counts.is_empty() && self.credits.is_empty()
    }
}

/// A key's budget as the database holds it, with the counters that keep a
/// balance held in Redis honest: `version` moves with every replacement of
/// the budget, `seq` counts the spends written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditState {
    pub remaining: i64,
    pub refilled_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub seq: i64,
}

/// A balance held in Redis, to write back: the key, the budget version it
/// was seeded from, and the state after `seq` spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreditWrite {
    pub key: Uuid,
    pub version: i64,
    pub seq: i64,
    pub remaining: i64,
    pub refilled_at: Option<DateTime<Utc>>,
}

/// What the store asks of a backend that can verify a key in one step
/// (the Redis cache): the presented key's hash, the check, the store's
/// time, its key rate limiter, and the limiter's prefix when that limiter
/// is a Redis limiter on the cache's own Redis (then the limits are
/// applied in the same step).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneStepCheck<'a> {
    pub hash: &'a str,
    pub check: &'a crate::model::KeyCheck,
    pub now: DateTime<Utc>,
    pub limiter: Option<&'a crate::rate_limit::RateLimiter>,
    pub limits_in_script: Option<&'a str>,
}

/// A verification decided in one step, and the balance to write back if
/// credits were spent (or refilled).
#[derive(Debug, Clone)]
pub(crate) struct OneStepVerdict {
    pub verdict: crate::model::KeyVerdict,
    pub write: Option<CreditWrite>,
}

/// Storage for users, API keys and events.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + std::fmt::Debug + 'static {
    // ---- users ----

    /// Inserts a fully formed user. A taken email (compared case-
    /// insensitively) or wallet address gives `Conflict` naming the field
    /// (email is checked first).
    async fn create_user(&self, user: User) -> Result<User>;

    /// Inserts a user and a first key for them, atomically.
    async fn create_user_with_key(&self, user: User, key: NewKeyRow) -> Result<(User, ApiKey)>;

    /// The user with this id.
    async fn get_user(&self, id: Uuid) -> Result<Option<User>>;

    /// The user with this email, compared case-insensitively.
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>>;

    /// The user with this (canonical) wallet address.
    async fn find_user_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>>;

    /// Applies `update` (via [`UserUpdate::apply`]) to the current row under
    /// a lock, so concurrent updates never lose each other's changes.
    /// `NotFound` if there is no such user; `Conflict` as for create.
    async fn update_user(&self, id: Uuid, update: &UserUpdate, settings: &Settings)
    -> Result<User>;

    /// Deletes the user, their API keys, and detaches (sets `user_id` to
    /// null on) their events, atomically. `NotFound` if there is no such
    /// user.
    async fn delete_user(&self, id: Uuid) -> Result<()>;

    /// Up to `limit` users ordered by `(created_at, id)` ascending, strictly
    /// after `after`.
    async fn list_users(&self, after: Option<Cursor>, limit: usize) -> Result<Vec<User>>;

    // ---- API keys ----

    /// Inserts a key. `NotFound` (entity user) if the user does not exist.
    async fn insert_key(&self, row: NewKeyRow) -> Result<ApiKey>;

    /// The key, revoked or not, whose hash is `hash`.
    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>>;

    /// Marks the key revoked at `now` (a no-op returning the record if it
    /// already is). A revoked key's hash no longer matches what services
    /// outside this crate look up. `NotFound` if there is no such key.
    async fn revoke_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey>;

    /// The user's keys, revoked ones included, ordered by
    /// `(created_at, id)`.
    async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>>;

    /// Revokes `old_id` at `now` and inserts `new`, atomically. `NotFound`
    /// if there is no such key; `InvalidInput` (field id) if it is already
    /// revoked. `new` carries the old key's user and service.
    async fn rotate_key(&self, old_id: Uuid, new: NewKeyRow, now: DateTime<Utc>) -> Result<ApiKey>;

    /// The key with this id, revoked or not.
    async fn get_key(&self, id: Uuid) -> Result<Option<ApiKey>>;

    // ---- API key policies: each change is its own method, returns the
    // key's record after it, and gives `NotFound` (entity api key) if there
    // is no such key. ----

    /// Sets `disabled_at` to `now` (keeping an earlier one).
    async fn disable_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey>;

    /// Clears `disabled_at`.
    async fn enable_key(&self, id: Uuid) -> Result<ApiKey>;

    /// Replaces the key's permissions.
    async fn set_key_permissions(
        &self,
        id: Uuid,
        permissions: &std::collections::BTreeSet<String>,
    ) -> Result<ApiKey>;

    /// Replaces the key's name and metadata.
    async fn set_key_details(
        &self,
        id: Uuid,
        name: Option<&str>,
        metadata: Option<&Json>,
    ) -> Result<ApiKey>;

    /// Replaces the key's budget (`None`: unlimited).
    async fn set_key_credits(&self, id: Uuid, credits: Option<&KeyCredits>) -> Result<ApiKey>;

    /// Replaces the key's named rate limits.
    async fn set_key_rate_limits(&self, id: Uuid, limits: &[KeyRateLimit]) -> Result<ApiKey>;

    /// Spends `cost` credits of the key at `now`, atomically across every
    /// process sharing the storage: refills first if a refill is due, then
    /// spends only if enough are left. Never answered from a cache.
    async fn spend_key_credits(
        &self,
        id: Uuid,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend>;

    /// Writes a batch of usage counts (added to what is stored) and
    /// `last_used` times (moved forward only), and the balances held in
    /// Redis (see [`UsageBatch::credits`]). Entries of keys that no
    /// longer exist are skipped.
    async fn flush_key_usage(&self, batch: &UsageBatch) -> Result<()>;

    /// The key's budget with its version and write-back count; `None` if
    /// the key has no budget (or does not exist).
    async fn key_credit_state(&self, id: Uuid) -> Result<Option<CreditState>>;

    /// Verifies a key in one step where the backend can (the Redis cache:
    /// one script reads the record, checks it, applies the rate limits and
    /// spends credits held in Redis). `None`: not here, or not now (Redis
    /// unreachable); the store then verifies step by step.
    async fn verify_one_step(&self, _req: &OneStepCheck<'_>) -> Result<Option<OneStepVerdict>> {
        Ok(None)
    }

    /// The key's usage counts in `range`, per hour or day and outcome,
    /// ordered by bucket then outcome.
    async fn key_usage(
        &self,
        id: Uuid,
        bucket: TimeBucket,
        range: TimeRange,
    ) -> Result<Vec<KeyUsage>>;

    // ---- events ----

    /// Inserts every event, or none: `NotFound` (entity user, the first
    /// unknown user id in the batch) if any names a user that does not
    /// exist.
    async fn insert_events(&self, events: &[Event]) -> Result<()>;

    /// Up to `limit` events passing `filter`, newest first, ordered by
    /// `(created_at, id)` descending, strictly after `after` in that order.
    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<Event>>;

    /// How many events of `event_type` fall in `range`.
    async fn count_events(&self, event_type: &EventType, range: TimeRange) -> Result<u64>;

    /// Counts per (bucket start, type) of events in `range` (of one type if
    /// given), ordered by bucket then type. Buckets are UTC.
    async fn count_events_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>>;

    /// Deletes up to `limit` of the oldest events created before `before`
    /// and at or after `from` (of `event_type` only, if given), in one
    /// statement; returns how many went and the newest `created_at` among
    /// them, where the next batch may start.
    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        event_type: Option<&EventType>,
        limit: usize,
    ) -> Result<(u64, Option<DateTime<Utc>>)>;

    // ---- operations ----

    /// Applies pending schema migrations; returns the versions applied.
    async fn migrate(&self) -> Result<Vec<String>>;

    /// Checks that the database has the schema the applied migrations
    /// promise; `Error::Schema` names each difference. `Ok` for backends
    /// without a schema.
    async fn verify_schema(&self) -> Result<()> {
        Ok(())
    }

    /// Grants `roles` their privileges on the database's tables
    /// ([`RoleNames::grant_sql`](crate::RoleNames::grant_sql)). `Ok` for
    /// backends without a database.
    async fn grant_roles(&self, roles: &crate::model::RoleNames) -> Result<()> {
        let _ = roles;
        Ok(())
    }

    /// `Ok` if the backend can serve requests now.
    async fn health(&self) -> Result<()>;

    /// The connection pool's state, for backends that have one.
    fn pool_state(&self) -> Option<PoolState>;

    /// Sessions kept by this backend's own storage, sharing its
    /// connections (the `sessions` table, for PostgreSQL); `None` for
    /// backends that keep none.
    fn sessions(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn SessionBackend>> {
        None
    }

    /// The `media` rows kept by this backend's own storage (the `media`
    /// table, for PostgreSQL).
    fn media(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn MediaBackend>;

    /// Analytics and search over this backend's own `events` and `users`.
    fn analytics(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn AnalyticsBackend>;

    /// The audit log kept in this backend's own storage. Every write method
    /// above that changes a user or a key also writes the change's audit
    /// record(s) (see [`audit::entries`]) in the same transaction, unless
    /// the change is not audited.
    fn audit(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn AuditBackend>;
}

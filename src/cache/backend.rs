//! `CachedBackend`: a storage backend that answers user and API key reads
//! from Redis and passes everything else to the backend it wraps,
//! invalidating what each write changed once the write has committed.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::client::{Invalidation, Lookup, RedisCache};
use super::verify::key_record_json;
use crate::backend::{Backend, NewKeyRow, SessionBackend, UsageBatch};
use crate::backend::{CreditState, OneStepCheck, OneStepVerdict};
use crate::backend::{PoolState, Settings};
use crate::error::Result;
use crate::model::{
    ApiKey, BucketCount, CreditSpend, Cursor, Email, Event, EventFilter, EventType, Json,
    KeyCredits, KeyRateLimit, KeyUsage, TimeBucket, TimeRange, User, UserUpdate, WalletAddress,
};
use crate::telemetry::CacheEvent;

/// The Redis cache in front of another backend. See the module
/// documentation of `cache`.
pub(crate) struct CachedBackend {
    inner: Arc<dyn Backend>,
    cache: Arc<RedisCache>,
}

impl fmt::Debug for CachedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedBackend")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .finish()
    }
}

/// How a user is looked up through an index entry.
#[derive(Clone, Copy)]
enum Identity<'a> {
    Email(&'a Email),
    Wallet(&'a WalletAddress),
}

impl Identity<'_> {
    /// Whether `user` has this identity now (an index entry may be older
    /// than the user's last change of email or wallet).
    fn belongs_to(&self, user: &User) -> bool {
        match self {
            Identity::Email(e) => user.email.as_ref() == Some(*e),
            Identity::Wallet(w) => user.wallet_address.as_ref() == Some(*w),
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}

fn decode<T: DeserializeOwned>(json: &str) -> Option<T> {
    match serde_json::from_str(json) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                target: "dreamnet_db::cache",
                error = %e,
                "a cached record could not be read; reading from the database"
            );
            None
        }
    }
}

impl CachedBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, cache: Arc<RedisCache>) -> Self {
        CachedBackend { inner, cache }
    }

    pub(super) fn cache(&self) -> &RedisCache {
        &self.cache
    }

    pub(super) fn inner(&self) -> &dyn Backend {
        self.inner.as_ref()
    }

    fn hit(&self) {
        self.cache.count(CacheEvent::Hit);
    }

    /// A key record the verification script read from Redis.
    pub(super) fn count_hit(&self) {
        self.hit();
    }

    fn miss(&self) {
        self.cache.count(CacheEvent::Miss);
    }

    fn bypass(&self) {
        self.cache.count(CacheEvent::Bypassed);
    }

    /// Reads user `id` from the inner backend under a fill lease, and
    /// fills the cache with it if no write came in between.
    async fn read_user_through(&self, id: Uuid) -> Result<Option<User>> {
        let lease = self.cache.lease(&self.cache.keys().user(id)).await;
        let user = self.inner.get_user(id).await?;
        if let (Some(lease), Some(user)) = (lease, &user) {
            if let Some(json) = encode(user) {
                self.cache.fill(lease, &json).await;
            }
        }
        Ok(user)
    }

    /// A user by email or wallet: from the local tier if it has them, else
    /// through Redis (filling the tier).
    async fn find_user(&self, identity: Identity<'_>) -> Result<Option<User>> {
        let index = match identity {
            Identity::Email(e) => self.cache.keys().email(e),
            Identity::Wallet(w) => self.cache.keys().wallet(w),
        };
        #[cfg(feature = "local-cache")]
        let ticket = match self.cache.local() {
            Some(tier) => match tier.user_via(&index, |u| identity.belongs_to(u)) {
                Some(user) => return Ok(Some(user)),
                None => tier.ticket(),
            },
            None => None,
        };
        let user = self.find_user_in_redis(identity, index.clone()).await?;
        #[cfg(feature = "local-cache")]
        if let (Some(t), Some(u), Some(tier)) = (ticket, &user, self.cache.local()) {
            tier.fill_user(t, u, Some(&index));
        }
        Ok(user)
    }

    /// A user by email or wallet: index entry, then record, each checked.
    async fn find_user_in_redis(
        &self,
        identity: Identity<'_>,
        index: String,
    ) -> Result<Option<User>> {
        let prefix = self.cache.keys().user_record_prefix();
        let found = self.cache.follow(&index, &prefix).await;
        let indexed = matches!(found, Lookup::Hit(_));
        match found {
            Lookup::Down => {
                self.bypass();
                return self.find_user_in_inner(identity).await;
            }
            Lookup::Hit((id, Some(json))) => {
                if let Some(user) = decode::<User>(&json) {
                    if user.id == id && identity.belongs_to(&user) {
                        self.hit();
                        return Ok(Some(user));
                    }
                }
                self.miss();
            }
            Lookup::Hit((id, None)) => {
                // The index is cached, the record is not: read the record
                // by id, which fills it for the next lookup.
                self.miss();
                if let Some(user) = self.read_user_through(id).await? {
                    if identity.belongs_to(&user) {
                        return Ok(Some(user));
                    }
                }
            }
            Lookup::Miss => self.miss(),
        }
        // Through the index: lease it, read, then point it at the user and
        // cache the user's record, unless a write came in between.
        let lease = self.cache.lease(&index).await;
        let user = self.find_user_in_inner(identity).await?;
        match (&user, lease) {
            (Some(user), Some(lease)) => {
                let record = self.cache.keys().user(user.id);
                if let Some(json) = encode(user) {
                    self.cache
                        .fill_via_index(lease, user.id, &record, &json, None)
                        .await;
                }
            }
            (Some(user), None) => self.cache.set_index(&index, user.id).await,
            // An index entry left from before an email or wallet change.
            (None, _) if indexed => self.cache.drop_index(&index).await,
            (None, _) => {}
        }
        Ok(user)
    }

    /// A user by id through Redis.
    async fn get_user_in_redis(&self, id: Uuid) -> Result<Option<User>> {
        match self.cache.get(&self.cache.keys().user(id)).await {
            Lookup::Hit(json) => {
                if let Some(user) = decode::<User>(&json).filter(|u| u.id == id) {
                    self.hit();
                    return Ok(Some(user));
                }
                self.miss();
            }
            Lookup::Miss => self.miss(),
            Lookup::Down => {
                self.bypass();
                return self.inner.get_user(id).await;
            }
        }
        self.read_user_through(id).await
    }

    /// A key's record by its hash through Redis.
    async fn find_key_in_redis(&self, hash: &str, index: &str) -> Result<Option<ApiKey>> {
        let index = index.to_owned();
        let prefix = self.cache.keys().key_record_prefix();
        match self.cache.follow(&index, &prefix).await {
            Lookup::Down => {
                self.bypass();
                self.inner.find_key_by_hash(hash).await
            }
            Lookup::Hit((id, Some(json))) => {
                if let Some(key) = decode::<ApiKey>(&json).filter(|k| k.id == id) {
                    self.hit();
                    return Ok(Some(key));
                }
                self.miss();
                self.inner.find_key_by_hash(hash).await
            }
            Lookup::Hit((id, None)) => {
                // A key's id never changes for its hash: take the lease on
                // the record, then read it.
                self.miss();
                let lease = self.cache.lease(&self.cache.keys().key(id)).await;
                let key = self.inner.find_key_by_hash(hash).await?;
                match (&key, lease) {
                    (Some(k), Some(lease)) if k.id == id => {
                        if let Some(json) = key_record_json(k) {
                            self.cache.fill_key(lease, &json, k.id, k.user_id).await;
                        }
                    }
                    (Some(k), _) if k.id != id => self.cache.set_index(&index, k.id).await,
                    (Some(_), _) => {}
                    // The key is gone (its user was deleted).
                    (None, _) => self.cache.drop_index(&index).await,
                }
                Ok(key)
            }
            Lookup::Miss => {
                // Lease the index, read, then point it at the key and cache
                // the key's record, unless a write came in between.
                self.miss();
                let lease = self.cache.lease(&index).await;
                let key = self.inner.find_key_by_hash(hash).await?;
                match (&key, lease) {
                    (Some(k), Some(lease)) => {
                        let record = self.cache.keys().key(k.id);
                        if let Some(json) = key_record_json(k) {
                            self.cache
                                .fill_via_index(lease, k.id, &record, &json, Some(k.user_id))
                                .await;
                        }
                    }
                    (Some(k), None) => self.cache.set_index(&index, k.id).await,
                    (None, _) => {}
                }
                Ok(key)
            }
        }
    }

    async fn find_user_in_inner(&self, identity: Identity<'_>) -> Result<Option<User>> {
        match identity {
            Identity::Email(e) => self.inner.find_user_by_email(e).await,
            Identity::Wallet(w) => self.inner.find_user_by_wallet(w).await,
        }
    }

    async fn invalidate_user(&self, id: Uuid) {
        self.cache
            .invalidate(Invalidation::Record(self.cache.keys().user(id)))
            .await;
    }

    async fn invalidate_key(&self, id: Uuid) {
        self.cache
            .invalidate(Invalidation::Record(self.cache.keys().key(id)))
            .await;
    }
}

#[async_trait::async_trait]
impl Backend for CachedBackend {
    // ---- users ----

    /// Misses are never cached, so a new user has nothing to invalidate.
    async fn create_user(&self, user: User) -> Result<User> {
        self.inner.create_user(user).await
    }

    async fn create_user_with_key(&self, user: User, key: NewKeyRow) -> Result<(User, ApiKey)> {
        self.inner.create_user_with_key(user, key).await
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        #[cfg(feature = "local-cache")]
        let ticket = match self.cache.local() {
            Some(tier) => match tier.user(id) {
                Some(user) => return Ok(Some(user)),
                None => tier.ticket(),
            },
            None => None,
        };
        let user = self.get_user_in_redis(id).await?;
        #[cfg(feature = "local-cache")]
        if let (Some(t), Some(u), Some(tier)) = (ticket, &user, self.cache.local()) {
            tier.fill_user(t, u, None);
        }
        Ok(user)
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        self.find_user(Identity::Email(email)).await
    }

    async fn find_user_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>> {
        self.find_user(Identity::Wallet(wallet)).await
    }

    /// Invalidates the user's record whatever the outcome (an error may
    /// come after the commit). Index entries of the old email or wallet
    /// need nothing: they lead to this record, which no longer matches.
    async fn update_user(
        &self,
        id: Uuid,
        update: &UserUpdate,
        settings: &Settings,
    ) -> Result<User> {
        let result = self.inner.update_user(id, update, settings).await;
        self.invalidate_user(id).await;
        result
    }

    async fn delete_user(&self, id: Uuid) -> Result<()> {
        // The keys the deletion takes with it, as far as the database knows
        // now; the Redis side also knows which of them it has cached.
        let keys = match self.inner.list_keys(id).await {
            Ok(keys) => keys.into_iter().map(|k| k.id).collect(),
            Err(_) => Vec::new(),
        };
        let result = self.inner.delete_user(id).await;
        self.cache
            .invalidate(Invalidation::UserDeleted { user: id, keys })
            .await;
        result
    }

    async fn list_users(&self, after: Option<Cursor>, limit: usize) -> Result<Vec<User>> {
        self.inner.list_users(after, limit).await
    }

    // ---- API keys ----

    async fn insert_key(&self, row: NewKeyRow) -> Result<ApiKey> {
        self.inner.insert_key(row).await
    }

    /// The key's record from the local tier if it has it, else through
    /// Redis (filling the tier).
    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let index = self.cache.keys().key_by_hash(hash);
        #[cfg(feature = "local-cache")]
        let ticket = match self.cache.local() {
            Some(tier) => match tier.key_via(&index) {
                Some(key) => return Ok(Some(key)),
                None => tier.ticket(),
            },
            None => None,
        };
        let key = self.find_key_in_redis(hash, &index).await?;
        #[cfg(feature = "local-cache")]
        if let (Some(t), Some(k), Some(tier)) = (ticket, &key, self.cache.local()) {
            tier.fill_key(t, k, &index);
        }
        Ok(key)
    }

    async fn revoke_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        let result = self.inner.revoke_key(id, now).await;
        self.invalidate_key(id).await;
        result
    }

    async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        self.inner.list_keys(user_id).await
    }

    async fn rotate_key(&self, old_id: Uuid, new: NewKeyRow, now: DateTime<Utc>) -> Result<ApiKey> {
        let result = self.inner.rotate_key(old_id, new, now).await;
        self.invalidate_key(old_id).await;
        result
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        self.inner.get_key(id).await
    }

    // Every change of a key's policy goes through the same invalidation as
    // a revocation: the record is dropped (with its lease, leaving a
    // marker) once the write has committed, whatever the outcome.

    async fn disable_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        let result = self.inner.disable_key(id, now).await;
        self.invalidate_key(id).await;
        result
    }

    async fn enable_key(&self, id: Uuid) -> Result<ApiKey> {
        let result = self.inner.enable_key(id).await;
        self.invalidate_key(id).await;
        result
    }

    async fn set_key_permissions(
        &self,
        id: Uuid,
        permissions: &std::collections::BTreeSet<String>,
    ) -> Result<ApiKey> {
        let result = self.inner.set_key_permissions(id, permissions).await;
        self.invalidate_key(id).await;
        result
    }

    async fn set_key_details(
        &self,
        id: Uuid,
        name: Option<&str>,
        metadata: Option<&Json>,
    ) -> Result<ApiKey> {
        let result = self.inner.set_key_details(id, name, metadata).await;
        self.invalidate_key(id).await;
        result
    }

    /// Also drops the balance held in Redis (and revokes its seed's
    /// lease): the next verification seeds the new budget, and write-backs
    /// of the old one are refused by the database (its version moved).
    async fn set_key_credits(&self, id: Uuid, credits: Option<&KeyCredits>) -> Result<ApiKey> {
        let result = self.inner.set_key_credits(id, credits).await;
        self.invalidate_key(id).await;
        self.cache
            .invalidate(Invalidation::Record(self.cache.keys().key_credits(id)))
            .await;
        result
    }

    async fn set_key_rate_limits(&self, id: Uuid, limits: &[KeyRateLimit]) -> Result<ApiKey> {
        let result = self.inner.set_key_rate_limits(id, limits).await;
        self.invalidate_key(id).await;
        result
    }

    /// The inner backend's atomic spend, for verifications made step by
    /// step (Redis unreachable): a cached record's credit count is never
    /// what decides. Spending does not invalidate the record (its count is
    /// documented as the count when it was read).
    async fn spend_key_credits(
        &self,
        id: Uuid,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend> {
        self.inner.spend_key_credits(id, cost, now).await
    }

    /// Usage counts and `last_used` are not part of what decides a
    /// verification: the cached record is left as it is (the store
    /// computes `last_used` for each validation from the record and its
    /// own buffer, so a cached `last_used` older than the database's costs
    /// nothing but an in-memory comparison).
    async fn flush_key_usage(&self, batch: &UsageBatch) -> Result<()> {
        self.inner.flush_key_usage(batch).await
    }

    async fn key_usage(
        &self,
        id: Uuid,
        bucket: TimeBucket,
        range: TimeRange,
    ) -> Result<Vec<KeyUsage>> {
        self.inner.key_usage(id, bucket, range).await
    }

    async fn key_credit_state(&self, id: Uuid) -> Result<Option<CreditState>> {
        self.inner.key_credit_state(id).await
    }

    /// One script: see `cache::verify`.
    async fn verify_one_step(&self, req: &OneStepCheck<'_>) -> Result<Option<OneStepVerdict>> {
        Ok(self
            .verify_in_script(req)
            .await?
            .map(|(verdict, write)| OneStepVerdict { verdict, write }))
    }

    // ---- events ----

    async fn insert_events(&self, events: &[Event]) -> Result<()> {
        self.inner.insert_events(events).await
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        self.inner.list_events(filter, after, limit).await
    }

    async fn count_events(&self, event_type: &EventType, range: TimeRange) -> Result<u64> {
        self.inner.count_events(event_type, range).await
    }

    async fn count_events_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>> {
        self.inner
            .count_events_by_bucket(bucket, range, event_type)
            .await
    }

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        event_type: Option<&EventType>,
        limit: usize,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        self.inner
            .purge_events(before, from, event_type, limit)
            .await
    }

    // ---- operations ----

    async fn migrate(&self) -> Result<Vec<String>> {
        self.inner.migrate().await
    }

    /// The inner backend's health: Redis being down does not make the
    /// store unable to serve.
    async fn verify_schema(&self) -> Result<()> {
        self.inner.verify_schema().await
    }

    async fn grant_roles(&self, roles: &crate::model::RoleNames) -> Result<()> {
        self.inner.grant_roles(roles).await
    }

    async fn health(&self) -> Result<()> {
        self.inner.health().await
    }

    fn pool_state(&self) -> Option<PoolState> {
        self.inner.pool_state()
    }

    fn sessions(self: Arc<Self>) -> Option<Arc<dyn SessionBackend>> {
        self.inner.clone().sessions()
    }

    fn media(self: Arc<Self>) -> Arc<dyn crate::backend::MediaBackend> {
        self.inner.clone().media()
    }

    /// Not cached: aggregates and searches go to the backend underneath.
    fn analytics(self: Arc<Self>) -> Arc<dyn crate::backend::AnalyticsBackend> {
        self.inner.clone().analytics()
    }

    /// Not cached: the audit log is read from the backend underneath.
    fn audit(self: Arc<Self>) -> Arc<dyn crate::backend::AuditBackend> {
        self.inner.clone().audit()
    }
}

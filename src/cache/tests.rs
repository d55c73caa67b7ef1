//! The stale-fill race, driven step by step against the real Redis.
//!
//! The cache wraps an in-memory backend behind a gate that can stop a read
//! right after it has read the old value, so a write can commit and
//! invalidate before the reader fills: the exact interleaving the fill
//! lease exists for. Redis is `DREAMNET_TEST_REDIS_URL` or
//! `redis://127.0.0.1:6379`; without it these tests skip, except under
//! `CI=true`, where they fail.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::CacheSettings;
use super::backend::CachedBackend;
use super::client::{Invalidation, RedisCache};
use crate::backend::{Backend, NewKeyRow};
use crate::backend::{PoolState, Settings};
use crate::error::{Error, KeyRejection, Result};
use crate::memory::MemoryBackend;
use crate::model::{
    ApiKey, BucketCount, Cursor, Email, Event, EventFilter, EventType, NewUser, PassportTier,
    TimeBucket, TimeRange, User, UserUpdate, WalletAddress,
};
use crate::store::{Store, StoreBuilder};

fn redis_url() -> String {
    std::env::var("DREAMNET_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A raw connection to the test Redis, or `None` (skip) outside CI.
async fn raw_redis() -> Option<::redis::aio::MultiplexedConnection> {
    let attempt = async {
        let client = ::redis::Client::open(redis_url())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await?;
        Ok::<_, ::redis::RedisError>(conn)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), attempt).await {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) if !ci() => {
            eprintln!("skipped: Redis unreachable ({e}); start it or set DREAMNET_TEST_REDIS_URL");
            None
        }
        Err(_) if !ci() => {
            eprintln!("skipped: Redis did not answer; start it or set DREAMNET_TEST_REDIS_URL");
            None
        }
        other => panic!("CI=true and Redis is unreachable: {:?}", other.err()),
    }
}

/// One read to stop: `reached` is signalled after the inner read, then the
/// read waits for `release`.
struct Gate {
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The in-memory backend, with a gate on `get_user`, `find_user_by_email`
/// and `find_key_by_hash`.
#[derive(Default)]
struct Gated {
    inner: MemoryBackend,
    gate: Mutex<Option<Gate>>,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gated")
    }
}

impl Gated {
    /// Arms the gate for the next gated read: returns (reached, release).
    fn arm(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.gate.lock().unwrap() = Some(Gate {
            reached: reached_tx,
            release: release_rx,
        });
        (reached_rx, release_tx)
    }

    async fn pass(&self) {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.reached.send(());
            let _ = gate.release.await;
        }
    }
}

#[async_trait::async_trait]
impl Backend for Gated {
    async fn create_user(&self, user: User) -> Result<User> {
        self.inner.create_user(user).await
    }
    async fn create_user_with_key(&self, user: User, key: NewKeyRow) -> Result<(User, ApiKey)> {
        self.inner.create_user_with_key(user, key).await
    }
    async fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        let user = self.inner.get_user(id).await;
        self.pass().await;
        user
    }
    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let user = self.inner.find_user_by_email(email).await;
        self.pass().await;
        user
    }
    async fn find_user_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>> {
        self.inner.find_user_by_wallet(wallet).await
    }
    async fn update_user(&self, id: Uuid, u: &UserUpdate, s: &Settings) -> Result<User> {
        self.inner.update_user(id, u, s).await
    }
    async fn delete_user(&self, id: Uuid) -> Result<()> {
        self.inner.delete_user(id).await
    }
    async fn list_users(&self, after: Option<Cursor>, limit: usize) -> Result<Vec<User>> {
        self.inner.list_users(after, limit).await
    }
    async fn insert_key(&self, row: NewKeyRow) -> Result<ApiKey> {
        self.inner.insert_key(row).await
    }
    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let key = self.inner.find_key_by_hash(hash).await;
        self.pass().await;
        key
    }
    async fn revoke_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        self.inner.revoke_key(id, now).await
    }
    async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        self.inner.list_keys(user_id).await
    }
    async fn rotate_key(&self, old: Uuid, new: NewKeyRow, now: DateTime<Utc>) -> Result<ApiKey> {
        self.inner.rotate_key(old, new, now).await
    }
    async fn get_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        self.inner.get_key(id).await
    }
    async fn disable_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        self.inner.disable_key(id, now).await
    }
    async fn enable_key(&self, id: Uuid) -> Result<ApiKey> {
        self.inner.enable_key(id).await
    }
    async fn set_key_permissions(
        &self,
        id: Uuid,
        permissions: &std::collections::BTreeSet<String>,
    ) -> Result<ApiKey> {
        self.inner.set_key_permissions(id, permissions).await
    }
    async fn set_key_details(
        &self,
        id: Uuid,
        name: Option<&str>,
        metadata: Option<&crate::model::Json>,
    ) -> Result<ApiKey> {
        self.inner.set_key_details(id, name, metadata).await
    }
    async fn set_key_credits(
        &self,
        id: Uuid,
        credits: Option<&crate::model::KeyCredits>,
    ) -> Result<ApiKey> {
        self.inner.set_key_credits(id, credits).await
    }
    async fn set_key_rate_limits(
        &self,
        id: Uuid,
        limits: &[crate::model::KeyRateLimit],
    ) -> Result<ApiKey> {
        self.inner.set_key_rate_limits(id, limits).await
    }
    async fn spend_key_credits(
        &self,
        id: Uuid,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<crate::model::CreditSpend> {
        self.inner.spend_key_credits(id, cost, now).await
    }
    async fn flush_key_usage(&self, batch: &crate::backend::UsageBatch) -> Result<()> {
        self.inner.flush_key_usage(batch).await
    }
    async fn key_credit_state(&self, id: Uuid) -> Result<Option<crate::backend::CreditState>> {
        self.inner.key_credit_state(id).await
    }
    async fn key_usage(
        &self,
        id: Uuid,
        bucket: TimeBucket,
        range: TimeRange,
    ) -> Result<Vec<crate::model::KeyUsage>> {
        self.inner.key_usage(id, bucket, range).await
    }
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
    async fn migrate(&self) -> Result<Vec<String>> {
        self.inner.migrate().await
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
    fn media(self: Arc<Self>) -> Arc<dyn crate::backend::MediaBackend> {
        self.inner.media_rows()
    }

    fn analytics(self: Arc<Self>) -> Arc<dyn crate::backend::AnalyticsBackend> {
        unimplemented!("the cache tests ask no analytics of this backend")
    }

    fn audit(self: Arc<Self>) -> Arc<dyn crate::backend::AuditBackend> {
        self.inner.audit_log()
    }
}

struct Rig {
    store: Store,
    gated: Arc<Gated>,
    cache: Arc<RedisCache>,
    redis: ::redis::aio::MultiplexedConnection,
}

impl Rig {
    async fn new() -> Option<Rig> {
        let redis = raw_redis().await?;
        let settings = CacheSettings {
            prefix: format!("dreamnet-test:{}:", Uuid::new_v4().simple()),
            // The counts checked below assume every Redis call answers: a
            // loaded machine may take more than the default 100 ms.
            timeout: std::time::Duration::from_secs(10),
            ..CacheSettings::default()
        };
        let cache = RedisCache::connect(&SecretString::from(redis_url()), &settings)
            .await
            .expect("cache");
        let gated = Arc::new(Gated::default());
        let backend = CachedBackend::new(gated.clone(), cache.clone());
        let store = Store::from_backend(Arc::new(backend), StoreBuilder::default().settings())
            .with_cache(Some(cache.counters().clone()));
        Some(Rig {
            store,
            gated,
            cache,
            redis,
        })
    }

    async fn redis_get(&mut self, key: &str) -> Option<String> {
        ::redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.redis)
            .await
            .expect("GET")
    }
}

#[tokio::test]
async fn a_fill_that_read_before_an_update_is_refused() {
    let Some(mut rig) = Rig::new().await else {
        return;
    };
    let user = rig
        .store
        .users()
        .create(NewUser::with_email("race@example.com".parse().unwrap()))
        .await
        .unwrap();

    // 1. The reader misses, takes the lease, reads the old user, and stops.
    let (reached, release) = rig.gated.arm();
    let reader = tokio::spawn({
        let store = rig.store.clone();
        async move { store.users().get(user.id).await }
    });
    reached.await.unwrap();

    // 2. The writer commits and invalidates while the reader is stopped.
    let citizen = PassportTier::parse("citizen").unwrap();
    let updated = rig
        .store
        .users()
        .update(user.id, UserUpdate::new().passport_tier(citizen.clone()))
        .await
        .unwrap();
    assert_eq!(updated.passport_tier, citizen);

    // 3. The reader fills with what it read: refused.
    release.send(()).unwrap();
    let read = reader.await.unwrap().unwrap();
    assert_eq!(
        read.passport_tier,
        PassportTier::visitor(),
        "read before the write"
    );
    let stats = rig.store.cache_stats().unwrap();
    assert_eq!(stats.stale_fills_refused, 1, "{stats:?}");
    assert_eq!(stats.fills, 0, "{stats:?}");
    let entry = rig.cache.keys().user(user.id);
    assert_eq!(rig.redis_get(&entry).await, None, "no stale entry survives");

    // Every read from now on sees the update, from the database and then
    // from the cache.
    for _ in 0..3 {
        let got = rig.store.users().get(user.id).await.unwrap();
        assert_eq!(got.passport_tier, citizen);
    }
    let stats = rig.store.cache_stats().unwrap();
    assert_eq!((stats.fills, stats.hits), (1, 2), "{stats:?}");
    assert!(rig.redis_get(&entry).await.unwrap().contains("citizen"));
}

#[tokio::test]
async fn a_fill_that_read_before_a_revoke_is_refused() {
    let Some(mut rig) = Rig::new().await else {
        return;
    };
    let (_, issued) = rig
        .store
        .users()
        .create_with_key(
            NewUser::with_email("race-key@example.com".parse().unwrap()),
            "billing",
            None,
        )
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    // The first validation caches the hash -> id index entry and the record.
    rig.store.api_keys().validate(&secret).await.unwrap();
    // The record leaves Redis (as when its TTL runs out); the index stays.
    let _: i64 = ::redis::cmd("DEL")
        .arg(rig.cache.keys().key(issued.key.id))
        .query_async(&mut rig.redis)
        .await
        .unwrap();

    // The second one misses the record, leases it, reads it, and stops.
    let (reached, release) = rig.gated.arm();
    let reader = tokio::spawn({
        let store = rig.store.clone();
        let secret = secret.clone();
        async move { store.api_keys().validate(&secret).await }
    });
    reached.await.unwrap();
    rig.store.api_keys().revoke(issued.key.id).await.unwrap();
    release.send(()).unwrap();
    reader.await.unwrap().unwrap();

    let stats = rig.store.cache_stats().unwrap();
    assert_eq!(stats.stale_fills_refused, 1, "{stats:?}");
    let entry = rig.cache.keys().key(issued.key.id);
    assert_eq!(rig.redis_get(&entry).await, None);
    for _ in 0..3 {
        let refused = rig.store.api_keys().validate(&secret).await;
        assert!(
            matches!(refused, Err(Error::Unauthorized(KeyRejection::Revoked))),
            "{refused:?}"
        );
    }
}

/// A key record read before its user's deletion cannot be filled after it,
/// even when the deletion did not know the key (say it was issued after the
/// deletion listed the user's keys): the user's tombstone refuses it.
#[tokio::test]
async fn a_key_fill_that_read_before_its_users_deletion_is_refused() {
    let Some(mut rig) = Rig::new().await else {
        return;
    };
    let (user, issued) = rig
        .store
        .users()
        .create_with_key(
            NewUser::with_email("race-delete@example.com".parse().unwrap()),
            "billing",
            None,
        )
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    rig.store.api_keys().validate(&secret).await.unwrap();
    // Forget that the key was cached for its user (as if that set had been
    // evicted), so the deletion below cannot find the key's lease; and the
    // record itself (as when its TTL runs out), so the next validation
    // reads it again.
    let _: i64 = ::redis::cmd("DEL")
        .arg(rig.cache.keys().user_keys(user.id))
        .arg(rig.cache.keys().key(issued.key.id))
        .query_async(&mut rig.redis)
        .await
        .unwrap();

    let (reached, release) = rig.gated.arm();
    let reader = tokio::spawn({
        let store = rig.store.clone();
        let secret = secret.clone();
        async move { store.api_keys().validate(&secret).await }
    });
    reached.await.unwrap();
    // The deletion, as if it had listed no keys: only the tombstone stands
    // between the reader and a stale fill.
    rig.gated.inner.delete_user(user.id).await.unwrap();
    rig.cache
        .invalidate(Invalidation::UserDeleted {
            user: user.id,
            keys: Vec::new(),
        })
        .await;
    release.send(()).unwrap();
    reader.await.unwrap().unwrap();

    let stats = rig.store.cache_stats().unwrap();
    assert_eq!(stats.stale_fills_refused, 1, "{stats:?}");
    let entry = rig.cache.keys().key(issued.key.id);
    assert_eq!(rig.redis_get(&entry).await, None);
    let refused = rig.store.api_keys().validate(&secret).await;
    assert!(
        matches!(refused, Err(Error::Unauthorized(KeyRejection::Unknown))),
        "{refused:?}"
    );
}

/// The first lookup by email misses the index: it leases the index, reads
/// the user, and stops; an update commits and invalidates; the reader may
/// point the index at the user, but not write the old record.
#[tokio::test]
async fn a_fill_through_the_email_index_that_read_before_an_update_is_refused() {
    let Some(mut rig) = Rig::new().await else {
        return;
    };
    let email: Email = "race-index@example.com".parse().unwrap();
    let user = rig
        .store
        .users()
        .create(NewUser::with_email(email.clone()))
        .await
        .unwrap();

    let (reached, release) = rig.gated.arm();
    let reader = tokio::spawn({
        let store = rig.store.clone();
        let email = email.clone();
        async move { store.users().find_by_email(&email).await }
    });
    reached.await.unwrap();
    let citizen = PassportTier::parse("citizen").unwrap();
    rig.store
        .users()
        .update(user.id, UserUpdate::new().passport_tier(citizen.clone()))
        .await
        .unwrap();
    release.send(()).unwrap();
    let read = reader.await.unwrap().unwrap().unwrap();
    assert_eq!(
        read.passport_tier,
        PassportTier::visitor(),
        "read before the write"
    );

    let stats = rig.store.cache_stats().unwrap();
    assert_eq!(
        (stats.stale_fills_refused, stats.fills),
        (1, 0),
        "{stats:?}"
    );
    let record = rig.cache.keys().user(user.id);
    assert_eq!(
        rig.redis_get(&record).await,
        None,
        "no stale record survives"
    );
    let index = rig.cache.keys().email(&email);
    assert_eq!(
        rig.redis_get(&index).await,
        Some(user.id.simple().to_string())
    );
    for _ in 0..3 {
        let got = rig
            .store
            .users()
            .find_by_email(&email)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.passport_tier, citizen);
    }
}

/// The same for the first validation of a key, revoked while it read.
#[tokio::test]
async fn a_fill_through_the_key_index_that_read_before_a_revoke_is_refused() {
    let Some(mut rig) = Rig::new().await else {
        return;
    };
    let (_, issued) = rig
        .store
        .users()
        .create_with_key(
            NewUser::with_email("race-key-index@example.com".parse().unwrap()),
            "billing",
            None,
        )
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();

    let (reached, release) = rig.gated.arm();
    let reader = tokio::spawn({
        let store = rig.store.clone();
        let secret = secret.clone();
        async move { store.api_keys().validate(&secret).await }
    });
    reached.await.unwrap();
    rig.store.api_keys().revoke(issued.key.id).await.unwrap();
    release.send(()).unwrap();
    // Read before the revocation, so accepted (as a validation that ran
    // just before it would have been).
    reader.await.unwrap().unwrap();

    let stats = rig.store.cache_stats().unwrap();
    assert_eq!(
        (stats.stale_fills_refused, stats.fills),
        (1, 0),
        "{stats:?}"
    );
    let record = rig.cache.keys().key(issued.key.id);
    assert_eq!(rig.redis_get(&record).await, None);
    for _ in 0..3 {
        let refused = rig.store.api_keys().validate(&secret).await;
        assert!(
            matches!(refused, Err(Error::Unauthorized(KeyRejection::Revoked))),
            "{refused:?}"
        );
    }
}

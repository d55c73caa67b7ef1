//! The Redis cache against the real PostgreSQL and Redis on this machine.
//!
//! Each test gets its own database (see `common`) and its own Redis key
//! prefix, so tests run in parallel. "Another process" is a second `Store`
//! built on the same database and prefix: its own connection pool, Redis
//! connection and pending set, sharing only PostgreSQL and Redis, as two
//! service processes do. Tests that stop Redis start a private
//! `redis-server` on a spare port.
//!
//! The stale-fill race (a reader filling a value it read before a write)
//! is driven step by step in the library's unit tests
//! (`cargo test --all-features --lib cache::`), which can stop a read
//! between the database and the fill.
//!
//! Skipped, with one line saying why, when PostgreSQL or Redis is
//! unreachable; a failure under `CI=true`.
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use chrono::SubsecRound;
use common::TestDb;
use common::private_redis::PrivateRedis;
use dreamnet_db::{
    CacheStats, DEFAULT_REDIS_TIMEOUT, Error, KeyRejection, ManualClock, NewUser, PassportTier,
    Store, StoreBuilder, UserUpdate,
};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use uuid::Uuid;

// ---- fixtures ----

/// A test database, a Redis, and a key prefix of this test's own.
struct Env {
    db: TestDb,
    redis_url: String,
    prefix: String,
}

impl Env {
    async fn new() -> Option<Env> {
        let redis_url = common::redis_available().await?;
        Env::with_redis(redis_url).await
    }

    async fn with_redis(redis_url: String) -> Option<Env> {
        let db = common::pg_db().await?;
        Some(Env {
            db,
            redis_url,
            prefix: format!("dreamnet-test:{}:", Uuid::new_v4().simple()),
        })
    }

    /// A builder for this test's database, Redis and prefix. Its Redis
    /// timeout is generous: these tests are about what the cache holds, and
    /// a call that a loaded machine takes more than the default 100 ms to
    /// answer would count as an error and skew them. Tests of a Redis that
    /// never answers (absent, or frozen) use [`Env::failing_fast`].
    fn builder(&self) -> StoreBuilder {
        Store::builder()
            .redis_url(self.redis_url.clone())
            .cache_prefix(self.prefix.clone())
            .max_connections(10)
            .redis_timeout(Duration::from_secs(10))
    }

    /// A store, as one more service process would build it.
    async fn store(&self) -> Store {
        self.db.store_with(self.builder()).await
    }

    /// A store with the default Redis timeout, for tests of a Redis that
    /// does not answer.
    async fn failing_fast(&self) -> Store {
        let builder = self.builder().redis_timeout(DEFAULT_REDIS_TIMEOUT);
        self.db.store_with(builder).await
    }

    async fn redis(&self) -> MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test Redis")
    }

    /// Every Redis key under this test's prefix.
    async fn redis_keys(&self) -> Vec<String> {
        let mut conn = self.redis().await;
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(found);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }

    /// The cached record of user `id`, if any.
    async fn cached_user(&self, id: Uuid) -> Option<String> {
        let key = format!("{}u:{}", self.prefix, id.simple());
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }
}

fn stats(store: &Store) -> CacheStats {
    store.cache_stats().expect("a store with a Redis cache")
}

fn unique_email(tag: &str) -> dreamnet_db::Email {
    format!("{tag}-{}@example.com", Uuid::new_v4().simple())
        .parse()
        .unwrap()
}

fn unique_wallet() -> dreamnet_db::WalletAddress {
    format!("0x{}", &Uuid::new_v4().simple().to_string()[..20].repeat(2))
        .parse()
        .unwrap()
}

fn tier(s: &str) -> PassportTier {
    PassportTier::parse(s).unwrap()
}

fn refused(result: dreamnet_db::Result<dreamnet_db::ApiKey>) -> KeyRejection {
    match result {
        Err(Error::Unauthorized(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- invalidation on every write path, across stores ----

/// A user's update is seen at once by the store that wrote it and by
/// another, through every lookup: by id, by the new email and wallet, and
/// never again by the old ones, even after someone else takes the old
/// email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_update_is_seen_at_once_through_every_lookup_and_store() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.store().await, env.store().await);
    let (e1, w1) = (unique_email("old"), unique_wallet());
    let user = a
        .users()
        .create(NewUser::with_email(e1.clone()).wallet_address(w1.clone()))
        .await
        .unwrap();
    // Warm both stores' view through every lookup (the second round hits).
    for store in [&a, &b, &a, &b] {
        assert_eq!(store.users().get(user.id).await.unwrap(), user);
        assert_eq!(
            store.users().find_by_email(&e1).await.unwrap().as_ref(),
            Some(&user)
        );
        assert_eq!(
            store.users().find_by_wallet(&w1).await.unwrap().as_ref(),
            Some(&user)
        );
    }
    assert!(stats(&b).hits >= 3, "{:?}", stats(&b));

    let (e2, w2) = (unique_email("new"), unique_wallet());
    let updated = a
        .users()
        .update(
            user.id,
            UserUpdate::new()
                .passport_tier(tier("citizen"))
                .email(e2.clone())
                .wallet_address(w2.clone())
                .merge_metadata(json!({"plan": "pro"})),
        )
        .await
        .unwrap();
    for store in [&b, &a, &b] {
        assert_eq!(store.users().get(user.id).await.unwrap(), updated);
        assert_eq!(store.users().find_by_email(&e1).await.unwrap(), None);
        assert_eq!(store.users().find_by_wallet(&w1).await.unwrap(), None);
        assert_eq!(
            store.users().find_by_email(&e2).await.unwrap(),
            Some(updated.clone())
        );
        assert_eq!(
            store.users().find_by_wallet(&w2).await.unwrap(),
            Some(updated.clone())
        );
    }

    // Another user takes the old email and wallet: found, not the first.
    let taker = b
        .users()
        .create(NewUser::with_email(e1.clone()).wallet_address(w1.clone()))
        .await
        .unwrap();
    for store in [&a, &b] {
        assert_eq!(
            store.users().find_by_email(&e1).await.unwrap(),
            Some(taker.clone())
        );
        assert_eq!(
            store.users().find_by_wallet(&w1).await.unwrap(),
            Some(taker.clone())
        );
    }

    // And the other way round: B writes, A reads.
    let again = b
        .users()
        .update(user.id, UserUpdate::new().remove_wallet_address())
        .await
        .unwrap();
    assert_eq!(a.users().get(user.id).await.unwrap(), again);
    assert_eq!(a.users().find_by_wallet(&w2).await.unwrap(), None);
    assert_eq!(a.users().find_by_email(&e2).await.unwrap(), Some(again));
}

/// A failed update (a conflict) changes nothing, and the cache keeps
/// answering with the unchanged user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_leaves_the_cached_user_correct() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.store().await, env.store().await);
    let taken = unique_email("taken");
    a.users()
        .create(NewUser::with_email(taken.clone()))
        .await
        .unwrap();
    let user = a
        .users()
        .create(NewUser::with_email(unique_email("u")))
        .await
        .unwrap();
    b.users().get(user.id).await.unwrap();
    let err = a
        .users()
        .update(user.id, UserUpdate::new().email(taken))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    for _ in 0..2 {
        assert_eq!(b.users().get(user.id).await.unwrap(), user);
    }
}

/// Deleting a user drops the user and every key they had, everywhere: by
/// id, by email, and each key refused as unknown on the next validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_drops_them_and_their_keys_everywhere() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.store().await, env.store().await);
    let email = unique_email("gone");
    let (user, first) = a
        .users()
        .create_with_key(NewUser::with_email(email.clone()), "billing", None)
        .await
        .unwrap();
    let second = a.api_keys().issue(user.id, "search", None).await.unwrap();
    let secrets = [
        first.secret.expose_secret().to_owned(),
        second.secret.expose_secret().to_owned(),
    ];
    for store in [&a, &b, &a, &b] {
        store.users().get(user.id).await.unwrap();
        store.users().find_by_email(&email).await.unwrap().unwrap();
        for secret in &secrets {
            store.api_keys().validate(secret).await.unwrap();
        }
    }
    assert!(stats(&b).hits >= 4, "{:?}", stats(&b));

    a.users().delete(user.id).await.unwrap();
    for store in [&b, &a] {
        let err = store.users().get(user.id).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        assert_eq!(store.users().find_by_email(&email).await.unwrap(), None);
        for secret in &secrets {
            assert_eq!(
                refused(store.api_keys().validate(secret).await),
                KeyRejection::Unknown
            );
        }
    }
}

/// The issue's headline: a key revoked through one store is refused on the
/// very next validation through another that had it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_on_the_very_next_validate_elsewhere() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.store().await, env.store().await);
    let (_, issued) = a
        .users()
        .create_with_key(NewUser::with_email(unique_email("rev")), "billing", None)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret();
    for _ in 0..4 {
        b.api_keys().validate_for(secret, "billing").await.unwrap();
    }
    let before = stats(&b);
    assert!(before.hits >= 2, "{before:?}");

    a.api_keys().revoke(issued.key.id).await.unwrap();
    assert_eq!(
        refused(b.api_keys().validate_for(secret, "billing").await),
        KeyRejection::Revoked
    );
    // Revoked keys are cached too (as revoked), and stay refused.
    for _ in 0..3 {
        assert_eq!(
            refused(b.api_keys().validate(secret).await),
            KeyRejection::Revoked
        );
        assert_eq!(
            refused(a.api_keys().validate(secret).await),
            KeyRejection::Revoked
        );
    }
}

/// Rotation: the old key is refused at once elsewhere, the new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_refused_at_once_and_its_successor_works() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.store().await, env.store().await);
    let (_, old) = a
        .users()
        .create_with_key(NewUser::with_email(unique_email("rot")), "billing", None)
        .await
        .unwrap();
    for _ in 0..3 {
        b.api_keys()
            .validate(old.secret.expose_secret())
            .await
            .unwrap();
    }
    let new = a.api_keys().rotate(old.key.id, None).await.unwrap();
    assert_eq!(
        refused(b.api_keys().validate(old.secret.expose_secret()).await),
        KeyRejection::Revoked
    );
    for _ in 0..3 {
        let key = b
            .api_keys()
            .validate(new.secret.expose_secret())
            .await
            .unwrap();
        assert_eq!(key.id, new.key.id);
    }
}

/// `last_used` moves (once per resolution) without a write on the
/// validation's path or an invalidation: validations keep being answered
/// from the cache with the new `last_used`, and the batched flush writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_moves_and_the_cache_follows_without_writing_again() {
    let Some(env) = Env::new().await else { return };
    let clock = ManualClock::new("2026-03-01T12:00:00Z".parse().unwrap());
    let store = env.db.store_with(env.builder().clock(clock.clone())).await;
    let (_, issued) = store
        .users()
        .create_with_key(NewUser::with_email(unique_email("lu")), "billing", None)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret();
    let t0 = clock_now(&clock);
    let first = store.api_keys().validate(secret).await.unwrap();
    assert_eq!(first.last_used, Some(t0));

    clock.advance(chrono::Duration::minutes(2));
    let t1 = clock_now(&clock);
    let touched = store.api_keys().validate(secret).await.unwrap();
    assert_eq!(touched.last_used, Some(t1));

    clock.advance(chrono::Duration::seconds(10));
    for _ in 0..3 {
        // A new touch would report `last_used` = now; t1 is fresh enough.
        let key = store.api_keys().validate(secret).await.unwrap();
        assert_eq!(key.last_used, Some(t1));
    }
    assert_eq!(
        store.api_keys().get(issued.key.id).await.unwrap().last_used,
        Some(t1)
    );
    assert!(stats(&store).hits >= 4, "{:?}", stats(&store));
    assert_eq!(stats(&store).invalidations, 0, "{:?}", stats(&store));
    store.api_keys().flush_usage().await.unwrap();
    let other = env.db.store().await;
    assert_eq!(
        other.api_keys().get(issued.key.id).await.unwrap().last_used,
        Some(t1)
    );
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use dreamnet_db::Clock;
    clock.now().trunc_subsecs(6)
}

/// Misses are not cached: a user or key created after a lookup found
/// nothing is found by the next lookup, through any store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_created_after_a_miss_is_found_at_once() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.store().await, env.store().await);
    let (email, wallet) = (unique_email("late"), unique_wallet());
    for store in [&a, &b] {
        assert_eq!(store.users().find_by_email(&email).await.unwrap(), None);
        assert_eq!(store.users().find_by_wallet(&wallet).await.unwrap(), None);
    }
    let (user, issued) = a
        .users()
        .create_with_key(
            NewUser::with_email(email.clone()).wallet_address(wallet.clone()),
            "billing",
            None,
        )
        .await
        .unwrap();
    for store in [&b, &a] {
        assert_eq!(
            store.users().find_by_email(&email).await.unwrap(),
            Some(user.clone())
        );
        assert_eq!(
            store.users().find_by_wallet(&wallet).await.unwrap(),
            Some(user.clone())
        );
        let key = store
            .api_keys()
            .validate(issued.secret.expose_secret())
            .await
            .unwrap();
        assert_eq!(key.id, issued.key.id);
    }
}

// ---- TTL, counters, contents ----

/// An entry lives for the TTL: a change made behind the cache's back (by a
/// service that does not use this crate) is served stale until then, and
/// not after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_with_the_ttl() {
    let Some(env) = Env::new().await else { return };
    let ttl = Duration::from_secs(2);
    let store = env.db.store_with(env.builder().cache_ttl(ttl)).await;
    let user = store
        .users()
        .create(NewUser::with_email(unique_email("ttl")))
        .await
        .unwrap();
    let (sql, mut redis) = (env.sql().await, env.redis().await);
    // The entry is written between these two instants, so it lives at
    // least until `before_fill + ttl` and at most until `filled + ttl`.
    let before_fill = Instant::now();
    store.users().get(user.id).await.unwrap();
    let filled = Instant::now();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}u:{}", env.prefix, user.id.simple()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=2000).contains(&pttl), "PTTL {pttl}");

    sql.execute(
        "UPDATE users SET passport_tier = 'citizen' WHERE id = $1",
        &[&user.id],
    )
    .await
    .unwrap();
    // Cached: still the old tier (checked only while the entry must still
    // be there, so a slow machine cannot make this fail).
    let served = store.users().get(user.id).await.unwrap().passport_tier;
    if before_fill.elapsed() < ttl {
        assert_eq!(served, PassportTier::visitor(), "served from the cache");
    }
    // Once the TTL has passed, the next read is the database's.
    tokio::time::sleep_until((filled + ttl + Duration::from_millis(5)).into()).await;
    assert_eq!(
        store.users().get(user.id).await.unwrap().passport_tier,
        tier("citizen")
    );
}

/// The counters a service watches move as they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_and_miss_counts() {
    let Some(env) = Env::new().await else { return };
    let store = env.store().await;
    assert_eq!(stats(&store), CacheStats::default());
    let email = unique_email("count");
    let (user, issued) = store
        .users()
        .create_with_key(NewUser::with_email(email.clone()), "billing", None)
        .await
        .unwrap();
    assert_eq!(stats(&store), CacheStats::default(), "writes are not reads");

    store.users().get(user.id).await.unwrap(); // miss, fill
    store.users().get(user.id).await.unwrap(); // hit
    store.users().find_by_email(&email).await.unwrap(); // index miss, fill both
    store.users().find_by_email(&email).await.unwrap(); // index and record hit
    let s = stats(&store);
    assert_eq!(
        (s.hits, s.misses, s.fills, s.bypassed, s.errors),
        (2, 2, 2, 0, 0),
        "{s:?}"
    );

    let secret = issued.secret.expose_secret();
    // The first validation fills index and record; `last_used` goes to the
    // batched usage flush and leaves the cached record alone, so the next
    // three validations hit.
    store.api_keys().validate(secret).await.unwrap(); // index miss, fill
    store.api_keys().validate(secret).await.unwrap(); // hit
    store.api_keys().validate(secret).await.unwrap(); // hit
    store.api_keys().validate(secret).await.unwrap(); // hit
    let s = stats(&store);
    assert_eq!((s.hits, s.misses, s.fills), (5, 3, 3), "{s:?}");
    assert_eq!(s.hit_ratio(), Some(0.625));
    assert_eq!((s.stale_fills_refused, s.pending_invalidations), (0, 0));
    assert_eq!(
        s.invalidations, 0,
        "validations do not invalidate the key record: {s:?}"
    );

    store
        .users()
        .update(user.id, UserUpdate::new())
        .await
        .unwrap();
    assert_eq!(stats(&store).invalidations, 1);
    store.users().get(user.id).await.unwrap();
    assert_eq!(stats(&store).misses, 4);

    // A store without a cache has no stats.
    assert_eq!(env.db.store().await.cache_stats(), None);
}

/// Redis never holds a key, its database hash, or anything that names an
/// email or wallet address; Redis key names are all under the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_key_material() {
    let Some(env) = Env::new().await else { return };
    let store = env.store().await;
    let (email, wallet) = (unique_email("secret"), unique_wallet());
    let (user, issued) = store
        .users()
        .create_with_key(
            NewUser::with_email(email.clone()).wallet_address(wallet.clone()),
            "billing",
            None,
        )
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    for _ in 0..3 {
        store.api_keys().validate(&secret).await.unwrap();
        store.users().find_by_email(&email).await.unwrap();
        store.users().find_by_wallet(&wallet).await.unwrap();
    }
    assert!(stats(&store).hits >= 4);
    let hash: String = env
        .sql()
        .await
        .query_one(
            "SELECT hashed_key FROM api_keys WHERE id = $1",
            &[&issued.key.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hash, issued.secret.hash());
    let random_part = &secret["dnk_".len()..];

    let keys = env.redis_keys().await;
    assert!(keys.len() >= 5, "{keys:?}");
    let mut conn = env.redis().await;
    let mut seen_user_record = false;
    for key in &keys {
        let kind: String = redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
            ],
            "set" => redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "none" => continue,
            other => panic!("unexpected Redis type {other} at {key}"),
        };
        for text in values.iter().chain([key]) {
            for needle in [secret.as_str(), random_part, hash.as_str()] {
                assert!(!text.contains(needle), "{key} holds key material");
            }
        }
        assert!(!key.contains(&email.normalized()) && !key.contains(wallet.as_str()));
        seen_user_record |= values.iter().any(|v| v.contains(&user.id.to_string()));
    }
    assert!(seen_user_record, "the user is cached: {keys:?}");
}

// ---- configuration ----

/// The Redis URL, which may hold a password, shows nowhere: not in the
/// builder's `Debug`, nor the store's; a malformed one is a configuration
/// error that does not repeat it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_url_never_shows() {
    let url = format!(
        "redis://:hunter2-secret@127.0.0.1:{}/0",
        common::free_port()
    );
    let builder = Store::builder().redis_url(url.clone());
    assert!(!format!("{builder:?}").contains("hunter2"), "{builder:?}");
    let Some(env) = Env::with_redis(url).await else {
        return;
    };
    let store = env.failing_fast().await;
    store.users().get(Uuid::new_v4()).await.unwrap_err();
    assert!(!format!("{store:?}").contains("hunter2"), "{store:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_redis_url_is_a_configuration_error() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    for url in [
        "http://:hunter2-secret@localhost/",
        "redis://:hunter2-secret@[::1/0",
    ] {
        let err = Store::builder()
            .database_url(db.url.clone())
            .redis_url(url)
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    for bad in [
        Store::builder().cache_ttl(Duration::ZERO),
        Store::builder().redis_timeout(Duration::ZERO),
        Store::builder().cache_prefix(""),
    ] {
        let err = bad
            .database_url(db.url.clone())
            .redis_url(common::redis_url())
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}

/// With Redis unreachable from the start, the store connects and serves
/// every read and write from the database, each Redis call bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_starts_and_serves_without_redis() {
    let port = common::free_port();
    let Some(env) = Env::with_redis(format!("redis://127.0.0.1:{port}")).await else {
        return;
    };
    let started = Instant::now();
    let store = env.failing_fast().await;
    // A guard against hanging, not a measure of speed: every Redis call
    // gives up after its timeout, but a loaded machine may take longer to
    // get through the calls.
    assert!(started.elapsed() < Duration::from_secs(30));
    let (user, issued) = store
        .users()
        .create_with_key(NewUser::with_email(unique_email("nored")), "billing", None)
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(store.users().get(user.id).await.unwrap(), user);
        store
            .api_keys()
            .validate(issued.secret.expose_secret())
            .await
            .unwrap();
    }
    store.api_keys().revoke(issued.key.id).await.unwrap();
    assert_eq!(
        refused(
            store
                .api_keys()
                .validate(issued.secret.expose_secret())
                .await
        ),
        KeyRejection::Revoked
    );
    // A guard against hanging, not a measure of speed: every Redis call
    // gives up after its timeout, but a loaded machine may take longer to
    // get through the calls.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let s = stats(&store);
    assert_eq!(s.hits, 0, "{s:?}");
    assert!(s.errors >= 1 && s.bypassed >= 1, "{s:?}");
    assert!(s.invalidations_deferred >= 1, "{s:?}");
    store.health().await.expect("Redis does not decide health");
}

// ---- Redis going away mid-run ----

/// Redis killed mid-run, with a write while it is down, then restarted on
/// the same port with everything it held (a now-stale entry included):
/// reads and writes work throughout, the writing store never serves the
/// stale entry, its pending invalidation is carried out once Redis is
/// back, and the cache then serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(env) = Env::with_redis(redis.url()).await else {
        return;
    };
    let (a, b) = (env.store().await, env.store().await);
    let user = a
        .users()
        .create(NewUser::with_email(unique_email("kill")))
        .await
        .unwrap();
    for store in [&a, &b, &a, &b] {
        assert_eq!(store.users().get(user.id).await.unwrap(), user);
    }
    assert!(env.cached_user(user.id).await.is_some());

    redis.kill();
    let started = Instant::now();
    for store in [&a, &b] {
        assert_eq!(store.users().get(user.id).await.unwrap(), user);
    }
    let updated = a
        .users()
        .update(user.id, UserUpdate::new().passport_tier(tier("citizen")))
        .await
        .unwrap();
    for store in [&a, &b, &a, &b] {
        assert_eq!(store.users().get(user.id).await.unwrap(), updated);
    }
    // A guard against hanging, not a measure of speed: every Redis call
    // gives up after its timeout, but a loaded machine may take longer to
    // get through the calls.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let s = stats(&a);
    assert!(s.errors >= 1 && s.invalidations_deferred == 1, "{s:?}");
    assert_eq!(s.pending_invalidations, 1, "{s:?}");

    // Back, with the stale entry it held when killed.
    redis.spawn().await;
    let stale: Option<String> = redis::cmd("GET")
        .arg(format!("{}u:{}", env.prefix, user.id.simple()))
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    // (Unless A flushed in the moment since the restart.)
    if let Some(stale) = stale {
        assert!(stale.contains("\"visitor\""), "{stale}");
    }
    // The writer never serves it, before or after its flush.
    eventually(
        Duration::from_secs(10),
        "the pending invalidation is flushed",
        || async {
            assert_eq!(a.users().get(user.id).await.unwrap(), updated);
            stats(&a).pending_invalidations == 0
        },
    )
    .await;
    if let Some(entry) = env.cached_user(user.id).await {
        assert!(entry.contains("citizen"), "{entry}");
    }
    for store in [&b, &a] {
        assert_eq!(store.users().get(user.id).await.unwrap(), updated);
    }
    // And the cache serves again.
    let hits = stats(&b).hits;
    eventually(
        Duration::from_secs(10),
        "the cache serves again",
        || async {
            assert_eq!(b.users().get(user.id).await.unwrap(), updated);
            stats(&b).hits > hits
        },
    )
    .await;
}

/// Redis frozen (SIGSTOP) mid-run: calls time out instead of failing fast.
/// Writes stay quick, reads come from the database, and when Redis thaws
/// the writer's invalidation reaches it before another store reads the
/// entry the write made stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen_mid_run() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(env) = Env::with_redis(redis.url()).await else {
        return;
    };
    let (a, b) = (env.failing_fast().await, env.failing_fast().await);
    let (user, issued) = a
        .users()
        .create_with_key(NewUser::with_email(unique_email("freeze")), "billing", None)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret();
    for store in [&a, &b, &a, &b] {
        store.users().get(user.id).await.unwrap();
        store.api_keys().validate(secret).await.unwrap();
    }

    redis.signal("-STOP");
    let started = Instant::now();
    let updated = a
        .users()
        .update(user.id, UserUpdate::new().passport_tier(tier("citizen")))
        .await
        .unwrap();
    a.api_keys().revoke(issued.key.id).await.unwrap();
    for store in [&a, &b] {
        assert_eq!(store.users().get(user.id).await.unwrap(), updated);
        assert_eq!(
            refused(store.api_keys().validate(secret).await),
            KeyRejection::Revoked
        );
    }
    // A guard against hanging, not a measure of speed: every Redis call
    // gives up after its timeout, but a loaded machine may take longer to
    // get through the calls.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(stats(&a).pending_invalidations >= 1, "{:?}", stats(&a));

    redis.signal("-CONT");
    eventually(
        Duration::from_secs(10),
        "the pending invalidations are flushed",
        || async {
            assert_eq!(a.users().get(user.id).await.unwrap(), updated);
            stats(&a).pending_invalidations == 0
        },
    )
    .await;
    // Both stores read from Redis again (not only from PostgreSQL while
    // they give Redis a rest), and never the old user or a valid key.
    for store in [&b, &a] {
        let hits = stats(store).hits;
        eventually(
            Duration::from_secs(10),
            "the cache serves again",
            || async {
                assert_eq!(store.users().get(user.id).await.unwrap(), updated);
                assert_eq!(
                    refused(store.api_keys().validate(secret).await),
                    KeyRejection::Revoked
                );
                stats(store).hits >= hits + 4
            },
        )
        .await;
    }
}

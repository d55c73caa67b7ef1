//! The process-local tier (feature `local-cache`) against the real
//! PostgreSQL and Redis: invalidations pushed across stores, a Redis
//! restart, a lost and a frozen invalidation channel.
//!
//! Tests that stop or cut Redis start a private `redis-server` on a spare
//! port and kill it when done. The delay between processes is measured by
//! `examples/local_propagation.rs` (see BENCHMARKS.md); here, "another
//! process" is a second `Store` with its own pools, Redis connections and
//! subscription, sharing only PostgreSQL and Redis.
//!
//! Skipped, with one line saying why, when PostgreSQL, Redis or
//! `redis-server` is unavailable; a failure under `CI=true`.
#![cfg(feature = "local-cache")]

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use common::private_redis::PrivateRedis;
use dreamnet_db::{
    CacheStats, Error, KeyRejection, NewUser, PassportTier, Store, StoreBuilder, UserUpdate,
};
use uuid::Uuid;

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

    fn builder(&self, timeout: Duration) -> StoreBuilder {
        Store::builder()
            .redis_url(self.redis_url.clone())
            .cache_prefix(self.prefix.clone())
            .max_connections(4)
            .redis_timeout(timeout)
    }

    /// A store with a local tier, once its tier serves.
    async fn tiered(&self) -> Store {
        self.tiered_with(Duration::from_secs(5)).await
    }

    async fn tiered_with(&self, timeout: Duration) -> Store {
        let store = self
            .db
            .store_with(self.builder(timeout).local_cache(1_000))
            .await;
        eventually(Duration::from_secs(10), "the local tier serves", || {
            stats(&store).local_serving
        })
        .await;
        store
    }

    /// A store without a local tier (as a process that did not turn it on).
    async fn plain(&self) -> Store {
        self.db
            .store_with(self.builder(Duration::from_secs(5)))
            .await
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test Redis")
    }
}

fn stats(store: &Store) -> CacheStats {
    store.cache_stats().expect("the cache is on")
}

async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unique_email(tag: &str) -> dreamnet_db::Email {
    format!("{tag}-{}@example.com", Uuid::new_v4().simple())
        .parse()
        .unwrap()
}

fn refused(result: dreamnet_db::Result<dreamnet_db::ApiKey>) -> KeyRejection {
    match result {
        Err(Error::Unauthorized(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Validates `secret` on `store` until the local tier answers it (the first
/// validation writes `last_used`, which invalidates the record everywhere;
/// after a Redis error the cache waits a moment before using Redis again).
async fn warm_key(store: &Store, secret: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let before = stats(store).local_hits;
        store.api_keys().validate(secret).await.expect("valid");
        if stats(store).local_hits > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the local tier never answered the key: {:?}", stats(store));
}

async fn warm_user(store: &Store, id: Uuid) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let before = stats(store).local_hits;
        store.users().get(id).await.expect("the user");
        if stats(store).local_hits > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the local tier never answered the user: {:?}", stats(store));
}

/// A user and a key of theirs, issued through `store`.
async fn user_and_key(store: &Store, tag: &str) -> (dreamnet_db::User, Uuid, String) {
    let user = store
        .users()
        .create(NewUser::with_email(unique_email(tag)))
        .await
        .unwrap();
    let issued = store
        .api_keys()
        .issue(user.id, "search", None)
        .await
        .unwrap();
    (
        user,
        issued.key.id,
        issued.secret.expose_secret().to_owned(),
    )
}

// ---- across stores ----

/// A revocation, a user update and a user deletion through one store are
/// seen by another store's local tier (which answered them from memory
/// just before) as soon as Redis delivers the invalidation, and by the
/// writing store at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_local_tier() {
    let Some(env) = Env::new().await else { return };
    let (a, b) = (env.tiered().await, env.tiered().await);
    let (user, key_id, secret) = user_and_key(&a, "across").await;
    warm_key(&a, &secret).await;
    warm_key(&b, &secret).await;
    warm_user(&a, user.id).await;
    warm_user(&b, user.id).await;

    a.api_keys().revoke(key_id).await.unwrap();
    // The writer never serves its own stale record.
    assert_eq!(
        refused(a.api_keys().validate(&secret).await),
        KeyRejection::Revoked
    );
    let started = Instant::now();
    loop {
        match b.api_keys().validate(&secret).await {
            Err(Error::Unauthorized(KeyRejection::Revoked)) => break,
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "still accepted after 5 s"
            ),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Refused from then on.
    for _ in 0..50 {
        assert_eq!(
            refused(b.api_keys().validate(&secret).await),
            KeyRejection::Revoked
        );
    }

    let updated = a
        .users()
        .update(
            user.id,
            UserUpdate::new().passport_tier(PassportTier::parse("citizen").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(a.users().get(user.id).await.unwrap(), updated);
    let started = Instant::now();
    while b.users().get(user.id).await.unwrap() != updated {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "update not seen in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    warm_user(&b, user.id).await;

    // A deletion takes the user's keys with it, in every tier.
    let (_, _, other_secret) = {
        let issued = a.api_keys().issue(user.id, "search", None).await.unwrap();
        (
            user.id,
            issued.key.id,
            issued.secret.expose_secret().to_owned(),
        )
    };
    warm_key(&b, &other_secret).await;
    a.users().delete(user.id).await.unwrap();
    let started = Instant::now();
    loop {
        let gone = b.users().get(user.id).await.is_err()
            && matches!(
                b.api_keys().validate(&other_secret).await,
                Err(Error::Unauthorized(KeyRejection::Unknown))
            );
        if gone {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "deletion not seen in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = stats(&b);
    assert!(s.local_hits >= 3 && s.local_resets == 0, "{s:?}");
}

/// A store without the tier publishes its invalidations too, so a tiered
/// store next to it stays correct; and it keeps no local figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_the_tier_still_invalidates_tiers() {
    let Some(env) = Env::new().await else { return };
    let (plain, tiered) = (env.plain().await, env.tiered().await);
    let (_, key_id, secret) = user_and_key(&plain, "plain").await;
    warm_key(&tiered, &secret).await;
    plain.api_keys().revoke(key_id).await.unwrap();
    let started = Instant::now();
    while tiered.api_keys().validate(&secret).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still accepted after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = stats(&plain);
    assert_eq!(
        (s.local_hits, s.local_misses, s.local_serving),
        (0, 0, false),
        "{s:?}"
    );
}

#[tokio::test]
async fn a_tier_needs_room_and_a_ttl() {
    let Some(env) = Env::new().await else { return };
    for builder in [
        env.builder(Duration::from_secs(1)).local_cache(0),
        env.builder(Duration::from_secs(1))
            .local_cache(10)
            .local_cache_ttl(Duration::ZERO),
    ] {
        let err = builder
            .database_url(env.db.url.clone())
            .connect()
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
    }
}

// ---- losing the channel ----

/// Redis killed while a tier holds a key: the tier empties at once and
/// answers nothing while Redis is down (a revocation then is refused
/// everywhere); once Redis is back (with its file, stale entry included)
/// and the writer's pending invalidation is carried out, the key is
/// refused, and the tier serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_empties_the_tier_until_it_is_back() {
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(env) = Env::with_redis(redis.url()).await else {
        return;
    };
    let a = env.tiered_with(Duration::from_millis(200)).await;
    let b = env.tiered_with(Duration::from_millis(200)).await;
    let (user, key_id, secret) = user_and_key(&a, "restart").await;
    warm_key(&b, &secret).await;
    warm_user(&b, user.id).await;
    assert!(stats(&b).local_entries >= 2, "{:?}", stats(&b));

    redis.kill();
    eventually(Duration::from_secs(10), "the tier notices", || {
        let s = stats(&b);
        s.local_resets >= 1 && !s.local_serving
    })
    .await;
    let hits = stats(&b).local_hits;
    a.api_keys().revoke(key_id).await.unwrap();
    assert_eq!(
        refused(b.api_keys().validate(&secret).await),
        KeyRejection::Revoked
    );
    assert_eq!(b.users().get(user.id).await.unwrap(), user);
    assert_eq!(
        stats(&b).local_hits,
        hits,
        "served from the tier while Redis was down"
    );
    assert_eq!(stats(&b).local_entries, 0);

    redis.spawn().await;
    eventually(
        Duration::from_secs(10),
        "the writer's invalidation reaches Redis",
        || stats(&a).pending_invalidations == 0,
    )
    .await;
    eventually(Duration::from_secs(10), "the tier serves again", || {
        stats(&b).local_serving
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            refused(b.api_keys().validate(&secret).await),
            KeyRejection::Revoked
        );
    }
    warm_user(&b, user.id).await;
}

/// The subscription cut by Redis (`CLIENT KILL TYPE pubsub`, as when a
/// subscriber falls behind) while a key was revoked by a writer that did
/// not publish: the tier empties, so once it serves again it reads the
/// revocation instead of its old record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_channel_empties_the_tier() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(env) = Env::with_redis(redis.url()).await else {
        return;
    };
    let b = env.tiered().await;
    let (_, key_id, secret) = user_and_key(&b, "cut").await;
    warm_key(&b, &secret).await;

    let mut conn = env.redis().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // A revocation whose message the tier never got: written in the
    // database and dropped from Redis by hand, without a publish.
    env.db
        .sql(&format!(
            "UPDATE api_keys SET revoked_at = now() WHERE id = '{key_id}'"
        ))
        .await;
    let record = format!("{}kr:{}", env.prefix, key_id.simple());
    let _: i64 = redis::cmd("DEL")
        .arg(&record)
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the tier notices and resubscribes",
        || {
            let s = stats(&b);
            s.local_resets >= 1 && s.local_serving
        },
    )
    .await;
    assert_eq!(
        refused(b.api_keys().validate(&secret).await),
        KeyRejection::Revoked
    );
}

/// Redis frozen (`SIGSTOP`: the connection stays open, nothing answers):
/// the unanswered `PING` empties the tier, which serves nothing until
/// Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_channel_empties_the_tier() {
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let Some(env) = Env::with_redis(redis.url()).await else {
        return;
    };
    let b = env.tiered_with(Duration::from_millis(200)).await;
    let (_, _, secret) = user_and_key(&b, "frozen").await;
    warm_key(&b, &secret).await;

    redis.signal("-STOP");
    eventually(Duration::from_secs(10), "the tier notices", || {
        let s = stats(&b);
        s.local_resets >= 1 && !s.local_serving
    })
    .await;
    let hits = stats(&b).local_hits;
    // Redis does not answer: the read goes to the database.
    b.api_keys().validate(&secret).await.unwrap();
    assert_eq!(stats(&b).local_hits, hits);
    redis.signal("-CONT");
    eventually(Duration::from_secs(10), "the tier serves again", || {
        stats(&b).local_serving
    })
    .await;
    warm_key(&b, &secret).await;
}

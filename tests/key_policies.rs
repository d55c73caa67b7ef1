//! API key policies across processes: two stores on one database (and one
//! Redis), as two service instances would be. Credits and rate limits are
//! never overspent under concurrency, with the cache on and off; a
//! revocation, a disable and a permission change made through one store
//! are refused on the next verification through the other, with the cache
//! on; and buffered usage reaches the database on shutdown. Skipped, with
//! one line saying why, when PostgreSQL or Redis is unreachable; a failure
//! under `CI=true`.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use dreamnet_db::{
    KeyCheck, KeyOutcome, KeyPolicy, KeyRejection, NewUser, RateLimitPolicy, RateLimiter,
    RedisLimiterOptions, Store, StoreBuilder, TimeBucket, TimeRange,
};

fn prefix() -> String {
    format!("dreamnet-test:{}:", uuid::Uuid::new_v4().simple())
}

/// Two stores on `db`, both behind the same Redis cache prefix when
/// `cached`, both with the same Redis key rate limiter.
async fn two_stores(db: &common::TestDb, redis: &str, cached: bool) -> (Store, Store) {
    let cache_prefix = prefix();
    let limiter_prefix = format!("{}rl:", prefix());
    let mut stores = Vec::new();
    for _ in 0..2 {
        let limiter = RateLimiter::redis(
            redis,
            RateLimitPolicy::per_second(1).unwrap(),
            RedisLimiterOptions {
                prefix: limiter_prefix.clone(),
                // Generous: the machine is shared, and a timed-out check
                // would be let through (fail open) and spoil the count.
                timeout: Duration::from_secs(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // 250 verifications at once per store on 8 connections, on a
        // shared machine: wait for a connection as long as it takes.
        let mut builder: StoreBuilder = Store::builder()
            .max_connections(8)
            .connection_timeout(Duration::from_secs(60))
            .key_rate_limiter(limiter);
        if cached {
            builder = builder
                .redis_url(redis)
                .cache_prefix(cache_prefix.clone())
                .redis_timeout(Duration::from_secs(10));
        }
        stores.push(db.store_with(builder).await);
    }
    let b = stores.pop().unwrap();
    let a = stores.pop().unwrap();
    (a, b)
}

async fn setup() -> Option<(common::TestDb, String)> {
    let redis = common::redis_available().await?;
    let db = common::pg_db().await?;
    Some((db, redis))
}

/// 500 verifications at once, half through each store, of a key with
/// `policy`; returns how many were accepted and the rejections.
async fn storm(a: &Store, b: &Store, policy: KeyPolicy) -> (usize, Vec<KeyRejection>, uuid::Uuid) {
    let user = a
        .users()
        .create(NewUser::with_email("ada@example.com".parse().unwrap()))
        .await
        .unwrap();
    let issued = a
        .api_keys()
        .issue_with(user.id, "billing", None, policy)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    // Both stores have the key's record (cached, when cached).
    for s in [a, b] {
        s.api_keys()
            .verify(&secret, &KeyCheck::new().cost(0))
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let secret = secret.clone();
        tasks.spawn(async move {
            store
                .api_keys()
                .verify(&secret, &KeyCheck::new())
                .await
                .unwrap()
                .rejection
        });
    }
    let mut accepted = 0;
    let mut refused = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            None => accepted += 1,
            Some(why) => refused.push(why),
        }
    }
    (accepted, refused, issued.key.id)
}

async fn credits_across_two_stores(cached: bool) {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let (a, b) = two_stores(&db, &redis, cached).await;
    let (accepted, refused, id) = storm(&a, &b, KeyPolicy::new().credits(100)).await;
    assert_eq!(accepted, 100, "cached: {cached}");
    assert_eq!(refused.len(), 400);
    assert!(refused.iter().all(|r| *r == KeyRejection::UsageExceeded));
    let key = db.store().await.api_keys().get(id).await.unwrap();
    assert_eq!(key.policy.credits.unwrap().remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_100_accepts_exactly_100_across_two_stores() {
    credits_across_two_stores(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_100_accepts_exactly_100_across_two_cached_stores() {
    credits_across_two_stores(true).await;
}

async fn rate_limit_across_two_stores(cached: bool) {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let (a, b) = two_stores(&db, &redis, cached).await;
    // 50 at once, then one every 72 s: far longer than the test runs.
    let limit = RateLimitPolicy::new(50, Duration::from_secs(3600), 50).unwrap();
    let (accepted, refused, _) = storm(&a, &b, KeyPolicy::new().rate_limit("hourly", limit)).await;
    // The two warm-up verifications took 2 of the 50.
    assert_eq!(accepted, 48, "cached: {cached}");
    assert_eq!(refused.len(), 452);
    assert!(
        refused
            .iter()
            .all(|r| matches!(r, KeyRejection::RateLimited { retry_after } if *retry_after > Duration::from_secs(60)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_stores() {
    rate_limit_across_two_stores(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_two_cached_stores() {
    rate_limit_across_two_stores(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_hold_on_the_next_verification_in_another_cached_store() {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let (a, b) = two_stores(&db, &redis, true).await;
    let user = a
        .users()
        .create(NewUser::with_email("ada@example.com".parse().unwrap()))
        .await
        .unwrap();
    let issue = || async {
        a.api_keys()
            .issue_with(
                user.id,
                "billing",
                None,
                KeyPolicy::new().permissions(["billing.read"]),
            )
            .await
            .unwrap()
    };
    let check = KeyCheck::new().require_all(["billing.read"]);
    let hits = |s: &Store| s.cache_stats().unwrap().hits;

    // Each change made through `a` after `b` has the record cached.
    let revoked = issue().await;
    let disabled = issue().await;
    let narrowed = issue().await;
    for k in [&revoked, &disabled, &narrowed] {
        let secret = k.secret.expose_secret();
        for _ in 0..2 {
            assert!(
                b.api_keys()
                    .verify(secret, &check)
                    .await
                    .unwrap()
                    .is_valid()
            );
        }
    }
    let before = hits(&b);
    assert!(before >= 3, "b verifies from its cache: {before} hits");

    a.api_keys().revoke(revoked.key.id).await.unwrap();
    a.api_keys().disable(disabled.key.id).await.unwrap();
    a.api_keys()
        .set_permissions(narrowed.key.id, ["billing.write"])
        .await
        .unwrap();
    let v = b
        .api_keys()
        .verify(revoked.secret.expose_secret(), &check)
        .await
        .unwrap();
    assert_eq!(v.rejection, Some(KeyRejection::Revoked));
    let v = b
        .api_keys()
        .verify(disabled.secret.expose_secret(), &check)
        .await
        .unwrap();
    assert_eq!(v.rejection, Some(KeyRejection::Disabled));
    expect_disabled(b.api_keys().validate(disabled.secret.expose_secret()).await);
    let v = b
        .api_keys()
        .verify(narrowed.secret.expose_secret(), &check)
        .await
        .unwrap();
    assert_eq!(v.rejection, Some(KeyRejection::InsufficientPermissions));

    // And back: enabling holds on the next verification too.
    a.api_keys().enable(disabled.key.id).await.unwrap();
    assert!(
        b.api_keys()
            .verify(disabled.secret.expose_secret(), &check)
            .await
            .unwrap()
            .is_valid()
    );
}

fn expect_disabled(r: dreamnet_db::Result<dreamnet_db::ApiKey>) {
    assert!(
        matches!(
            r,
            Err(dreamnet_db::Error::Unauthorized(KeyRejection::Disabled))
        ),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_flushed_on_shutdown_and_when_a_store_is_dropped() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let writer = db.store().await;
    let user = writer
        .users()
        .create(NewUser::with_email("ada@example.com".parse().unwrap()))
        .await
        .unwrap();
    let issued = writer
        .api_keys()
        .issue(user.id, "billing", None)
        .await
        .unwrap();
    let secret = issued.secret.expose_secret().to_owned();
    let id = issued.key.id;
    let reader = db.store().await;
    let valid = |n| vec![(KeyOutcome::Valid, n)];
    let counts = || async {
        reader
            .api_keys()
            .usage(id, TimeBucket::Day, TimeRange::all())
            .await
            .unwrap()
            .into_iter()
            .map(|u| (u.outcome, u.count))
            .collect::<Vec<_>>()
    };

    for _ in 0..7 {
        writer.api_keys().validate(&secret).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    assert_eq!(counts().await, valid(7));
    assert!(reader.api_keys().get(id).await.unwrap().last_used.is_some());

    // A store dropped with usage buffered writes it (within a flush
    // interval) from its background task.
    let dropped = db.store().await;
    for _ in 0..5 {
        dropped.api_keys().validate(&secret).await.unwrap();
    }
    drop(dropped);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counts().await != valid(12) {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped store's usage was written: {:?}",
            counts().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_last_used_in_one_flush() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let store = db.store().await;
    let user = store
        .users()
        .create(NewUser::with_email("ada@example.com".parse().unwrap()))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for _ in 0..50 {
        keys.push(
            store
                .api_keys()
                .issue(user.id, "billing", None)
                .await
                .unwrap(),
        );
    }
    for k in &keys {
        store
            .api_keys()
            .validate(k.secret.expose_secret())
            .await
            .unwrap();
    }
    store.api_keys().flush_usage().await.unwrap();
    let client = common::client(&db.url).await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE last_used IS NOT NULL), \
                    (SELECT sum(count)::int8 FROM api_key_usage) FROM api_keys",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 50);
    assert_eq!(row.get::<_, i64>(1), 50);
}

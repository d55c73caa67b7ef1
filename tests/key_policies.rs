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

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::TimeZone;
use common::private_redis::PrivateRedis;

use dreamnet_db::{
    KeyCheck, KeyCredits, KeyOutcome, KeyPolicy, KeyRejection, NewUser, RateLimitPolicy,
    RateLimiter, RedisLimiterOptions, Store, StoreBuilder, TimeBucket, TimeRange,
};

fn prefix() -> String {
    format!("dreamnet-test:{}:", uuid::Uuid::new_v4().simple())
}

/// Two stores on `db`, both behind the same Redis cache prefix when
/// `cached`, both with the same Redis key rate limiter.
async fn two_stores(db: &common::TestDb, redis: &str, cached: bool) -> (Store, Store) {
    two_stores_with(db, redis, cached, &format!("{}rl:", prefix())).await
}

/// As [`two_stores`], with the key rate limiter's prefix given.
async fn two_stores_with(
    db: &common::TestDb,
    redis: &str,
    cached: bool,
    limiter_prefix: &str,
) -> (Store, Store) {
    let cache_prefix = prefix();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let limiter = RateLimiter::redis(
            redis,
            RateLimitPolicy::per_second(1).unwrap(),
            RedisLimiterOptions {
                prefix: limiter_prefix.to_owned(),
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
    // Behind the cache the balance is held in Redis and written back in
    // each store's usage flush.
    for s in [&a, &b] {
        s.api_keys().flush_usage().await.unwrap();
    }
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

// ---- one-script verification behind the Redis cache ----

/// A user and a key with `policy` issued through `store`.
async fn key_with(store: &Store, policy: KeyPolicy) -> dreamnet_db::IssuedKey {
    let user = store
        .users()
        .create(NewUser::with_email(
            format!("{}@example.com", uuid::Uuid::new_v4().simple())
                .parse()
                .unwrap(),
        ))
        .await
        .unwrap();
    store
        .api_keys()
        .issue_with(user.id, "billing", None, policy)
        .await
        .unwrap()
}

/// `n` verifications at once, alternating between the stores; the
/// verdicts' (rejection, credits remaining).
async fn verify_many(
    stores: [&Store; 2],
    secret: &str,
    n: usize,
) -> Vec<(Option<KeyRejection>, Option<i64>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = stores[i % 2].clone();
        let secret = secret.to_owned();
        tasks.spawn(async move {
            let v = store
                .api_keys()
                .verify(&secret, &KeyCheck::new())
                .await
                .unwrap();
            (v.rejection, v.credits_remaining)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

fn accepted(verdicts: &[(Option<KeyRejection>, Option<i64>)]) -> usize {
    verdicts.iter().filter(|(r, _)| r.is_none()).count()
}

/// The balance, version and write-back count PostgreSQL holds for `id`.
async fn stored_credits(db: &common::TestDb, id: uuid::Uuid) -> (i64, i64, i64) {
    let client = common::client(&db.url).await;
    let row = client
        .query_one(
            "SELECT credits, credits_version, credits_seq FROM api_key_policies WHERE key_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// A `MONITOR` connection to a Redis: sees every command, with the
/// commands scripts run marked `[… lua]`.
struct Monitor {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl Monitor {
    async fn start(url: &str) -> Monitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let addr = url.trim_start_matches("redis://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(stream).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
        Monitor { lines }
    }

    /// The commands clients sent (one round trip each) since the last
    /// call, once nothing more comes for a moment; script-run commands are
    /// left out.
    async fn client_commands(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(300), self.lines.next_line()).await
        {
            if !line.contains(" lua] ") {
                out.push(line);
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_verification_is_one_round_trip_and_spends_nothing_in_postgres() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let (a, _b) = two_stores(&db, &redis.url(), true).await;
    let limit = RateLimitPolicy::new(1_000, Duration::from_secs(1), 1_000).unwrap();
    let issued = key_with(
        &a,
        KeyPolicy::new()
            .permissions(["billing.read"])
            .credits(1_000)
            .rate_limit("default", limit),
    )
    .await;
    let secret = issued.secret.expose_secret();
    let check = KeyCheck::new()
        .service("billing")
        .require_all(["billing.read"]);
    // Warm: the record cached, the balance seeded.
    for _ in 0..2 {
        assert!(
            a.api_keys()
                .verify(secret, &check)
                .await
                .unwrap()
                .is_valid()
        );
    }
    a.api_keys().flush_usage().await.unwrap();
    // Every row update of api_key_policies is counted (a step-by-step
    // spend updates one per verification; write-backs, one per flush).
    db.sql(
        "CREATE TABLE policy_updates (n bigint NOT NULL); \
         INSERT INTO policy_updates VALUES (0); \
         CREATE FUNCTION count_policy_update() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN UPDATE policy_updates SET n = n + 1; RETURN NULL; END $$; \
         CREATE TRIGGER count_policy_update AFTER UPDATE ON api_key_policies \
         FOR EACH ROW EXECUTE FUNCTION count_policy_update();",
    )
    .await;
    let client = common::client(&db.url).await;
    let updates = || async {
        client
            .query_one("SELECT n FROM policy_updates", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let updated_before = updates().await;
    let mut monitor = Monitor::start(&redis.url()).await;
    for i in 0..20 {
        let v = a.api_keys().verify(secret, &check).await.unwrap();
        assert!(v.is_valid());
        assert_eq!(v.credits_remaining, Some(1_000 - 3 - i));
        assert_eq!(v.rate_limits.len(), 1);
    }
    // One script call per verification, and nothing else.
    let sent = monitor.client_commands().await;
    assert_eq!(sent.len(), 20, "{sent:#?}");
    assert!(
        sent.iter()
            .all(|l| l.to_ascii_lowercase().contains("\"evalsha\"")),
        "{sent:#?}"
    );
    let updated = updates().await - updated_before;
    assert!(
        updated <= 2,
        "api_key_policies rows updated during 20 verifications: {updated} (write-backs only)"
    );
    // The count sees spends: a store without the cache spends in
    // PostgreSQL, one update per verification.
    let plain = db.store().await;
    let before = updates().await;
    for _ in 0..5 {
        assert!(
            plain
                .api_keys()
                .verify(secret, &KeyCheck::new())
                .await
                .unwrap()
                .is_valid()
        );
    }
    assert_eq!(updates().await - before, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spends_reach_postgres_on_flush_and_on_shutdown() {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let (a, b) = two_stores(&db, &redis, true).await;
    let issued = key_with(&a, KeyPolicy::new().credits(10)).await;
    let id = issued.key.id;
    let secret = issued.secret.expose_secret();
    let v = verify_many([&a, &b], secret, 4).await;
    assert_eq!(accepted(&v), 4);
    for s in [&a, &b] {
        s.api_keys().flush_usage().await.unwrap();
    }
    let (left, version, seq) = stored_credits(&db, id).await;
    assert_eq!((left, version), (6, 0));
    assert_eq!(seq, 4, "one write-back count per spend");
    // `get` through a store with spends waiting writes them first.
    assert_eq!(
        a.api_keys()
            .verify(secret, &KeyCheck::new().cost(2))
            .await
            .unwrap()
            .credits_remaining,
        Some(4)
    );
    let got = a.api_keys().get(id).await.unwrap();
    assert_eq!(got.policy.credits.unwrap().remaining, 4);
    b.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(stored_credits(&db, id).await.0, 3);
    // A store dropped with a spend waiting writes it from its task.
    a.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored_credits(&db, id).await.0 != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped store wrote back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_budget_set_while_spending_is_never_undercut() {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let (a, b) = two_stores(&db, &redis, true).await;
    let issued = key_with(&a, KeyPolicy::new().credits(1_000)).await;
    let id = issued.key.id;
    let secret = issued.secret.expose_secret().to_owned();
    let first = verify_many([&a, &b], &secret, 100).await;
    assert_eq!(accepted(&first), 100);
    // 300 more at once, and the budget replaced by 50 meanwhile.
    let storm = {
        let (a, b, secret) = (a.clone(), b.clone(), secret.clone());
        tokio::spawn(async move { verify_many([&a, &b], &secret, 300).await })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.api_keys()
        .set_credits(id, Some(KeyCredits::new(50)))
        .await
        .unwrap();
    let mut verdicts = storm.await.unwrap();
    // And 60 after the change for sure.
    verdicts.extend(verify_many([&a, &b], &secret, 60).await);
    // Spends of the old budget left 600 or more; of the new one, below 50.
    let mut new_budget: BTreeMap<i64, usize> = BTreeMap::new();
    for (why, left) in &verdicts {
        match (why, left) {
            (None, Some(n)) if *n < 50 => *new_budget.entry(*n).or_default() += 1,
            (None, Some(n)) => assert!(*n >= 600, "an old-budget spend left {n}"),
            (Some(KeyRejection::UsageExceeded), Some(0)) => {}
            other => panic!("unexpected verdict {other:?}"),
        }
    }
    assert_eq!(
        new_budget,
        (0..50).map(|n| (n, 1)).collect::<BTreeMap<_, _>>(),
        "the new budget of 50 accepted exactly 50"
    );
    for s in [&a, &b] {
        s.api_keys().flush_usage().await.unwrap();
    }
    let (left, version, _) = stored_credits(&db, id).await;
    assert_eq!(
        (left, version),
        (0, 1),
        "old write-backs never landed on the new budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_the_balance_reseeds_it_from_postgres() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let Some(redis) = PrivateRedis::start().await else {
        return;
    };
    let (a, b) = two_stores(&db, &redis.url(), true).await;
    let issued = key_with(&a, KeyPolicy::new().credits(100)).await;
    let id = issued.key.id;
    let secret = issued.secret.expose_secret();
    assert_eq!(accepted(&verify_many([&a, &b], secret, 30).await), 30);
    for s in [&a, &b] {
        s.api_keys().flush_usage().await.unwrap();
    }
    let conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let flushall = || {
        let mut conn = conn.clone();
        async move {
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        }
    };
    // Everything written back, then Redis loses everything: the budget
    // holds exactly.
    flushall().await;
    let v = verify_many([&a, &b], secret, 200).await;
    assert_eq!(accepted(&v), 70);
    for s in [&a, &b] {
        s.api_keys().flush_usage().await.unwrap();
    }
    assert_eq!(stored_credits(&db, id).await.0, 0);

    // Spends not yet written back when Redis loses the balance are the
    // bound on an overspend.
    let issued = key_with(&a, KeyPolicy::new().credits(100)).await;
    let secret = issued.secret.expose_secret();
    let before = verify_many([&a, &b], secret, 10).await;
    assert_eq!(accepted(&before), 10);
    flushall().await;
    let after = verify_many([&a, &b], secret, 200).await;
    let total = accepted(&before) + accepted(&after);
    assert!(
        (100..=110).contains(&total),
        "accepted {total}: at most the 10 unflushed spends over the budget"
    );
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_the_script_share_the_limiters_cells() {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let limiter_prefix = format!("{}rl:", prefix());
    let (a, _b) = two_stores_with(&db, &redis, true, &limiter_prefix).await;
    let hourly = RateLimitPolicy::new(5, Duration::from_secs(3600), 5).unwrap();
    let issued = key_with(&a, KeyPolicy::new().rate_limit("hourly", hourly)).await;
    let secret = issued.secret.expose_secret();
    for left in [4, 3, 2] {
        let v = a.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
        assert!(v.is_valid());
        assert_eq!(v.rate_limit().unwrap().remaining, left);
    }
    // The limiter itself, on the same Redis and prefix as the store's key
    // limiter, sees the cells the script took, and the script sees its.
    let limiter = RateLimiter::redis(
        &redis,
        hourly,
        RedisLimiterOptions {
            prefix: limiter_prefix,
            timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let name = format!("api-key:{}:hourly", issued.key.id.simple());
    let d = limiter.check(&name).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    assert!(
        a.api_keys()
            .verify(secret, &KeyCheck::new())
            .await
            .unwrap()
            .is_valid()
    );
    let v = a.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
    assert!(matches!(
        v.rejection,
        Some(KeyRejection::RateLimited { .. })
    ));
    assert!(!limiter.check(&name).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refills_in_redis_are_written_back_and_seed_the_next_balance() {
    let Some((db, redis)) = setup().await else {
        return;
    };
    let start = chrono::Utc
        .with_ymd_and_hms(2031, 5, 17, 22, 0, 0)
        .single()
        .unwrap();
    let clock = dreamnet_db::ManualClock::new(start);
    let cached = |prefix: String| {
        db.store_with(
            Store::builder()
                .clock(clock.clone())
                .redis_url(&redis)
                .cache_prefix(prefix)
                .redis_timeout(Duration::from_secs(10)),
        )
    };
    let a = cached(prefix()).await;
    let issued = key_with(
        &a,
        KeyPolicy::new()
            .credits(2)
            .refill(dreamnet_db::Refill::daily(5)),
    )
    .await;
    let id = issued.key.id;
    let secret = issued.secret.expose_secret();
    let verify = |s: &Store| {
        let s = s.clone();
        async move {
            let v = s.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
            (v.rejection, v.credits_remaining)
        }
    };
    assert_eq!(verify(&a).await, (None, Some(1)));
    assert_eq!(verify(&a).await, (None, Some(0)));
    assert_eq!(
        verify(&a).await,
        (Some(KeyRejection::UsageExceeded), Some(0))
    );
    // Midnight UTC: the balance is set back to 5, then spent from.
    clock.advance(chrono::Duration::hours(3));
    assert_eq!(verify(&a).await, (None, Some(4)));
    a.api_keys().flush_usage().await.unwrap();
    let client = common::client(&db.url).await;
    let row = client
        .query_one(
            "SELECT credits, last_refill_at FROM api_key_policies WHERE key_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let day = chrono::Utc
        .with_ymd_and_hms(2031, 5, 18, 0, 0, 0)
        .single()
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
    assert_eq!(row.get::<_, chrono::DateTime<chrono::Utc>>(1), day);
    // A store on a fresh prefix seeds its balance from what was written
    // back: no second refill the same day.
    let b = cached(prefix()).await;
    assert_eq!(verify(&b).await, (None, Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_verifications_spend_in_postgres() {
    let Some(db) = common::pg_db().await else {
        return;
    };
    let Some(mut redis) = PrivateRedis::start().await else {
        return;
    };
    let (a, _b) = two_stores(&db, &redis.url(), true).await;
    let issued = key_with(&a, KeyPolicy::new().credits(10)).await;
    let id = issued.key.id;
    let secret = issued.secret.expose_secret();
    for left in [9, 8] {
        let v = a.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
        assert_eq!(v.credits_remaining, Some(left));
    }
    a.api_keys().flush_usage().await.unwrap();
    redis.kill();
    // Step by step: the record from PostgreSQL, the spend there.
    let v = a.api_keys().verify(secret, &KeyCheck::new()).await.unwrap();
    assert!(v.is_valid());
    assert_eq!(v.credits_remaining, Some(7));
    assert_eq!(stored_credits(&db, id).await.0, 7);
}

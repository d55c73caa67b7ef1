#![cfg(all(feature = "redis", feature = "memory"))]
//! Rate limiting: the behaviour written once and run on the in-memory
//! limiter and on the real Redis, the exact GCRA sequence with a fake
//! clock, and two Redis-backed instances under concurrent load never
//! admitting more than the policy allows.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dreamnet_db::{
    Error, FailureMode, Field, ManualClock, RateLimitDecision, RateLimitPolicy, RateLimiter,
    RedisLimiterOptions,
};
use sha2::{Digest, Sha256};

fn prefix() -> String {
    format!("dreamnet:test:rl:{}:", uuid::Uuid::new_v4().simple())
}

/// 1 every 10 s, 5 at once: slow enough that wall-clock drift during a
/// test cannot refill a cell.
fn slow() -> RateLimitPolicy {
    RateLimitPolicy::new(1, Duration::from_secs(10), 5).unwrap()
}

/// The behaviour every limiter follows, on a fresh key at (nearly) one
/// instant. Returns the refusal.
async fn burst_then_refusal(limiter: &RateLimiter) -> RateLimitDecision {
    let started = Instant::now();
    for expected in [4, 3, 2, 1, 0] {
        let d = limiter.check("user:1").await.unwrap();
        assert!(d.allowed && !d.degraded, "{d:?}");
        assert_eq!((d.limit, d.remaining), (5, expected));
        assert!(d.retry_after.is_none());
    }
    let refused = limiter.check("user:1").await.unwrap();
    // The limiter's clock (ours, or the Redis server's) moved at most this
    // far between the first check and the refusal, however slow the
    // machine.
    let moved = started.elapsed();
    assert!(!refused.allowed, "{refused:?}");
    assert_eq!(refused.remaining, 0);
    let retry = refused.retry_after.expect("a refusal says when to retry");
    assert!(
        retry <= Duration::from_secs(10) && retry + moved >= Duration::from_secs(10),
        "{retry:?} after {moved:?}"
    );
    assert!(
        refused.reset_after <= Duration::from_secs(50)
            && refused.reset_after + moved >= Duration::from_secs(50),
        "{:?} after {moved:?}",
        refused.reset_after
    );
    // Keys are independent.
    assert!(limiter.check("user:2").await.unwrap().allowed);
    refused
}

async fn costs(limiter: &RateLimiter) {
    let d = limiter.check_cost("batch", 3).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 2);
    let refused = limiter.check_cost("batch", 3).await.unwrap();
    assert!(
        !refused.allowed,
        "a refused request takes nothing: {refused:?}"
    );
    let d = limiter.check_cost("batch", 2).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    for bad in [0, 6] {
        assert!(matches!(
            limiter.check_cost("batch", bad).await,
            Err(Error::InvalidInput {
                field: Field::Cost,
                ..
            })
        ));
    }
}

async fn redis_limiter(policy: RateLimitPolicy, prefix: &str) -> Option<RateLimiter> {
    let url = common::redis_available().await?;
    let options = RedisLimiterOptions {
        prefix: prefix.to_owned(),
        // What is tested here is the limiting, not the timeout: past the
        // default 100 ms a check is "degraded", and a loaded machine (or
        // the first call, which connects) may take that long.
        timeout: Duration::from_secs(10),
        ..RedisLimiterOptions::default()
    };
    Some(RateLimiter::redis(&url, policy, options).await.unwrap())
}

/// An in-memory limiter on a clock that stands still.
fn memory_limiter(policy: RateLimitPolicy) -> RateLimiter {
    let clock = ManualClock::new("2026-11-25T00:00:00Z".parse().unwrap());
    RateLimiter::in_memory_with_clock(policy, clock)
}

#[tokio::test]
async fn memory_burst_then_refusal() {
    let refused = burst_then_refusal(&memory_limiter(slow())).await;
    // Not a microsecond passed: exactly one interval, and the five.
    assert_eq!(refused.retry_after, Some(Duration::from_secs(10)));
    assert_eq!(refused.reset_after, Duration::from_secs(50));
}

#[tokio::test]
async fn memory_costs() {
    costs(&memory_limiter(slow())).await;
}

#[tokio::test]
async fn redis_burst_then_refusal() {
    let Some(limiter) = redis_limiter(slow(), &prefix()).await else {
        return;
    };
    burst_then_refusal(&limiter).await;
}

#[tokio::test]
async fn redis_costs() {
    let Some(limiter) = redis_limiter(slow(), &prefix()).await else {
        return;
    };
    costs(&limiter).await;
}

#[tokio::test]
async fn memory_sequence_is_exact_with_a_fake_clock() {
    // 10 a second, 5 at once: T = 100 ms.
    let policy = RateLimitPolicy::new(10, Duration::from_secs(1), 5).unwrap();
    let clock = ManualClock::new("2026-11-25T00:00:00Z".parse().unwrap());
    let limiter = RateLimiter::in_memory_with_clock(policy, clock.clone());
    let step = |ms: i64| clock.advance(chrono::Duration::milliseconds(ms));
    let mut admitted = Vec::new();
    // The burst at t = 0, then a request every 50 ms for a second: every
    // other one fits the steady rate.
    for _ in 0..6 {
        admitted.push(limiter.check("k").await.unwrap().allowed);
    }
    assert_eq!(admitted, [true, true, true, true, true, false]);
    let refused = limiter.check("k").await.unwrap();
    assert_eq!(refused.retry_after, Some(Duration::from_millis(100)));
    let mut steady = Vec::new();
    for _ in 0..20 {
        step(50);
        steady.push(limiter.check("k").await.unwrap().allowed);
    }
    assert_eq!(
        steady,
        [false, true].repeat(10),
        "one request per 100 ms after the burst"
    );
    // Idle for the burst's length: all five back.
    step(500);
    let d = limiter.check("k").await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 4);
}

#[tokio::test]
async fn redis_keys_expire_by_themselves_and_are_hashed() {
    let prefix = prefix();
    let Some(limiter) = redis_limiter(slow(), &prefix).await else {
        return;
    };
    let before = Instant::now();
    limiter.check("203.0.113.7").await.unwrap();
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let hex: String = Sha256::digest(b"203.0.113.7")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = format!("{prefix}{hex}");
    assert_eq!(
        keys,
        vec![expected.clone()],
        "one key, named by a hash of the caller's key"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&expected)
        .query_async(&mut conn)
        .await
        .unwrap();
    // One cell used: it expires when the cell is back, 10 s after the
    // check (which ran at most `waited` ago; 1 ms for Redis's rounding).
    let waited = before.elapsed().as_millis() as i64;
    assert!(
        pttl <= 10_000 && pttl + waited + 1 >= 10_000,
        "PTTL {pttl} after {waited} ms"
    );
}

#[tokio::test]
async fn two_redis_limiters_never_admit_more_than_the_policy() {
    // 50 a second, 20 at once, shared by two instances.
    let policy = RateLimitPolicy::new(50, Duration::from_secs(1), 20).unwrap();
    let prefix = prefix();
    let Some(a) = redis_limiter(policy, &prefix).await else {
        return;
    };
    let Some(b) = redis_limiter(policy, &prefix).await else {
        return;
    };
    let admitted = Arc::new(AtomicU64::new(0));
    let checks = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_millis(1_500);
    let started = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (admitted, checks) = (admitted.clone(), checks.clone());
            tokio::spawn(async move {
                while started.elapsed() < run_for {
                    let d = limiter.check("shared").await.unwrap();
                    assert!(!d.degraded, "Redis answered every check");
                    checks.fetch_add(1, Ordering::Relaxed);
                    if d.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let admitted = admitted.load(Ordering::Relaxed);
    let checks = checks.load(Ordering::Relaxed);
    // GCRA's bound over any window of length w: burst + rate × w. The
    // server's clock ran at most as long as ours did around the checks.
    let most = 20 + (50.0 * elapsed.as_secs_f64()).floor() as u64;
    println!("{checks} checks, {admitted} admitted in {elapsed:?} (at most {most})");
    assert!(
        admitted <= most,
        "{admitted} admitted, the policy allows {most}"
    );
    assert!(admitted >= 20, "the burst at least: {admitted}");
    assert!(checks > admitted, "the load was over the limit");
}

#[tokio::test]
async fn an_unreachable_redis_follows_the_failure_mode() {
    // Port 9 on loopback: nothing listens there.
    for (mode, allowed) in [(FailureMode::Open, true), (FailureMode::Closed, false)] {
        let options = RedisLimiterOptions {
            prefix: prefix(),
            timeout: Duration::from_millis(200),
            failure_mode: mode,
        };
        let limiter = RateLimiter::redis("redis://127.0.0.1:9", slow(), options)
            .await
            .unwrap();
        let started = Instant::now();
        let d = limiter.check("k").await.unwrap();
        // A guard against hanging, not a measure of speed (the check gives
        // up after 200 ms; a loaded machine may take longer to get there).
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(d.degraded, "{d:?}");
        assert_eq!(d.allowed, allowed, "{mode:?}");
        assert_eq!(d.retry_after.is_some(), !allowed);
    }
}

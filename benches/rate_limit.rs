//! The cost of one rate-limit check, in memory and on Redis, beside a
//! plain Redis `GET` in the same run.
//!
//! ```text
//! cargo bench --features redis --bench rate_limit
//! ```
//!
//! Redis is `REDIS_URL` or `redis://127.0.0.1:6379`; its parts are skipped,
//! with a line saying so, when it cannot be reached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::Criterion;
use dreamnet_db::{RateLimitPolicy, RateLimiter, RedisLimiterOptions};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // Generous enough that the checks measure the allowed path mostly.
    let policy = RateLimitPolicy::new(1_000_000, Duration::from_secs(1), 1_000_000).unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}")).collect();
    let next = AtomicUsize::new(0);
    let pick = || &keys[next.fetch_add(1, Ordering::Relaxed) % keys.len()];

    let mut g = c.benchmark_group("rate_limit_check");
    let memory = RateLimiter::in_memory(policy);
    g.bench_function("memory", |b| b.to_async(&rt).iter(|| memory.check(pick())));

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let conn = client.get_multiplexed_async_connection().await.ok()?;
        let options = RedisLimiterOptions {
            prefix: "dreamnet:bench:rl:".to_owned(),
            ..Default::default()
        };
        let limiter = RateLimiter::redis(&url, policy, options).await.ok()?;
        Some((conn, limiter))
    });
    match redis {
        None => eprintln!("benches/rate_limit: Redis at {url} unreachable; its parts are skipped"),
        Some((conn, limiter)) => {
            g.bench_function("redis", |b| b.to_async(&rt).iter(|| limiter.check(pick())));
            g.bench_function("plain_redis_get", |b| {
                b.to_async(&rt).iter(|| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("GET")
                            .arg("dreamnet:bench:rl:absent")
                            .query_async::<Option<String>>(&mut conn)
                            .await
                    }
                })
            });
        }
    }
    g.finish();
    c.final_summary();
}

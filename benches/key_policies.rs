//! A full API key verification (a required permission, a credit spent, a
//! per-key rate limit applied) beside what it is built on, in one run:
//!
//! - behind the Redis cache, beside a plain Redis `GET` of the cached
//!   record (and a cached `validate`);
//! - on PostgreSQL alone (rate limit in memory), beside a raw prepared
//!   `SELECT` by hash (and a `validate` on PostgreSQL);
//! - in memory.
//!
//! Then the round trips of each full verification are counted on the wire:
//! Redis commands sent by the store (`MONITOR`) and PostgreSQL
//! transactions in the benchmark's database (`pg_stat_database`). Behind
//! the cache, a verification is one script call and spends its credit in
//! Redis; PostgreSQL sees only the batched write-back.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --features redis,memory --bench key_policies
//! ```
//!
//! `DATABASE_URL` names a server where the benchmark may create (and then
//! drop) a database of its own. Redis is `REDIS_URL`, or
//! `redis://127.0.0.1:6379`; the benchmark writes under a prefix of its own
//! and deletes it when done. Skipped, with a line saying so, without
//! `DATABASE_URL`.

mod common;

use std::time::Duration;

use criterion::Criterion;
use dreamnet_db::{
    KeyCheck, KeyPolicy, NewUser, RateLimitPolicy, RateLimiter, RedisLimiterOptions, Store,
};
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Big enough that no run spends it, or hits the limit.
const CREDITS: i64 = 1_000_000_000_000;

fn policy() -> KeyPolicy {
    KeyPolicy::new()
        .permissions(["billing.read", "billing.write"])
        .credits(CREDITS)
        .rate_limit(
            "default",
            RateLimitPolicy::new(1_000_000, Duration::from_secs(1), 1_000_000).unwrap(),
        )
}

fn check() -> KeyCheck {
    KeyCheck::new()
        .service("bench")
        .require_all(["billing.read"])
}

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "benches/key_policies skipped: set DATABASE_URL to a PostgreSQL server where it may \
             create a database, and have Redis at REDIS_URL or 127.0.0.1:6379, to run it"
        );
        return;
    };
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let name = format!("dreamnet_keybench_{}", Uuid::new_v4().simple());
    let admin = rt.block_on(common::raw(&url));
    rt.block_on(admin.batch_execute(&format!("CREATE DATABASE {name}")))
        .unwrap();
    let db_url = with_database(&url, &name);
    let prefix = format!("dreamnet-bench:{}:", Uuid::new_v4().simple());
    run(&rt, &db_url, &redis_url, &prefix);
    rt.block_on(drop_prefix(&redis_url, &prefix));
    rt.block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .unwrap();
}

/// `url` with its database replaced by `db` (and TLS off, as the other
/// benchmarks connect).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let head = match base.rfind('/') {
        Some(i) if base[..i].contains("://") && i > base.find("://").unwrap() + 2 => &base[..i],
        _ => base,
    };
    let mut out = format!("{head}/{db}");
    if !query.contains("sslmode=") {
        out.push_str("?sslmode=disable");
        if !query.is_empty() {
            out.push('&');
            out.push_str(query);
        }
    } else {
        out.push('?');
        out.push_str(query);
    }
    out
}

async fn redis_limiter(redis_url: &str, prefix: &str) -> RateLimiter {
    RateLimiter::redis(
        redis_url,
        RateLimitPolicy::per_second(1).unwrap(),
        RedisLimiterOptions {
            prefix: format!("{prefix}rl:"),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

fn run(rt: &Runtime, db_url: &str, redis_url: &str, prefix: &str) {
    let (cached, plain, memory, redis, secret, memory_secret, record_key, hash) =
        rt.block_on(async {
            let cached = Store::builder()
                .database_url(db_url)
                .run_migrations(true)
                .max_connections(2)
                .redis_url(redis_url)
                .cache_prefix(prefix)
                .key_rate_limiter(redis_limiter(redis_url, prefix).await)
                .connect()
                .await
                .expect("connect with Redis");
            let plain = Store::builder()
                .database_url(db_url)
                .max_connections(2)
                .connect()
                .await
                .expect("connect");
            let user = cached
                .users()
                .create(NewUser::with_email("bench@example.com".parse().unwrap()))
                .await
                .unwrap();
            let issued = cached
                .api_keys()
                .issue_with(user.id, "bench", None, policy())
                .await
                .unwrap();
            let secret = issued.secret.expose_secret().to_owned();
            for _ in 0..3 {
                assert!(
                    cached
                        .api_keys()
                        .verify(&secret, &check())
                        .await
                        .unwrap()
                        .is_valid()
                );
            }
            let memory = Store::in_memory();
            let mu = memory
                .users()
                .create(NewUser::with_email("bench@example.com".parse().unwrap()))
                .await
                .unwrap();
            let memory_secret = memory
                .api_keys()
                .issue_with(mu.id, "bench", None, policy())
                .await
                .unwrap()
                .secret
                .expose_secret()
                .to_owned();
            let redis = redis::Client::open(redis_url)
                .unwrap()
                .get_connection_manager()
                .await
                .expect("redis");
            let record_key = format!("{prefix}kr:{}", issued.key.id.simple());
            (
                cached,
                plain,
                memory,
                redis,
                secret,
                memory_secret,
                record_key,
                issued.secret.hash(),
            )
        });
    let raw = rt.block_on(common::raw(db_url));
    let by_hash = rt
        .block_on(raw.prepare(
            "SELECT id, user_id, service, key_prefix, created_at, last_used, expires_at, \
             revoked_at FROM api_keys WHERE hashed_key = $1",
        ))
        .unwrap();

    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut g = c.benchmark_group("key_policies");
    g.bench_function("redis_get_plain", |b| {
        b.to_async(rt).iter(|| {
            let mut redis = redis.clone();
            let record_key = record_key.clone();
            async move {
                let v: Option<String> = redis::cmd("GET")
                    .arg(&record_key)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                v.expect("the key is cached")
            }
        })
    });
    g.bench_function("verify_full_cached", |b| {
        b.to_async(rt).iter(|| async {
            let v = cached.api_keys().verify(&secret, &check()).await.unwrap();
            assert!(v.is_valid());
            v
        })
    });
    g.bench_function("validate_cached", |b| {
        b.to_async(rt)
            .iter(|| async { cached.api_keys().validate(&secret).await.unwrap() })
    });
    g.bench_function("raw_select_by_hash", |b| {
        b.to_async(rt).iter(|| async {
            let row = raw.query_one(&by_hash, &[&hash]).await.unwrap();
            row.get::<_, Uuid>(0)
        })
    });
    g.bench_function("verify_full_postgres_only", |b| {
        b.to_async(rt).iter(|| async {
            let v = plain.api_keys().verify(&secret, &check()).await.unwrap();
            assert!(v.is_valid());
            v
        })
    });
    g.bench_function("validate_postgres_only", |b| {
        b.to_async(rt)
            .iter(|| async { plain.api_keys().validate(&secret).await.unwrap() })
    });
    g.bench_function("verify_full_memory", |b| {
        b.to_async(rt).iter(|| async {
            let v = memory
                .api_keys()
                .verify(&memory_secret, &check())
                .await
                .unwrap();
            assert!(v.is_valid());
            v
        })
    });
    g.finish();
    c.final_summary();
    rt.block_on(round_trips(
        &cached, &plain, &secret, redis_url, prefix, db_url,
    ));
    rt.block_on(async {
        for s in [&cached, &plain, &memory] {
            s.shutdown().await.unwrap();
        }
    });
    println!("cache: {:?}", cached.cache_stats().unwrap());
}

/// Verifications counted on the wire: Redis commands sent by clients
/// (`MONITOR`, leaving out the commands scripts run) that name the
/// benchmark's prefix, and PostgreSQL transactions in the benchmark's own
/// database (`pg_stat_database`, which includes the batched usage
/// flushes), each per verification, over `N` verifications in a row.
async fn round_trips(
    cached: &Store,
    plain: &Store,
    secret: &str,
    redis_url: &str,
    prefix: &str,
    db_url: &str,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    const N: usize = 500;
    let pg = common::raw(db_url).await;
    let xacts = || async {
        // An idle backend reports its counts within PostgreSQL's idle
        // statistics interval (10 s).
        tokio::time::sleep(Duration::from_secs(11)).await;
        let _ = pg.query("SELECT pg_stat_clear_snapshot()", &[]).await;
        pg.query_one(
            "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
             WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let addr = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    for (label, store) in [("Redis-cached", cached), ("PostgreSQL only", plain)] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(stream).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
        let before = xacts().await;
        for _ in 0..N {
            assert!(
                store
                    .api_keys()
                    .verify(secret, &check())
                    .await
                    .unwrap()
                    .is_valid()
            );
        }
        store.api_keys().flush_usage().await.unwrap();
        let after = xacts().await;
        let mut sent = 0usize;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        {
            if !line.contains(" lua] ") && line.contains(prefix) {
                sent += 1;
            }
        }
        // The two `xacts` queries are this function's own.
        let statements = (after - before - 2).max(0) as f64;
        println!(
            "round trips per full verification, {label}: Redis {:.3}, PostgreSQL {:.3} \
             (over {N}, the usage flush included)",
            sent as f64 / N as f64,
            statements / N as f64,
        );
    }
}

async fn drop_prefix(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
}

//! The Redis cache under a skewed (Zipf) read workload over 100,000 users
//! and their API keys: the hit ratio it reaches, and the latency of a cached
//! user read and a cached key validation beside a plain Redis `GET` (and the
//! same reads without the cache), in one run. Latency is measured twice:
//! percentiles with the five reads taken in turn (so they share the
//! machine's load), then criterion, one read after the other.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/dreamnet_bench cargo bench --features redis --bench cache
//! ```
//!
//! With `--features local-cache`, the same run adds the process-local tier:
//! its hit ratio on the same Zipf workload with the tier sized at 1 %,
//! 10 % and 100 % of the keys, and its hot user read and key validation in
//! the interleaved latency table, beside the Redis-cached path and a plain
//! Redis `GET`.
//!
//! `DATABASE_URL` must name a database the benchmark may fill: it is
//! migrated and seeded (once) with 100,000 users and one API key each
//! (`cachebench-*` emails, service `cachebench`). Redis is `REDIS_URL`, or
//! `redis://127.0.0.1:6379`; the benchmark writes under a prefix of its own
//! and deletes it when done. Skipped, with a line saying so, without
//! `DATABASE_URL`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw;
use criterion::Criterion;
use dreamnet_db::{CacheStats, KeyCheck, RateLimitPolicy, RateLimiter, RedisLimiterOptions, Store};
use tokio::runtime::Runtime;
use uuid::Uuid;

const USERS: usize = 100_000;
/// The Zipf exponent: 1.0 is the classic "a few are very hot, most are
/// cold" of user traffic.
const ZIPF_S: f64 = 1.0;
/// Reads per phase of the hit-ratio run.
const READS: usize = 200_000;
/// Concurrent tasks issuing them, as a busy service's handlers would.
const TASKS: usize = 16;

struct Data {
    url: String,
    redis_url: String,
    users: Vec<Uuid>,
    keys: Vec<String>,
}

async fn seed(url: &str) -> (Vec<Uuid>, Vec<String>) {
    let seeded = common::users_and_keys(url, "cachebench", USERS).await;
    (seeded.users, seeded.keys)
}

/// xorshift64*: a small, seeded, reproducible random source.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Draws ranks 0..n with probability proportional to 1 / (rank + 1)^s.
struct Zipf {
    cdf: Arc<Vec<f64>>,
    rng: Rng,
}

impl Zipf {
    fn cdf(n: usize, s: f64) -> Arc<Vec<f64>> {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Arc::new(cdf)
    }

    fn next(&mut self) -> usize {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// A fixed shuffle of 0..n, so rank (hotness) is unrelated to seeding
/// order.
fn permutation(n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

fn main() {
    let Ok(mut url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "benches/cache skipped: set DATABASE_URL to a PostgreSQL database it may fill \
             (100,000 users and keys), and have Redis at REDIS_URL or 127.0.0.1:6379, to run it"
        );
        return;
    };
    if !url.contains("sslmode=") {
        url.push_str(if url.contains('?') {
            "&sslmode=disable"
        } else {
            "?sslmode=disable"
        });
    }
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (users, keys) = rt.block_on(seed(&url));
    let data = Data {
        url,
        redis_url,
        users,
        keys,
    };
    let prefix = format!("dreamnet-bench:{}:", Uuid::new_v4().simple());
    let cached = rt
        .block_on(
            Store::builder()
                .database_url(data.url.clone())
                .max_connections(TASKS as u32)
                .redis_url(data.redis_url.clone())
                .cache_prefix(prefix.clone())
                .key_rate_limiter(
                    rt.block_on(RateLimiter::redis(
                        &data.redis_url,
                        RateLimitPolicy::per_second(1).unwrap(),
                        RedisLimiterOptions {
                            prefix: format!("{prefix}rl:"),
                            ..Default::default()
                        },
                    ))
                    .expect("a Redis limiter"),
                )
                .connect(),
        )
        .expect("connect with Redis");

    hit_ratio(&rt, &data, &cached);
    #[cfg(feature = "local-cache")]
    let tiered = Some(local::hit_ratios(&rt, &data, &prefix));
    #[cfg(not(feature = "local-cache"))]
    let tiered: Option<Store> = None;

    let mut c = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    latency(&mut c, &rt, &data, &cached, tiered.as_ref(), &prefix);
    c.final_summary();
    rt.block_on(drop_prefix(&data.redis_url, &prefix));
}

fn delta(after: CacheStats, before: CacheStats) -> (u64, u64, u64) {
    (
        after.hits - before.hits,
        after.misses - before.misses,
        after.bypassed - before.bypassed,
    )
}

/// Runs `READS` Zipf-distributed reads on `TASKS` tasks; prints the hit
/// ratio and throughput of the phase.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    User,
    Validate,
    /// `verify` with a required permission, a credit spent and a per-key
    /// rate limit (on Redis).
    Verify,
}

fn phase(rt: &Runtime, store: &Store, data: &Data, what: &str, read: Read, seed: u64) {
    let order = Arc::new(permutation(USERS));
    let cdf = Zipf::cdf(USERS, ZIPF_S);
    let users = Arc::new(data.users.clone());
    let secrets = Arc::new(data.keys.clone());
    let before = store.cache_stats().unwrap();
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (store, order, users, secrets) =
                    (store.clone(), order.clone(), users.clone(), secrets.clone());
                let mut zipf = Zipf {
                    cdf: cdf.clone(),
                    rng: Rng((seed << 8) + t as u64 + 1),
                };
                tokio::spawn(async move {
                    for _ in 0..READS / TASKS {
                        let i = order[zipf.next()];
                        match read {
                            Read::Validate => {
                                store.api_keys().validate(&secrets[i]).await.unwrap();
                            }
                            Read::Verify => {
                                let check = KeyCheck::new().require_all(["bench.read"]);
                                let v = store.api_keys().verify(&secrets[i], &check).await.unwrap();
                                assert!(v.is_valid(), "{v:?}");
                            }
                            Read::User => {
                                store.users().get(users[i]).await.unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    let after = store.cache_stats().unwrap();
    let (hits, misses, bypassed) = delta(after, before);
    let local = after.local_hits - before.local_hits;
    let redis_reads = hits + misses + bypassed;
    let reads = redis_reads + local;
    let local = if local > 0 {
        format!(", {local} from the local tier first")
    } else {
        String::new()
    };
    println!(
        "{what:<34} {reads} reads in {elapsed:.1?} ({:.0}/s){local}: Redis hits {hits}, misses {misses}, \
         bypassed {bypassed}, Redis hit ratio {:.1} %",
        reads as f64 / elapsed.as_secs_f64(),
        100.0 * hits as f64 / redis_reads.max(1) as f64
    );
}

fn hit_ratio(rt: &Runtime, data: &Data, store: &Store) {
    println!(
        "\nhit ratio: Zipf s = {ZIPF_S} over {USERS} users, {READS} reads per phase on {TASKS} tasks, \
         starting from an empty cache"
    );
    // Every key gets a policy for the verify phases (a permission, credits
    // no run spends, a rate limit no run reaches), and `last_used` is
    // cleared, so the validate phases write it (batched) as a fresh
    // service's would.
    let client = rt.block_on(raw(&data.url));
    rt.block_on(client.batch_execute(
        "UPDATE api_keys SET last_used = NULL WHERE service = 'cachebench'; \
         INSERT INTO api_key_policies (key_id, permissions, credits, rate_limits) \
         SELECT id, '{bench.read}', 1000000000000, \
                '[{\"name\": \"default\", \"emission_us\": 1, \"burst\": 1000000}]' \
           FROM api_keys WHERE service = 'cachebench' \
         ON CONFLICT (key_id) DO UPDATE SET credits = EXCLUDED.credits",
    ))
    .unwrap();
    phase(rt, store, data, "users.get, cold start", Read::User, 1);
    phase(rt, store, data, "users.get, warm", Read::User, 1_000);
    phase(
        rt,
        store,
        data,
        "api_keys.validate, cold start",
        Read::Validate,
        2,
    );
    phase(
        rt,
        store,
        data,
        "api_keys.validate, warm",
        Read::Validate,
        2_000,
    );
    phase(
        rt,
        store,
        data,
        "api_keys.verify (full), warm",
        Read::Verify,
        3_000,
    );
    phase(rt, store, data, "users.get, warm again", Read::User, 4_000);
    rt.block_on(store.shutdown()).unwrap();
    let total = store.cache_stats().unwrap();
    println!(
        "all phases: hit ratio {:.1} %, {total:?}\n",
        100.0 * total.hit_ratio().unwrap_or(0.0)
    );
}

fn latency(
    c: &mut Criterion,
    rt: &Runtime,
    data: &Data,
    cached: &Store,
    tiered: Option<&Store>,
    prefix: &str,
) {
    // The hottest user and key: cached after the phases above.
    let hot = permutation(USERS)[0];
    let (user, key) = (data.users[hot], data.keys[hot].clone());
    rt.block_on(async {
        cached.users().get(user).await.unwrap();
        for _ in 0..3 {
            cached.api_keys().validate(&key).await.unwrap();
        }
        if let Some(tiered) = tiered {
            for _ in 0..3 {
                tiered.users().get(user).await.unwrap();
                tiered.api_keys().validate(&key).await.unwrap();
            }
        }
    });
    let plain = rt
        .block_on(
            Store::builder()
                .database_url(data.url.clone())
                .max_connections(1)
                .connect(),
        )
        .expect("connect");
    let redis = rt
        .block_on(
            redis::Client::open(data.redis_url.as_str())
                .unwrap()
                .get_connection_manager(),
        )
        .expect("redis");
    let record_key = format!("{prefix}u:{}", user.simple());

    interleaved(rt, cached, tiered, &plain, &redis, user, &key, &record_key);

    let mut g = c.benchmark_group("cache");
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
                v.expect("the hot user is cached")
            }
        })
    });
    g.bench_function("users_get_cached", |b| {
        b.to_async(rt)
            .iter(|| async { cached.users().get(user).await.unwrap() })
    });
    g.bench_function("api_keys_validate_cached", |b| {
        b.to_async(rt)
            .iter(|| async { cached.api_keys().validate(&key).await.unwrap() })
    });
    if let Some(tiered) = tiered {
        g.bench_function("users_get_local_tier", |b| {
            b.to_async(rt)
                .iter(|| async { tiered.users().get(user).await.unwrap() })
        });
        g.bench_function("api_keys_validate_local_tier", |b| {
            b.to_async(rt)
                .iter(|| async { tiered.api_keys().validate(&key).await.unwrap() })
        });
    }
    g.bench_function("users_get_postgres_only", |b| {
        b.to_async(rt)
            .iter(|| async { plain.users().get(user).await.unwrap() })
    });
    g.bench_function("api_keys_validate_postgres_only", |b| {
        b.to_async(rt)
            .iter(|| async { plain.api_keys().validate(&key).await.unwrap() })
    });
    g.finish();
    let s = cached.cache_stats().unwrap();
    println!("cache after the latency runs: {s:?}");
}

/// The same five reads taken in turn, round after round, so that all see
/// the same machine load: percentiles per read.
#[allow(clippy::too_many_arguments)]
fn interleaved(
    rt: &Runtime,
    cached: &Store,
    tiered: Option<&Store>,
    plain: &Store,
    redis: &redis::aio::ConnectionManager,
    user: Uuid,
    key: &str,
    record_key: &str,
) {
    const ROUNDS: usize = 20_000;
    let mut names = vec![
        "redis GET (plain)",
        "users.get, cached",
        "api_keys.validate, cached",
        "users.get, PostgreSQL only",
        "api_keys.validate, PostgreSQL only",
    ];
    if tiered.is_some() {
        names.push("users.get, local tier");
        names.push("api_keys.validate, local tier");
    }
    let mut hists: Vec<hdrhistogram::Histogram<u64>> = names
        .iter()
        .map(|_| hdrhistogram::Histogram::new(3).unwrap())
        .collect();
    let before = cached.cache_stats().unwrap();
    rt.block_on(async {
        let mut redis = redis.clone();
        for _ in 0..ROUNDS {
            for (i, hist) in hists.iter_mut().enumerate() {
                let start = Instant::now();
                match i {
                    0 => {
                        let v: Option<String> = redis::cmd("GET")
                            .arg(record_key)
                            .query_async(&mut redis)
                            .await
                            .unwrap();
                        assert!(v.is_some(), "the hot user is cached");
                    }
                    1 => drop(cached.users().get(user).await.unwrap()),
                    2 => drop(cached.api_keys().validate(key).await.unwrap()),
                    3 => drop(plain.users().get(user).await.unwrap()),
                    4 => drop(plain.api_keys().validate(key).await.unwrap()),
                    5 => drop(tiered.unwrap().users().get(user).await.unwrap()),
                    _ => drop(tiered.unwrap().api_keys().validate(key).await.unwrap()),
                }
                hist.record(start.elapsed().as_nanos() as u64).unwrap();
            }
        }
    });
    let after = cached.cache_stats().unwrap();
    if let Some(tiered) = tiered {
        let t = tiered.cache_stats().unwrap();
        println!(
            "\nlocal tier during the latency rounds: {} hits, {} misses",
            t.local_hits, t.local_misses
        );
    }
    println!(
        "\nlatency, {ROUNDS} rounds of the reads in turn on one task (µs; cached reads: \
         {} hits, {} misses):",
        after.hits - before.hits,
        after.misses - before.misses
    );
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>8}",
        "", "p50", "p90", "p99", "mean"
    );
    for (name, h) in names.iter().zip(&hists) {
        let us = |ns: u64| ns as f64 / 1000.0;
        println!(
            "{name:<36} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.9)),
            us(h.value_at_quantile(0.99)),
            h.mean() / 1000.0
        );
    }
    println!();
}

/// Deletes everything the benchmark wrote to Redis.
async fn drop_prefix(redis_url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor = 0u64;
    loop {
        let Ok((next, found)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        else {
            return;
        };
        if !found.is_empty() {
            let _: Result<i64, _> = redis::cmd("UNLINK").arg(found).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// The process-local tier on the same workload.
#[cfg(feature = "local-cache")]
mod local {
    use super::*;

    /// Runs the Zipf phases (users, then keys; each cold, then warm) on a
    /// store whose local tier holds 1 %, 10 % and 100 % of the keys, in
    /// front of the Redis cache the earlier phases warmed; prints the local
    /// hit ratio of the warm phases. Returns the 100 % store.
    pub(super) fn hit_ratios(rt: &Runtime, data: &Data, prefix: &str) -> Store {
        println!(
            "local tier hit ratio: the same Zipf phases, tier sized at a share of the {USERS} keys \
             (users and keys each)"
        );
        let mut last = None;
        for share in [1u64, 10, 100] {
            let entries = USERS as u64 * share / 100;
            let store = rt
                .block_on(
                    Store::builder()
                        .database_url(data.url.clone())
                        .max_connections(TASKS as u32)
                        .redis_url(data.redis_url.clone())
                        .cache_prefix(prefix.to_owned())
                        .local_cache(entries)
                        .connect(),
                )
                .expect("connect with Redis");
            rt.block_on(async {
                while !store.cache_stats().unwrap().local_serving {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            for (what, keys, seed) in [
                ("users.get", Read::User, 1_000u64),
                ("api_keys.validate", Read::Validate, 2_000),
            ] {
                phase(
                    rt,
                    &store,
                    data,
                    &format!("{what}, tier {share} %, cold"),
                    keys,
                    seed + 7,
                );
                let before = store.cache_stats().unwrap();
                phase(
                    rt,
                    &store,
                    data,
                    &format!("{what}, tier {share} %, warm"),
                    keys,
                    seed + 8,
                );
                let after = store.cache_stats().unwrap();
                let hits = after.local_hits - before.local_hits;
                let misses = after.local_misses - before.local_misses;
                println!(
                    "  -> tier {share:>3} % ({entries} entries), {what:<18} warm local hit ratio {:.1} % \
                     ({hits} local hits, {misses} local misses, {} held)",
                    100.0 * hits as f64 / (hits + misses).max(1) as f64,
                    after.local_entries
                );
            }
            last = Some(store);
        }
        println!();
        last.expect("three sizes")
    }
}

//! The cost of one rate-limit check and of one session load, on every
//! backend, beside a plain Redis `GET` (and, for PostgreSQL sessions, a
//! raw `tokio-postgres` select of the same row) in the same run.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/dreamnet_bench \
//!   cargo bench --features redis --bench limits_sessions
//! ```
//!
//! Redis is `REDIS_URL` or `redis://127.0.0.1:6379`; PostgreSQL sessions
//! need `DATABASE_URL` (the database is migrated; 10,000 sessions are
//! added to its `sessions` table). Parts whose server is unreachable or
//! unset are skipped, with a line saying so.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::Criterion;
use dreamnet_db::{
    NewSession, RateLimitPolicy, RateLimiter, RedisLimiterOptions, RedisSessionOptions, SessionId,
    Sessions, Store,
};
use serde_json::json;
use tokio::runtime::Runtime;

const SESSIONS: usize = 10_000;

struct Picker<'a, T> {
    items: &'a [T],
    next: AtomicUsize,
}

impl<'a, T> Picker<'a, T> {
    fn new(items: &'a [T]) -> Self {
        Picker {
            items,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &'a T {
        &self.items[self.next.fetch_add(1, Ordering::Relaxed) % self.items.len()]
    }
}

/// `SESSIONS` sessions of the size a logged-in web session has.
fn fill(rt: &Runtime, sessions: &Sessions) -> Vec<SessionId> {
    rt.block_on(async {
        let mut ids = Vec::with_capacity(SESSIONS);
        for i in 0..SESSIONS {
            let new = NewSession::new(Duration::from_secs(3600))
                .user(uuid::Uuid::now_v7())
                .data(json!({"csrf": format!("{i:032x}"), "cart": [1, 2, 3], "theme": "dark"}));
            ids.push(sessions.create(new).await.expect("create a session").id);
        }
        ids
    })
}

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

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let redis_conn = rt.block_on(async {
        let client = redis::Client::open(url.as_str()).ok()?;
        client.get_multiplexed_async_connection().await.ok()
    });
    if redis_conn.is_none() {
        eprintln!("benches/limits_sessions: Redis at {url} unreachable; its parts are skipped");
    }
    let plain_get = |g: &mut criterion::BenchmarkGroup<'_, _>| {
        if let Some(conn) = &redis_conn {
            g.bench_function("plain_redis_get", |b| {
                b.to_async(&rt).iter(|| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("GET")
                            .arg("dreamnet:bench:absent")
                            .query_async::<Option<String>>(&mut conn)
                            .await
                    }
                })
            });
        }
    };

    // Rate limiting. Generous enough that the checks measure the allowed
    // path mostly.
    let policy = RateLimitPolicy::new(1_000_000, Duration::from_secs(1), 1_000_000).unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}")).collect();
    let keys = Picker::new(&keys);
    let mut g = c.benchmark_group("rate_limit_check");
    let memory = RateLimiter::in_memory(policy);
    g.bench_function("memory", |b| {
        b.to_async(&rt).iter(|| memory.check(keys.pick()))
    });
    if redis_conn.is_some() {
        let options = RedisLimiterOptions {
            prefix: "dreamnet:bench:rl:".to_owned(),
            ..Default::default()
        };
        let limiter = rt
            .block_on(RateLimiter::redis(&url, policy, options))
            .expect("a Redis limiter");
        g.bench_function("redis", |b| {
            b.to_async(&rt).iter(|| limiter.check(keys.pick()))
        });
    }
    plain_get(&mut g);
    g.finish();

    // Sessions: every backend, filled the same way.
    let mut backends: Vec<(&str, Sessions)> = vec![("memory", Sessions::in_memory())];
    if redis_conn.is_some() {
        let options = RedisSessionOptions {
            prefix: "dreamnet:bench:sess:".to_owned(),
            ..Default::default()
        };
        let redis = rt
            .block_on(Sessions::redis(&url, options))
            .expect("Redis sessions");
        backends.push(("redis", redis));
    }
    let db = match std::env::var("DATABASE_URL") {
        Err(_) => {
            eprintln!(
                "benches/limits_sessions: DATABASE_URL is not set; PostgreSQL sessions are skipped"
            );
            None
        }
        Ok(db) if db.contains("sslmode=") => Some(db),
        Ok(db) if db.contains('?') => Some(format!("{db}&sslmode=disable")),
        Ok(db) => Some(format!("{db}?sslmode=disable")),
    };
    if let Some(db) = &db {
        let store = rt.block_on(async {
            Store::builder()
                .database_url(db.clone())
                .max_connections(4)
                .run_migrations(true)
                .connect()
                .await
                .expect("connect to DATABASE_URL")
        });
        backends.push((
            "postgres",
            Sessions::postgres(&store).expect("a PostgreSQL store"),
        ));
    }
    let filled: Vec<(&str, Sessions, Vec<SessionId>)> = backends
        .into_iter()
        .map(|(name, sessions)| {
            let ids = fill(&rt, &sessions);
            (name, sessions, ids)
        })
        .collect();

    let mut g = c.benchmark_group("session_load");
    for (name, sessions, ids) in &filled {
        let picker = Picker::new(ids);
        g.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| sessions.load(picker.pick()))
        });
    }
    if let Some(db) = &db {
        // The same row by a hand-written prepared select.
        let client = rt.block_on(common::raw(db));
        let stmt = rt
            .block_on(client.prepare(
                "SELECT user_id, data, created_at, expires_at FROM sessions \
                 WHERE id = $1 AND expires_at > now()",
            ))
            .unwrap();
        let (_, _, ids) = filled.last().expect("postgres is last");
        let hashes: Vec<String> = ids
            .iter()
            .map(|id| {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(id.expose_secret().as_bytes());
                digest.iter().map(|b| format!("{b:02x}")).collect()
            })
            .collect();
        let hashes = Picker::new(&hashes);
        g.bench_function("postgres_raw_select", |b| {
            b.to_async(&rt).iter(|| async {
                client
                    .query_opt(&stmt, &[hashes.pick()])
                    .await
                    .unwrap()
                    .expect("live")
            })
        });
    }
    plain_get(&mut g);
    g.finish();

    // Extending on activity: a write on every backend.
    let mut g = c.benchmark_group("session_extend");
    for (name, sessions, ids) in &filled {
        let picker = Picker::new(ids);
        g.bench_function(*name, |b| {
            b.to_async(&rt)
                .iter(|| sessions.extend(picker.pick(), Duration::from_secs(3600)))
        });
    }
    g.finish();

    rt.block_on(async {
        for (_, sessions, ids) in &filled {
            for id in ids {
                sessions.delete(id).await.unwrap();
            }
        }
    });
    c.final_summary();
}

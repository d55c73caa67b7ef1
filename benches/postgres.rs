//! The store against a hand-written `tokio-postgres` program (the raw
//! limit) and against `sqlx` (the usual alternative data layer in Rust), on
//! the same data, in the same run.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/dreamnet_bench cargo bench --bench postgres
//! ```
//!
//! `DATABASE_URL` must name a database the benchmark may fill: it is
//! migrated and seeded (once) with 100,000 users, 100,000 API keys and
//! 1,000,000 events. Both sides connect without TLS (`sslmode=disable` is
//! added unless the URL sets `sslmode`), so they pay the same. The `sqlx`
//! side uses its pool and its default statement cache (prepared once per
//! connection, as the store and the raw side do), rows read with
//! `Row::get`, and the 10,000-event batch as one `INSERT … SELECT FROM
//! UNNEST` of arrays, the idiom for bulk inserts in `sqlx`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::raw;
use criterion::{BenchmarkId, Criterion, Throughput};
use dreamnet_db::{ApiKeySecret, EventFilter, EventType, NewEvent, Store, TimeBucket, TimeRange};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

const USERS: usize = 100_000;
const EVENTS: usize = 1_000_000;
const EVENT_TYPES: [&str; 10] = [
    "user.login",
    "user.logout",
    "page.view",
    "api.call",
    "payment.settled",
    "payment.failed",
    "agent.run",
    "agent.error",
    "media.upload",
    "system.tick",
];

struct Data {
    url: String,
    users: Vec<Uuid>,
    keys: Vec<String>,
}

/// A binary `COPY` into `events`, columns `id, user_id, event_type,
/// payload, created_at`.
async fn copy_events(client: &Client) -> BinaryCopyInWriter {
    let sink = client
        .copy_in("COPY events (id, user_id, event_type, payload, created_at) FROM STDIN BINARY")
        .await
        .unwrap();
    BinaryCopyInWriter::new(
        sink,
        &[
            Type::UUID,
            Type::UUID,
            Type::VARCHAR,
            Type::JSONB,
            Type::TIMESTAMPTZ,
        ],
    )
}

/// Seeds (once) the users and keys, then the events, which the users'
/// reseeding removed.
async fn seed(url: &str) -> Data {
    let seeded = common::users_and_keys(url, "bench", USERS).await;
    if seeded.fresh {
        println!("seeding {EVENTS} events (once)…");
        let started = Instant::now();
        let client = raw(url).await;
        let now = Utc::now();
        let w = copy_events(&client).await;
        tokio::pin!(w);
        for i in 0..EVENTS {
            // Spread over 30 days, ten types, twenty countries.
            let at = now - chrono::Duration::seconds((i as i64 * 2_592_000) / EVENTS as i64);
            let payload = json!({"n": i % 1000, "country": format!("C{}", i % 20)});
            let row: [&(dyn ToSql + Sync); 5] = [
                &Uuid::now_v7(),
                &seeded.users[i % USERS],
                &EVENT_TYPES[i % 10],
                &payload,
                &at,
            ];
            w.as_mut().write(&row).await.unwrap();
        }
        w.finish().await.unwrap();
        // As autovacuum would: statistics, visibility map, GIN pending list.
        for table in ["users", "api_keys", "events"] {
            client
                .batch_execute(&format!("VACUUM ANALYZE {table}"))
                .await
                .unwrap();
        }
        println!("seeded events in {:.1?}", started.elapsed());
    }
    Data {
        url: url.to_owned(),
        users: seeded.users,
        keys: seeded.keys,
    }
}

/// A cycling index into the seeded data, so each iteration reads another row.
struct Picker(AtomicUsize);

impl Picker {
    fn next(&self, len: usize) -> usize {
        // A large odd stride walks every row in a scattered order.
        (self.0.fetch_add(7_919, Ordering::Relaxed)) % len
    }
}

const USER_SQL: &str = "SELECT id, email, wallet_address, passport_tier, created_at, updated_at, metadata, preferences FROM users WHERE id = $1";
const KEY_SQL: &str = "SELECT id, user_id, service, key_prefix, created_at, last_used, expires_at, revoked_at FROM api_keys WHERE hashed_key = $1";

#[allow(dead_code)]
struct RawUser {
    id: Uuid,
    email: Option<String>,
    wallet: Option<String>,
    tier: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    metadata: Value,
    preferences: Value,
}

fn raw_user(r: &tokio_postgres::Row) -> RawUser {
    RawUser {
        id: r.get(0),
        email: r.get(1),
        wallet: r.get(2),
        tier: r.get(3),
        created_at: r.get(4),
        updated_at: r.get(5),
        metadata: r.get(6),
        preferences: r.get(7),
    }
}

fn main() {
    let Ok(mut url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "benches/postgres skipped: set DATABASE_URL to a PostgreSQL database it may fill \
             (100,000 users and keys, 1,000,000 events) to run it"
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = rt.block_on(seed(&url));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    point_reads(&mut c, &rt, &data);
    concurrent_reads(&mut c, &rt, &data);
    key_validation(&mut c, &rt, &data);
    event_writes(&mut c, &rt, &data);
    event_queries(&mut c, &rt, &data);
    c.final_summary();
}

fn sqlx_pool(rt: &Runtime, data: &Data, pool: u32) -> sqlx::PgPool {
    rt.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(pool)
            .min_connections(pool)
            .connect(&data.url),
    )
    .expect("sqlx connects")
}

fn sqlx_user(r: &sqlx::postgres::PgRow) -> RawUser {
    use sqlx::Row;
    RawUser {
        id: r.get(0),
        email: r.get(1),
        wallet: r.get(2),
        tier: r.get(3),
        created_at: r.get(4),
        updated_at: r.get(5),
        metadata: r.get(6),
        preferences: r.get(7),
    }
}

fn store(rt: &Runtime, data: &Data, pool: u32) -> Store {
    rt.block_on(
        Store::builder()
            .database_url(data.url.clone())
            .max_connections(pool)
            .min_idle(Some(pool))
            .connect(),
    )
    .expect("connect")
}

fn point_reads(c: &mut Criterion, rt: &Runtime, data: &Data) {
    let store = store(rt, data, 1);
    let client = rt.block_on(raw(&data.url));
    let stmt = rt.block_on(client.prepare(USER_SQL)).unwrap();
    let mut g = c.benchmark_group("get_user");
    let pick = Picker(AtomicUsize::new(0));
    g.bench_function("store", |b| {
        b.to_async(rt).iter(|| async {
            let id = data.users[pick.next(USERS)];
            store.users().get(id).await.unwrap()
        })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(rt).iter(|| async {
            let id = data.users[pick.next(USERS)];
            raw_user(&client.query_one(&stmt, &[&id]).await.unwrap())
        })
    });
    let pool = sqlx_pool(rt, data, 1);
    g.bench_function("sqlx", |b| {
        b.to_async(rt).iter(|| async {
            let id = data.users[pick.next(USERS)];
            sqlx_user(
                &sqlx::query(USER_SQL)
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap(),
            )
        })
    });
    g.finish();
}

/// Runs `per_task` reads on each of 8 tasks and returns the wall time.
fn concurrent_reads(c: &mut Criterion, rt: &Runtime, data: &Data) {
    const TASKS: usize = 8;
    let store = store(rt, data, TASKS as u32);
    let clients: Vec<_> = (0..TASKS)
        .map(|_| Arc::new(rt.block_on(raw(&data.url))))
        .collect();
    let stmts: Vec<_> = clients
        .iter()
        .map(|c| rt.block_on(c.prepare(USER_SQL)).unwrap())
        .collect();
    let users = Arc::new(data.users.clone());
    let mut g = c.benchmark_group("get_user_8_tasks");
    g.throughput(Throughput::Elements(1));
    g.bench_function("store", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (store, users) = (store.clone(), users.clone());
            async move {
                let per_task = (iters as usize).div_ceil(TASKS);
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let (store, users) = (store.clone(), users.clone());
                        tokio::spawn(async move {
                            for i in 0..per_task {
                                let id = users[(t * 12_289 + i * 7_919) % USERS];
                                store.users().get(id).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let users = users.clone();
            let work: Vec<_> = clients.iter().cloned().zip(stmts.iter().cloned()).collect();
            async move {
                let per_task = (iters as usize).div_ceil(TASKS);
                let start = Instant::now();
                let tasks: Vec<_> = work
                    .into_iter()
                    .enumerate()
                    .map(|(t, (client, stmt))| {
                        let users = users.clone();
                        tokio::spawn(async move {
                            for i in 0..per_task {
                                let id = users[(t * 12_289 + i * 7_919) % USERS];
                                raw_user(&client.query_one(&stmt, &[&id]).await.unwrap());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    let pool = sqlx_pool(rt, data, TASKS as u32);
    g.bench_function("sqlx", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (pool, users) = (pool.clone(), users.clone());
            async move {
                let per_task = (iters as usize).div_ceil(TASKS);
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let (pool, users) = (pool.clone(), users.clone());
                        tokio::spawn(async move {
                            for i in 0..per_task {
                                let id = users[(t * 12_289 + i * 7_919) % USERS];
                                sqlx_user(
                                    &sqlx::query(USER_SQL)
                                        .bind(id)
                                        .fetch_one(&pool)
                                        .await
                                        .unwrap(),
                                );
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    g.finish();
}

fn key_validation(c: &mut Criterion, rt: &Runtime, data: &Data) {
    let store = store(rt, data, 1);
    let client = rt.block_on(raw(&data.url));
    // Fresh last_used everywhere: measure the read path a busy key takes
    // (a key validated within the last minute is not written again).
    rt.block_on(client.execute(
        "UPDATE api_keys SET last_used = now() WHERE service = 'bench'",
        &[],
    ))
    .unwrap();
    let stmt = rt.block_on(client.prepare(KEY_SQL)).unwrap();
    let mut g = c.benchmark_group("validate_key");
    let pick = Picker(AtomicUsize::new(0));
    g.bench_function("store", |b| {
        b.to_async(rt).iter(|| async {
            let key = &data.keys[pick.next(USERS)];
            store.api_keys().validate(key).await.unwrap()
        })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(rt).iter(|| async {
            let key = &data.keys[pick.next(USERS)];
            let hash = ApiKeySecret::parse(key).unwrap().hash();
            let row = client.query_one(&stmt, &[&hash]).await.unwrap();
            let revoked: Option<DateTime<Utc>> = row.get(7);
            assert!(revoked.is_none());
            row
        })
    });
    let pool = sqlx_pool(rt, data, 1);
    g.bench_function("sqlx", |b| {
        b.to_async(rt).iter(|| async {
            use sqlx::Row;
            let key = &data.keys[pick.next(USERS)];
            let hash = ApiKeySecret::parse(key).unwrap().hash();
            let row = sqlx::query(KEY_SQL)
                .bind(hash)
                .fetch_one(&pool)
                .await
                .unwrap();
            let revoked: Option<DateTime<Utc>> = row.get(7);
            assert!(revoked.is_none());
            row
        })
    });
    g.finish();
}

fn event_writes(c: &mut Criterion, rt: &Runtime, data: &Data) {
    let store = store(rt, data, 1);
    let client = rt.block_on(raw(&data.url));
    let insert = rt
        .block_on(client.prepare(
            "INSERT INTO events (id, user_id, event_type, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        ))
        .unwrap();
    let event_type: EventType = "bench.write".parse().unwrap();
    let pick = Picker(AtomicUsize::new(0));
    let mut g = c.benchmark_group("record_event");
    g.bench_function("store", |b| {
        b.to_async(rt).iter(|| async {
            let user = data.users[pick.next(USERS)];
            store
                .events()
                .record(NewEvent::new(event_type.clone(), json!({"n": 1})).user(user))
                .await
                .unwrap()
        })
    });
    g.bench_function("raw_tokio_postgres", |b| {
        b.to_async(rt).iter(|| async {
            let user = data.users[pick.next(USERS)];
            let row: [&(dyn ToSql + Sync); 5] = [
                &Uuid::now_v7(),
                &user,
                &"bench.write",
                &json!({"n": 1}),
                &Utc::now(),
            ];
            client.execute(&insert, &row).await.unwrap()
        })
    });
    g.finish();

    const BATCH: usize = 10_000;
    let mut g = c.benchmark_group("record_10k_events");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("store", "record_many"), |b| {
        b.to_async(rt).iter(|| async {
            let batch: Vec<NewEvent> = (0..BATCH)
                .map(|i| {
                    NewEvent::new(event_type.clone(), json!({"n": i})).user(data.users[i % USERS])
                })
                .collect();
            store.events().record_many(batch).await.unwrap()
        })
    });
    g.bench_function(BenchmarkId::new("raw_tokio_postgres", "binary_copy"), |b| {
        b.to_async(rt).iter(|| async {
            let w = copy_events(&client).await;
            tokio::pin!(w);
            let now = Utc::now();
            for i in 0..BATCH {
                let payload = json!({"n": i});
                let row: [&(dyn ToSql + Sync); 5] = [
                    &Uuid::now_v7(),
                    &data.users[i % USERS],
                    &"bench.write",
                    &payload,
                    &now,
                ];
                w.as_mut().write(&row).await.unwrap();
            }
            w.finish().await.unwrap()
        })
    });
    let pool = sqlx_pool(rt, data, 1);
    g.bench_function(BenchmarkId::new("sqlx", "insert_unnest"), |b| {
        b.to_async(rt).iter(|| async {
            let now = Utc::now();
            let ids: Vec<Uuid> = (0..BATCH).map(|_| Uuid::now_v7()).collect();
            let users: Vec<Uuid> = (0..BATCH).map(|i| data.users[i % USERS]).collect();
            let types: Vec<&str> = vec!["bench.write"; BATCH];
            let payloads: Vec<Value> = (0..BATCH).map(|i| json!({"n": i})).collect();
            let times: Vec<DateTime<Utc>> = vec![now; BATCH];
            sqlx::query(
                "INSERT INTO events (id, user_id, event_type, payload, created_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::varchar[], $4::jsonb[], $5::timestamptz[])",
            )
            .bind(ids)
            .bind(users)
            .bind(types)
            .bind(payloads)
            .bind(times)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected()
        })
    });
    g.finish();
    rt.block_on(client.execute("DELETE FROM events WHERE event_type = 'bench.write'", &[]))
        .unwrap();
    rt.block_on(client.batch_execute("VACUUM ANALYZE events"))
        .unwrap();
}

fn event_queries(c: &mut Criterion, rt: &Runtime, data: &Data) {
    let store = store(rt, data, 1);
    let client = rt.block_on(raw(&data.url));
    let user = data.users[42];
    let login: EventType = "user.login".parse().unwrap();
    let day = TimeRange::since(Utc::now() - chrono::Duration::days(1));
    for (what, sql) in [
        (
            "a user's newest 50 events",
            format!("SELECT * FROM events WHERE user_id = '{user}' ORDER BY created_at DESC, id DESC LIMIT 51"),
        ),
        (
            "count of one type (all time)",
            "SELECT count(*) FROM events WHERE event_type = 'user.login'".to_owned(),
        ),
        (
            "payload containment",
            r#"SELECT * FROM events WHERE payload @> '{"country": "C7", "n": 7}' ORDER BY created_at DESC, id DESC LIMIT 51"#.to_owned(),
        ),
        (
            "hourly counts over the last day",
            "SELECT date_trunc('hour', created_at, 'UTC'), event_type, count(*) FROM events WHERE created_at >= now() - interval '1 day' GROUP BY 1, 2".to_owned(),
        ),
    ] {
        let plan = rt
            .block_on(client.query(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}"), &[]))
            .unwrap();
        println!("\nplan for {what}:");
        for line in plan {
            println!("  {}", line.get::<_, String>(0));
        }
    }
    let mut g = c.benchmark_group("event_queries");
    g.bench_function("newest_50_of_user", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .list(&EventFilter::for_user(user), 50, None)
                .await
                .unwrap()
        })
    });
    g.bench_function("count_by_type", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .count(&login, TimeRange::all())
                .await
                .unwrap()
        })
    });
    g.bench_function("payload_contains", |b| {
        b.to_async(rt).iter(|| async {
            let filter = EventFilter::all().payload_contains(json!({"country": "C7", "n": 7}));
            store.events().list(&filter, 50, None).await.unwrap()
        })
    });
    g.sample_size(10);
    g.bench_function("hourly_counts_last_day", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .count_by_bucket(TimeBucket::Hour, day, None)
                .await
                .unwrap()
        })
    });
    g.finish();
}

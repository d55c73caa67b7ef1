//! The events table at scale: the read paths a dashboard uses, at 1,000,000
//! and at 10,000,000 rows, each with its `EXPLAIN (ANALYZE, BUFFERS)` plan;
//! then a retention purge of half the table (5,000,000 rows) while a writer
//! keeps recording, with the writer's latency beside a run without purge.
//!
//! It creates its own database (`dreamnet_events_scale`) on the server of
//! `DATABASE_URL` and drops it at the end (set `EVENTS_SCALE_KEEP=1` to keep
//! it). `EVENTS_SCALE_ROWS` (default `1000000,10000000`) sets the sizes;
//! each stage adds rows to the previous one. Seeding is binary `COPY`, with
//! the secondary indexes dropped during the load and rebuilt from their own
//! definitions afterwards, then `VACUUM ANALYZE`: the table a long-running
//! service would have after autovacuum. Peak disk use at 10,000,000 rows is
//! about 4 GB.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench events_scale
//! ```

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::raw;
use criterion::Criterion;
use dreamnet_db::{EventFilter, EventType, NewEvent, Store, TimeBucket, TimeRange};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

const DB: &str = "dreamnet_events_scale";
const USERS: usize = 100_000;
/// Every stage spreads its rows over these 180 days.
const DAYS: i64 = 180;
const TYPES: [&str; 20] = [
    "page.view",
    "user.login",
    "user.logout",
    "dream.create",
    "dream.share",
    "dream.like",
    "dream.comment",
    "media.upload",
    "media.view",
    "key.issue",
    "key.revoke",
    "billing.charge",
    "billing.refund",
    "search.query",
    "notify.sent",
    "notify.open",
    "wallet.link",
    "wallet.unlink",
    "profile.update",
    "session.start",
];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// The heavy user: 1% of all events (a bot, an integration), to see the
/// per-user listing when one user has 100,000 events.
fn heavy_user(users: &[Uuid]) -> Uuid {
    users[0]
}

/// Row `i` of a stage of `n` rows: deterministic, spread evenly over the
/// period.
fn row(
    stage: u64,
    i: u64,
    n: u64,
    users: &[Uuid],
) -> (
    Uuid,
    Option<Uuid>,
    &'static str,
    serde_json::Value,
    DateTime<Utc>,
) {
    let period_us = DAYS * 86_400_000_000;
    // Spread over the period; stages interleave (offset by stage).
    let at_us = ((i as i128 * period_us as i128) / n as i128) as i64 + (stage as i64 * 7) % 1000;
    let created_at = start() + chrono::Duration::microseconds(at_us);
    let mix = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stage;
    let user = match mix % 100 {
        0..=8 => None,
        9 => Some(heavy_user(users)),
        _ => Some(users[((mix >> 8) % users.len() as u64) as usize]),
    };
    let kind = TYPES[((mix >> 24) % TYPES.len() as u64) as usize];
    let plan = ["free", "pro", "team"][(i % 3) as usize];
    let ip = format!(
        "10.{}.{}.{}",
        (mix >> 32) % 256,
        (mix >> 40) % 256,
        (mix >> 48) % 256
    );
    let payload = json!({ "ip": ip, "n": i % 10_000, "plan": plan });
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        created_at.timestamp() as u64,
        created_at.timestamp_subsec_nanos(),
    );
    (Uuid::new_v7(ts), user, kind, payload, created_at)
}

async fn seed_users(client: &tokio_postgres::Client) -> Vec<Uuid> {
    let empty = json!({});
    common::copy_users(
        client,
        USERS,
        |i| format!("scale-{i}@example.com"),
        &empty,
        &empty,
    )
    .await
}

/// Adds `n` events (stage `stage`): secondary indexes dropped, binary COPY
/// with foreign-key triggers off (the rows are valid by construction),
/// indexes rebuilt from their saved definitions, then VACUUM ANALYZE.
async fn seed_events(client: &tokio_postgres::Client, stage: u64, n: u64, users: &[Uuid]) {
    let started = Instant::now();
    let defs: Vec<(String, String)> = client
        .query(
            "SELECT indexname::text, indexdef FROM pg_indexes \
             WHERE tablename = 'events' AND indexname <> 'events_pkey'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &defs {
        client
            .batch_execute(&format!("DROP INDEX {name}"))
            .await
            .unwrap();
    }
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY events (id, user_id, event_type, payload, created_at) FROM STDIN BINARY")
        .await
        .unwrap();
    let types = [
        Type::UUID,
        Type::UUID,
        Type::VARCHAR,
        Type::JSONB,
        Type::TIMESTAMPTZ,
    ];
    let w = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(w);
    for i in 0..n {
        let (id, user, kind, payload, at) = row(stage, i, n, users);
        let r: [&(dyn ToSql + Sync); 5] = [&id, &user, &kind, &payload, &at];
        w.as_mut().write(&r).await.unwrap();
    }
    w.finish().await.unwrap();
    client
        .batch_execute("SET session_replication_role = origin; SET maintenance_work_mem = '256MB'")
        .await
        .unwrap();
    let loaded = started.elapsed();
    for (_, def) in &defs {
        client.batch_execute(def).await.unwrap();
    }
    client.batch_execute("VACUUM ANALYZE events").await.unwrap();
    println!(
        "stage {stage}: {n} events copied in {loaded:.1?}, indexed and vacuumed in {:.1?}",
        started.elapsed() - loaded
    );
}

/// The queries measured, as the store runs them (the SQL beside each is
/// what the crate sends, for EXPLAIN).
struct Queries {
    user: Uuid,
    heavy: Uuid,
    login: EventType,
    month: TimeRange,
    day: TimeRange,
}

const EXPLAINS: [(&str, &str); 6] = [
    (
        "newest 50 of a user",
        "SELECT id, user_id, event_type, payload, created_at FROM events WHERE user_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 51",
    ),
    (
        "newest 50 of the heavy user",
        "SELECT id, user_id, event_type, payload, created_at FROM events WHERE user_id = $2 \
         ORDER BY created_at DESC, id DESC LIMIT 51",
    ),
    (
        "count of one type over a month",
        "SELECT count(*) FROM events WHERE event_type = $3 AND created_at >= $4 AND created_at < $5",
    ),
    (
        "hourly buckets over a day",
        "SELECT date_trunc('hour', created_at, 'UTC') AS bucket, event_type, count(*) AS n \
         FROM events WHERE true AND created_at >= $6 AND created_at < $7 \
         GROUP BY 1, 2 ORDER BY 1, event_type COLLATE \"C\"",
    ),
    (
        "hourly buckets over a month",
        "SELECT date_trunc('hour', created_at, 'UTC') AS bucket, event_type, count(*) AS n \
         FROM events WHERE true AND created_at >= $4 AND created_at < $5 \
         GROUP BY 1, 2 ORDER BY 1, event_type COLLATE \"C\"",
    ),
    (
        "containment, newest 50",
        "SELECT id, user_id, event_type, payload, created_at FROM events \
         WHERE payload @> '{\"n\": 4242}'::jsonb ORDER BY created_at DESC, id DESC LIMIT 51",
    ),
];

async fn explain(client: &tokio_postgres::Client, q: &Queries) {
    for (title, sql) in EXPLAINS {
        // Parameters inlined in the order the SQL numbers them.
        let sql = sql
            .replace("$1", &format!("'{}'::uuid", q.user))
            .replace("$2", &format!("'{}'::uuid", q.heavy))
            .replace("$3", &format!("'{}'", q.login.as_str()))
            .replace(
                "$4",
                &format!("'{}'::timestamptz", q.month.since.unwrap().to_rfc3339()),
            )
            .replace(
                "$5",
                &format!("'{}'::timestamptz", q.month.until.unwrap().to_rfc3339()),
            )
            .replace(
                "$6",
                &format!("'{}'::timestamptz", q.day.since.unwrap().to_rfc3339()),
            )
            .replace(
                "$7",
                &format!("'{}'::timestamptz", q.day.until.unwrap().to_rfc3339()),
            );
        let rows = client
            .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"))
            .await
            .unwrap();
        println!("--- {title}");
        for r in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = r {
                println!("    {}", r.get(0).unwrap_or(""));
            }
        }
    }
}

fn measure(c: &mut Criterion, rt: &Runtime, store: &Store, q: &Queries, label: &str) {
    let mut g = c.benchmark_group(format!("events_{label}"));
    g.sample_size(20);
    g.bench_function("newest_50_of_a_user", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .list(&EventFilter::for_user(q.user), 50, None)
                .await
                .unwrap()
        })
    });
    g.bench_function("newest_50_of_the_heavy_user", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .list(&EventFilter::for_user(q.heavy), 50, None)
                .await
                .unwrap()
        })
    });
    g.bench_function("count_one_type_over_a_month", |b| {
        b.to_async(rt)
            .iter(|| async { store.events().count(&q.login, q.month).await.unwrap() })
    });
    g.bench_function("hourly_buckets_over_a_day", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .count_by_bucket(TimeBucket::Hour, q.day, None)
                .await
                .unwrap()
        })
    });
    g.bench_function("hourly_buckets_over_a_month", |b| {
        b.to_async(rt).iter(|| async {
            store
                .events()
                .count_by_bucket(TimeBucket::Hour, q.month, None)
                .await
                .unwrap()
        })
    });
    g.bench_function("containment_newest_50", |b| {
        let filter = EventFilter {
            payload_contains: Some(json!({"n": 4242}).into()),
            ..EventFilter::all()
        };
        b.to_async(rt)
            .iter(|| async { store.events().list(&filter, 50, None).await.unwrap() })
    });
    g.finish();
}

/// A writer recording one event at a time for `for_how_long` (or until
/// `stop`), its latencies in microseconds.
async fn writer(store: Store, stop: Arc<AtomicBool>, for_how_long: Duration) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap();
    let kind: EventType = "user.login".parse().unwrap();
    let until = Instant::now() + for_how_long;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        store
            .events()
            .record(NewEvent::new(kind.clone(), json!({"ip": "203.0.113.7"})))
            .await
            .unwrap();
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
    h
}

fn show(label: &str, h: &Histogram<u64>) {
    println!(
        "{label}: {} writes, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.value_at_quantile(0.999) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

/// Purges the older half of the table while a writer records, and the
/// same writer for as long without a purge.
async fn purge_under_writes(url: &str) {
    let store = Store::builder()
        .database_url(url)
        .max_connections(4)
        .connect()
        .await
        .unwrap();
    let cutoff = start() + chrono::Duration::days(DAYS / 2);
    let client = raw(url).await;
    let doomed: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE created_at < $1",
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    println!("purging {doomed} events created before {cutoff} while a writer records");
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(
        store.clone(),
        stop.clone(),
        Duration::from_secs(3600),
    ));
    let started = Instant::now();
    let mut last_shown = Instant::now();
    let report = store
        .events()
        .purge_before(cutoff)
        .run_with(|p| {
            if last_shown.elapsed() > Duration::from_secs(10) {
                println!("  … {} deleted in {} batches", p.deleted, p.batches);
                last_shown = Instant::now();
            }
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during = w.await.unwrap();
    println!(
        "purge: {} events in {} batches of {} in {took:.1?} ({:.0} rows/s)",
        report.deleted,
        report.batches,
        dreamnet_db::DEFAULT_PURGE_BATCH,
        report.deleted as f64 / took.as_secs_f64()
    );
    let quiet = writer(
        store.clone(),
        Arc::new(AtomicBool::new(false)),
        took.min(Duration::from_secs(60)),
    )
    .await;
    show("writer during the purge", &during);
    show("writer without a purge ", &quiet);
    println!(
        "ratio during/without: p50 {:.2}, p99 {:.2}",
        during.value_at_quantile(0.5) as f64 / quiet.value_at_quantile(0.5) as f64,
        during.value_at_quantile(0.99) as f64 / quiet.value_at_quantile(0.99) as f64
    );
}

fn main() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "benches/events_scale skipped: set DATABASE_URL to a PostgreSQL server where it may \
             create and drop the database {DB} (about 4 GB at 10,000,000 events)"
        );
        return;
    };
    let mut db_url = url::Url::parse(&url).expect("DATABASE_URL is a URL");
    db_url.set_path(&format!("/{DB}"));
    if !db_url.query_pairs().any(|(k, _)| k == "sslmode") {
        db_url.query_pairs_mut().append_pair("sslmode", "disable");
    }
    let db_url = db_url.to_string();
    let sizes: Vec<u64> = std::env::var("EVENTS_SCALE_ROWS")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .map(|s| s.trim().parse().expect("EVENTS_SCALE_ROWS: numbers"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(raw(&url));
    rt.block_on(async {
        // Two calls: a multi-statement string is one implicit transaction,
        // where `DROP DATABASE` cannot run.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {DB}"))
            .await
            .unwrap();
    });
    let store = rt.block_on(async {
        Store::builder()
            .database_url(db_url.clone())
            .max_connections(2)
            .run_migrations(true)
            .connect()
            .await
            .expect("connect and migrate")
    });
    let client = rt.block_on(raw(&db_url));
    let users = rt.block_on(seed_users(&client));
    let q = Queries {
        user: users[4242],
        heavy: heavy_user(&users),
        login: "user.login".parse().unwrap(),
        month: TimeRange::between(
            start() + chrono::Duration::days(60),
            start() + chrono::Duration::days(90),
        ),
        day: TimeRange::between(
            start() + chrono::Duration::days(75),
            start() + chrono::Duration::days(76),
        ),
    };
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut total = 0;
    for (stage, size) in sizes.iter().enumerate() {
        rt.block_on(seed_events(&client, stage as u64, size - total, &users));
        total = *size;
        let label = if total % 1_000_000 == 0 {
            format!("{}M", total / 1_000_000)
        } else {
            total.to_string()
        };
        println!("=== {label} events: plans");
        rt.block_on(explain(&client, &q));
        measure(&mut c, &rt, &store, &q, &label);
    }
    if std::env::var("EVENTS_SCALE_PURGE").map_or(true, |v| v != "0") {
        rt.block_on(purge_under_writes(&db_url));
    }
    c.final_summary();
    drop(store);
    drop(client);
    if std::env::var("EVENTS_SCALE_KEEP").is_ok_and(|v| v == "1") {
        println!("kept the database {DB}");
    } else {
        rt.block_on(async {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
                .await
                .unwrap();
        });
    }
}

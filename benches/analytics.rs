//! Analytics and search at scale: seeds its own database with
//! `DREAMNET_ANALYTICS_EVENTS` events (1,000,000 by default) by binary
//! `COPY`, prints the `EXPLAIN (ANALYZE, BUFFERS)` plan of each question,
//! times each through `Store::analytics()` with criterion, and measures
//! what the search index costs on writes. The database is dropped at the
//! end (keep it with `DREAMNET_ANALYTICS_KEEP=1`).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench --bench analytics
//! DATABASE_URL=… DREAMNET_ANALYTICS_EVENTS=10000000 cargo bench --bench analytics
//! ```
//!
//! The data: `events / 20` users arriving evenly over 120 days, each with
//! a `user.signup` event when they arrive and later events picked by a
//! Zipf law (s = 1.1) over users, so a few users make most events; types
//! are skewed (`page.view` 55 %, `api.call` 25 %, `user.login` 10 %,
//! `key.issued` 2 %, 16 others sharing the rest); payloads hold a
//! `country` (40 codes, Zipf), a `path` and a `message` of 4 to 10 words
//! drawn by a Zipf law from 20,000 made-up words, so the most common word
//! (`baba`) is in about half the events and `zanzibar` in 25 only.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::raw;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use dreamnet_db::{
    DEFAULT_SEARCH_CANDIDATES, EventSearch, Funnel, NewEvent, Period, Retention, SearchOrder,
    Store, TimeRange,
};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

/// The end of the seeded history.
fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap() // a Monday
}
const HISTORY_DAYS: i64 = 120;
const RARE: &str = "zanzibar";
const RARE_COUNT: usize = 25;
const SYLLABLES: [&str; 20] = [
    "ba", "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe", "ri", "so", "tu", "va",
    "we", "xi", "yo", "zu",
];
const COUNTRIES: [&str; 40] = [
    "US", "IN", "GB", "DE", "FR", "BR", "JP", "CA", "NG", "ES", "IT", "MX", "KR", "NL", "AU", "SE",
    "PL", "TR", "ID", "AR", "ZA", "KE", "EG", "VN", "PH", "CH", "BE", "AT", "NO", "DK", "FI", "IE",
    "PT", "CZ", "RO", "GR", "IL", "SG", "NZ", "CL",
];
const OTHER_TYPES: [&str; 16] = [
    "media.upload",
    "media.delete",
    "session.start",
    "session.end",
    "billing.invoice",
    "billing.paid",
    "billing.failed",
    "profile.update",
    "key.revoked",
    "key.rotated",
    "search.query",
    "export.start",
    "export.done",
    "invite.sent",
    "invite.accepted",
    "error.client",
];

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipf law over `0..n` (0 the most frequent), by its CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf(cdf)
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// Made-up word `i`: two or more of [`SYLLABLES`] (never [`RARE`]).
fn word(i: usize) -> String {
    let mut out = String::new();
    let mut n = i;
    for _ in 0..2 {
        out.push_str(SYLLABLES[n % 20]);
        n /= 20;
    }
    while n > 0 {
        out.push_str(SYLLABLES[n % 20]);
        n /= 20;
    }
    out
}

fn event_type(rng: &mut Rng) -> &'static str {
    let u = rng.unit();
    match u {
        u if u < 0.55 => "page.view",
        u if u < 0.80 => "api.call",
        u if u < 0.90 => "user.login",
        u if u < 0.92 => "key.issued",
        _ => OTHER_TYPES[(rng.next_u64() % 16) as usize],
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = head.rsplit_once('/').map_or(head, |(b, _)| b);
    format!("{base}/{name}{query}")
}

/// Creates the database afresh, migrates it, and seeds it by binary COPY
/// with the event indexes dropped, then has `Store::migrate` build them
/// again (as it does for any missing index of the crate).
async fn seed(url: &str, events: usize) -> Store {
    let store = Store::builder()
        .database_url(url)
        .max_connections(2)
        .run_migrations(true)
        .connect()
        .await
        .expect("connect and migrate");
    let client = raw(url).await;
    let started = Instant::now();
    for index in [
        "events_user_id_created_at_idx",
        "events_event_type_created_at_idx",
        "events_payload_idx",
        "events_created_at_idx",
        "events_payload_fts_idx",
    ] {
        client
            .batch_execute(&format!("DROP INDEX IF EXISTS {index}"))
            .await
            .unwrap();
    }
    // The rows are consistent by construction: skip the per-row foreign
    // key checks while copying.
    client
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();

    let users = (events / 20).max(1_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = end() - TimeDelta::days(HISTORY_DAYS);
    let span_us = HISTORY_DAYS * 86_400_000_000;
    let mut joined = Vec::with_capacity(users);
    let mut ids = Vec::with_capacity(users);
    {
        let sink = client
            .copy_in(
                "COPY users (id, email, wallet_address, passport_tier, created_at, updated_at, \
                 metadata, preferences) FROM STDIN BINARY",
            )
            .await
            .unwrap();
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::UUID,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::VARCHAR,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMPTZ,
                Type::JSONB,
                Type::JSONB,
            ],
        );
        tokio::pin!(writer);
        for i in 0..users {
            let at = start + TimeDelta::microseconds((rng.unit() * span_us as f64) as i64);
            let id = Uuid::from_u128(rng.next_u64() as u128 | ((i as u128) << 64));
            let email = format!("user{i}@example.com");
            let wallet: Option<String> = (i % 3 == 0).then(|| format!("0x{:040x}", i * 7919));
            let meta = json!({"display_name": format!("{} {}", word(i), word(i / 7))});
            let empty = json!({});
            let row: [&(dyn ToSql + Sync); 8] =
                [&id, &email, &wallet, &"visitor", &at, &at, &meta, &empty];
            writer.as_mut().write(&row).await.unwrap();
            joined.push(at);
            ids.push(id);
        }
        writer.finish().await.unwrap();
    }

    let user_law = Zipf::new(users, 1.1);
    let country_law = Zipf::new(COUNTRIES.len(), 1.2);
    let word_law = Zipf::new(20_000, 1.0);
    let words: Vec<String> = (0..20_000).map(word).collect();
    let rare_every = events / RARE_COUNT;
    {
        let sink = client
            .copy_in("COPY events (id, user_id, event_type, payload, created_at) FROM STDIN BINARY")
            .await
            .unwrap();
        let writer = BinaryCopyInWriter::new(
            sink,
            &[
                Type::UUID,
                Type::UUID,
                Type::VARCHAR,
                Type::JSONB,
                Type::TIMESTAMPTZ,
            ],
        );
        tokio::pin!(writer);
        for i in 0..events {
            let (user, kind, at) = if i < users {
                (i, "user.signup", joined[i])
            } else {
                let u = user_law.sample(&mut rng);
                let left = (end() - joined[u]).num_microseconds().unwrap();
                let at = joined[u] + TimeDelta::microseconds((rng.unit() * left as f64) as i64);
                (u, event_type(&mut rng), at)
            };
            let n = 4 + (rng.next_u64() % 7) as usize;
            let mut message: Vec<&str> = (0..n)
                .map(|_| words[word_law.sample(&mut rng)].as_str())
                .collect();
            if i % rare_every == 7 {
                message.push(RARE);
            }
            let payload = json!({
                "country": COUNTRIES[country_law.sample(&mut rng)],
                "path": format!("/{}/{}", words[(i * 31) % 200], i % 1000),
                "message": message.join(" "),
            });
            let id = Uuid::from_u128(((at.timestamp_micros() as u128) << 64) | i as u128);
            let row: [&(dyn ToSql + Sync); 5] = [&id, &ids[user], &kind, &payload, &at];
            writer.as_mut().write(&row).await.unwrap();
        }
        writer.finish().await.unwrap();
    }
    let copied = started.elapsed();
    let started = Instant::now();
    store.migrate().await.expect("build the indexes again");
    // One call each: a multi-statement string is one implicit transaction,
    // where VACUUM cannot run.
    for table in ["users", "events"] {
        client
            .batch_execute(&format!("VACUUM (ANALYZE) {table}"))
            .await
            .unwrap();
    }
    println!(
        "seeded {users} users and {events} events: COPY {:.1} s, indexes and ANALYZE {:.1} s",
        copied.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let size: String = client
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('events'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    println!("events table with its indexes: {size}");
    store
}

fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

/// The questions, as the crate asks them.
struct Questions {
    dau: TimeRange,
    funnel: Funnel,
    cohorts: Retention,
    country_day: TimeRange,
}

fn questions() -> Questions {
    let e = end();
    Questions {
        dau: TimeRange::between(e - days(30), e),
        funnel: Funnel::new(
            [
                "user.signup".parse().unwrap(),
                "key.issued".parse().unwrap(),
                "api.call".parse().unwrap(),
            ],
            days(7),
            TimeRange::between(e - days(14), e - days(7)),
        ),
        cohorts: Retention::new(Period::Week, TimeRange::between(e - days(56), e))
            .cohort_event("user.signup".parse().unwrap()),
        country_day: TimeRange::between(e - days(1), e),
    }
}

/// Prints the `EXPLAIN (ANALYZE, BUFFERS)` plan of `sql` under a
/// `=== plan: {what}` line.
async fn explain(client: &Client, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) {
    let rows = client
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {what}: {e}"));
    println!("\n=== plan: {what}");
    for r in rows {
        let line: String = r.get(0);
        println!("{line}");
    }
}

/// Boxed arguments as the parameters `tokio_postgres` takes.
fn params_of(args: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The SQL the crate sends for each question (see src/postgres/analytics.rs),
/// with the same parameters, for EXPLAIN.
async fn plans(client: &Client) {
    let q = questions();
    let (d_since, d_until) = (q.dau.since.unwrap(), q.dau.until.unwrap());
    let (f_since, f_until) = (q.funnel.range.since.unwrap(), q.funnel.range.until.unwrap());
    let (r_since, r_until) = (
        q.cohorts.range.since.unwrap(),
        q.cohorts.range.until.unwrap(),
    );
    let (c_since, c_until) = (q.country_day.since.unwrap(), q.country_day.until.unwrap());
    let window = q.funnel.window.num_microseconds().unwrap();
    type Args = Vec<Box<dyn ToSql + Sync + Send>>;
    let cases: Vec<(&str, String, Args)> = vec![
        (
            "30 days of daily active users",
            "SELECT date_trunc($1, e.created_at, 'UTC') AS bucket, count(DISTINCT e.user_id) AS n \
             FROM events e WHERE e.user_id IS NOT NULL AND e.created_at >= $2 AND e.created_at < $3 \
             GROUP BY 1 ORDER BY 1"
                .to_owned(),
            vec![Box::new("day"), Box::new(d_since), Box::new(d_until)],
        ),
        (
            "3-step funnel, 7-day window, entries over 7 days",
            "WITH s1 AS (SELECT e.user_id, min(e.created_at) AS t0, min(e.created_at) AS t FROM events e \
             WHERE e.user_id IS NOT NULL AND e.created_at >= $1 AND e.created_at < $2 AND e.event_type = $3 \
             GROUP BY e.user_id), \
             s2 AS (SELECT s.user_id, s.t0, (SELECT min(e.created_at) FROM events e WHERE e.user_id = s.user_id \
             AND e.event_type = $5 AND e.created_at > s.t AND e.created_at < s.t0 + ($4::int8 * interval '1 microsecond')) AS t \
             FROM s1 s WHERE s.t IS NOT NULL), \
             s3 AS (SELECT s.user_id, s.t0, (SELECT min(e.created_at) FROM events e WHERE e.user_id = s.user_id \
             AND e.event_type = $6 AND e.created_at > s.t AND e.created_at < s.t0 + ($4::int8 * interval '1 microsecond')) AS t \
             FROM s2 s WHERE s.t IS NOT NULL) \
             SELECT ARRAY[(SELECT count(*) FROM s1 WHERE t IS NOT NULL), (SELECT count(*) FROM s2 WHERE t IS NOT NULL), \
             (SELECT count(*) FROM s3 WHERE t IS NOT NULL)]::int8[] AS counts"
                .to_owned(),
            vec![
                Box::new(f_since),
                Box::new(f_until),
                Box::new("user.signup"),
                Box::new(window),
                Box::new("key.issued"),
                Box::new("api.call"),
            ],
        ),
        (
            "8 weekly cohorts (by user.signup, any activity)",
            "WITH firsts AS (SELECT e.user_id, min(e.created_at) AS first_at FROM events e WHERE e.user_id IS NOT NULL \
             AND e.created_at >= $1 AND e.created_at < $2 AND e.event_type = $3 GROUP BY e.user_id), \
             cohorts AS (SELECT f.user_id, date_trunc($4, f.first_at, 'UTC') AS cohort FROM firsts f WHERE NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.user_id = f.user_id AND e.created_at < $5 AND e.event_type = $6)), \
             active AS (SELECT DISTINCT e.user_id, date_trunc($4, e.created_at, 'UTC') AS bucket FROM events e \
             WHERE e.user_id IS NOT NULL AND e.created_at >= $7 AND e.created_at < $8) \
             SELECT c.cohort, NULL::timestamptz AS bucket, count(*) AS n FROM cohorts c GROUP BY 1 \
             UNION ALL SELECT c.cohort, a.bucket, count(*) AS n FROM cohorts c \
             JOIN active a ON a.user_id = c.user_id AND a.bucket >= c.cohort GROUP BY 1, 2"
                .to_owned(),
            vec![
                Box::new(r_since),
                Box::new(r_until),
                Box::new("user.signup"),
                Box::new("week"),
                Box::new(r_since),
                Box::new("user.signup"),
                Box::new(r_since),
                Box::new(r_until),
            ],
        ),
        (
            "breakdown by country over a day, top 10",
            "WITH g AS (SELECT CASE WHEN jsonb_typeof(e.payload -> $1::text) = 'string' THEN e.payload ->> $1::text END AS v, \
             count(*) AS n FROM events e WHERE true AND e.created_at >= $2 AND e.created_at < $3 GROUP BY 1), \
             r AS (SELECT v, n, row_number() OVER (PARTITION BY v IS NULL ORDER BY n DESC, v COLLATE \"C\") AS rk FROM g) \
             SELECT CASE WHEN v IS NOT NULL AND rk <= $4 THEN v END AS v, v IS NULL AS missing, sum(n)::int8 AS n \
             FROM r GROUP BY 1, 2"
                .to_owned(),
            vec![
                Box::new("country"),
                Box::new(c_since),
                Box::new(c_until),
                Box::new(10i64),
            ],
        ),
    ];
    for (what, sql, args) in cases {
        explain(client, what, &sql, &params_of(&args)).await;
    }
    search_plans(client).await;
}

/// Words of the searches: rare (25 events), one just above the default
/// candidates at 1M events (about 16,000 matches; word 40 of the Zipf law),
/// one below them (about 1,700; word 400), and the most common (about half
/// the events).
fn search_words() -> [(&'static str, String); 4] {
    [
        ("rare", RARE.to_owned()),
        ("uncommon", word(400)),
        ("medium", word(40)),
        ("common", word(0)),
    ]
}

/// The two statements of `search_events` (src/postgres/analytics.rs) for
/// a first page of 20 with no filters: the probe, then, as the crate
/// decides from the probe's figures, a fetch of every match or a walk
/// newest first.
async fn search_plans(client: &Client) {
    let doc = |p: &str| {
        format!("jsonb_to_tsvector('simple'::regconfig, {p}.payload, '[\"string\"]'::jsonb)")
    };
    let query = "plainto_tsquery('simple'::regconfig, $1)";
    let probe_sql = format!(
        "WITH p AS MATERIALIZED (SELECT (e.ctid::text::point)[0]::int8 AS blk FROM events e \
         WHERE {} @@ {query} LIMIT $2) \
         SELECT count(*) AS found, min(blk) AS first, max(blk) AS last, \
         (SELECT max(g.gap) FROM (SELECT blk - lag(blk) OVER (ORDER BY blk) AS gap FROM p) g) AS gap, \
         pg_relation_size('events'::regclass) / current_setting('block_size')::int8 AS blocks FROM p",
        doc("e")
    );
    // The crate's `PROBE_MATCHES` + 1.
    let probe = 1_001i64;
    let explain = async |what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]| {
        explain(client, what, sql, params).await
    };
    for (name, word) in search_words() {
        for order in [SearchOrder::Relevance, SearchOrder::Newest] {
            let what = format!("search a {name} word ({word}), {order:?}");
            if order == SearchOrder::Newest {
                // The crate's first look at the newest `NEWEST_WALK` events.
                let newest_sql = format!(
                    "SELECT w.id, w.user_id, w.event_type, w.payload, w.created_at, 0::real AS rank \
                     FROM (SELECT e.id, e.user_id, e.event_type, e.payload, e.created_at FROM events e \
                     WHERE true ORDER BY e.created_at DESC, e.id DESC LIMIT 2000) w \
                     WHERE {} @@ {query} ORDER BY w.created_at DESC, w.id DESC LIMIT 21",
                    doc("w")
                );
                let page = client.query(&newest_sql, &[&word]).await.unwrap().len();
                explain(
                    &format!("{what}: the newest 2,000 events ({page} of 21 found)"),
                    &newest_sql,
                    &[&word],
                )
                .await;
                if page == 21 {
                    continue;
                }
            }
            let row = client
                .query_one(&probe_sql, &[&word, &probe])
                .await
                .unwrap();
            let found: i64 = row.get(0);
            let (first, last, gap): (Option<i64>, Option<i64>, Option<i64>) =
                (row.get(1), row.get(2), row.get(3));
            let blocks: i64 = row.get(4);
            // The crate's `ProbeRow::seen` and `walk_is_cheaper`, with its
            // cost of a walked block.
            let seen = match (first, last) {
                (Some(first), Some(last)) => {
                    let blocks = blocks.max(last + 1);
                    (blocks - gap.unwrap_or(0).max(first + blocks - last) + 1).max(1)
                }
                _ => blocks.max(1),
            };
            explain(&format!("{what}: probe"), &probe_sql, &[&word, &probe]).await;
            let take = match order {
                SearchOrder::Relevance => DEFAULT_SEARCH_CANDIDATES,
                SearchOrder::Newest => 21,
            };
            let walk = found == probe
                && (seen as f64 * take as f64 / found as f64 * 100.0)
                    < (found as f64 * blocks as f64 / seen as f64);
            let rank = match (order, walk) {
                (SearchOrder::Newest, _) => "0::real".to_owned(),
                (SearchOrder::Relevance, true) => format!("ts_rank(c.doc, {query})"),
                (SearchOrder::Relevance, false) => format!("ts_rank({}, {query})", doc("c")),
            };
            let cand = if walk {
                format!(
                    "SELECT e.id, e.user_id, e.event_type, e.payload, e.created_at, d.doc FROM events e, \
                     LATERAL (SELECT {} AS doc OFFSET 0) d WHERE d.doc @@ {query} \
                     ORDER BY e.created_at DESC, e.id DESC LIMIT $2",
                    doc("e")
                )
            } else {
                format!(
                    "SELECT s.* FROM (SELECT e.id, e.user_id, e.event_type, e.payload, e.created_at \
                     FROM events e WHERE {} @@ {query} OFFSET 0) s \
                     ORDER BY s.created_at DESC, s.id DESC LIMIT $2",
                    doc("e")
                )
            };
            let order_by = match order {
                SearchOrder::Relevance => "h.rank DESC, h.created_at DESC, h.id DESC",
                SearchOrder::Newest => "h.created_at DESC, h.id DESC",
            };
            let fetch_sql = format!(
                "SELECT * FROM (SELECT c.id, c.user_id, c.event_type, c.payload, c.created_at, \
                 {rank} AS rank FROM ({cand}) c) h ORDER BY {order_by} LIMIT 21"
            );
            let take = take as i64;
            explain(
                &format!(
                    "{what}: {} (probe found {found} in {seen} of {blocks} blocks)",
                    if walk {
                        "walk newest first"
                    } else {
                        "fetch every match"
                    }
                ),
                &fetch_sql,
                &[&word, &take],
            )
            .await;
        }
    }
}

/// A group of the questions' benchmarks: few samples, each question
/// takes up to seconds at 10M events.
fn group(c: &mut Criterion, name: String) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g
}

fn latency(c: &mut Criterion, rt: &Runtime, store: &Store, events: usize) {
    let q = questions();
    let a = store.analytics();
    let mut g = group(c, format!("analytics_{events}"));
    g.bench_function("dau_30_days", |b| {
        b.iter(|| {
            rt.block_on(a.active_users(Period::Day, q.dau, None))
                .unwrap()
        })
    });
    g.bench_function("funnel_3_steps_7_days", |b| {
        b.iter(|| rt.block_on(a.funnel(&q.funnel)).unwrap())
    });
    g.bench_function("retention_8_weekly_cohorts", |b| {
        b.iter(|| rt.block_on(a.retention(&q.cohorts)).unwrap())
    });
    g.bench_function("breakdown_country_1_day", |b| {
        b.iter(|| {
            rt.block_on(a.breakdown("country", q.country_day, None, 10))
                .unwrap()
        })
    });
    g.bench_function("top_10_types_30_days", |b| {
        b.iter(|| rt.block_on(a.top_event_types(q.dau, 10)).unwrap())
    });
    for (name, text) in search_words() {
        for (order_name, order) in [
            ("relevance", SearchOrder::Relevance),
            ("newest", SearchOrder::Newest),
        ] {
            let search = EventSearch::new(&text).order(order);
            g.bench_function(format!("search_{name}_{order_name}"), |b| {
                b.iter(|| rt.block_on(a.search_events(&search, 20, None)).unwrap())
            });
        }
    }
    g.bench_function("search_users_display_name", |b| {
        b.iter(|| rt.block_on(a.search_users(&word(4242), 20, None)).unwrap())
    });
    g.bench_function("search_users_email", |b| {
        b.iter(|| rt.block_on(a.search_users("user4242@", 20, None)).unwrap())
    });
    g.finish();
}

/// The questions that read every event of their range, again after
/// `refresh_rollups` (timed here: the whole history, one day per
/// statement), which they then answer from the daily rollups; with the
/// plans of the SQL they send for these day-aligned ranges.
fn rolled_up(c: &mut Criterion, rt: &Runtime, store: &Store, client: &Client, events: usize) {
    let a = store.analytics();
    let started = Instant::now();
    let sealed = rt.block_on(a.refresh_rollups()).expect("refresh_rollups");
    let took = started.elapsed().as_secs_f64();
    println!(
        "refresh_rollups: {sealed} days rolled up in {took:.1} s ({:.0} ms a day)",
        took * 1000.0 / sealed.max(1) as f64
    );
    rt.block_on(client.batch_execute(
        "VACUUM ANALYZE event_rollup_days, event_daily_users, event_daily_type_users, \
         event_daily_types, event_period_users",
    ))
    .unwrap();
    let q = questions();
    let (d_since, d_until) = (q.dau.since.unwrap(), q.dau.until.unwrap());
    let (r_since, r_until) = (
        q.cohorts.range.since.unwrap(),
        q.cohorts.range.until.unwrap(),
    );
    let day = |t: DateTime<Utc>| t.date_naive();
    let days_of = |since: DateTime<Utc>, until: DateTime<Utc>| -> Vec<chrono::NaiveDate> {
        let mut out = Vec::new();
        let mut d = day(since);
        while d < day(until) {
            out.push(d);
            d = d.succ_opt().unwrap();
        }
        out
    };
    type Args = Vec<Box<dyn ToSql + Sync + Send>>;
    let cases: Vec<(&str, &str, Args)> = vec![
        (
            "30 days of daily active users, rolled up",
            "SELECT (r.day::timestamp AT TIME ZONE 'UTC') AS bucket, r.users AS n \
             FROM event_rollup_days r WHERE r.users > 0 AND r.day = ANY($1) ORDER BY 1",
            vec![Box::new(days_of(d_since, d_until))],
        ),
        (
            "8 weekly cohorts (by user.signup, any activity), rolled up",
            "WITH firsts AS (SELECT r.user_id, min(r.day::timestamp AT TIME ZONE 'UTC') AS first_at \
             FROM event_daily_type_users r WHERE r.event_type = $1 AND r.day = ANY($2) GROUP BY r.user_id), \
             cohorts AS MATERIALIZED (SELECT f.user_id, date_trunc('week', f.first_at, 'UTC') AS cohort \
             FROM firsts f WHERE NOT EXISTS (SELECT 1 FROM event_daily_type_users b \
             WHERE b.event_type = $1 AND b.user_id = f.user_id AND b.day < $3)), \
             active AS (SELECT r.user_id, date_trunc('week', r.day::timestamp AT TIME ZONE 'UTC', 'UTC') AS bucket \
             FROM event_daily_users r WHERE r.day = ANY($2)) \
             SELECT c.cohort, NULL::timestamptz AS bucket, count(*) AS n FROM cohorts c GROUP BY 1 \
             UNION ALL SELECT c.cohort, a.bucket, count(DISTINCT c.user_id) AS n FROM cohorts c \
             JOIN active a ON a.user_id = c.user_id AND a.bucket >= c.cohort GROUP BY 1, 2",
            vec![
                Box::new("user.signup"),
                Box::new(days_of(r_since, r_until)),
                Box::new(day(r_since)),
            ],
        ),
        (
            "top 10 types over 30 days, rolled up",
            "SELECT t.event_type, sum(t.events)::int8 AS n FROM event_daily_types t \
             WHERE t.day = ANY($1) GROUP BY 1 ORDER BY n DESC, t.event_type COLLATE \"C\" LIMIT 10",
            vec![Box::new(days_of(d_since, d_until))],
        ),
    ];
    for (what, sql, args) in cases {
        rt.block_on(explain(client, what, sql, &params_of(&args)));
    }
    let mut g = group(c, format!("analytics_{events}_rolled_up"));
    g.bench_function("dau_30_days", |b| {
        b.iter(|| {
            rt.block_on(a.active_users(Period::Day, q.dau, None))
                .unwrap()
        })
    });
    g.bench_function("wau_4_weeks", |b| {
        let four_weeks = TimeRange::between(end() - days(28), end());
        b.iter(|| {
            rt.block_on(a.active_users(Period::Week, four_weeks, None))
                .unwrap()
        })
    });
    g.bench_function("retention_8_weekly_cohorts", |b| {
        b.iter(|| rt.block_on(a.retention(&q.cohorts)).unwrap())
    });
    g.bench_function("top_10_types_30_days", |b| {
        b.iter(|| rt.block_on(a.top_event_types(q.dau, 10)).unwrap())
    });
    g.finish();
}

/// What the full-text index costs on writes: batches of 500 events through
/// `record_many`, with every index, then without `events_payload_fts_idx`.
fn write_cost(c: &mut Criterion, rt: &Runtime, store: &Store, client: &Client) {
    let batch = |n: u64| -> Vec<NewEvent> {
        let mut rng = Rng(0x1234_5678 + n);
        let law = Zipf::new(20_000, 1.0);
        (0..500)
            .map(|i| {
                let message: Vec<String> = (0..7).map(|_| word(law.sample(&mut rng))).collect();
                NewEvent::new(
                    "page.view".parse().unwrap(),
                    json!({"country": COUNTRIES[i % 40], "path": "/bench", "message": message.join(" ")}),
                )
            })
            .collect()
    };
    let mut g = c.benchmark_group("analytics_write");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut n = 0;
    g.bench_function("record_many_500/every_index", |b| {
        b.iter_batched(
            || {
                n += 1;
                batch(n)
            },
            |events| rt.block_on(store.events().record_many(events)).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    rt.block_on(client.batch_execute("DROP INDEX events_payload_fts_idx"))
        .unwrap();
    g.bench_function("record_many_500/without_fts_index", |b| {
        b.iter_batched(
            || {
                n += 1;
                batch(n)
            },
            |events| rt.block_on(store.events().record_many(events)).unwrap(),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    let started = Instant::now();
    rt.block_on(store.migrate()).expect("rebuild the index");
    println!(
        "events_payload_fts_idx rebuilt (concurrently) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let Ok(base) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "benches/analytics skipped: set DATABASE_URL to a PostgreSQL server where it may \
             create (and drop) its own database, to run it"
        );
        return;
    };
    let events: usize = std::env::var("DREAMNET_ANALYTICS_EVENTS")
        .ok()
        .map(|v| v.parse().expect("DREAMNET_ANALYTICS_EVENTS is a number"))
        .unwrap_or(1_000_000);
    let name = format!("dreamnet_analytics_bench_{events}");
    let url = with_database(&base, &name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(raw(&base));
    // Two statements, two calls: a multi-statement string is one implicit
    // transaction, where `DROP DATABASE` cannot run.
    rt.block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .unwrap();
    rt.block_on(admin.batch_execute(&format!("CREATE DATABASE {name}")))
        .unwrap();
    let store = rt.block_on(seed(&url, events));
    let client = rt.block_on(raw(&url));
    rt.block_on(plans(&client));

    let mut c = Criterion::default().configure_from_args();
    latency(&mut c, &rt, &store, events);
    if std::env::var("DREAMNET_ANALYTICS_ROLLUPS").as_deref() != Ok("0") {
        rolled_up(&mut c, &rt, &store, &client, events);
    }
    if std::env::var("DREAMNET_ANALYTICS_WRITES").as_deref() != Ok("0") {
        write_cost(&mut c, &rt, &store, &client);
    }
    c.final_summary();
    drop(store);
    drop(client);
    if std::env::var("DREAMNET_ANALYTICS_KEEP").as_deref() != Ok("1") {
        rt.block_on(admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")))
            .unwrap();
    }
}

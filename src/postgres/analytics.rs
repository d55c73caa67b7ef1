//! Analytics and search over `events` and `users`, in SQL.
//!
//! Each query puts in its SQL only the conditions asked for, so that the
//! planner can pick the `(event_type, created_at)` or `(created_at)` index,
//! or the full-text and trigram indexes of the `2026-12-03-*` migrations:
//!
//! - `events_payload_fts_idx`: GIN on
//!   `jsonb_to_tsvector('simple', payload, '["string"]')`, the words of the
//!   payload's string values, for [`search_events`];
//! - `users_email_prefix_idx`, `users_wallet_address_prefix_idx`: btree
//!   `text_pattern_ops` on the lower-cased email and wallet address, for
//!   `LIKE 'prefix%'` whatever the collation;
//! - `users_display_name_fts_idx`: GIN on
//!   `to_tsvector('simple', metadata->>'display_name')`, for word prefixes.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::dsl::sql;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::BoxedSqlQuery;
use diesel::sql_types::{
    Array, BigInt, Bool, Date, Float, Jsonb, Nullable, Text, Timestamptz, Varchar,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::PgBackend;
use super::rollups::{self, Split};
use super::schema::users;
use super::users::UserRow;
use crate::backend::AnalyticsBackend;
use crate::error::Result;
use crate::model::analytics::{RetentionCell, tokens};
use crate::model::{
    ActiveUsers, Breakdown, Cursor, Event, EventSearch, EventType, Funnel, Json, Period, Retention,
    SearchCursor, SearchHit, SearchOrder, TimeRange, TypeCount, User, ValueCount,
};

/// The document a payload search reads: the words of its string values,
/// exactly the expression `events_payload_fts_idx` indexes.
const PAYLOAD_WORDS: &str =
    "jsonb_to_tsvector('simple'::regconfig, payload, '[\"string\"]'::jsonb)";

/// One value to bind.
enum Arg {
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
    Real(f32),
    Id(Uuid),
    Day(NaiveDate),
    Days(Vec<NaiveDate>),
}

/// SQL text with its arguments, numbered as they are pushed.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends `text`.
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `arg` (as `$n`).
    fn arg(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    /// The conditions of a time range (and type) on `events` aliased `e`.
    fn filters(&mut self, range: TimeRange, event_type: Option<&EventType>) -> &mut Self {
        if let Some(s) = range.since {
            self.push(" AND e.created_at >= ").arg(Arg::Time(s));
        }
        if let Some(u) = range.until {
            self.push(" AND e.created_at < ").arg(Arg::Time(u));
        }
        if let Some(t) = event_type {
            self.push(" AND e.event_type = ")
                .arg(Arg::Text(t.as_str().to_owned()));
        }
        self
    }

    /// `SELECT user_id, at` of the users active (with an event of
    /// `event_type`, if given) over `split`: `at` the midnight of a sealed
    /// day, read from its rollup, or the time of an event elsewhere.
    fn activity(&mut self, split: &Split, event_type: Option<&EventType>) -> &mut Self {
        let mut first = true;
        if !split.days.is_empty() {
            first = false;
            self.push("SELECT r.user_id, (r.day::timestamp AT TIME ZONE 'UTC') AS at FROM ");
            match event_type {
                Some(t) => self
                    .push("event_daily_type_users r WHERE r.event_type = ")
                    .arg(Arg::Text(t.as_str().to_owned()))
                    .push(" AND"),
                None => self.push("event_daily_users r WHERE"),
            };
            self.push(" r.day = ANY(")
                .arg(Arg::Days(split.days.clone()))
                .push(")");
        }
        for piece in &split.live {
            if !std::mem::take(&mut first) {
                self.push(" UNION ALL ");
            }
            self.push(
                "SELECT e.user_id, e.created_at AS at FROM events e WHERE e.user_id IS NOT NULL",
            )
            .filters(*piece, event_type);
        }
        if first {
            // An empty range: nothing is active.
            self.push("SELECT NULL::uuid AS user_id, NULL::timestamptz AS at WHERE false");
        }
        self
    }

    fn query(self) -> BoxedSqlQuery<'static, Pg, diesel::query_builder::SqlQuery> {
        let mut q = diesel::sql_query(self.text).into_boxed::<Pg>();
        for a in self.args {
            q = match a {
                Arg::Text(v) => q.bind::<Text, _>(v),
                Arg::Time(v) => q.bind::<Timestamptz, _>(v),
                Arg::Int(v) => q.bind::<BigInt, _>(v),
                Arg::Real(v) => q.bind::<Float, _>(v),
                Arg::Id(v) => q.bind::<diesel::sql_types::Uuid, _>(v),
                Arg::Day(v) => q.bind::<Date, _>(v),
                Arg::Days(v) => q.bind::<Array<Date>, _>(v),
            };
        }
        q
    }
}

#[derive(QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = Timestamptz)]
    bucket: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct CellRow {
    #[diesel(sql_type = Timestamptz)]
    cohort: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    bucket: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct ValueRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
    #[diesel(sql_type = Bool)]
    missing: bool,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct TypeRow {
    #[diesel(sql_type = Varchar)]
    event_type: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct CountsRow {
    #[diesel(sql_type = Array<BigInt>)]
    counts: Vec<i64>,
}

#[derive(QueryableByName)]
struct HitRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    user_id: Option<Uuid>,
    #[diesel(sql_type = Varchar)]
    event_type: String,
    #[diesel(sql_type = Jsonb)]
    payload: Json,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Float)]
    rank: f32,
}

/// Active users per bucket, on one snapshot: buckets wholly in range and
/// rolled up as a whole (a day, week or month) read their stored count;
/// the rest of the range counts distinct users over the rollups of its
/// sealed days and `events` elsewhere.
async fn active_users(
    conn: &mut AsyncPgConnection,
    period: Period,
    range: TimeRange,
    event_type: Option<&EventType>,
) -> Result<Vec<ActiveUsers>> {
    rollups::one_snapshot!(conn, active_users_in(conn, period, range, event_type).await)
}

async fn active_users_in(
    conn: &mut AsyncPgConnection,
    period: Period,
    range: TimeRange,
    event_type: Option<&EventType>,
) -> Result<Vec<ActiveUsers>> {
    let days = rollups::sealed_days(conn, range).await?;
    let next = |start: NaiveDate| match period {
        Period::Day => start + chrono::Days::new(1),
        Period::Week => start + chrono::Days::new(7),
        Period::Month => start + chrono::Months::new(1),
    };
    let candidates = match period {
        Period::Day => days.clone(),
        Period::Week | Period::Month => {
            rollups::sealed_periods(conn, period.as_sql(), range).await?
        }
    };
    let rolled: Vec<NaiveDate> = candidates
        .into_iter()
        .filter(|b| rollups::within(range, rollups::start_of(*b), rollups::start_of(next(*b))))
        .collect();
    let rest = rollups::outside(
        range,
        rolled
            .iter()
            .map(|b| (rollups::start_of(*b), rollups::start_of(next(*b)))),
    );
    let mut split = Split::default();
    for piece in rest {
        let part = rollups::split(piece, &days);
        split.days.extend(part.days);
        split.live.extend(part.live);
    }
    let mut q = Sql::new(
        "SELECT bucket, n FROM (SELECT NULL::timestamptz AS bucket, 0::int8 AS n WHERE false",
    );
    if !rolled.is_empty() {
        match (period, event_type) {
            (Period::Day, None) => q.push(
                " UNION ALL SELECT (r.day::timestamp AT TIME ZONE 'UTC'), r.users \
                 FROM event_rollup_days r WHERE r.users > 0 AND r.day = ANY(",
            ),
            (Period::Day, Some(t)) => q
                .push(
                    " UNION ALL SELECT (r.day::timestamp AT TIME ZONE 'UTC'), r.users \
                     FROM event_daily_types r WHERE r.users > 0 AND r.event_type = ",
                )
                .arg(Arg::Text(t.as_str().to_owned()))
                .push(" AND r.day = ANY("),
            (_, t) => q
                .push(
                    " UNION ALL SELECT (r.start::timestamp AT TIME ZONE 'UTC'), r.users \
                     FROM event_period_users r WHERE r.users > 0 AND r.period = ",
                )
                .arg(Arg::Text(period.as_sql().to_owned()))
                .push(" AND r.event_type = ")
                .arg(Arg::Text(
                    t.map(|t| t.as_str().to_owned()).unwrap_or_default(),
                ))
                .push(" AND r.start = ANY("),
        }
        .arg(Arg::Days(rolled))
        .push(")");
    }
    if !split.live.is_empty() || !split.days.is_empty() {
        q.push(" UNION ALL SELECT date_trunc(")
            .arg(Arg::Text(period.as_sql().to_owned()))
            .push(", a.at, 'UTC') AS bucket, count(DISTINCT a.user_id) AS n FROM (")
            .activity(&split, event_type)
            .push(") a GROUP BY 1");
    }
    q.push(") x ORDER BY 1");
    let rows: Vec<BucketRow> = q.query().load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| ActiveUsers {
            bucket: r.bucket,
            users: r.n as u64,
        })
        .collect())
}

/// One CTE per step: step 1 is each user's first event of the first type
/// in range; step k the first event of type k after step k-1's, before
/// entry + window (a correlated lookup on `(user_id, created_at)`).
async fn funnel(conn: &mut AsyncPgConnection, funnel: &Funnel) -> Result<Vec<u64>> {
    let mut q = Sql::new(
        "WITH s1 AS (SELECT e.user_id, min(e.created_at) AS t0, min(e.created_at) AS t FROM events e WHERE e.user_id IS NOT NULL",
    );
    q.filters(funnel.range, Some(&funnel.steps[0]))
        .push(" GROUP BY e.user_id)");
    let window_us = funnel.window.num_microseconds().unwrap_or(i64::MAX);
    q.args.push(Arg::Int(window_us));
    let window = format!("(${} * interval '1 microsecond')", q.args.len());
    for (k, step) in funnel.steps.iter().enumerate().skip(1) {
        q.push(&format!(
            ", s{n} AS (SELECT s.user_id, s.t0, (SELECT min(e.created_at) FROM events e \
             WHERE e.user_id = s.user_id AND e.event_type = ",
            n = k + 1
        ))
        .arg(Arg::Text(step.as_str().to_owned()))
        .push(&format!(
            " AND e.created_at > s.t AND e.created_at < s.t0 + {window}) AS t \
             FROM s{k} s WHERE s.t IS NOT NULL)"
        ));
    }
    q.push(" SELECT ARRAY[");
    for k in 1..=funnel.steps.len() {
        if k > 1 {
            q.push(", ");
        }
        q.push(&format!("(SELECT count(*) FROM s{k} WHERE t IS NOT NULL)"));
    }
    q.push("]::int8[] AS counts");
    let row: CountsRow = q.query().get_result(conn).await?;
    Ok(row.counts.into_iter().map(|n| n as u64).collect())
}

/// Cohorts from each user's first activity in range (of the cohort type),
/// unless the user had one before the range; activity per bucket from the
/// rollups of sealed days and `events` elsewhere (see [`Sql::activity`]).
async fn retention(conn: &mut AsyncPgConnection, r: &Retention) -> Result<Vec<RetentionCell>> {
    rollups::one_snapshot!(conn, retention_in(conn, r).await)
}

async fn retention_in(conn: &mut AsyncPgConnection, r: &Retention) -> Result<Vec<RetentionCell>> {
    // One read of the sealed days serves the range and what came before it.
    let up_to_end = TimeRange {
        since: None,
        until: r.range.until,
    };
    let sealed = rollups::sealed_days(conn, up_to_end).await?;
    let split = rollups::split(r.range, &sealed);
    // What came before the range: sealed days from the rollups (their rows
    // exist exactly for sealed days), the rest from `events`.
    let since = r.range.since.unwrap_or(DateTime::<Utc>::MIN_UTC);
    let before = rollups::split(TimeRange::until(since), &sealed);
    let mut q = Sql::new("WITH firsts AS (SELECT a.user_id, min(a.at) AS first_at FROM (");
    q.activity(&split, r.cohort_event.as_ref())
        .push(") a GROUP BY a.user_id), cohorts AS MATERIALIZED (SELECT f.user_id, date_trunc(")
        .arg(Arg::Text(r.period.as_sql().to_owned()));
    let period = q.args.len();
    q.push(", f.first_at, 'UTC') AS cohort FROM firsts f WHERE true");
    if !before.days.is_empty() {
        q.push(" AND NOT EXISTS (SELECT 1 FROM ");
        match &r.cohort_event {
            Some(t) => q
                .push("event_daily_type_users b WHERE b.event_type = ")
                .arg(Arg::Text(t.as_str().to_owned()))
                .push(" AND"),
            None => q.push("event_daily_users b WHERE"),
        };
        q.push(" b.user_id = f.user_id AND b.day < ")
            .arg(Arg::Day(rollups::day_of(since)))
            .push(")");
    }
    for piece in &before.live {
        q.push(" AND NOT EXISTS (SELECT 1 FROM events e WHERE e.user_id = f.user_id")
            .filters(*piece, r.cohort_event.as_ref())
            .push(")");
    }
    q.push(&format!(
        "), active AS (SELECT a.user_id, date_trunc(${period}, a.at, 'UTC') AS bucket FROM ("
    ))
    .activity(&split, r.active_event.as_ref())
    .push(
        ") a) SELECT c.cohort, NULL::timestamptz AS bucket, count(*) AS n FROM cohorts c GROUP BY 1 \
         UNION ALL SELECT c.cohort, a.bucket, count(DISTINCT c.user_id) AS n FROM cohorts c \
         JOIN active a ON a.user_id = c.user_id AND a.bucket >= c.cohort GROUP BY 1, 2",
    );
    let rows: Vec<CellRow> = q.query().load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|c| RetentionCell {
            cohort: c.cohort,
            bucket: c.bucket,
            users: c.n as u64,
        })
        .collect())
}

async fn breakdown(
    conn: &mut AsyncPgConnection,
    key: &str,
    range: TimeRange,
    event_type: Option<&EventType>,
    top: usize,
) -> Result<Breakdown> {
    let mut q = Sql::new("WITH g AS (SELECT CASE WHEN jsonb_typeof(e.payload -> ");
    q.arg(Arg::Text(key.to_owned()));
    let k = q.args.len();
    q.push(&format!(
        "::text) = 'string' THEN e.payload ->> ${k}::text END AS v, count(*) AS n \
         FROM events e WHERE true"
    ))
    .filters(range, event_type)
    .push(
        " GROUP BY 1), r AS (SELECT v, n, row_number() OVER \
         (PARTITION BY v IS NULL ORDER BY n DESC, v COLLATE \"C\") AS rk FROM g) \
         SELECT CASE WHEN v IS NOT NULL AND rk <= ",
    )
    .arg(Arg::Int(top as i64))
    .push(" THEN v END AS v, v IS NULL AS missing, sum(n)::int8 AS n FROM r GROUP BY 1, 2");
    let rows: Vec<ValueRow> = q.query().load(conn).await?;
    let mut out = Breakdown {
        values: Vec::new(),
        other: 0,
        missing: 0,
    };
    for r in rows {
        match (r.missing, r.v) {
            (true, _) => out.missing = r.n as u64,
            (false, None) => out.other = r.n as u64,
            (false, Some(value)) => out.values.push(ValueCount {
                value,
                count: r.n as u64,
            }),
        }
    }
    out.values
        .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    Ok(out)
}

async fn top_event_types(
    conn: &mut AsyncPgConnection,
    range: TimeRange,
    top: usize,
) -> Result<Vec<TypeCount>> {
    rollups::one_snapshot!(conn, top_event_types_in(conn, range, top).await)
}

async fn top_event_types_in(
    conn: &mut AsyncPgConnection,
    range: TimeRange,
    top: usize,
) -> Result<Vec<TypeCount>> {
    let split = rollups::plan(conn, range).await?;
    let mut q = Sql::new(
        "SELECT x.event_type, sum(x.n)::int8 AS n FROM (\
         SELECT NULL::varchar AS event_type, 0::int8 AS n WHERE false",
    );
    if !split.days.is_empty() {
        q.push(" UNION ALL SELECT t.event_type, t.events AS n FROM event_daily_types t WHERE t.day = ANY(")
            .arg(Arg::Days(split.days.clone()))
            .push(")");
    }
    for piece in &split.live {
        q.push(" UNION ALL SELECT e.event_type, count(*) AS n FROM events e WHERE true")
            .filters(*piece, None)
            .push(" GROUP BY 1");
    }
    q.push(" ) x GROUP BY 1 ORDER BY n DESC, x.event_type COLLATE \"C\" LIMIT ")
        .arg(Arg::Int(top as i64));
    let rows: Vec<TypeRow> = q.query().load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| TypeCount {
            event_type: EventType::from_stored(r.event_type),
            count: r.n as u64,
        })
        .collect())
}

/// The conditions a page of a search puts on the events it reads: the
/// search's range and type, and in [`SearchOrder::Newest`] the cursor.
fn search_filters(q: &mut Sql, search: &EventSearch, after: Option<SearchCursor>) {
    q.filters(search.range, search.event_type.as_ref());
    if let (Some(c), SearchOrder::Newest) = (after, search.order) {
        q.push(" AND (e.created_at, e.id) < (")
            .arg(Arg::Time(c.created_at))
            .push(", ")
            .arg(Arg::Id(c.id))
            .push(")");
    }
}

/// The search's words as a `tsquery`: the words were split as the
/// in-memory backend splits them; the `simple` parser then makes each one
/// lexeme, and plainto_tsquery ANDs them with no operator syntax to escape.
fn search_query(q: &mut Sql, words: &[String]) -> String {
    q.args.push(Arg::Text(words.join(" ")));
    format!("plainto_tsquery('simple'::regconfig, ${})", q.args.len())
}

/// What the probe of a search saw.
#[derive(QueryableByName)]
struct ProbeRow {
    /// Matches found, at most `min(candidates, PROBE_MATCHES) + 1`.
    #[diesel(sql_type = BigInt)]
    found: i64,
    /// The lowest heap block holding one of them.
    #[diesel(sql_type = Nullable<BigInt>)]
    first: Option<i64>,
    /// The highest.
    #[diesel(sql_type = Nullable<BigInt>)]
    last: Option<i64>,
    /// The widest step between the blocks of two of them, one after the
    /// other in block order.
    #[diesel(sql_type = Nullable<BigInt>)]
    gap: Option<i64>,
    /// Heap blocks of `events`.
    #[diesel(sql_type = BigInt)]
    blocks: i64,
}

impl ProbeRow {
    /// How many heap blocks the probe read to find its matches. A scan
    /// reads blocks in order but may start anywhere (a sequential scan
    /// joins one under way, `synchronize_seqscans`) and wrap around, so the
    /// blocks it did not read are the widest gap between its matches,
    /// counting the one across the end of the table.
    fn seen(&self) -> i64 {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return self.blocks.max(1);
        };
        let blocks = self.blocks.max(last + 1);
        let across_the_end = first + blocks - last;
        let unread = self.gap.unwrap_or(0).max(across_the_end);
        (blocks - unread + 1).max(1)
    }
}

/// The most matches the probe of a search takes: enough to tell how thinly
/// the matches are spread, few enough that a common word's probe costs
/// little (the planner answers it with a sequential scan that stops within
/// a few thousand rows, or a bitmap scan that fetches at most this many).
const PROBE_MATCHES: usize = 1_000;

/// How many of the newest events (after the cursor, of the type and range)
/// a search in [`SearchOrder::Newest`] reads first, in the hope that they
/// hold a page of matches: a word in one event of 100 fills a page of 20
/// from them, at the cost of computing 2,000 documents (about 10 ms) for a
/// rarer one.
const NEWEST_WALK: usize = 2_000;

/// How many fetched matches cost as much as walking one heap block of
/// `events` newest first, computing each event's document: about 50 events
/// a block at 4 to 5 µs each, against 1 to 3 µs to fetch one match found by
/// the GIN index, at a million events (see BENCHMARKS.md). Past what
/// `work_mem` holds exactly (about 100,000 matches at 4 MB) the bitmap turns
/// lossy and a fetched match costs much more; near there neither way is
/// cheap.
const WALKED_BLOCK_COST: f64 = 100.0;

/// Whether a search should walk events newest first rather than fetch
/// every match the GIN index finds and keep the newest `take`.
///
/// The probe found `found` matches (it stops at `probe`) within `seen` of
/// `blocks` heap blocks ([`ProbeRow::seen`]). With fewer than `probe`,
/// they are every match: fetch them. Otherwise, taking the matches as
/// spread evenly, there are about
/// `found * blocks / seen` to fetch, while a walk meets `take` of them
/// within about `seen * take / found` blocks' worth of events.
fn walk_is_cheaper(p: &ProbeRow, probe: i64, take: usize) -> bool {
    if p.found < probe {
        return false;
    }
    let (found, seen) = (p.found.max(1) as f64, p.seen() as f64);
    let walk = seen * take as f64 / found * WALKED_BLOCK_COST;
    let fetch = found * p.blocks.max(1) as f64 / seen;
    walk < fetch
}

/// Two statements (three in newest-first order), so that neither a rare nor
/// a common word makes PostgreSQL read the whole table, whatever its
/// statistics say:
///
/// 0. Newest first only: the newest [`NEWEST_WALK`] events, if they hold a
///    whole page of matches, are the answer.
/// 1. The probe: at most `min(candidates, PROBE_MATCHES) + 1` matches, in
///    no order, and how far into the heap they lie. Without an order the
///    planner answers it with a bitmap scan of `events_payload_fts_idx`,
///    which stops after that many rows, or, when it expects many matches,
///    with a sequential scan, which then meets them within its first
///    blocks. Either way it never reads the whole table for a rare word
///    (unless the planner takes a rare word for a common one) nor sorts
///    anything.
/// 2. Either every match, fetched by the GIN index alone (the subquery
///    fence keeps the planner from walking an index instead) and the
///    newest `take` kept; or, when the words are common enough that the
///    probe's figures say it is cheaper ([`walk_is_cheaper`]), a walk of
///    `events_created_at_idx` (or the type's index) newest first until
///    `take` matches, computing each event's document once (`LATERAL ...
///    OFFSET 0`, which also keeps the planner from using the GIN index and
///    sorting every match).
///
/// Both give the same rows: the newest `take` matches. Relevance takes
/// `candidates` of them whatever the cursor and ranks them, so its pages
/// neither skip nor repeat hits; newest-first takes the page after the
/// cursor.
async fn search_events(
    conn: &mut AsyncPgConnection,
    words: &[String],
    search: &EventSearch,
    after: Option<SearchCursor>,
    limit: usize,
) -> Result<Vec<SearchHit>> {
    let doc = |alias: &str| PAYLOAD_WORDS.replace("payload", &format!("{alias}.payload"));
    if search.order == SearchOrder::Newest {
        // The newest events alone, if they hold a page of matches.
        let mut q = Sql::default();
        let query = search_query(&mut q, words);
        q.push(
            "SELECT w.id, w.user_id, w.event_type, w.payload, w.created_at, 0::real AS rank \
             FROM (SELECT e.id, e.user_id, e.event_type, e.payload, e.created_at FROM events e \
             WHERE true",
        );
        search_filters(&mut q, search, after);
        q.push(" ORDER BY e.created_at DESC, e.id DESC LIMIT ")
            .arg(Arg::Int(NEWEST_WALK as i64))
            .push(&format!(
                ") w WHERE {} @@ {query} ORDER BY w.created_at DESC, w.id DESC LIMIT ",
                doc("w")
            ))
            .arg(Arg::Int(limit as i64));
        let rows: Vec<HitRow> = q.query().load(conn).await?;
        if rows.len() == limit {
            return Ok(hits(rows));
        }
    }
    let probe = search.candidates.min(PROBE_MATCHES) as i64 + 1;
    let mut q = Sql::new(
        "WITH p AS MATERIALIZED (SELECT (e.ctid::text::point)[0]::int8 AS blk FROM events e WHERE ",
    );
    let query = search_query(&mut q, words);
    q.push(&format!("{} @@ {query}", doc("e")));
    search_filters(&mut q, search, after);
    q.push(" LIMIT ").arg(Arg::Int(probe)).push(
        ") SELECT count(*) AS found, min(blk) AS first, max(blk) AS last, \
         (SELECT max(g.gap) FROM (SELECT blk - lag(blk) OVER (ORDER BY blk) AS gap FROM p) g) AS gap, \
         pg_relation_size('events'::regclass) / current_setting('block_size')::int8 AS blocks \
         FROM p",
    );
    let seen: ProbeRow = q.query().get_result(conn).await?;

    let take = match search.order {
        SearchOrder::Relevance => search.candidates,
        SearchOrder::Newest => limit,
    };
    let mut q = Sql::default();
    let query = search_query(&mut q, words);
    let walk = walk_is_cheaper(&seen, probe, take);
    let rank = match (search.order, walk) {
        (SearchOrder::Newest, _) => "0::real".to_owned(),
        (SearchOrder::Relevance, true) => format!("ts_rank(c.doc, {query})"),
        (SearchOrder::Relevance, false) => format!("ts_rank({}, {query})", doc("c")),
    };
    q.push(&format!(
        "SELECT * FROM (SELECT c.id, c.user_id, c.event_type, c.payload, c.created_at, \
         {rank} AS rank FROM ("
    ));
    if walk {
        q.push(&format!(
            "SELECT e.id, e.user_id, e.event_type, e.payload, e.created_at, d.doc FROM events e, \
             LATERAL (SELECT {} AS doc OFFSET 0) d WHERE d.doc @@ {query}",
            doc("e")
        ));
        search_filters(&mut q, search, after);
        q.push(" ORDER BY e.created_at DESC, e.id DESC LIMIT ");
    } else {
        q.push(&format!(
            "SELECT s.* FROM (SELECT e.id, e.user_id, e.event_type, e.payload, e.created_at \
             FROM events e WHERE {} @@ {query}",
            doc("e")
        ));
        search_filters(&mut q, search, after);
        q.push(" OFFSET 0) s ORDER BY s.created_at DESC, s.id DESC LIMIT ");
    }
    q.arg(Arg::Int(take as i64)).push(") c) h");
    if let (Some(c), SearchOrder::Relevance) = (after, search.order) {
        q.push(" WHERE h.rank < ").arg(Arg::Real(c.rank));
        let r = q.args.len();
        q.push(&format!(" OR (h.rank = ${r} AND (h.created_at, h.id) < ("))
            .arg(Arg::Time(c.created_at))
            .push(", ")
            .arg(Arg::Id(c.id))
            .push("))");
    }
    q.push(match search.order {
        SearchOrder::Relevance => " ORDER BY h.rank DESC, h.created_at DESC, h.id DESC LIMIT ",
        SearchOrder::Newest => " ORDER BY h.created_at DESC, h.id DESC LIMIT ",
    })
    .arg(Arg::Int(limit as i64));
    let rows: Vec<HitRow> = q.query().load(conn).await?;
    Ok(hits(rows))
}

/// The hits of a search's rows.
fn hits(rows: Vec<HitRow>) -> Vec<SearchHit> {
    rows.into_iter()
        .map(|r| SearchHit {
            event: Event {
                id: r.id,
                user_id: r.user_id,
                event_type: EventType::from_stored(r.event_type),
                payload: r.payload,
                created_at: r.created_at,
            },
            rank: r.rank,
        })
        .collect()
}

/// `text` with `LIKE`'s wildcards and escape character escaped.
fn like_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

async fn search_users(
    conn: &mut AsyncPgConnection,
    text: &str,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<User>> {
    let prefix = format!("{}%", like_escaped(text));
    let words: Vec<String> = tokens(text).map(|w| format!("{w}:*")).collect();
    let mut query = users::table.select(UserRow::as_select()).into_boxed();
    let by_prefix = sql::<Bool>("(lower(email) LIKE ")
        .bind::<Text, _>(prefix.clone())
        .sql(" OR lower(wallet_address) LIKE ")
        .bind::<Text, _>(prefix);
    query = if words.is_empty() {
        query.filter(by_prefix.sql(")"))
    } else {
        query.filter(
            by_prefix
                .sql(
                    " OR (to_tsvector('simple'::regconfig, metadata ->> 'display_name') \
                     @@ to_tsquery('simple'::regconfig, ",
                )
                .bind::<Text, _>(words.join(" & "))
                .sql(") AND jsonb_typeof(metadata -> 'display_name') = 'string'))"),
        )
    };
    if let Some(c) = after {
        query = query
            .filter(users::created_at.ge(c.created_at))
            .filter(users::created_at.gt(c.created_at).or(users::id.gt(c.id)));
    }
    Ok(query
        .order((users::created_at.asc(), users::id.asc()))
        .limit(limit as i64)
        .load(conn)
        .await?
        .into_iter()
        .map(User::from)
        .collect())
}

#[async_trait::async_trait]
impl AnalyticsBackend for PgBackend {
    async fn active_users(
        &self,
        period: Period,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<ActiveUsers>> {
        on_replica!(self, active_users, period, range, event_type)
    }

    async fn funnel(&self, f: &Funnel) -> Result<Vec<u64>> {
        on_replica!(self, funnel, f)
    }

    async fn retention(&self, r: &Retention) -> Result<Vec<RetentionCell>> {
        on_replica!(self, retention, r)
    }

    async fn breakdown(
        &self,
        key: &str,
        range: TimeRange,
        event_type: Option<&EventType>,
        top: usize,
    ) -> Result<Breakdown> {
        on_replica!(self, breakdown, key, range, event_type, top)
    }

    async fn top_event_types(&self, range: TimeRange, top: usize) -> Result<Vec<TypeCount>> {
        on_replica!(self, top_event_types, range, top)
    }

    async fn search_events(
        &self,
        words: &[String],
        search: &EventSearch,
        after: Option<SearchCursor>,
        limit: usize,
    ) -> Result<Vec<SearchHit>> {
        on_replica!(self, search_events, words, search, after, limit)
    }

    async fn search_users(
        &self,
        text: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<User>> {
        on_replica!(self, search_users, text, after, limit)
    }

    async fn refresh_rollups(
        &self,
        from: Option<DateTime<Utc>>,
        ended_by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        on_write!(self, rollups::refresh, from, ended_by, now)
    }

    async fn forget_rollups(&self, range: TimeRange) -> Result<u64> {
        on_write!(self, rollups::forget, range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(found: i64, blocks: &[i64], table: i64) -> ProbeRow {
        let mut sorted = blocks.to_vec();
        sorted.sort();
        ProbeRow {
            found,
            first: sorted.iter().min().copied(),
            last: sorted.iter().max().copied(),
            gap: sorted.windows(2).map(|w| w[1] - w[0]).max(),
            blocks: table,
        }
    }

    #[test]
    fn the_blocks_a_probe_read() {
        // From the start of the table (a bitmap scan) to its last match.
        assert_eq!(probe(3, &[2, 5, 9], 1000).seen(), 8);
        // A sequential scan that joined another at block 900 and wrapped.
        assert_eq!(probe(4, &[950, 990, 3, 10], 1000).seen(), 1000 - 940 + 1);
        assert_eq!(probe(1, &[7], 1000).seen(), 1);
        assert_eq!(probe(0, &[], 1000).seen(), 1000);
        // The table grew after its size was read.
        assert_eq!(probe(2, &[0, 1200], 1000).seen(), 2);
    }

    #[test]
    fn common_words_walk_and_thin_ones_fetch() {
        // Fewer matches than the probe takes: every match, fetched.
        assert!(!walk_is_cheaper(&probe(5, &[0, 10], 1000), 11, 10));
        // 1,001 matches within 47 of 22,250 blocks (about half the events):
        // a walk meets 10,000 within about 470 blocks.
        let common = probe(1001, &[0, 46], 22_250);
        assert!(walk_is_cheaper(&common, 1001, 10_000));
        assert!(walk_is_cheaper(&common, 1001, 21));
        // 1,001 within 13,724 blocks (about 1,600 matches): fetch them.
        let thin = probe(1001, &[0, 13_723], 22_250);
        assert!(!walk_is_cheaper(&thin, 1001, 10_000));
        assert!(!walk_is_cheaper(&thin, 1001, 21));
        // 1,001 within 1,374 blocks (about 16,000 matches): fetching them
        // beats walking for 10,000 of them, walking wins for a page.
        let medium = probe(1001, &[0, 1373], 22_250);
        assert!(!walk_is_cheaper(&medium, 1001, 10_000));
        assert!(walk_is_cheaper(&medium, 1001, 21));
    }
}

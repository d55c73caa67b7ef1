//! Daily rollups of `events` (migration `2026-12-07-000001`): which days a
//! question may read from them, and how days are rolled up and forgotten.
//!
//! A UTC day is *sealed* when its row in `event_rollup_days` exists; the
//! same statement that writes that row writes the day's rows of
//! `event_daily_users` (who was active), `event_daily_type_users` (who was
//! active, per event type) and `event_daily_types` (events per type), from
//! one snapshot of `events`. A question splits its range into the sealed
//! days wholly inside it, read from the rollups, and the rest (partial days
//! at the edges, days not sealed yet), read from `events`; the two parts
//! never overlap, so the answer is the one `events` alone would give, as
//! long as no event is written into, or deleted from, a day after it was
//! sealed (see [`Analytics::refresh_rollups`](crate::Analytics::refresh_rollups)).

#[cfg(test)]
use chrono::TimeDelta;
use chrono::{DateTime, Days, NaiveDate, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Date, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::error::Result;
use crate::model::TimeRange;

/// Past this many pieces of `events` to read beside the rollups, a
/// question reads its whole range from `events` (a range sealed in so many
/// separate stretches is rare: a rebuild or purge in progress).
const MAX_LIVE_PIECES: usize = 32;

/// How a question reads its range: whole sealed days from the rollups,
/// and the rest from `events`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Split {
    /// Sealed days wholly inside the range, ascending.
    pub(super) days: Vec<NaiveDate>,
    /// The pieces of the range outside those days, in order; each
    /// `[since, until)`, an end `None` where the range is open.
    pub(super) live: Vec<TimeRange>,
}

/// Midnight (UTC) starting `day`.
pub(super) fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// The UTC day holding `at`.
pub(super) fn day_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// Whether `[from, to)` lies within `range`.
pub(super) fn within(range: TimeRange, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    range.since.is_none_or(|s| s <= from) && range.until.is_none_or(|u| to <= u)
}

/// The pieces of `range` outside `covered` (ascending, disjoint spans
/// within `range`), in order.
pub(super) fn outside(
    range: TimeRange,
    covered: impl IntoIterator<Item = (DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<TimeRange> {
    let mut live = Vec::new();
    let mut cursor = range.since;
    for (from, to) in covered {
        if cursor.is_none_or(|c| c < from) {
            live.push(TimeRange {
                since: cursor,
                until: Some(from),
            });
        }
        cursor = Some(to);
    }
    if range.until.is_none_or(|u| cursor.is_none_or(|c| c < u)) {
        live.push(TimeRange {
            since: cursor,
            until: range.until,
        });
    }
    live
}

/// Splits `range` given the sealed days that overlap it (any order).
pub(super) fn split(range: TimeRange, sealed: &[NaiveDate]) -> Split {
    let mut days: Vec<NaiveDate> = sealed
        .iter()
        .copied()
        .filter(|d| within(range, start_of(*d), start_of(*d + Days::new(1))))
        .collect();
    days.sort_unstable();
    days.dedup();
    let live = outside(
        range,
        days.iter()
            .map(|d| (start_of(*d), start_of(*d + Days::new(1)))),
    );
    if live.len() > MAX_LIVE_PIECES {
        return Split {
            days: Vec::new(),
            live: vec![range],
        };
    }
    Split { days, live }
}

#[derive(QueryableByName)]
struct DayRow {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
}

/// Whether `conn` is inside a transaction (the caller's, or a pinned
/// connection's).
pub(super) fn in_transaction(conn: &mut AsyncPgConnection) -> bool {
    use diesel_async::{AnsiTransactionManager, TransactionManager};
    matches!(
        AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(Some(_))
    )
}

/// Runs `$body` (using `$conn`) on one snapshot: in a read-only
/// `REPEATABLE READ` transaction, or in the caller's transaction if there
/// is one; so the days a question finds rolled up and the rollups it then
/// reads agree, whatever commits meanwhile.
macro_rules! one_snapshot {
    ($conn:ident, $body:expr) => {{
        use diesel_async::SimpleAsyncConnection as _;
        let own = !crate::postgres::rollups::in_transaction($conn);
        if own {
            $conn
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?;
        }
        let result = $body;
        if own {
            let end = $conn
                .batch_execute(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })
                .await;
            if result.is_ok() {
                end?;
            }
        }
        result
    }};
}
pub(super) use one_snapshot;

/// The key of the transaction-scoped advisory lock that orders the
/// writers of rollups (sealing a day, rolling up a period, forgetting days,
/// purging events), so that none of them works from a snapshot another has
/// made stale.
const LOCK: &str = "SELECT pg_advisory_xact_lock(7163450021942615103)";

/// The rolled-up days overlapping `range`, ascending.
pub(super) async fn sealed_days(
    conn: &mut AsyncPgConnection,
    range: TimeRange,
) -> Result<Vec<NaiveDate>> {
    let rows: Vec<DayRow> = diesel::sql_query(
        "SELECT day FROM event_rollup_days \
         WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day < $2) ORDER BY day",
    )
    .bind::<Nullable<Date>, _>(range.since.map(day_of))
    .bind::<Nullable<Date>, _>(range.until.map(|u| day_of(u) + Days::new(1)))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.day).collect())
}

/// The split of `range` by the days rolled up now.
pub(super) async fn plan(conn: &mut AsyncPgConnection, range: TimeRange) -> Result<Split> {
    Ok(split(range, &sealed_days(conn, range).await?))
}

/// The starts of the rolled-up buckets of `period` (`week` or `month`)
/// overlapping `range`, ascending.
pub(super) async fn sealed_periods(
    conn: &mut AsyncPgConnection,
    period: &str,
    range: TimeRange,
) -> Result<Vec<NaiveDate>> {
    let rows: Vec<DayRow> = diesel::sql_query(
        "SELECT start AS day FROM event_period_users WHERE period = $1 AND event_type = '' \
         AND ($2::date IS NULL OR start >= $2) AND ($3::date IS NULL OR start < $3) \
         ORDER BY start",
    )
    .bind::<diesel::sql_types::Text, _>(period)
    .bind::<Nullable<Date>, _>(range.since.map(day_of))
    .bind::<Nullable<Date>, _>(range.until.map(|u| day_of(u) + Days::new(1)))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.day).collect())
}

#[derive(QueryableByName)]
struct Sealed {
    #[diesel(sql_type = BigInt)]
    sealed: i64,
}

/// Seals `day` if no one has, in a transaction of its own under [`LOCK`]:
/// its counts, its sets and its row in `event_rollup_days` from one
/// snapshot of `events`. Returns whether this call sealed it.
async fn seal(conn: &mut AsyncPgConnection, day: NaiveDate, now: DateTime<Utc>) -> Result<bool> {
    use diesel_async::AsyncConnection as _;
    conn.transaction(async move |conn| {
        diesel::sql_query(LOCK).execute(conn).await?;
        let row: Sealed = diesel::sql_query(
            "WITH src AS MATERIALIZED (SELECT e.user_id, e.event_type FROM events e \
               WHERE e.created_at >= $3 AND e.created_at < $4 \
               AND NOT EXISTS (SELECT 1 FROM event_rollup_days d WHERE d.day = $1)), \
             seal AS (INSERT INTO event_rollup_days (day, sealed_at, events, users) \
               SELECT $1, $2, count(*), count(DISTINCT user_id) FROM src \
               ON CONFLICT (day) DO NOTHING RETURNING day), \
             du AS (INSERT INTO event_daily_users (day, user_id) \
               SELECT DISTINCT $1::date, s.user_id FROM src s, seal WHERE s.user_id IS NOT NULL \
               ON CONFLICT DO NOTHING), \
             dtu AS (INSERT INTO event_daily_type_users (event_type, day, user_id) \
               SELECT DISTINCT s.event_type, $1::date, s.user_id FROM src s, seal \
               WHERE s.user_id IS NOT NULL ON CONFLICT DO NOTHING), \
             dt AS (INSERT INTO event_daily_types (day, event_type, events, users) \
               SELECT $1::date, s.event_type, count(*), count(DISTINCT s.user_id) FROM src s, seal \
               GROUP BY s.event_type ON CONFLICT (day, event_type) \
               DO UPDATE SET events = excluded.events, users = excluded.users) \
             SELECT count(*) AS sealed FROM seal",
        )
        .bind::<Date, _>(day)
        .bind::<Timestamptz, _>(now)
        .bind::<Timestamptz, _>(start_of(day))
        .bind::<Timestamptz, _>(start_of(day + Days::new(1)))
        .get_result(conn)
        .await?;
        Ok(row.sealed > 0)
    })
    .await
}

#[derive(QueryableByName)]
struct PeriodRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    period: String,
    #[diesel(sql_type = Date)]
    start: NaiveDate,
    #[diesel(sql_type = Date)]
    end: NaiveDate,
}

/// Rolls up the weeks and months whose days are all rolled up and that
/// are not yet, each in a transaction of its own under [`LOCK`]. Returns
/// how many.
async fn seal_periods(conn: &mut AsyncPgConnection) -> Result<u64> {
    use diesel_async::AsyncConnection as _;
    let todo: Vec<PeriodRow> = diesel::sql_query(
        "WITH p AS (SELECT 'week' AS period, date_trunc('week', day::timestamp)::date AS start, \
           count(*) AS n FROM event_rollup_days GROUP BY 2 \
           UNION ALL SELECT 'month', date_trunc('month', day::timestamp)::date, count(*) \
           FROM event_rollup_days GROUP BY 2), \
         q AS (SELECT period, start, (start::timestamp + CASE period WHEN 'week' \
           THEN interval '1 week' ELSE interval '1 month' END)::date AS end, n FROM p) \
         SELECT period, start, q.end FROM q WHERE n = q.end - start AND NOT EXISTS \
           (SELECT 1 FROM event_period_users u WHERE u.period = q.period \
            AND u.event_type = '' AND u.start = q.start) ORDER BY start, period",
    )
    .load(conn)
    .await?;
    let mut sealed = 0;
    for p in todo {
        let done = conn
            .transaction(async move |conn| {
                diesel::sql_query(LOCK).execute(conn).await?;
                // Under the lock, from a snapshot taken after it: the days
                // are still all rolled up, or nothing is written.
                let row: Sealed = diesel::sql_query(
                    "WITH ok AS (SELECT 1 FROM event_rollup_days WHERE day >= $2 AND day < $3 \
                       HAVING count(*) = $3 - $2), \
                     ins AS (INSERT INTO event_period_users (period, start, event_type, users) \
                       SELECT $1, $2, '', c.n FROM ok, (SELECT count(DISTINCT user_id) AS n \
                         FROM event_daily_users WHERE day >= $2 AND day < $3) c \
                       UNION ALL SELECT $1, $2, t.event_type, (SELECT count(DISTINCT u.user_id) \
                         FROM event_daily_type_users u WHERE u.event_type = t.event_type \
                         AND u.day >= $2 AND u.day < $3) \
                       FROM (SELECT DISTINCT event_type FROM event_daily_types \
                         WHERE day >= $2 AND day < $3) t, ok \
                       ON CONFLICT DO NOTHING RETURNING event_type) \
                     SELECT count(*) FILTER (WHERE event_type = '') AS sealed FROM ins",
                )
                .bind::<diesel::sql_types::Text, _>(p.period)
                .bind::<Date, _>(p.start)
                .bind::<Date, _>(p.end)
                .get_result(conn)
                .await?;
                Ok::<_, crate::error::Error>(row.sealed > 0)
            })
            .await?;
        if done {
            sealed += 1;
        }
    }
    Ok(sealed)
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = Array<Date>)]
    days: Vec<NaiveDate>,
}

/// Seals every day from the oldest event's (or `from`'s, if later) to the
/// last one that ended by `ended_by`, that is not sealed yet, each day in
/// a transaction of its own, sealed at `now`; then the weeks and months
/// those days complete. Returns how many days this call sealed.
pub(super) async fn refresh(
    conn: &mut AsyncPgConnection,
    from: Option<DateTime<Utc>>,
    ended_by: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    // The days that ended by `ended_by`: those before the day holding it.
    let end = day_of(ended_by);
    let pending: Pending = diesel::sql_query(
        "SELECT coalesce(array_agg(d::date ORDER BY d), '{}') AS days FROM generate_series( \
           (SELECT (greatest(min(created_at), $1) AT TIME ZONE 'UTC')::date FROM events), \
           $2::date - 1, interval '1 day') d \
         WHERE NOT EXISTS (SELECT 1 FROM event_rollup_days r WHERE r.day = d::date)",
    )
    .bind::<Nullable<Timestamptz>, _>(from)
    .bind::<Date, _>(end)
    .get_result(conn)
    .await?;
    let mut sealed = 0;
    for day in pending.days {
        if seal(conn, day, now).await? {
            sealed += 1;
        }
    }
    seal_periods(conn).await?;
    Ok(sealed)
}

/// Forgets, under [`LOCK`], the rollups of the days that overlap `range`
/// and of the weeks and months holding them, so that questions read those
/// days from `events` until they are sealed again. Returns how many sealed
/// days were forgotten. Runs in the caller's transaction if there is one
/// (a purge deletes its batch and forgets its days at once), else in one
/// of its own.
pub(super) async fn forget(conn: &mut AsyncPgConnection, range: TimeRange) -> Result<u64> {
    use diesel_async::AsyncConnection as _;
    let since = range.since.map(day_of);
    // The day holding `until` is touched unless `until` is its midnight.
    let until = range.until.map(|u| {
        let d = day_of(u);
        if start_of(d) == u {
            d
        } else {
            d + Days::new(1)
        }
    });
    conn.transaction(async move |conn| {
        diesel::sql_query(LOCK).execute(conn).await?;
        let row: Sealed = diesel::sql_query(
            "WITH gone AS (DELETE FROM event_rollup_days \
               WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day < $2) RETURNING day), \
             du AS (DELETE FROM event_daily_users \
               WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day < $2)), \
             dtu AS (DELETE FROM event_daily_type_users \
               WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day < $2)), \
             dt AS (DELETE FROM event_daily_types \
               WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day < $2)), \
             pu AS (DELETE FROM event_period_users p \
               WHERE ($2::date IS NULL OR p.start < $2) AND ($1::date IS NULL OR \
                 (p.start::timestamp + CASE p.period WHEN 'week' THEN interval '1 week' \
                  ELSE interval '1 month' END)::date > $1)) \
             SELECT count(*) AS sealed FROM gone",
        )
        .bind::<Nullable<Date>, _>(since)
        .bind::<Nullable<Date>, _>(until)
        .get_result(conn)
        .await?;
        Ok(row.sealed as u64)
    })
    .await
}

/// Takes [`LOCK`] in the caller's transaction.
pub(super) async fn lock(conn: &mut AsyncPgConnection) -> Result<()> {
    diesel::sql_query(LOCK).execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, day).unwrap()
    }

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        start_of(d(day)) + TimeDelta::hours(hour as i64)
    }

    #[test]
    fn whole_sealed_days_come_from_rollups_and_the_rest_from_events() {
        let range = TimeRange::between(at(1, 6), at(5, 12));
        let s = split(range, &[d(4), d(2), d(1), d(5), d(3)]);
        // Day 1 and day 5 are cut by the range: read from `events`.
        assert_eq!(s.days, vec![d(2), d(3), d(4)]);
        assert_eq!(
            s.live,
            vec![
                TimeRange::between(at(1, 6), start_of(d(2))),
                TimeRange::between(start_of(d(5)), at(5, 12)),
            ]
        );
    }

    #[test]
    fn gaps_between_sealed_days_are_read_from_events() {
        let range = TimeRange::between(start_of(d(1)), start_of(d(6)));
        let s = split(range, &[d(1), d(3), d(5)]);
        assert_eq!(s.days, vec![d(1), d(3), d(5)]);
        assert_eq!(
            s.live,
            vec![
                TimeRange::between(start_of(d(2)), start_of(d(3))),
                TimeRange::between(start_of(d(4)), start_of(d(5))),
            ]
        );
        let all = split(range, &[d(1), d(2), d(3), d(4), d(5)]);
        assert!(all.live.is_empty());
    }

    #[test]
    fn open_ranges_and_no_sealed_day() {
        assert_eq!(
            split(TimeRange::all(), &[]),
            Split {
                days: vec![],
                live: vec![TimeRange::all()]
            }
        );
        let s = split(TimeRange::since(start_of(d(2))), &[d(2)]);
        assert_eq!(s.days, vec![d(2)]);
        assert_eq!(s.live, vec![TimeRange::since(start_of(d(3)))]);
        let s = split(TimeRange::until(start_of(d(3))), &[d(2)]);
        assert_eq!(
            s.live,
            vec![TimeRange::until(start_of(d(2)))],
            "an open start is read from events up to the first sealed day"
        );
    }

    #[test]
    fn a_range_sealed_in_too_many_pieces_is_read_from_events() {
        let range = TimeRange::between(start_of(d(1)), start_of(d(1)) + TimeDelta::days(200));
        let every_other: Vec<NaiveDate> =
            (0..100).map(|i| d(1) + Days::new(2 * i as u64)).collect();
        let s = split(range, &every_other);
        assert!(s.days.is_empty());
        assert_eq!(s.live, vec![range]);
    }
}

//! Queries on `events`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Varchar};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::errors::classify;
use super::schema::events;
use crate::error::Result;
use crate::model::{
    BucketCount, Cursor, Event, EventFilter, EventType, Json, TimeBucket, TimeRange,
};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
struct EventRow {
    id: Uuid,
    user_id: Option<Uuid>,
    event_type: String,
    payload: Json,
    created_at: DateTime<Utc>,
}

impl From<EventRow> for Event {
    fn from(r: EventRow) -> Self {
        Event {
            id: r.id,
            user_id: r.user_id,
            event_type: EventType::from_stored(r.event_type),
            payload: r.payload,
            created_at: r.created_at,
        }
    }
}

/// A new `events` row.
#[derive(Debug, Insertable)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
struct EventInsert<'a> {
    id: Uuid,
    user_id: Option<Uuid>,
    event_type: &'a str,
    payload: &'a Json,
    created_at: DateTime<Utc>,
}

/// Inserts one event with a prepared (cached) statement, or a batch with
/// [`insert_batch`].
pub(super) async fn insert(conn: &mut AsyncPgConnection, batch: &[Event]) -> Result<()> {
    let [event] = batch else {
        return insert_batch(conn, batch).await;
    };
    diesel::insert_into(events::table)
        .values(EventInsert {
            id: event.id,
            user_id: event.user_id,
            event_type: event.event_type.as_str(),
            payload: &event.payload,
            created_at: event.created_at,
        })
        .execute(conn)
        .await
        .map_err(|e| classify(e, event.user_id))?;
    Ok(())
}

/// Inserts the whole batch in one statement (so one round trip and one
/// implicit transaction), passing each column as one array parameter: five
/// parameters for any number of rows.
async fn insert_batch(conn: &mut AsyncPgConnection, batch: &[Event]) -> Result<()> {
    let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
    let users: Vec<Option<Uuid>> = batch.iter().map(|e| e.user_id).collect();
    let types: Vec<&str> = batch.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&Json> = batch.iter().map(|e| &e.payload).collect();
    let times: Vec<DateTime<Utc>> = batch.iter().map(|e| e.created_at).collect();
    diesel::sql_query(
        "INSERT INTO events (id, user_id, event_type, payload, created_at) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::jsonb[], $5::timestamptz[])",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Nullable<diesel::sql_types::Uuid>>, _>(users)
    .bind::<Array<Varchar>, _>(types)
    .bind::<Array<Jsonb>, _>(payloads)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
    .await
    .map_err(|e| classify(e, batch.iter().find_map(|e| e.user_id)))?;
    Ok(())
}

pub(super) async fn list(
    conn: &mut AsyncPgConnection,
    filter: &EventFilter,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<Event>> {
    let mut query = events::table.select(EventRow::as_select()).into_boxed();
    if let Some(user) = filter.user_id {
        query = query.filter(events::user_id.eq(user));
    }
    if let Some(t) = &filter.event_type {
        query = query.filter(events::event_type.eq(t.as_str().to_owned()));
    }
    if let Some(since) = filter.range.since {
        query = query.filter(events::created_at.ge(since));
    }
    if let Some(until) = filter.range.until {
        query = query.filter(events::created_at.lt(until));
    }
    if let Some(v) = &filter.payload_contains {
        query = query.filter(events::payload.contains(v.clone()));
    }
    if let Some(c) = after {
        query = query
            .filter(events::created_at.le(c.created_at))
            .filter(events::created_at.lt(c.created_at).or(events::id.lt(c.id)));
    }
    Ok(query
        .order((events::created_at.desc(), events::id.desc()))
        .limit(limit as i64)
        .load(conn)
        .await?
        .into_iter()
        .map(Event::from)
        .collect())
}

pub(super) async fn count(
    conn: &mut AsyncPgConnection,
    event_type: &EventType,
    range: TimeRange,
) -> Result<u64> {
    let mut query = events::table
        .filter(events::event_type.eq(event_type.as_str().to_owned()))
        .into_boxed();
    if let Some(since) = range.since {
        query = query.filter(events::created_at.ge(since));
    }
    if let Some(until) = range.until {
        query = query.filter(events::created_at.lt(until));
    }
    let n: i64 = query.count().get_result(conn).await?;
    Ok(n as u64)
}

#[derive(Debug, QueryableByName)]
struct BucketRow {
    #[diesel(sql_type = Timestamptz)]
    bucket: DateTime<Utc>,
    #[diesel(sql_type = Varchar)]
    event_type: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub(super) async fn count_by_bucket(
    conn: &mut AsyncPgConnection,
    bucket: TimeBucket,
    range: TimeRange,
    event_type: Option<&EventType>,
) -> Result<Vec<BucketCount>> {
    // Only the conditions asked for are in the SQL, so the planner can use
    // the (event_type, created_at) or (created_at) index.
    let mut sql = String::from(
        "SELECT date_trunc($1, created_at, 'UTC') AS bucket, event_type, count(*) AS n FROM events WHERE true",
    );
    let mut n = 1;
    for (present, cond) in [
        (range.since.is_some(), "created_at >= $"),
        (range.until.is_some(), "created_at < $"),
        (event_type.is_some(), "event_type = $"),
    ] {
        if present {
            n += 1;
            sql.push_str(&format!(" AND {cond}{n}"));
        }
    }
    // Types sort bytewise, as in every backend, whatever the collation.
    sql.push_str(" GROUP BY 1, 2 ORDER BY 1, event_type COLLATE \"C\"");
    let query = diesel::sql_query(sql)
        .into_boxed::<diesel::pg::Pg>()
        .bind::<Text, _>(bucket.as_sql());
    let query = match range.since {
        Some(s) => query.bind::<Timestamptz, _>(s),
        None => query,
    };
    let query = match range.until {
        Some(u) => query.bind::<Timestamptz, _>(u),
        None => query,
    };
    let query = match event_type {
        Some(t) => query.bind::<Varchar, _>(t.as_str().to_owned()),
        None => query,
    };
    let rows: Vec<BucketRow> = query.load(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| BucketCount {
            bucket: r.bucket,
            event_type: EventType::from_stored(r.event_type),
            count: r.n as u64,
        })
        .collect())
}

#[derive(Debug, QueryableByName)]
struct Purged {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last: Option<DateTime<Utc>>,
}

/// Deletes up to `limit` of the oldest events in `[from, before)` (of one
/// type, if given) in one statement: the rows are found oldest first on
/// the `(created_at)` or `(event_type, created_at)` index, from where the
/// previous batch stopped, so a batch reads only what it deletes and holds
/// its row locks for one short statement.
pub(super) async fn purge(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    from: Option<DateTime<Utc>>,
    event_type: Option<&EventType>,
    limit: usize,
) -> Result<(u64, Option<DateTime<Utc>>)> {
    let mut conds = String::from("created_at < $1");
    let mut n = 1;
    if from.is_some() {
        n += 1;
        conds.push_str(&format!(" AND created_at >= ${n}"));
    }
    if event_type.is_some() {
        n += 1;
        conds.push_str(&format!(" AND event_type = ${n}"));
    }
    let sql = format!(
        "WITH doomed AS (SELECT id FROM events WHERE {conds} ORDER BY created_at LIMIT {limit}), \
         gone AS (DELETE FROM events e USING doomed d WHERE e.id = d.id RETURNING e.created_at) \
         SELECT count(*) AS n, max(created_at) AS last FROM gone"
    );
    let query = diesel::sql_query(sql)
        .into_boxed::<diesel::pg::Pg>()
        .bind::<Timestamptz, _>(before);
    let query = match from {
        Some(f) => query.bind::<Timestamptz, _>(f),
        None => query,
    };
    let query = match event_type {
        Some(t) => query.bind::<Varchar, _>(t.as_str().to_owned()),
        None => query,
    };
    let purged: Purged = query.get_result(conn).await?;
    Ok((purged.n as u64, purged.last))
}

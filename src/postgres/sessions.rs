//! Sessions in the `sessions` table, over a store's pool. Each call is one
//! statement (creating over an expired session's key, two, each atomic),
//! so none needs a transaction.
//!
//! diesel caches the prepared statements of inserts and selects but not of
//! `UPDATE`s and upserts, which it prepares again on every call: `load` and
//! `create` cost one round trip, `save`, `extend` and the `tower-sessions`
//! `save` two.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::PgBackend;
use super::schema::sessions;
use crate::backend::SessionBackend;
use crate::error::Result;
use crate::model::{Json, Session};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg))]
struct SessionRow {
    user_id: Option<Uuid>,
    data: Json,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            user_id: r.user_id,
            data: r.data,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// A whole session row: inserted as it is, or written over an expired one
/// (as a changeset it leaves `id` alone and sets `user_id` even to NULL).
#[derive(Insertable, AsChangeset)]
#[diesel(
    table_name = sessions,
    treat_none_as_default_value = false,
    treat_none_as_null = true
)]
struct NewRow<'a> {
    id: &'a str,
    user_id: Option<Uuid>,
    data: &'a Json,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl<'a> NewRow<'a> {
    fn of(key: &'a str, s: &'a Session) -> Self {
        NewRow {
            id: key,
            user_id: s.user_id,
            data: &s.data,
            created_at: s.created_at,
            expires_at: s.expires_at,
        }
    }
}

/// A new expiry, and new data if given (`None` leaves the data as it is).
#[derive(AsChangeset)]
#[diesel(table_name = sessions)]
struct Change<'a> {
    data: Option<&'a Json>,
    expires_at: DateTime<Utc>,
}

async fn insert(
    conn: &mut AsyncPgConnection,
    key: &str,
    session: &Session,
    now: DateTime<Utc>,
) -> Result<bool> {
    // The usual case, a key nobody holds, is a plain insert: diesel caches
    // its prepared statement (it never caches an `UPDATE` or a `DO UPDATE`,
    // which cost a second round trip to prepare every time).
    let inserted = diesel::insert_into(sessions::table)
        .values(NewRow::of(key, session))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if inserted == 1 {
        return Ok(true);
    }
    // Taken: take the key over only from an expired session.
    let taken_over = diesel::update(
        sessions::table
            .find(key)
            .filter(sessions::expires_at.le(now)),
    )
    .set(NewRow::of(key, session))
    .execute(conn)
    .await?;
    Ok(taken_over == 1)
}

async fn put(conn: &mut AsyncPgConnection, key: &str, session: &Session) -> Result<()> {
    diesel::insert_into(sessions::table)
        .values(NewRow::of(key, session))
        .on_conflict(sessions::id)
        .do_update()
        .set((
            sessions::user_id.eq(excluded(sessions::user_id)),
            sessions::data.eq(excluded(sessions::data)),
            sessions::expires_at.eq(excluded(sessions::expires_at)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn load(
    conn: &mut AsyncPgConnection,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<Session>> {
    Ok(sessions::table
        .find(key)
        .filter(sessions::expires_at.gt(now))
        .select(SessionRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(Session::from))
}

async fn update(
    conn: &mut AsyncPgConnection,
    key: &str,
    change: Change<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Session>> {
    Ok(diesel::update(
        sessions::table
            .find(key)
            .filter(sessions::expires_at.gt(now)),
    )
    .set(change)
    .returning(SessionRow::as_returning())
    .get_result(conn)
    .await
    .optional()?
    .map(Session::from))
}

async fn delete(conn: &mut AsyncPgConnection, key: &str, now: DateTime<Utc>) -> Result<bool> {
    let ended: Option<DateTime<Utc>> = diesel::delete(sessions::table.find(key))
        .returning(sessions::expires_at)
        .get_result(conn)
        .await
        .optional()?;
    Ok(ended.is_some_and(|t| t > now))
}

async fn delete_user(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64> {
    let ended: Vec<DateTime<Utc>> = audited!(
        conn,
        diesel::delete(sessions::table.filter(sessions::user_id.eq(user_id)))
            .returning(sessions::expires_at)
            .get_results(conn)
            .await
            .map_err(crate::error::Error::from),
        |r: &crate::backend::audit::Recorder, ended: &Vec<DateTime<Utc>>| {
            let live = ended.iter().filter(|t| **t > now).count();
            vec![r.entry(
                crate::model::AuditAction::SessionsEnded,
                Some(user_id),
                serde_json::json!({"sessions": live}),
                None,
            )]
        }
    )?;
    Ok(ended.into_iter().filter(|t| *t > now).count() as u64)
}

async fn delete_expired(conn: &mut AsyncPgConnection, now: DateTime<Utc>) -> Result<u64> {
    let removed = diesel::delete(sessions::table.filter(sessions::expires_at.le(now)))
        .execute(conn)
        .await?;
    Ok(removed as u64)
}

/// The PostgreSQL session backend: sessions over the pool of the store's
/// PostgreSQL backend.
pub(crate) struct PgSessions {
    pg: std::sync::Arc<PgBackend>,
}

impl std::fmt::Debug for PgSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgSessions")
    }
}

impl PgSessions {
    pub(crate) fn new(pg: std::sync::Arc<PgBackend>) -> Self {
        PgSessions { pg }
    }

    fn pg(&self) -> &PgBackend {
        &self.pg
    }
}

#[async_trait::async_trait]
impl SessionBackend for PgSessions {
    async fn insert(&self, key: &str, session: &Session, now: DateTime<Utc>) -> Result<bool> {
        let pg = self.pg();
        on_conn!(pg, insert, key, session, now)
    }

    async fn put(&self, key: &str, session: &Session, _now: DateTime<Utc>) -> Result<()> {
        let pg = self.pg();
        on_conn!(pg, put, key, session)
    }

    async fn load(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Session>> {
        let pg = self.pg();
        on_conn!(pg, load, key, now)
    }

    async fn update(
        &self,
        key: &str,
        data: Option<&Json>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>> {
        let pg = self.pg();
        on_conn!(pg, update, key, Change { data, expires_at }, now)
    }

    async fn delete(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        let pg = self.pg();
        on_conn!(pg, delete, key, now)
    }

    async fn delete_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64> {
        let pg = self.pg();
        on_conn!(pg, delete_user, user_id, now)
    }

    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let pg = self.pg();
        on_conn!(pg, delete_expired, now)
    }
}

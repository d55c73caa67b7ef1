//! The `media` rows in PostgreSQL, over a store's pool. Each call is one
//! statement.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::PgBackend;
use super::schema::media;
use crate::backend::MediaBackend;
use crate::error::{Error, Field, Result};
use crate::model::{Cursor, Media, MediaFacts, MediaRow};

const PENDING: &str = "pending";
const COMPLETE: &str = "complete";

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = media, check_for_backend(diesel::pg::Pg))]
struct CompleteRow {
    id: Uuid,
    owner_id: Option<Uuid>,
    content_type: Option<String>,
    size_bytes: Option<i64>,
    sha256: Option<String>,
    file_name: String,
    storage_key: String,
    created_at: DateTime<Utc>,
}

impl From<CompleteRow> for Media {
    fn from(r: CompleteRow) -> Self {
        // The table's check constraint makes these present on complete rows.
        Media {
            id: r.id,
            owner_id: r.owner_id,
            content_type: r.content_type.unwrap_or_default(),
            size_bytes: r.size_bytes.unwrap_or_default().max(0) as u64,
            sha256: r.sha256.unwrap_or_default(),
            file_name: r.file_name,
            storage_key: r.storage_key,
            created_at: r.created_at,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = media)]
struct NewRow<'a> {
    id: Uuid,
    owner_id: Option<Uuid>,
    status: &'a str,
    file_name: &'a str,
    storage_key: &'a str,
    created_at: DateTime<Utc>,
}

async fn insert_pending(conn: &mut AsyncPgConnection, row: &MediaRow) -> Result<()> {
    diesel::insert_into(media::table)
        .values(NewRow {
            id: row.id,
            owner_id: row.owner_id,
            status: PENDING,
            file_name: &row.file_name,
            storage_key: &row.storage_key,
            created_at: row.created_at,
        })
        .execute(conn)
        .await?;
    Ok(())
}

/// The `media.deleted` records of removed rows: `(id, status, owner)`,
/// complete ones only (a pending row was never uploaded).
fn deleted(
    r: &crate::backend::audit::Recorder,
    rows: &[(Uuid, String, Option<Uuid>)],
) -> Vec<crate::model::AuditEntry> {
    rows.iter()
        .filter(|(_, status, _)| status == COMPLETE)
        .map(|(id, _, owner)| {
            r.entry(
                crate::model::AuditAction::MediaDeleted,
                Some(*id),
                serde_json::json!({"owner_id": owner}),
                None,
            )
        })
        .collect()
}

async fn complete(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    facts: &MediaFacts,
) -> Result<Option<Media>> {
    audited!(
        conn,
        complete_row(conn, id, facts).await,
        |r: &crate::backend::audit::Recorder, m: &Option<Media>| {
            m.iter()
                .map(|m| {
                    let (changes, personal) = crate::model::audit::media_uploaded(m);
                    r.entry(
                        crate::model::AuditAction::MediaUploaded,
                        Some(m.id),
                        changes,
                        personal,
                    )
                })
                .collect::<Vec<_>>()
        }
    )
}

async fn complete_row(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    facts: &MediaFacts,
) -> Result<Option<Media>> {
    let size = i64::try_from(facts.size_bytes)
        .map_err(|_| Error::invalid(Field::Content, "larger than PostgreSQL's bigint"))?;
    Ok(
        diesel::update(media::table.find(id).filter(media::status.eq(PENDING)))
            .set((
                media::status.eq(COMPLETE),
                media::content_type.eq(&facts.content_type),
                media::size_bytes.eq(size),
                media::sha256.eq(&facts.sha256),
                media::completed_at.eq(facts.completed_at),
            ))
            .returning(CompleteRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
            .map(Media::from),
    )
}

async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Media>> {
    Ok(media::table
        .find(id)
        .filter(media::status.eq(COMPLETE))
        .select(CompleteRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(Media::from))
}

async fn remove(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<String>> {
    let removed: Option<(String, Uuid, String, Option<Uuid>)> = audited!(
        conn,
        diesel::delete(media::table.find(id))
            .returning((
                media::storage_key,
                media::id,
                media::status,
                media::owner_id
            ))
            .get_result(conn)
            .await
            .optional()
            .map_err(crate::error::Error::from),
        |r: &crate::backend::audit::Recorder,
         row: &Option<(String, Uuid, String, Option<Uuid>)>| {
            let rows: Vec<_> = row
                .iter()
                .map(|(_, id, status, owner)| (*id, status.clone(), *owner))
                .collect();
            deleted(r, &rows)
        }
    )?;
    Ok(removed.map(|(key, ..)| key))
}

async fn remove_pending(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<String>> {
    Ok(
        diesel::delete(media::table.find(id).filter(media::status.eq(PENDING)))
            .returning(media::storage_key)
            .get_result(conn)
            .await
            .optional()?,
    )
}

async fn remove_owner(conn: &mut AsyncPgConnection, owner: Uuid) -> Result<Vec<String>> {
    let removed: Vec<(String, Uuid, String, Option<Uuid>)> = audited!(
        conn,
        diesel::delete(media::table.filter(media::owner_id.eq(owner)))
            .returning((
                media::storage_key,
                media::id,
                media::status,
                media::owner_id
            ))
            .get_results(conn)
            .await
            .map_err(crate::error::Error::from),
        |r: &crate::backend::audit::Recorder, rows: &Vec<(String, Uuid, String, Option<Uuid>)>| {
            let rows: Vec<_> = rows
                .iter()
                .map(|(_, id, status, owner)| (*id, status.clone(), *owner))
                .collect();
            deleted(r, &rows)
        }
    )?;
    Ok(removed.into_iter().map(|(key, ..)| key).collect())
}

async fn list(
    conn: &mut AsyncPgConnection,
    owner: Uuid,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<Media>> {
    let mut query = media::table
        .filter(media::owner_id.eq(owner))
        .filter(media::status.eq(COMPLETE))
        .select(CompleteRow::as_select())
        .into_boxed();
    if let Some(c) = after {
        query = query
            .filter(media::created_at.ge(c.created_at))
            .filter(media::created_at.gt(c.created_at).or(media::id.gt(c.id)));
    }
    Ok(query
        .order((media::created_at.asc(), media::id.asc()))
        .limit(limit as i64)
        .load(conn)
        .await?
        .into_iter()
        .map(Media::from)
        .collect())
}

async fn stale_pending(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(Uuid, String)>> {
    Ok(media::table
        .filter(media::status.eq(PENDING))
        .filter(media::created_at.lt(before))
        .select((media::id, media::storage_key))
        .limit(limit as i64)
        .load(conn)
        .await?)
}

async fn existing(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    Ok(media::table
        .filter(media::id.eq_any(ids))
        .select(media::id)
        .load(conn)
        .await?)
}

/// The PostgreSQL media rows: the `media` table over the pool of the
/// store's PostgreSQL backend.
pub(crate) struct PgMedia {
    pg: std::sync::Arc<PgBackend>,
}

impl std::fmt::Debug for PgMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgMedia")
    }
}

impl PgMedia {
    pub(crate) fn new(pg: std::sync::Arc<PgBackend>) -> Self {
        PgMedia { pg }
    }
}

#[async_trait::async_trait]
impl MediaBackend for PgMedia {
    async fn insert_pending(&self, row: &MediaRow) -> Result<()> {
        let pg = &*self.pg;
        on_conn!(pg, insert_pending, row)
    }

    async fn complete(&self, id: Uuid, facts: &MediaFacts) -> Result<Option<Media>> {
        let pg = &*self.pg;
        on_conn!(pg, complete, id, facts)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Media>> {
        let pg = &*self.pg;
        on_conn!(pg, get, id)
    }

    async fn remove(&self, id: Uuid) -> Result<Option<String>> {
        let pg = &*self.pg;
        on_conn!(pg, remove, id)
    }

    async fn remove_pending(&self, id: Uuid) -> Result<Option<String>> {
        let pg = &*self.pg;
        on_conn!(pg, remove_pending, id)
    }

    async fn remove_owner(&self, owner: Uuid) -> Result<Vec<String>> {
        let pg = &*self.pg;
        on_conn!(pg, remove_owner, owner)
    }

    async fn list(&self, owner: Uuid, after: Option<Cursor>, limit: usize) -> Result<Vec<Media>> {
        let pg = &*self.pg;
        on_conn!(pg, list, owner, after, limit)
    }

    async fn stale_pending(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>> {
        let pg = &*self.pg;
        on_conn!(pg, stale_pending, before, limit)
    }

    async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let pg = &*self.pg;
        on_conn!(pg, existing, ids)
    }
}

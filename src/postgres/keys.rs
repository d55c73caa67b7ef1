//! Queries on `api_keys`. The hash column is written, and matched, but never
//! read back.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::errors::classify;
use super::schema::api_keys;
use crate::backend::NewKeyRow;
use crate::error::{Entity, Error, Field, Result};
use crate::model::ApiKey;

/// What a revoked key's `hashed_key` starts with, so that services matching
/// `hashed_key = sha256(key)` themselves no longer find it.
pub(super) const REVOKED: &str = "revoked:";

/// An `api_keys` row without its hash.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg))]
struct KeyRow {
    id: Uuid,
    user_id: Uuid,
    service: String,
    key_prefix: Option<String>,
    created_at: DateTime<Utc>,
    last_used: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            id: r.id,
            user_id: r.user_id,
            service: r.service,
            prefix: r.key_prefix,
            created_at: r.created_at,
            last_used: r.last_used,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A new `api_keys` row, hash included.
#[derive(Debug, Insertable)]
#[diesel(table_name = api_keys, treat_none_as_default_value = false)]
pub(super) struct KeyInsert<'a> {
    id: Uuid,
    user_id: Uuid,
    service: &'a str,
    hashed_key: &'a str,
    key_prefix: Option<&'a str>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a NewKeyRow> for KeyInsert<'a> {
    fn from(row: &'a NewKeyRow) -> Self {
        KeyInsert {
            id: row.key.id,
            user_id: row.key.user_id,
            service: &row.key.service,
            hashed_key: &row.hash,
            key_prefix: row.key.prefix.as_deref(),
            created_at: row.key.created_at,
            expires_at: row.key.expires_at,
        }
    }
}

pub(super) async fn insert_key(conn: &mut AsyncPgConnection, row: KeyInsert<'_>) -> Result<ApiKey> {
    let user = row.user_id;
    diesel::insert_into(api_keys::table)
        .values(&row)
        .returning(KeyRow::as_returning())
        .get_result(conn)
        .await
        .map(ApiKey::from)
        .map_err(|e| classify(e, Some(user)))
}

/// The key stored under `hash`, or, failing that, the revoked key that was
/// (its hash is kept as `revoked:<hash>`). A valid key costs one index
/// probe, the same query a service outside this crate runs.
pub(super) async fn find_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &str,
) -> Result<Option<ApiKey>> {
    if let Some(key) = by_stored_hash(conn, hash).await? {
        return Ok(Some(key));
    }
    by_stored_hash(conn, &format!("{REVOKED}{hash}")).await
}

async fn by_stored_hash(conn: &mut AsyncPgConnection, stored: &str) -> Result<Option<ApiKey>> {
    Ok(api_keys::table
        .filter(api_keys::hashed_key.eq(stored))
        .select(KeyRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(ApiKey::from))
}

pub(super) async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<ApiKey>> {
    Ok(api_keys::table
        .find(id)
        .select(KeyRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(ApiKey::from))
}

pub(super) async fn touch(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> Result<()> {
    diesel::update(
        api_keys::table.find(id).filter(
            api_keys::last_used
                .is_null()
                .or(api_keys::last_used.lt(stale_before)),
        ),
    )
    .set(api_keys::last_used.eq(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the key inside the caller's transaction; `Ok(None)` if it was
/// already revoked.
async fn revoke_in(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<ApiKey>> {
    let revoked = diesel::update(
        api_keys::table
            .find(id)
            .filter(api_keys::revoked_at.is_null()),
    )
    .set((
        api_keys::revoked_at.eq(now),
        api_keys::hashed_key.eq(diesel::dsl::sql::<diesel::sql_types::Varchar>(
            "'revoked:' || hashed_key",
        )),
    ))
    .returning(KeyRow::as_returning())
    .get_result(conn)
    .await
    .optional()?;
    match revoked {
        Some(row) => Ok(Some(row.into())),
        None if get(conn, id).await?.is_some() => Ok(None),
        None => Err(Error::NotFound {
            entity: Entity::ApiKey,
            id,
        }),
    }
}

pub(super) async fn revoke(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    match revoke_in(conn, id, now).await? {
        Some(key) => Ok(key),
        None => get(conn, id).await?.ok_or(Error::NotFound {
            entity: Entity::ApiKey,
            id,
        }),
    }
}

pub(super) async fn list(conn: &mut AsyncPgConnection, user_id: Uuid) -> Result<Vec<ApiKey>> {
    Ok(api_keys::table
        .filter(api_keys::user_id.eq(user_id))
        .order((api_keys::created_at.asc(), api_keys::id.asc()))
        .select(KeyRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(ApiKey::from)
        .collect())
}

pub(super) async fn rotate(
    conn: &mut AsyncPgConnection,
    old_id: Uuid,
    new: NewKeyRow,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    conn.transaction(async move |conn| {
        if revoke_in(conn, old_id, now).await?.is_none() {
            return Err(Error::invalid(Field::Id, "the api key is already revoked"));
        }
        insert_key(conn, KeyInsert::from(&new)).await
    })
    .await
}

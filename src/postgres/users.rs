//! Queries on `users`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::audit::append;
use super::errors::classify;
use super::keys::{KeyInsert, insert_key};
use super::schema::{api_keys, events, users};
use crate::backend::NewKeyRow;
use crate::backend::Settings;
use crate::backend::audit::Recorder;
use crate::backend::audit::entries;
use crate::error::{Entity, Error, Result};
use crate::model::AuditAction;
use crate::model::audit::{key_issued, user_created, user_updated};
use crate::model::{ApiKey, Cursor, Email, Json, PassportTier, User, UserUpdate, WalletAddress};

#[diesel::declare_sql_function]
extern "SQL" {
    /// PostgreSQL's `lower`, as the `lower(email)` and
    /// `lower(wallet_address)` indexes are built with it.
    fn lower(
        x: diesel::sql_types::Nullable<diesel::sql_types::Varchar>,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

/// A `users` row as diesel reads and inserts it.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(
    table_name = users,
    check_for_backend(diesel::pg::Pg),
    treat_none_as_default_value = false
)]
pub(super) struct UserRow {
    id: Uuid,
    email: Option<String>,
    wallet_address: Option<String>,
    passport_tier: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    metadata: Json,
    preferences: Json,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            email: r.email.map(Email::from_stored),
            wallet_address: r.wallet_address.map(WalletAddress::from_stored),
            passport_tier: PassportTier::from_stored(r.passport_tier),
            created_at: r.created_at,
            updated_at: r.updated_at,
            metadata: r.metadata,
            preferences: r.preferences,
        }
    }
}

impl From<&User> for UserRow {
    fn from(u: &User) -> Self {
        UserRow {
            id: u.id,
            email: u.email.as_ref().map(|e| e.as_str().to_owned()),
            wallet_address: u.wallet_address.as_ref().map(|w| w.as_str().to_owned()),
            passport_tier: u.passport_tier.as_str().to_owned(),
            created_at: u.created_at,
            updated_at: u.updated_at,
            metadata: u.metadata.clone(),
            preferences: u.preferences.clone(),
        }
    }
}

/// The columns an update writes: `updated_at` and those the update
/// changes, so a document (or any column) it does not touch is not sent
/// back to the server at all.
#[derive(AsChangeset)]
#[diesel(table_name = users)]
struct UserChange<'a> {
    email: Option<Option<&'a str>>,
    wallet_address: Option<Option<&'a str>>,
    passport_tier: Option<&'a str>,
    updated_at: DateTime<Utc>,
    metadata: Option<&'a Json>,
    preferences: Option<&'a Json>,
}

impl<'a> UserChange<'a> {
    /// What `change` made of the row, as `next` shows it.
    fn of(change: &UserUpdate, next: &'a User) -> Self {
        UserChange {
            email: change
                .email
                .is_some()
                .then(|| next.email.as_ref().map(Email::as_str)),
            wallet_address: change
                .wallet_address
                .is_some()
                .then(|| next.wallet_address.as_ref().map(WalletAddress::as_str)),
            passport_tier: change
                .passport_tier
                .is_some()
                .then(|| next.passport_tier.as_str()),
            updated_at: next.updated_at,
            metadata: change.metadata.is_some().then_some(&next.metadata),
            preferences: change.preferences.is_some().then_some(&next.preferences),
        }
    }
}

async fn insert_row(conn: &mut AsyncPgConnection, user: User) -> Result<User> {
    diesel::insert_into(users::table)
        .values(UserRow::from(&user))
        .execute(conn)
        .await?;
    Ok(user)
}

pub(super) async fn create(conn: &mut AsyncPgConnection, user: User) -> Result<User> {
    audited!(
        conn,
        insert_row(conn, user).await,
        |r: &Recorder, user: &User| {
            let (changes, personal) = user_created(user);
            vec![r.entry(AuditAction::UserCreated, Some(user.id), changes, personal)]
        }
    )
}

pub(super) async fn create_with_key(
    conn: &mut AsyncPgConnection,
    user: User,
    key: NewKeyRow,
) -> Result<(User, ApiKey)> {
    conn.transaction(async move |conn| {
        let user = insert_row(conn, user).await?;
        let key = insert_key(conn, KeyInsert::from(&key), &key.key.policy).await?;
        append(
            conn,
            entries(|r| {
                let (changes, personal) = user_created(&user);
                vec![
                    r.entry(AuditAction::UserCreated, Some(user.id), changes, personal),
                    r.entry(AuditAction::KeyIssued, Some(key.id), key_issued(&key), None),
                ]
            }),
        )
        .await?;
        Ok((user, key))
    })
    .await
}

pub(super) async fn get(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<User>> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(User::from))
}

pub(super) async fn find_by_email(
    conn: &mut AsyncPgConnection,
    email: &Email,
) -> Result<Option<User>> {
    Ok(users::table
        .filter(lower(users::email).eq(email.normalized()))
        .select(UserRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(User::from))
}

pub(super) async fn find_by_wallet(
    conn: &mut AsyncPgConnection,
    wallet: &WalletAddress,
) -> Result<Option<User>> {
    Ok(users::table
        .filter(lower(users::wallet_address).eq(wallet.as_str()))
        .select(UserRow::as_select())
        .get_result(conn)
        .await
        .optional()?
        .map(User::from))
}

/// Reads the row under `FOR UPDATE`, applies the change in Rust (the one
/// implementation every backend shares), writes it back.
pub(super) async fn update(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    change: &UserUpdate,
    settings: &Settings,
) -> Result<User> {
    conn.transaction(async move |conn| {
        let current: User = users::table
            .find(id)
            .select(UserRow::as_select())
            .for_update()
            .get_result(conn)
            .await
            .optional()?
            .ok_or(Error::NotFound {
                entity: Entity::User,
                id,
            })?
            .into();
        let next = change.apply(&current, settings.now(), settings.max_payload_bytes)?;
        diesel::update(users::table.find(id))
            .set(UserChange::of(change, &next))
            .execute(conn)
            .await?;
        append(
            conn,
            entries(|r| {
                let (changes, personal) = user_updated(&current, &next);
                vec![r.entry(AuditAction::UserUpdated, Some(id), changes, personal)]
            }),
        )
        .await?;
        Ok(next)
    })
    .await
}

pub(super) async fn delete(conn: &mut AsyncPgConnection, id: Uuid) -> Result<()> {
    conn.transaction(async move |conn| {
        // Lock the user first: rows that would point at it (a key being
        // issued, an event being recorded) wait, then find it gone, so
        // none can slip in between the detaching and the delete.
        let found = users::table
            .find(id)
            .select(users::id)
            .for_update()
            .first::<Uuid>(conn)
            .await
            .optional()?;
        if found.is_none() {
            return Err(Error::NotFound {
                entity: Entity::User,
                id,
            });
        }
        let keys = diesel::delete(api_keys::table.filter(api_keys::user_id.eq(id)))
            .execute(conn)
            .await?;
        diesel::update(events::table.filter(events::user_id.eq(id)))
            .set(events::user_id.eq(None::<Uuid>))
            .execute(conn)
            .await?;
        let deleted = diesel::delete(users::table.find(id))
            .execute(conn)
            .await
            .map_err(|e| classify(e, None))?;
        if deleted == 0 {
            return Err(Error::NotFound {
                entity: Entity::User,
                id,
            });
        }
        append(
            conn,
            entries(|r| {
                vec![r.entry(
                    AuditAction::UserDeleted,
                    Some(id),
                    serde_json::json!({"api_keys_deleted": keys}),
                    None,
                )]
            }),
        )
        .await?;
        Ok(())
    })
    .await
}

pub(super) async fn list(
    conn: &mut AsyncPgConnection,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Vec<User>> {
    let mut query = users::table.select(UserRow::as_select()).into_boxed();
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

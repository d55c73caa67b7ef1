//! [`Users`]: the users repository's facade.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, new_id, not_found};
use crate::error::{Entity, Result};
use crate::model::{
    Cursor, Email, IssuedKey, NewUser, Page, User, UserUpdate, WalletAddress, check_page, page_from,
};
use crate::telemetry::{site, traced};

/// Users: create, read, update, delete and list. Get one from
/// [`Store::users`].
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    pub(super) store: &'a Store,
}

impl Users<'_> {
    /// Creates a user. `Conflict` names the field if the email (compared
    /// case-insensitively) or wallet address is taken; `InvalidInput` if the
    /// user has neither, or a document is not a JSON object, is too large or
    /// is one the store does not accept (see [`Json`](crate::Json)). The
    /// returned user holds the documents as they are stored.
    pub async fn create(&self, new: NewUser) -> Result<User> {
        let s = self.store;
        traced(site!("create", "users"), async {
            let now = s.now();
            let user = new.into_user(new_id(now), now, s.settings.max_payload_bytes)?;
            s.audited(s.backend.create_user(user)).await
        })
        .await
    }

    /// Creates a user and issues their first API key for `service`, in one
    /// transaction: if either fails, neither exists.
    pub async fn create_with_key(
        &self,
        new: NewUser,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(User, IssuedKey)> {
        let s = self.store;
        traced(site!("create_with_key", "users"), async {
            let now = s.now();
            let user = new.into_user(new_id(now), now, s.settings.max_payload_bytes)?;
            let (row, secret) = s.api_keys().new_row(
                user.id,
                service,
                expires_at,
                now,
                crate::model::KeyPolicy::default(),
            )?;
            let (user, key) = s.audited(s.backend.create_user_with_key(user, row)).await?;
            Ok((user, IssuedKey { key, secret }))
        })
        .await
    }

    /// The user with this id; `NotFound` if there is none.
    pub async fn get(&self, id: Uuid) -> Result<User> {
        traced(site!("get", "users"), async {
            self.store
                .backend
                .get_user(id)
                .await?
                .ok_or(not_found(Entity::User, id))
        })
        .await
    }

    /// The user with this email address (matched case-insensitively).
    pub async fn find_by_email(&self, email: &Email) -> Result<Option<User>> {
        traced(
            site!("find_by_email", "users"),
            self.store.backend.find_user_by_email(email),
        )
        .await
    }

    /// The user with this wallet address.
    pub async fn find_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>> {
        traced(
            site!("find_by_wallet", "users"),
            self.store.backend.find_user_by_wallet(wallet),
        )
        .await
    }

    /// Applies `update` and returns the user as it now is. `updated_at`
    /// always moves forward. `NotFound`, `Conflict` and `InvalidInput` as
    /// for [`create`](Self::create); nothing is written when it fails.
    pub async fn update(&self, id: Uuid, update: UserUpdate) -> Result<User> {
        let s = self.store;
        traced(site!("update", "users"), async {
            update.check(s.settings.max_payload_bytes)?;
            s.audited(s.backend.update_user(id, &update, &s.settings))
                .await
        })
        .await
    }

    /// Deletes the user. Their API keys are deleted with them (so they stop
    /// validating at once) and their events are kept, detached
    /// (`user_id` becomes null), as an anonymous audit trail. Rows pointing
    /// at the user never make this fail. `NotFound` if there is no such
    /// user.
    pub async fn delete(&self, id: Uuid) -> Result<()> {
        let s = self.store;
        traced(
            site!("delete", "users"),
            s.audited(s.backend.delete_user(id)),
        )
        .await
    }

    /// A page of at most `limit` (1 to 1000) users, oldest first, after
    /// `after` (the previous page's [`Page::next`]).
    pub async fn list(&self, limit: usize, after: Option<Cursor>) -> Result<Page<User>> {
        traced(site!("list", "users"), async {
            check_page(limit, after)?;
            let users = self.store.backend.list_users(after, limit + 1).await?;
            Ok(page_from(users, limit, |u| Cursor::new(u.created_at, u.id)))
        })
        .await
    }
}

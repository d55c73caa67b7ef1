//! [`ApiKeys`]: the API keys repository's facade.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, new_id, not_found};
use crate::backend::NewKeyRow;
use crate::error::{Entity, Error, Field, KeyRejection, Result};
use crate::model::{ApiKey, ApiKeySecret, IssuedKey, check_service, check_timestamp};
use crate::telemetry::{site, traced};

/// Hashed API keys: issue, validate, revoke, list and rotate. Get one from
/// [`Store::api_keys`].
///
/// Keys are `dnk_` and 64 hex digits (256 bits from the operating system's
/// random source). Only their SHA-256, as lower-case hex, is stored, in
/// `api_keys.hashed_key`, so keys issued by other services the same way
/// (any string, no prefix) validate too.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys<'a> {
    pub(super) store: &'a Store,
}

impl ApiKeys<'_> {
    pub(super) fn new_row(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(NewKeyRow, ApiKeySecret)> {
        check_service(service)?;
        // Stored to the microsecond, like every timestamp: compare it so.
        let expires_at = expires_at.map(|t| chrono::SubsecRound::trunc_subsecs(t, 6));
        if let Some(at) = expires_at {
            check_timestamp(Field::ExpiresAt, at)?;
        }
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Error::invalid(Field::ExpiresAt, "must be in the future"));
        }
        let secret = ApiKeySecret::generate()?;
        let key = ApiKey {
            id: new_id(now),
            user_id,
            service: service.to_owned(),
            prefix: secret.display_prefix(),
            created_at: now,
            last_used: None,
            expires_at,
            revoked_at: None,
        };
        let hash = secret.hash();
        Ok((NewKeyRow { key, hash }, secret))
    }

    /// Issues a key for `user_id` and `service`, valid until `expires_at`
    /// (or until revoked). The plain text is in the returned
    /// [`IssuedKey::secret`], this once. `NotFound` if the user does not
    /// exist.
    pub async fn issue(
        &self,
        user_id: Uuid,
        service: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey> {
        let s = self.store;
        traced(site!("issue", "api_keys"), async {
            let (row, secret) = self.new_row(user_id, service, expires_at, s.now())?;
            let key = s.backend.insert_key(row).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }

    /// Validates a presented key for any service. See
    /// [`validate_for`](Self::validate_for).
    pub async fn validate(&self, presented: &str) -> Result<ApiKey> {
        traced(site!("validate", "api_keys"), self.check(presented, None)).await
    }

    /// Validates a presented key, which must have been issued for
    /// `service`. Returns the key's record, or `Unauthorized` with why:
    /// malformed, unknown, revoked, expired, or for another service.
    ///
    /// `last_used` is written at most once per `last_used_resolution` (a
    /// minute by default) per key, not on every call.
    pub async fn validate_for(&self, presented: &str, service: &str) -> Result<ApiKey> {
        traced(
            site!("validate", "api_keys"),
            self.check(presented, Some(service)),
        )
        .await
    }

    async fn check(&self, presented: &str, service: Option<&str>) -> Result<ApiKey> {
        let s = self.store;
        let secret = ApiKeySecret::parse(presented)?;
        let mut key = s
            .backend
            .find_key_by_hash(&secret.hash())
            .await?
            .ok_or(Error::Unauthorized(KeyRejection::Unknown))?;
        let now = s.now();
        if let Some(why) = key.rejection(now, service) {
            return Err(Error::Unauthorized(why));
        }
        let resolution =
            chrono::Duration::from_std(s.settings.last_used_resolution).unwrap_or_default();
        let stale_before = now - resolution;
        if key.last_used.is_none_or(|t| t < stale_before) {
            s.backend.touch_key(key.id, now, stale_before).await?;
            key.last_used = Some(now);
        }
        Ok(key)
    }

    /// The key with this id (revoked or not); `NotFound` if there is none.
    pub async fn get(&self, id: Uuid) -> Result<ApiKey> {
        traced(site!("get", "api_keys"), async {
            self.store
                .backend
                .get_key(id)
                .await?
                .ok_or(not_found(Entity::ApiKey, id))
        })
        .await
    }

    /// Revokes the key: it is refused from the next validation on, here and
    /// in services that look keys up by hash themselves. Revoking a revoked
    /// key changes nothing. `NotFound` if there is no such key.
    pub async fn revoke(&self, id: Uuid) -> Result<ApiKey> {
        let s = self.store;
        traced(
            site!("revoke", "api_keys"),
            s.backend.revoke_key(id, s.now()),
        )
        .await
    }

    /// A user's keys, revoked ones included, oldest first. Hashes are never
    /// returned.
    pub async fn list_for_user(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        traced(
            site!("list_for_user", "api_keys"),
            self.store.backend.list_keys(user_id),
        )
        .await
    }

    /// Issues a replacement for key `id` (same user and service, expiring
    /// at `expires_at`) and revokes the old one, in one transaction.
    /// `NotFound` if there is no such key; `InvalidInput` (field `id`) if it
    /// is already revoked.
    pub async fn rotate(&self, id: Uuid, expires_at: Option<DateTime<Utc>>) -> Result<IssuedKey> {
        let s = self.store;
        traced(site!("rotate", "api_keys"), async {
            let old = s
                .backend
                .get_key(id)
                .await?
                .ok_or(not_found(Entity::ApiKey, id))?;
            let now = s.now();
            let (row, secret) = self.new_row(old.user_id, &old.service, expires_at, now)?;
            let key = s.backend.rotate_key(id, row, now).await?;
            Ok(IssuedKey { key, secret })
        })
        .await
    }
}

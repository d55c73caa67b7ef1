//! The in-memory backend: everything the PostgreSQL backend stores, kept in
//! this process's memory with the same semantics, for tests and for trying
//! the crate without a database.
//!
//! # Layout
//!
//! Two tables behind two [`RwLock`]s:
//!
//! - [`Accounts`]: users and their API keys, with the indexes every lookup
//!   needs (id, lower-case email, canonical wallet, key hash, a user's keys,
//!   users in `(created_at, id)` order). Keys live beside users because the
//!   operations that must be atomic (a user with their first key, deleting a
//!   user with their keys) span both.
//! - [`EventLog`]: events ordered by `(created_at, id)`, with per-user and
//!   per-type indexes, so a user's newest events are a short reverse range
//!   scan.
//!
//! Locks are always taken in that order (accounts, then events) and never
//! held across an `.await` (no method awaits anything), so there is no
//! deadlock and no lock is held while a task is parked. Every method checks
//! everything that can fail before it changes anything, which is what makes
//! a failed operation leave nothing behind, as a rolled-back transaction
//! would.
//!
//! A panic while a lock is held would poison it; since no mutation can panic
//! half-way (all checks come first), a poisoned lock's data is still
//! consistent and is used as is.

mod accounts;
mod analytics;
mod audit;
mod events;
mod media;

use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::backend::audit::{entries, rotated};
use crate::backend::{Backend, NewKeyRow, UsageBatch};
use crate::backend::{PoolState, Settings};
use crate::error::{Entity, Error, Result};
use crate::model::AuditAction;
use crate::model::audit::{key_change, key_issued, user_created, user_updated};
use crate::model::{
    ApiKey, BucketCount, CreditSpend, Cursor, Email, Event, EventFilter, EventType, Json,
    KeyCredits, KeyRateLimit, KeyUsage, TimeBucket, TimeRange, User, UserUpdate, WalletAddress,
};

use accounts::Accounts;
use events::EventLog;

/// A position in a `(created_at, id)` ordering: the sort key of users, keys
/// and events. [`Uuid`]'s order is its bytes' order, as PostgreSQL's is.
type Pos = (DateTime<Utc>, Uuid);

/// The in-memory backend. See the module documentation.
pub(crate) struct MemoryBackend {
    accounts: RwLock<Accounts>,
    events: RwLock<EventLog>,
    media: std::sync::Arc<media::MemoryMedia>,
    /// Appended to while the accounts lock is held (locks in the order
    /// accounts, events, audit).
    audit: std::sync::Arc<audit::MemoryAudit>,
}

impl MemoryBackend {
    /// An empty store.
    pub(crate) fn new() -> Self {
        let audit = std::sync::Arc::new(audit::MemoryAudit::default());
        MemoryBackend {
            accounts: RwLock::new(Accounts::default()),
            events: RwLock::new(EventLog::default()),
            media: std::sync::Arc::new(media::MemoryMedia {
                rows: Default::default(),
                audit: audit.clone(),
            }),
            audit,
        }
    }

    /// The audit log, shared by every handle on this backend.
    pub(crate) fn audit_log(&self) -> std::sync::Arc<dyn crate::backend::AuditBackend> {
        self.audit.clone()
    }

    /// Applies a key policy change and records it as `action`, under one
    /// lock.
    fn change_key(
        &self,
        id: Uuid,
        action: AuditAction,
        change: impl FnOnce(&mut crate::model::KeyPolicy),
    ) -> Result<ApiKey> {
        let mut accounts = self.accounts_mut();
        let key = accounts.change_policy(id, change)?;
        self.audit.append(entries(|r| {
            vec![r.entry(action, Some(id), key_change(action, &key), None)]
        }));
        Ok(key)
    }

    /// The `media` rows, shared by every handle on this backend.
    pub(crate) fn media_rows(&self) -> std::sync::Arc<dyn crate::backend::MediaBackend> {
        self.media.clone()
    }

    fn accounts(&self) -> RwLockReadGuard<'_, Accounts> {
        self.accounts.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn accounts_mut(&self) -> RwLockWriteGuard<'_, Accounts> {
        self.accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn events(&self) -> RwLockReadGuard<'_, EventLog> {
        self.events.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn events_mut(&self) -> RwLockWriteGuard<'_, EventLog> {
        self.events.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts only: the contents (hashes included) are never printed.
impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MemoryBackend");
        // `try_` so that formatting can never wait for (or deadlock on) a
        // writer.
        if let Ok(a) = self.accounts.try_read() {
            d.field("users", &a.user_count())
                .field("api_keys", &a.key_count());
        }
        if let Ok(e) = self.events.try_read() {
            d.field("events", &e.len());
        }
        d.finish_non_exhaustive()
    }
}

fn user_not_found(id: Uuid) -> Error {
    Error::NotFound {
        entity: Entity::User,
        id,
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn create_user(&self, user: User) -> Result<User> {
        let mut accounts = self.accounts_mut();
        accounts.insert_user(user.clone(), None)?;
        self.audit.append(entries(|r| {
            let (changes, personal) = user_created(&user);
            vec![r.entry(AuditAction::UserCreated, Some(user.id), changes, personal)]
        }));
        Ok(user)
    }

    async fn create_user_with_key(&self, user: User, key: NewKeyRow) -> Result<(User, ApiKey)> {
        let api_key = key.key.clone();
        let mut accounts = self.accounts_mut();
        accounts.insert_user(user.clone(), Some(key))?;
        self.audit.append(entries(|r| {
            let (changes, personal) = user_created(&user);
            vec![
                r.entry(AuditAction::UserCreated, Some(user.id), changes, personal),
                r.entry(
                    AuditAction::KeyIssued,
                    Some(api_key.id),
                    key_issued(&api_key),
                    None,
                ),
            ]
        }));
        Ok((user, api_key))
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        Ok(self.accounts().user(id).cloned())
    }

    async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        Ok(self.accounts().user_by_email(email).cloned())
    }

    async fn find_user_by_wallet(&self, wallet: &WalletAddress) -> Result<Option<User>> {
        Ok(self.accounts().user_by_wallet(wallet).cloned())
    }

    async fn update_user(
        &self,
        id: Uuid,
        update: &UserUpdate,
        settings: &Settings,
    ) -> Result<User> {
        // Read, apply and write under one write lock: a concurrent update
        // waits and then applies its change to this one's result.
        let mut accounts = self.accounts_mut();
        let old = accounts.user(id).cloned();
        let next = accounts.update_user(id, update, settings)?;
        if let Some(old) = old {
            self.audit.append(entries(|r| {
                let (changes, personal) = user_updated(&old, &next);
                vec![r.entry(AuditAction::UserUpdated, Some(id), changes, personal)]
            }));
        }
        Ok(next)
    }

    async fn delete_user(&self, id: Uuid) -> Result<()> {
        let mut accounts = self.accounts_mut();
        if accounts.user(id).is_none() {
            return Err(user_not_found(id));
        }
        // Both locks, in order, so that nobody sees the user gone with
        // their events still attached (or the other way round).
        let mut events = self.events_mut();
        let keys = accounts.keys_of(id).len();
        accounts.remove_user(id);
        events.detach_user(id);
        self.audit.append(entries(|r| {
            vec![r.entry(
                AuditAction::UserDeleted,
                Some(id),
                serde_json::json!({"api_keys_deleted": keys}),
                None,
            )]
        }));
        Ok(())
    }

    async fn list_users(&self, after: Option<Cursor>, limit: usize) -> Result<Vec<User>> {
        Ok(self.accounts().list_users(after, limit))
    }

    async fn insert_key(&self, row: NewKeyRow) -> Result<ApiKey> {
        let key = row.key.clone();
        let mut accounts = self.accounts_mut();
        accounts.insert_key(row)?;
        self.audit.append(entries(|r| {
            vec![r.entry(AuditAction::KeyIssued, Some(key.id), key_issued(&key), None)]
        }));
        Ok(key)
    }

    async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        Ok(self.accounts().key_by_hash(hash).cloned())
    }

    async fn revoke_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        let mut accounts = self.accounts_mut();
        let key = accounts.revoke_key(id, now)?;
        self.audit.append(entries(|r| {
            let action = AuditAction::KeyRevoked;
            vec![r.entry(action, Some(id), key_change(action, &key), None)]
        }));
        Ok(key)
    }

    async fn list_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        Ok(self.accounts().keys_of(user_id))
    }

    async fn rotate_key(&self, old_id: Uuid, new: NewKeyRow, now: DateTime<Utc>) -> Result<ApiKey> {
        let mut accounts = self.accounts_mut();
        let key = accounts.rotate_key(old_id, new, now)?;
        self.audit
            .append(entries(|r| rotated(r, old_id, &key, now)));
        Ok(key)
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<ApiKey>> {
        Ok(self.accounts().key(id).cloned())
    }

    async fn disable_key(&self, id: Uuid, now: DateTime<Utc>) -> Result<ApiKey> {
        self.change_key(id, AuditAction::KeyDisabled, |p| {
            p.disabled_at.get_or_insert(now);
        })
    }

    async fn enable_key(&self, id: Uuid) -> Result<ApiKey> {
        self.change_key(id, AuditAction::KeyEnabled, |p| p.disabled_at = None)
    }

    async fn set_key_permissions(
        &self,
        id: Uuid,
        permissions: &std::collections::BTreeSet<String>,
    ) -> Result<ApiKey> {
        self.change_key(id, AuditAction::KeyPermissionsSet, |p| {
            p.permissions = permissions.clone()
        })
    }

    async fn set_key_details(
        &self,
        id: Uuid,
        name: Option<&str>,
        metadata: Option<&Json>,
    ) -> Result<ApiKey> {
        self.change_key(id, AuditAction::KeyDetailsSet, |p| {
            p.name = name.map(str::to_owned);
            p.metadata = metadata.cloned();
        })
    }

    async fn set_key_credits(&self, id: Uuid, credits: Option<&KeyCredits>) -> Result<ApiKey> {
        // The version first: a write-back of the old budget that comes in
        // between is dropped rather than landing on the new one.
        self.accounts_mut().new_credit_version(id);
        self.change_key(id, AuditAction::KeyCreditsSet, |p| {
            p.credits = credits.copied()
        })
    }

    async fn set_key_rate_limits(&self, id: Uuid, limits: &[KeyRateLimit]) -> Result<ApiKey> {
        self.change_key(id, AuditAction::KeyRateLimitsSet, |p| {
            p.rate_limits = limits.to_vec()
        })
    }

    async fn spend_key_credits(
        &self,
        id: Uuid,
        cost: i64,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend> {
        self.accounts_mut().spend_credits(id, cost, now)
    }

    async fn flush_key_usage(&self, batch: &UsageBatch) -> Result<()> {
        self.accounts_mut().flush_usage(batch);
        Ok(())
    }

    async fn key_credit_state(&self, id: Uuid) -> Result<Option<crate::backend::CreditState>> {
        Ok(self.accounts().credit_state(id))
    }

    async fn key_usage(
        &self,
        id: Uuid,
        bucket: TimeBucket,
        range: TimeRange,
    ) -> Result<Vec<KeyUsage>> {
        Ok(self.accounts().usage_of(id, bucket, range))
    }

    async fn insert_events(&self, batch: &[Event]) -> Result<()> {
        // The accounts read lock is held until the events are in, so no
        // user named by the batch can be deleted in between (a foreign key
        // check, as PostgreSQL does it).
        let accounts = self.accounts();
        if let Some(unknown) = batch
            .iter()
            .filter_map(|e| e.user_id)
            .find(|&u| accounts.user(u).is_none())
        {
            return Err(user_not_found(unknown));
        }
        self.events_mut().insert(batch)
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        Ok(self.events().list(filter, after, limit))
    }

    async fn count_events(&self, event_type: &EventType, range: TimeRange) -> Result<u64> {
        Ok(self.events().count(event_type, range))
    }

    async fn count_events_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>> {
        Ok(self.events().count_by_bucket(bucket, range, event_type))
    }

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        event_type: Option<&EventType>,
        limit: usize,
    ) -> Result<(u64, Option<DateTime<Utc>>)> {
        Ok(self.events_mut().purge(before, from, event_type, limit))
    }

    async fn migrate(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    fn pool_state(&self) -> Option<PoolState> {
        None
    }

    fn media(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::backend::MediaBackend> {
        self.media_rows()
    }

    fn analytics(
        self: std::sync::Arc<Self>,
    ) -> std::sync::Arc<dyn crate::backend::AnalyticsBackend> {
        self
    }

    fn audit(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::backend::AuditBackend> {
        self.audit_log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::model::NewUser;

    #[tokio::test]
    async fn debug_shows_counts_never_contents() {
        let store = Store::in_memory();
        let (_, issued) = store
            .users()
            .create_with_key(
                NewUser::with_email("ada@example.com".parse().unwrap()),
                "billing",
                None,
            )
            .await
            .unwrap();
        let shown = format!("{store:?}");
        assert!(shown.contains("users: 1"), "{shown}");
        assert!(shown.contains("api_keys: 1"), "{shown}");
        assert!(!shown.contains("ada@example.com"), "{shown}");
        assert!(!shown.contains(&issued.secret.hash()), "{shown}");
        assert!(!shown.contains(issued.secret.expose_secret()), "{shown}");
    }

    #[test]
    fn the_backend_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<MemoryBackend>();
    }
}

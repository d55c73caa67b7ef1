//! What a session backend must do: the contract the facade
//! ([`Sessions`](crate::Sessions)) stands on, implemented in memory, on
//! Redis and in PostgreSQL.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Json, Session};

/// What every session backend does, keyed by `SessionId::storage_key`.
/// "Live" means `expires_at > now`; an expired session is never returned,
/// even before it is removed.
#[async_trait::async_trait]
pub(crate) trait SessionBackend: Send + Sync + fmt::Debug + 'static {
    /// Stores `session` unless a live session holds `key`; says whether it
    /// stored it.
    async fn insert(&self, key: &str, session: &Session, now: DateTime<Utc>) -> Result<bool>;
    /// Stores `session` under `key`, replacing whatever is there but
    /// keeping the existing creation time.
    #[cfg_attr(not(feature = "tower-sessions"), allow(dead_code))]
    async fn put(&self, key: &str, session: &Session, now: DateTime<Utc>) -> Result<()>;
    /// The live session under `key`.
    async fn load(&self, key: &str, now: DateTime<Utc>) -> Result<Option<Session>>;
    /// Sets the expiry (and the data, if given) of the live session under
    /// `key`, and returns it.
    async fn update(
        &self,
        key: &str,
        data: Option<&Json>,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>>;
    /// Removes the session under `key`; says whether it was live.
    async fn delete(&self, key: &str, now: DateTime<Utc>) -> Result<bool>;
    /// Removes every session of `user_id`; counts the live ones.
    async fn delete_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<u64>;
    /// Removes the sessions that have expired; counts them.
    async fn delete_expired(&self, now: DateTime<Utc>) -> Result<u64>;
}

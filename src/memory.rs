//! The in-memory backend.

use crate::backend::{Backend, NewKeyRow};
use crate::error::Result;
use crate::model::*;
use crate::store::{PoolState, Settings, StoreBuilder as _};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The in-memory backend.
#[derive(Debug)]
pub(crate) struct MemoryBackend {}

impl MemoryBackend {
    pub(crate) fn new() -> Self {
        todo!("memory backend")
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn create_user(&self, _user: User) -> Result<User> {
        todo!()
    }
    async fn create_user_with_key(&self, _user: User, _key: NewKeyRow) -> Result<(User, ApiKey)> {
        todo!()
    }
    async fn get_user(&self, _id: Uuid) -> Result<Option<User>> {
        todo!()
    }
    async fn find_user_by_email(&self, _email: &Email) -> Result<Option<User>> {
        todo!()
    }
    async fn find_user_by_wallet(&self, _wallet: &WalletAddress) -> Result<Option<User>> {
        todo!()
    }
    async fn update_user(
        &self,
        _id: Uuid,
        _update: &UserUpdate,
        _settings: &Settings,
    ) -> Result<User> {
        todo!()
    }
    async fn delete_user(&self, _id: Uuid) -> Result<()> {
        todo!()
    }
    async fn list_users(&self, _after: Option<Cursor>, _limit: usize) -> Result<Vec<User>> {
        todo!()
    }
    async fn insert_key(&self, _row: NewKeyRow) -> Result<ApiKey> {
        todo!()
    }
    async fn find_key_by_hash(&self, _hash: &str) -> Result<Option<ApiKey>> {
        todo!()
    }
    async fn touch_key(
        &self,
        _id: Uuid,
        _now: DateTime<Utc>,
        _stale_before: DateTime<Utc>,
    ) -> Result<()> {
        todo!()
    }
    async fn revoke_key(&self, _id: Uuid, _now: DateTime<Utc>) -> Result<ApiKey> {
        todo!()
    }
    async fn list_keys(&self, _user_id: Uuid) -> Result<Vec<ApiKey>> {
        todo!()
    }
    async fn rotate_key(
        &self,
        _old_id: Uuid,
        _new: NewKeyRow,
        _now: DateTime<Utc>,
    ) -> Result<ApiKey> {
        todo!()
    }
    async fn get_key(&self, _id: Uuid) -> Result<Option<ApiKey>> {
        todo!()
    }
    async fn insert_events(&self, _events: &[Event]) -> Result<()> {
        todo!()
    }
    async fn list_events(
        &self,
        _filter: &EventFilter,
        _after: Option<Cursor>,
        _limit: usize,
    ) -> Result<Vec<Event>> {
        todo!()
    }
    async fn count_events(&self, _event_type: &EventType, _range: TimeRange) -> Result<u64> {
        todo!()
    }
    async fn count_events_by_bucket(
        &self,
        _bucket: TimeBucket,
        _range: TimeRange,
        _event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>> {
        todo!()
    }
    async fn migrate(&self) -> Result<Vec<String>> {
        todo!()
    }
    async fn health(&self) -> Result<()> {
        todo!()
    }
    fn pool_state(&self) -> Option<PoolState> {
        None
    }
}

//! What a media backend must do: the rows of `media` that the facade
//! ([`MediaFiles`](crate::MediaFiles)) keeps beside the objects, in memory
//! and in PostgreSQL.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::model::{Cursor, Media, MediaFacts, MediaRow};

/// The `media` rows. "Complete" rows are the only ones a reader sees;
/// pending rows are the uploads under way (or that a crash cut short).
#[async_trait::async_trait]
pub(crate) trait MediaBackend: Send + Sync + fmt::Debug + 'static {
    /// Inserts `row` (pending: its `facts` are `None`).
    async fn insert_pending(&self, row: &MediaRow) -> Result<()>;
    /// Completes the pending row `id` with `facts`; `None` if there is no
    /// pending row `id` any more (a sweep removed it).
    async fn complete(&self, id: Uuid, facts: &MediaFacts) -> Result<Option<Media>>;
    /// The complete row `id`.
    async fn get(&self, id: Uuid) -> Result<Option<Media>>;
    /// Removes the row `id` whatever its state; its storage key if it was
    /// there.
    async fn remove(&self, id: Uuid) -> Result<Option<String>>;
    /// Removes the row `id` only if it is still pending; its storage key
    /// if it was. A row completed meanwhile is left alone.
    async fn remove_pending(&self, id: Uuid) -> Result<Option<String>>;
    /// Removes every row of `owner` whatever their state; their storage
    /// keys.
    async fn remove_owner(&self, owner: Uuid) -> Result<Vec<String>>;
    /// Complete rows of `owner` after `after` in `(created_at, id)` order,
    /// at most `limit`.
    async fn list(&self, owner: Uuid, after: Option<Cursor>, limit: usize) -> Result<Vec<Media>>;
    /// Pending rows created before `before`, at most `limit`: `(id, key)`.
    async fn stale_pending(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>>;
    /// Which of `ids` have a row, whatever its state.
    async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>>;
}

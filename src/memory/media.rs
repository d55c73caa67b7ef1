//! The `media` rows in memory: one map by id, and each owner's complete
//! files in `(created_at, id)` order. No method awaits, so the lock is never
//! held across an `.await`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Pos;
use crate::backend::MediaBackend;
use crate::error::Result;
use crate::model::{Cursor, Media, MediaFacts, MediaRow};

#[derive(Default)]
pub(super) struct Rows {
    by_id: HashMap<Uuid, MediaRow>,
    /// Complete rows with an owner.
    by_owner: HashMap<Uuid, BTreeSet<Pos>>,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct MemoryMedia {
    pub(super) rows: Mutex<Rows>,
    /// Appended to while the rows' lock is held.
    pub(super) audit: std::sync::Arc<super::audit::MemoryAudit>,
}

/// The `media.deleted` record of a removed row, if it was complete (a
/// pending row was never uploaded).
fn deleted(
    r: &crate::backend::audit::Recorder,
    row: &MediaRow,
) -> Option<crate::model::AuditEntry> {
    row.facts.is_some().then(|| {
        r.entry(
            crate::model::AuditAction::MediaDeleted,
            Some(row.id),
            serde_json::json!({"owner_id": row.owner_id}),
            None,
        )
    })
}

impl std::fmt::Debug for MemoryMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("MemoryMedia");
        if let Ok(r) = self.rows.try_lock() {
            d.field("rows", &r.by_id.len());
        }
        d.finish_non_exhaustive()
    }
}

impl MemoryMedia {
    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Rows {
    fn remove(&mut self, id: Uuid) -> Option<MediaRow> {
        let row = self.by_id.remove(&id)?;
        if let Some(owner) = row.owner_id {
            if let Some(set) = self.by_owner.get_mut(&owner) {
                set.remove(&(row.created_at, row.id));
                if set.is_empty() {
                    self.by_owner.remove(&owner);
                }
            }
        }
        Some(row)
    }
}

#[async_trait::async_trait]
impl MediaBackend for MemoryMedia {
    async fn insert_pending(&self, row: &MediaRow) -> Result<()> {
        self.rows().by_id.insert(row.id, row.clone());
        Ok(())
    }

    async fn complete(&self, id: Uuid, facts: &MediaFacts) -> Result<Option<Media>> {
        let mut rows = self.rows();
        let Some(row) = rows.by_id.get_mut(&id).filter(|r| r.facts.is_none()) else {
            return Ok(None);
        };
        row.facts = Some(facts.clone());
        let (owner, pos, media) = (row.owner_id, (row.created_at, row.id), row.media());
        if let Some(owner) = owner {
            rows.by_owner.entry(owner).or_default().insert(pos);
        }
        if let Some(m) = &media {
            self.audit.append(crate::backend::audit::entries(|r| {
                let (changes, personal) = crate::model::audit::media_uploaded(m);
                vec![r.entry(
                    crate::model::AuditAction::MediaUploaded,
                    Some(m.id),
                    changes,
                    personal,
                )]
            }));
        }
        Ok(media)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Media>> {
        Ok(self.rows().by_id.get(&id).and_then(MediaRow::media))
    }

    async fn remove(&self, id: Uuid) -> Result<Option<String>> {
        let mut rows = self.rows();
        let removed = rows.remove(id);
        if let Some(row) = &removed {
            self.audit.append(crate::backend::audit::entries(|r| {
                deleted(r, row).into_iter().collect()
            }));
        }
        Ok(removed.map(|r| r.storage_key))
    }

    async fn remove_pending(&self, id: Uuid) -> Result<Option<String>> {
        let mut rows = self.rows();
        if rows.by_id.get(&id).is_some_and(|r| r.facts.is_none()) {
            return Ok(rows.remove(id).map(|r| r.storage_key));
        }
        Ok(None)
    }

    async fn remove_owner(&self, owner: Uuid) -> Result<Vec<String>> {
        let mut rows = self.rows();
        let ids: Vec<Uuid> = rows
            .by_id
            .values()
            .filter(|r| r.owner_id == Some(owner))
            .map(|r| r.id)
            .collect();
        let removed: Vec<MediaRow> = ids.into_iter().filter_map(|id| rows.remove(id)).collect();
        self.audit.append(crate::backend::audit::entries(|r| {
            removed.iter().filter_map(|row| deleted(r, row)).collect()
        }));
        Ok(removed.into_iter().map(|r| r.storage_key).collect())
    }

    async fn list(&self, owner: Uuid, after: Option<Cursor>, limit: usize) -> Result<Vec<Media>> {
        let rows = self.rows();
        let Some(set) = rows.by_owner.get(&owner) else {
            return Ok(Vec::new());
        };
        let start = after.map(|c| (c.created_at, c.id));
        Ok(set
            .iter()
            .filter(|p| start.is_none_or(|s| **p > s))
            .take(limit)
            .filter_map(|(_, id)| rows.by_id.get(id).and_then(MediaRow::media))
            .collect())
    }

    async fn stale_pending(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String)>> {
        Ok(self
            .rows()
            .by_id
            .values()
            .filter(|r| r.facts.is_none() && r.created_at < before)
            .take(limit)
            .map(|r| (r.id, r.storage_key.clone()))
            .collect())
    }

    async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let rows = self.rows();
        Ok(ids
            .iter()
            .copied()
            .filter(|id| rows.by_id.contains_key(id))
            .collect())
    }
}

//! The audit log in memory: records by `(created_at, id)` for listing, and
//! per chain by `seq`. Appended to while the lock of the table the change
//! was made in is still held, so a change and its record are seen together.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Pos;
use crate::backend::AuditBackend;
use crate::backend::audit::{ChainHead, entries};
use crate::error::Result;
use crate::model::audit::GENESIS;
use crate::model::{AUDIT_SHARDS, AuditAction, AuditEntry, AuditQuery, AuditRecord, Cursor};

#[derive(Debug)]
struct State {
    records: BTreeMap<Pos, AuditRecord>,
    chains: Vec<BTreeMap<i64, Pos>>,
    heads: Vec<ChainHead>,
}

/// The in-memory audit log.
#[derive(Debug)]
pub(crate) struct MemoryAudit {
    state: Mutex<State>,
}

impl Default for MemoryAudit {
    fn default() -> Self {
        MemoryAudit {
            state: Mutex::new(State {
                records: BTreeMap::new(),
                chains: vec![BTreeMap::new(); AUDIT_SHARDS as usize],
                heads: (0..AUDIT_SHARDS)
                    .map(|shard| ChainHead {
                        shard,
                        seq: 0,
                        hash: GENESIS,
                        purged_seq: 0,
                    })
                    .collect(),
            }),
        }
    }
}

impl MemoryAudit {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `entries` to their chains. Cannot fail, so a caller that
    /// checked its change first calls it before making the change visible.
    pub(super) fn append(&self, entries: Vec<AuditEntry>) {
        if entries.is_empty() {
            return;
        }
        let mut s = self.state();
        for e in entries {
            append_one(&mut s, e);
        }
    }
}

fn append_one(s: &mut State, e: AuditEntry) {
    let shard = e.shard;
    let head = &mut s.heads[shard as usize];
    let record = e.into_record(shard, head.seq, head.hash);
    head.seq = record.seq;
    head.hash = record.hash;
    let pos = (record.created_at, record.id);
    s.chains[shard as usize].insert(record.seq, pos);
    s.records.insert(pos, record);
}

#[async_trait::async_trait]
impl AuditBackend for MemoryAudit {
    async fn list(
        &self,
        query: &AuditQuery,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let end = match after {
            Some(c) => Bound::Excluded((c.created_at, c.id)),
            None => Bound::Unbounded,
        };
        let s = self.state();
        Ok(s.records
            .range((Bound::Unbounded, end))
            .rev()
            .map(|(_, r)| r)
            .filter(|r| query.matches(r))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn chain(
        &self,
        shard: i16,
        since: Option<DateTime<Utc>>,
        after_seq: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        let s = self.state();
        let Some(chain) = s.chains.get(shard as usize) else {
            return Ok(Vec::new());
        };
        let from = match (after_seq, since) {
            (Some(seq), _) => Bound::Excluded(seq),
            (None, Some(t)) => match chain
                .values()
                .map(|p| &s.records[p])
                .find(|r| r.created_at >= t)
            {
                Some(r) => Bound::Included(r.seq),
                None => return Ok(Vec::new()),
            },
            (None, None) => Bound::Unbounded,
        };
        Ok(chain
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, p)| s.records[p].clone())
            .collect())
    }

    async fn heads(&self) -> Result<Vec<ChainHead>> {
        Ok(self.state().heads.clone())
    }

    async fn purge(&self, before: DateTime<Utc>, limit: usize) -> Result<u64> {
        let mut s = self.state();
        let mut gone = 0u64;
        for shard in 0..AUDIT_SHARDS as usize {
            while (gone as usize) < limit {
                let Some((&seq, &pos)) = s.chains[shard].first_key_value() else {
                    break;
                };
                if pos.0 >= before {
                    break;
                }
                s.chains[shard].remove(&seq);
                s.records.remove(&pos);
                s.heads[shard].purged_seq = seq;
                gone += 1;
            }
        }
        if gone > 0 {
            for e in entries(|r| {
                vec![r.entry(
                    AuditAction::AuditPurged,
                    None,
                    serde_json::json!({"count": gone, "before": before}),
                    None,
                )]
            }) {
                append_one(&mut s, e);
            }
        }
        Ok(gone)
    }

    async fn erase_personal(&self, user_id: Uuid) -> Result<u64> {
        let mut s = self.state();
        let mut erased = 0u64;
        for r in s.records.values_mut() {
            if r.subject == Some(user_id) && (r.personal.is_some() || r.personal_salt.is_some()) {
                r.personal = None;
                r.personal_salt = None;
                erased += 1;
            }
        }
        for e in entries(|r| {
            vec![r.entry(
                AuditAction::PersonalErased,
                Some(user_id),
                serde_json::json!({"records": erased}),
                None,
            )]
        }) {
            append_one(&mut s, e);
        }
        Ok(erased)
    }
}

//! Who is acting, and whether changes are audited: set by the facade for
//! the duration of one call, read by the backend that writes the change and
//! its audit record in one transaction. A task-local, so that the backend
//! contract's methods need no extra parameter and the cache decorator passes
//! it through untouched.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::model::{Actor, AuditAction, AuditEntry, new_id};

/// How the change being made is audited.
#[derive(Debug, Clone)]
pub(crate) struct AuditContext {
    /// Who the caller says acts.
    pub actor: Actor,
    /// The store's clock when the call began: the records' time.
    pub at: DateTime<Utc>,
}

tokio::task_local! {
    static AUDIT: Option<AuditContext>;
}

/// Runs `f` with `ctx` as the audit context of every change it makes;
/// `None`: not audited.
pub(crate) async fn scope<F: Future>(ctx: Option<AuditContext>, f: F) -> F::Output {
    AUDIT.scope(ctx, f).await
}

/// The audit context of the change being made; `None` if it is not
/// audited. A change made outside any scope is audited, by
/// [`Actor::Unknown`], now: never silently left out.
pub(crate) fn current() -> Option<AuditContext> {
    AUDIT.try_with(Clone::clone).unwrap_or_else(|_| {
        Some(AuditContext {
            actor: Actor::Unknown,
            at: Utc::now(),
        })
    })
}

/// The entries `make` builds for the change being made, if it is audited;
/// every one in the first one's chain, so that a transaction locks one
/// chain head only (no two transactions can then wait for each other's
/// heads).
pub(crate) fn entries(make: impl FnOnce(&Recorder) -> Vec<AuditEntry>) -> Vec<AuditEntry> {
    let Some(ctx) = current() else {
        return Vec::new();
    };
    let mut out = make(&Recorder { ctx });
    if let Some(shard) = out.first().map(|e| e.shard) {
        for e in &mut out {
            e.shard = shard;
        }
    }
    out
}

/// Builds the entries of one audited change.
pub(crate) struct Recorder {
    ctx: AuditContext,
}

impl Recorder {
    /// An entry for `action` on `entity_id`.
    pub(crate) fn entry(
        &self,
        action: AuditAction,
        entity_id: Option<Uuid>,
        changes: Value,
        personal: Option<(Uuid, Value)>,
    ) -> AuditEntry {
        AuditEntry::new(
            new_id(self.ctx.at),
            self.ctx.at,
            self.ctx.actor.clone(),
            action,
            entity_id,
            changes,
            personal,
        )
    }
}

/// The records of a rotation: on the old key, naming the new one, and the
/// new key's issue.
pub(crate) fn rotated(
    r: &Recorder,
    old_id: Uuid,
    new: &crate::model::ApiKey,
    now: DateTime<Utc>,
) -> Vec<AuditEntry> {
    vec![
        r.entry(
            AuditAction::KeyRotated,
            Some(old_id),
            serde_json::json!({"revoked_at": now, "replaced_by": new.id}),
            None,
        ),
        r.entry(
            AuditAction::KeyIssued,
            Some(new.id),
            crate::model::audit::key_issued(new),
            None,
        ),
    ]
}

/// A hash chain's head: its newest record's `seq` and `hash`, and the
/// `seq` up to which a retention purge removed its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHead {
    pub shard: i16,
    pub seq: i64,
    pub hash: [u8; 32],
    pub purged_seq: i64,
}

/// Reading, purging and erasing the audit log. Records are written by the
/// backend's own write methods, in the same transaction as their change.
#[async_trait::async_trait]
pub(crate) trait AuditBackend: Send + Sync + std::fmt::Debug + 'static {
    /// Up to `limit` records passing `query`, newest first, ordered by
    /// `(created_at, id)` descending, strictly after `after` in that order.
    async fn list(
        &self,
        query: &crate::model::AuditQuery,
        after: Option<crate::model::Cursor>,
        limit: usize,
    ) -> crate::error::Result<Vec<crate::model::AuditRecord>>;

    /// Up to `limit` records of chain `shard` in `seq` order: those after
    /// `after_seq` if given, else from the first whose `created_at` is at
    /// or after `since` (from the chain's oldest, without `since`).
    async fn chain(
        &self,
        shard: i16,
        since: Option<DateTime<Utc>>,
        after_seq: Option<i64>,
        limit: usize,
    ) -> crate::error::Result<Vec<crate::model::AuditRecord>>;

    /// Every chain's head, in shard order.
    async fn heads(&self) -> crate::error::Result<Vec<ChainHead>>;

    /// Deletes up to `limit` of the oldest records made before `before`,
    /// taking from each chain only records all older than its first record
    /// at or after `before` (so what stays of a chain is unbroken), moves
    /// the chains' `purged_seq` up, and writes an `audit.purged` record
    /// (count and cut-off), all atomically. Returns how many went; writes
    /// nothing if none did.
    async fn purge(&self, before: DateTime<Utc>, limit: usize) -> crate::error::Result<u64>;

    /// Empties the personal values (and their salts) of every record about
    /// `user_id`, and writes an `audit.personal_erased` record, atomically.
    /// Returns how many records were emptied.
    async fn erase_personal(&self, user_id: Uuid) -> crate::error::Result<u64>;
}

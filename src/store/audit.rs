//! [`Audit`]: the audit log's facade. Records are written by the changes
//! themselves (see [`Store::acting_as`]); here they are read, checked,
//! purged, and stripped of a user's personal values.

use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Store;
use crate::error::{Error, Field, Result};
use crate::model::{
    AuditBreak, AuditBreakReason, AuditQuery, AuditRecord, AuditVerification, Cursor, Page,
    TimeRange, check_page, page_from,
};
use crate::telemetry::{site, traced};

/// How many records one batch of [`Audit::purge_before`] deletes by
/// default.
pub const DEFAULT_AUDIT_PURGE_BATCH: usize = 5_000;

/// The most records one batch of [`Audit::purge_before`] may delete.
pub const MAX_AUDIT_PURGE_BATCH: usize = 100_000;

/// How many records [`Audit::verify`] reads per round trip.
const VERIFY_PAGE: usize = 1_000;

/// The audit log: every change made through the store to users, API keys
/// and media files, and "log out everywhere" on PostgreSQL sessions, with
/// who made it. Get one from [`Store::audit`].
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    pub(super) store: &'a Store,
}

impl Audit<'_> {
    /// A page of at most `limit` (1 to 1000) records passing `query`,
    /// newest first, after `after` (the previous page's [`Page::next`]).
    /// `InvalidInput` for a bad limit, cursor or time range.
    pub async fn list(
        &self,
        query: &AuditQuery,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Page<AuditRecord>> {
        traced(site!("list", "audit_log"), async {
            check_page(limit, after)?;
            query.range.check()?;
            let records = self
                .store
                .backend
                .clone()
                .audit()
                .list(query, after, limit + 1)
                .await?;
            Ok(page_from(records, limit, AuditRecord::cursor))
        })
        .await
    }

    /// Checks the hash chains: every record's content against its hash,
    /// every record against the one before it in its chain, and each
    /// chain's newest record against the chain's head. Reports the first
    /// break; [`AuditVerification::is_intact`] if there is none.
    ///
    /// With a `range`, each chain is checked from its first record made at
    /// or after `range.since` (whose previous hash is taken as given) to
    /// its last made before `range.until` (the head is then not compared).
    /// A retention purge ([`purge_before`](Self::purge_before)) leaves the
    /// chains checkable: each starts again at its oldest remaining record,
    /// where the purge said it would. Writes made while it runs are not
    /// checked (the chains are checked up to their heads as they were when
    /// it began); a purge running at the same time may be reported as
    /// missing records, so run the two apart.
    pub async fn verify(&self, range: TimeRange) -> Result<AuditVerification> {
        traced(site!("verify", "audit_log"), async {
            range.check()?;
            let audit = self.store.backend.clone().audit();
            let heads = audit.heads().await?;
            let mut report = AuditVerification::default();
            for head in heads {
                let mut prev_seq = head.purged_seq;
                let mut prev_hash = (head.purged_seq == 0).then_some(crate::model::audit::GENESIS);
                let mut after: Option<i64> = None;
                let mut stopped = false;
                let mut first = true;
                'walk: loop {
                    let page = audit
                        .chain(head.shard, range.since, after, VERIFY_PAGE)
                        .await?;
                    let n = page.len();
                    for r in page {
                        if r.seq > head.seq {
                            // Appended after the heads were read: the
                            // next verification checks it.
                            break 'walk;
                        }
                        if range.until.is_some_and(|u| r.created_at >= u) {
                            stopped = true;
                            break 'walk;
                        }
                        if first && range.since.is_some() {
                            // The first record in range anchors the walk.
                            prev_seq = r.seq - 1;
                            prev_hash = Some(r.prev_hash);
                        }
                        first = false;
                        let broken = if r.seq != prev_seq + 1
                            || prev_hash.is_some_and(|h| h != r.prev_hash)
                        {
                            Some(AuditBreakReason::Missing)
                        } else if r.expected_hash(&r.prev_hash) != r.hash {
                            Some(AuditBreakReason::Modified)
                        } else if !r.personal_intact() {
                            Some(AuditBreakReason::PersonalModified)
                        } else {
                            None
                        };
                        report.checked += 1;
                        if let Some(reason) = broken {
                            report.first_break = Some(AuditBreak {
                                shard: head.shard,
                                seq: r.seq,
                                id: Some(r.id),
                                reason,
                            });
                            return Ok(report);
                        }
                        prev_seq = r.seq;
                        prev_hash = Some(r.hash);
                        after = Some(r.seq);
                    }
                    if n < VERIFY_PAGE {
                        break;
                    }
                }
                let empty_range = first && range.since.is_some();
                if !stopped
                    && !empty_range
                    && (head.seq != prev_seq || prev_hash.is_some_and(|h| h != head.hash))
                {
                    report.first_break = Some(AuditBreak {
                        shard: head.shard,
                        seq: head.seq.max(prev_seq + 1),
                        id: None,
                        reason: AuditBreakReason::Truncated,
                    });
                    return Ok(report);
                }
            }
            Ok(report)
        })
        .await
    }

    /// Retention: deletes the records made before `before`, oldest first,
    /// in batches of [`AuditPurge::batch_size`], each its own short
    /// transaction that also writes an `audit.purged` record (how many,
    /// and the cut-off) as made by this handle's actor: a purge is itself
    /// on the record. Records after a chain's first record made at or
    /// after `before` stay, so that what is left of every chain is
    /// unbroken and [`verify`](Self::verify) still passes. Nothing happens
    /// until [`AuditPurge::run`] or [`AuditPurge::run_with`] is awaited.
    pub fn purge_before(&self, before: DateTime<Utc>) -> AuditPurge<'_> {
        AuditPurge {
            store: self.store,
            before,
            batch_size: DEFAULT_AUDIT_PURGE_BATCH,
            pause: Duration::ZERO,
        }
    }

    /// Erasure (GDPR's right to erasure): removes the personal values (a
    /// user's email, wallet address, metadata and preferences, old and
    /// new) from every record about `user_id`, and writes an
    /// `audit.personal_erased` record, in one transaction. The records
    /// themselves stay, with their actions, times, actors, field names and
    /// non-personal values, and the chains still verify: the hashes cover
    /// a salted digest of the personal values, and the salt goes with
    /// them. Returns how many records were emptied. Call it when the user
    /// is deleted, or whenever they ask.
    pub async fn erase_personal(&self, user_id: Uuid) -> Result<u64> {
        let s = self.store;
        traced(site!("erase_personal", "audit_log"), async {
            s.audited(s.backend.clone().audit().erase_personal(user_id))
                .await
        })
        .await
    }
}

/// A purge of old audit records, set up by [`Audit::purge_before`].
#[derive(Debug, Clone)]
#[must_use = "a purge does nothing until `run` or `run_with` is awaited"]
pub struct AuditPurge<'a> {
    store: &'a Store,
    before: DateTime<Utc>,
    batch_size: usize,
    pause: Duration,
}

impl AuditPurge<'_> {
    /// Records deleted per batch, 1 to [`MAX_AUDIT_PURGE_BATCH`]. Default
    /// [`DEFAULT_AUDIT_PURGE_BATCH`].
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// A pause between batches. Default none.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// Runs the purge to the end; returns how many records went.
    pub async fn run(self) -> Result<u64> {
        self.run_with(|_| ControlFlow::Continue(())).await
    }

    /// Runs the purge, calling `progress` with the count deleted so far
    /// after every batch that deleted something; stops when it returns
    /// [`ControlFlow::Break`]. `InvalidInput` if the batch size is out of
    /// range or `before` is outside what PostgreSQL stores.
    pub async fn run_with(self, mut progress: impl FnMut(u64) -> ControlFlow<()>) -> Result<u64> {
        if self.batch_size == 0 || self.batch_size > MAX_AUDIT_PURGE_BATCH {
            return Err(Error::invalid(
                Field::Limit,
                format!("an audit purge batch is 1 to {MAX_AUDIT_PURGE_BATCH} records"),
            ));
        }
        TimeRange::until(self.before).check()?;
        let s = self.store;
        let mut deleted = 0;
        loop {
            let n = traced(site!("purge_before", "audit_log"), async {
                s.audited(
                    s.backend
                        .clone()
                        .audit()
                        .purge(self.before, self.batch_size),
                )
                .await
            })
            .await?;
            deleted += n;
            if (n as usize) < self.batch_size {
                if n > 0 {
                    let _ = progress(deleted);
                }
                return Ok(deleted);
            }
            if progress(deleted).is_break() {
                return Ok(deleted);
            }
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
        }
    }
}

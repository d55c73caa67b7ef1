//! [`Events`]: the events repository's facade.

use std::ops::ControlFlow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, new_id};
use crate::error::{Field, Result};
use crate::model::json::check_document;
use crate::model::{
    BucketCount, Cursor, Event, EventFilter, EventType, NewEvent, Page, TimeBucket, TimeRange,
    check_page, page_from,
};
use crate::telemetry::{site, traced};

/// Events: record, list, count and purge. Get one from [`Store::events`].
#[derive(Debug, Clone, Copy)]
pub struct Events<'a> {
    pub(super) store: &'a Store,
}

impl Events<'_> {
    fn event_row(&self, new: NewEvent, now: DateTime<Utc>) -> Result<Event> {
        let payload = check_document(
            Field::Payload,
            &new.payload,
            self.store.settings.max_payload_bytes,
        )?;
        Ok(Event {
            id: new_id(now),
            user_id: new.user_id,
            event_type: new.event_type,
            payload,
            created_at: now,
        })
    }

    /// Records one event. `InvalidInput` if the payload is over the limit
    /// (64 KiB by default) or is a document PostgreSQL's `jsonb` refuses
    /// or nested deeper than [`MAX_JSON_DEPTH`](crate::MAX_JSON_DEPTH) (see
    /// [`Json`](crate::Json)); `NotFound` if the user does not exist. The
    /// returned event holds the payload as it is stored.
    pub async fn record(&self, new: NewEvent) -> Result<Event> {
        traced(site!("record", "events"), async {
            let event = self.event_row(new, self.store.now())?;
            self.store
                .backend
                .insert_events(std::slice::from_ref(&event))
                .await?;
            Ok(event)
        })
        .await
    }

    /// Records many events in one round trip and one transaction: all of
    /// them or, if any is refused, none. Returns their ids in order.
    pub async fn record_many(&self, batch: Vec<NewEvent>) -> Result<Vec<Uuid>> {
        traced(site!("record_many", "events"), async {
            let now = self.store.now();
            let rows = batch
                .into_iter()
                .map(|e| self.event_row(e, now))
                .collect::<Result<Vec<_>>>()?;
            if !rows.is_empty() {
                self.store.backend.insert_events(&rows).await?;
            }
            Ok(rows.into_iter().map(|e| e.id).collect())
        })
        .await
    }

    /// A page of at most `limit` (1 to 1000) events passing `filter`, newest
    /// first, after `after` (the previous page's [`Page::next`]).
    pub async fn list(
        &self,
        filter: &EventFilter,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Page<Event>> {
        traced(site!("list", "events"), async {
            check_page(limit, after)?;
            filter.range.check()?;
            let checked;
            let filter = match &filter.payload_contains {
                Some(v) => {
                    let v =
                        check_document(Field::Payload, v, self.store.settings.max_payload_bytes)?;
                    checked = EventFilter {
                        payload_contains: Some(v),
                        ..filter.clone()
                    };
                    &checked
                }
                None => filter,
            };
            let events = self
                .store
                .backend
                .list_events(filter, after, limit + 1)
                .await?;
            Ok(page_from(events, limit, |e| {
                Cursor::new(e.created_at, e.id)
            }))
        })
        .await
    }

    /// How many events of `event_type` fall in `range`.
    pub async fn count(&self, event_type: &EventType, range: TimeRange) -> Result<u64> {
        traced(site!("count", "events"), async {
            range.check()?;
            self.store.backend.count_events(event_type, range).await
        })
        .await
    }

    /// Retention: deletes every event created before `before` (of one type
    /// with [`Purge::event_type`]), oldest first, in batches of
    /// [`Purge::batch_size`] rows, each its own short statement, so no lock
    /// is held for long and the service keeps recording meanwhile. Nothing
    /// happens until [`Purge::run`] or [`Purge::run_with`] is awaited.
    ///
    /// Stopping is safe at any point: return [`ControlFlow::Break`] from
    /// the progress callback, or drop the future (a batch either happened
    /// or did not). Resuming is calling `purge_before` again with the same
    /// `before`: what was deleted stays deleted, and the new run starts at
    /// the oldest event left.
    ///
    /// ```
    /// # #[cfg(feature = "memory")]
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> dreamnet_db::Result<()> {
    /// use std::ops::ControlFlow;
    /// use dreamnet_db::Store;
    ///
    /// let store = Store::in_memory();
    /// let cutoff = chrono::Utc::now() - chrono::Duration::days(90);
    /// let report = store
    ///     .events()
    ///     .purge_before(cutoff)
    ///     .batch_size(5_000)
    ///     .run_with(|progress| {
    ///         println!("{} events deleted so far", progress.deleted);
    ///         ControlFlow::Continue(())
    ///     })
    ///     .await?;
    /// assert!(report.finished);
    /// # Ok(()) }
    /// # #[cfg(not(feature = "memory"))]
    /// # fn main() {}
    /// ```
    pub fn purge_before(&self, before: DateTime<Utc>) -> Purge<'_> {
        Purge {
            store: self.store,
            before,
            event_type: None,
            batch_size: DEFAULT_PURGE_BATCH,
            pause: Duration::ZERO,
        }
    }

    /// Counts of events per type per UTC hour or day in `range` (only of
    /// `event_type`, if given), ordered by bucket then type. Buckets with no
    /// events are left out.
    pub async fn count_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<BucketCount>> {
        traced(site!("count_by_bucket", "events"), async {
            range.check()?;
            self.store
                .backend
                .count_events_by_bucket(bucket, range, event_type)
                .await
        })
        .await
    }
}

/// How many events one batch of [`Events::purge_before`] deletes by
/// default.
pub const DEFAULT_PURGE_BATCH: usize = 5_000;

/// The most events one batch of [`Events::purge_before`] may delete.
pub const MAX_PURGE_BATCH: usize = 100_000;

/// A purge of old events, set up by [`Events::purge_before`].
#[derive(Debug, Clone)]
#[must_use = "a purge does nothing until `run` or `run_with` is awaited"]
pub struct Purge<'a> {
    store: &'a Store,
    before: DateTime<Utc>,
    event_type: Option<EventType>,
    batch_size: usize,
    pause: Duration,
}

/// How far a purge has got, after each batch and at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Events deleted by this run so far.
    pub deleted: u64,
    /// Batches (statements) run so far.
    pub batches: u64,
    /// The `created_at` of the newest event deleted so far: every matching
    /// event older than this is gone.
    pub reached: Option<DateTime<Utc>>,
    /// Whether nothing matching is left (before the cutoff, of the type).
    /// `false` when the run was stopped.
    pub finished: bool,
}

impl Purge<'_> {
    /// Deletes only events of this type.
    pub fn event_type(mut self, event_type: EventType) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Rows deleted per statement, 1 to [`MAX_PURGE_BATCH`]. Default
    /// [`DEFAULT_PURGE_BATCH`]: at that size one batch takes tens of
    /// milliseconds, so a writer touching the same rows waits at most that.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// A pause between batches, to leave the database more room. Default
    /// none.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// Runs the purge to the end.
    pub async fn run(self) -> Result<PurgeReport> {
        self.run_with(|_| ControlFlow::Continue(())).await
    }

    /// Runs the purge, calling `progress` after every batch that deleted
    /// something; it stops (with [`PurgeReport::finished`] false) when
    /// `progress` returns [`ControlFlow::Break`]. `InvalidInput` if the
    /// batch size is out of range or `before` is outside what PostgreSQL
    /// stores.
    pub async fn run_with(
        self,
        mut progress: impl FnMut(&PurgeReport) -> ControlFlow<()>,
    ) -> Result<PurgeReport> {
        if self.batch_size == 0 || self.batch_size > MAX_PURGE_BATCH {
            return Err(crate::error::Error::invalid(
                Field::Limit,
                format!("a purge batch is 1 to {MAX_PURGE_BATCH} rows"),
            ));
        }
        TimeRange::until(self.before).check()?;
        let mut report = PurgeReport {
            deleted: 0,
            batches: 0,
            reached: None,
            finished: false,
        };
        loop {
            let (n, last) = traced(site!("purge_before", "events"), async {
                self.store
                    .backend
                    .purge_events(
                        self.before,
                        report.reached,
                        self.event_type.as_ref(),
                        self.batch_size,
                    )
                    .await
            })
            .await?;
            report.batches += 1;
            report.deleted += n;
            if last.is_some() {
                report.reached = last;
            }
            if (n as usize) < self.batch_size {
                report.finished = true;
                if n > 0 {
                    let _ = progress(&report);
                }
                return Ok(report);
            }
            if progress(&report).is_break() {
                return Ok(report);
            }
            if !self.pause.is_zero() {
                tokio::time::sleep(self.pause).await;
            }
        }
    }
}

//! [`Events`]: the events repository's facade.

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

/// Events: record, list and count. Get one from [`Store::events`].
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

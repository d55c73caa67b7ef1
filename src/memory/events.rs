//! The `events` table: events in `(created_at, id)` order, with per-user
//! and per-type indexes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Pos;
use crate::error::{Error, Field, Result};
use crate::model::{BucketCount, Cursor, Event, EventFilter, EventType, TimeBucket, TimeRange};

/// The `events` table.
#[derive(Debug, Default)]
pub(super) struct EventLog {
    /// The rows, by id: a listing finds positions in an index, then each
    /// row here in O(1).
    events: HashMap<Uuid, Event>,
    /// Every event's position (the index on `(created_at, id)`).
    order: BTreeSet<Pos>,
    /// Each user's events (the index on `(user_id, created_at, id)`).
    by_user: HashMap<Uuid, BTreeSet<Pos>>,
    /// Each type's events (the index on `(event_type, created_at, id)`).
    by_type: HashMap<EventType, BTreeSet<Pos>>,
}

/// The positions in `set` within `[lo, hi)`; empty (rather than a panic,
/// as `BTreeSet::range` would) if `lo >= hi`.
fn window(
    set: &BTreeSet<Pos>,
    lo: Option<Pos>,
    hi: Option<Pos>,
) -> Box<dyn DoubleEndedIterator<Item = &Pos> + '_> {
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo >= hi {
            return Box::new(std::iter::empty());
        }
    }
    let lo = lo.map_or(Bound::Unbounded, Bound::Included);
    let hi = hi.map_or(Bound::Unbounded, Bound::Excluded);
    Box::new(set.range((lo, hi)))
}

/// The first position at or after `t`: the nil id sorts before every other.
fn at(t: DateTime<Utc>) -> Pos {
    (t, Uuid::nil())
}

/// The smaller of two optional exclusive upper bounds.
fn min_bound(a: Option<Pos>, b: Option<Pos>) -> Option<Pos> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl EventLog {
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Inserts every event, or none if any id is taken. The caller checked
    /// the users.
    pub(super) fn insert(&mut self, batch: &[Event]) -> Result<()> {
        if batch.iter().any(|e| self.events.contains_key(&e.id)) {
            return Err(Error::Conflict { field: Field::Id });
        }
        for e in batch {
            let pos = (e.created_at, e.id);
            if let Some(u) = e.user_id {
                self.by_user.entry(u).or_default().insert(pos);
            }
            self.by_type
                .entry(e.event_type.clone())
                .or_default()
                .insert(pos);
            self.order.insert(pos);
            self.events.insert(e.id, e.clone());
        }
        Ok(())
    }

    /// Sets `user_id` to none on the user's events.
    pub(super) fn detach_user(&mut self, user_id: Uuid) {
        for (_, id) in self.by_user.remove(&user_id).unwrap_or_default() {
            if let Some(e) = self.events.get_mut(&id) {
                e.user_id = None;
            }
        }
    }

    /// Positions in `[lo, hi)` from the narrowest index the filter allows.
    fn candidates<'a>(
        &'a self,
        user_id: Option<Uuid>,
        event_type: Option<&EventType>,
        lo: Option<Pos>,
        hi: Option<Pos>,
    ) -> Box<dyn DoubleEndedIterator<Item = &'a Pos> + 'a> {
        match (user_id, event_type) {
            (Some(u), _) => match self.by_user.get(&u) {
                Some(set) => window(set, lo, hi),
                None => Box::new(std::iter::empty()),
            },
            (None, Some(t)) => match self.by_type.get(t) {
                Some(set) => window(set, lo, hi),
                None => Box::new(std::iter::empty()),
            },
            (None, None) => window(&self.order, lo, hi),
        }
    }

    /// Up to `limit` events passing `filter`, newest first, strictly after
    /// (older than) `after`.
    pub(super) fn list(
        &self,
        filter: &EventFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Vec<Event> {
        let lo = filter.range.since.map(at);
        let hi = min_bound(
            filter.range.until.map(at),
            after.map(|c| (c.created_at, c.id)),
        );
        self.candidates(filter.user_id, filter.event_type.as_ref(), lo, hi)
            .rev()
            .filter_map(|(_, id)| self.events.get(id))
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The events in `range` (of `user_id` and of `event_type`, when
    /// given), oldest first.
    pub(super) fn scan<'a>(
        &'a self,
        user_id: Option<Uuid>,
        event_type: Option<&EventType>,
        range: TimeRange,
    ) -> impl DoubleEndedIterator<Item = &'a Event> + 'a {
        self.candidates(
            user_id,
            event_type,
            range.since.map(at),
            range.until.map(at),
        )
        .filter_map(|(_, id)| self.events.get(id))
    }

    /// Every event type with events, and how many of them fall in `range`.
    pub(super) fn type_counts(&self, range: TimeRange) -> Vec<(&EventType, u64)> {
        self.by_type
            .iter()
            .map(|(t, set)| {
                (
                    t,
                    window(set, range.since.map(at), range.until.map(at)).count() as u64,
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub(super) fn count(&self, event_type: &EventType, range: TimeRange) -> u64 {
        self.candidates(
            None,
            Some(event_type),
            range.since.map(at),
            range.until.map(at),
        )
        .count() as u64
    }

    /// Deletes up to `limit` of the oldest events in `[from, before)` (of
    /// `event_type` only, if given); returns how many went and the newest
    /// `created_at` among them.
    pub(super) fn purge(
        &mut self,
        before: DateTime<Utc>,
        from: Option<DateTime<Utc>>,
        event_type: Option<&EventType>,
        limit: usize,
    ) -> (u64, Option<DateTime<Utc>>) {
        let doomed: Vec<Pos> = self
            .candidates(None, event_type, from.map(at), Some(at(before)))
            .take(limit)
            .copied()
            .collect();
        for pos in &doomed {
            let Some(e) = self.events.remove(&pos.1) else {
                continue;
            };
            self.order.remove(pos);
            if let Some(u) = e.user_id {
                if let Some(set) = self.by_user.get_mut(&u) {
                    set.remove(pos);
                    if set.is_empty() {
                        self.by_user.remove(&u);
                    }
                }
            }
            if let Some(set) = self.by_type.get_mut(&e.event_type) {
                set.remove(pos);
                if set.is_empty() {
                    self.by_type.remove(&e.event_type);
                }
            }
        }
        (doomed.len() as u64, doomed.last().map(|p| p.0))
    }

    pub(super) fn count_by_bucket(
        &self,
        bucket: TimeBucket,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Vec<BucketCount> {
        let mut counts: BTreeMap<(DateTime<Utc>, &EventType), u64> = BTreeMap::new();
        for e in self
            .candidates(None, event_type, range.since.map(at), range.until.map(at))
            .filter_map(|(_, id)| self.events.get(id))
        {
            *counts
                .entry((bucket.start_of(e.created_at), &e.event_type))
                .or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((bucket, event_type), count)| BucketCount {
                bucket,
                event_type: event_type.clone(),
                count,
            })
            .collect()
    }
}

//! What an analytics backend must do: the aggregate and search queries the
//! facade ([`Analytics`](crate::Analytics)) asks, over `events` and
//! `users`, in memory and in PostgreSQL. The facade validates the input
//! and shapes the answer (zero-filled buckets, cohort rows); a backend
//! only counts and finds.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::model::analytics::RetentionCell;
use crate::model::{
    ActiveUsers, Breakdown, Cursor, EventSearch, EventType, Funnel, Period, Retention,
    SearchCursor, SearchHit, TimeRange, TypeCount, User,
};

/// Analytics and search over `events` and `users`. Every range given is
/// bounded unless said otherwise, and events without a user never count
/// as a user's activity.
#[async_trait::async_trait]
pub(crate) trait AnalyticsBackend: Send + Sync + fmt::Debug + 'static {
    /// Distinct users with an event (of `event_type`, if given) in `range`,
    /// per bucket of `period`; only buckets with some, in bucket order.
    async fn active_users(
        &self,
        period: Period,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<ActiveUsers>>;

    /// How many users reached each step of `funnel` (see [`Funnel`]), one
    /// count per step.
    async fn funnel(&self, funnel: &Funnel) -> Result<Vec<u64>>;

    /// Each non-empty cohort's size (`bucket: None`) and its active users
    /// per later non-empty bucket (see [`Retention`]), in any order.
    async fn retention(&self, retention: &Retention) -> Result<Vec<RetentionCell>>;

    /// Counts per string value of the top-level payload `key` over events
    /// in `range` (of `event_type`, if given): the `top` most frequent,
    /// most first, ties bytewise; the rest summed; the others missing.
    async fn breakdown(
        &self,
        key: &str,
        range: TimeRange,
        event_type: Option<&EventType>,
        top: usize,
    ) -> Result<Breakdown>;

    /// The `top` most frequent event types in `range`, most first, ties
    /// bytewise.
    async fn top_event_types(&self, range: TimeRange, top: usize) -> Result<Vec<TypeCount>>;

    /// Up to `limit` events whose payload's string values hold every one of
    /// `words` (lower-case runs of letters and digits), passing the
    /// search's type and range (which may be open), in its order, strictly
    /// after `after`.
    async fn search_events(
        &self,
        words: &[String],
        search: &EventSearch,
        after: Option<SearchCursor>,
        limit: usize,
    ) -> Result<Vec<SearchHit>>;

    /// Up to `limit` users, in `(created_at, id)` order strictly after
    /// `after`, whose lower-cased email or wallet address starts with
    /// `text` (lower-case), or whose display name (the string
    /// `metadata.display_name`) has, for every word of `text`, a word
    /// starting with it.
    async fn search_users(
        &self,
        text: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<User>>;

    /// Rolls up every whole UTC day (from the one holding `from`, if
    /// given) that ended by `ended_by` and is not rolled up yet, each day
    /// at once with its events, stamped `now`; returns how many days this
    /// call rolled up. A backend that keeps no rollups answers every
    /// question from its events, and returns 0.
    async fn refresh_rollups(
        &self,
        from: Option<DateTime<Utc>>,
        ended_by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Forgets the rollups of the days `range` touches, so that questions
    /// read those days from the events again; returns how many days were
    /// rolled up.
    async fn forget_rollups(&self, range: TimeRange) -> Result<u64>;
}

//! [`Analytics`]: aggregate questions about events and users, and
//! full-text search over them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Store;
use crate::backend::AnalyticsBackend;
use crate::error::Result;
use crate::model::analytics::{
    bounded, check_payload_key, check_top, search_words, user_search_text,
};
use crate::model::{
    ActiveUsers, Breakdown, Cohort, Cursor, EventSearch, EventType, Funnel, FunnelStep,
    MAX_ACTIVITY_BUCKETS, MAX_COHORTS, Page, Period, Retention, SearchCursor, SearchPage,
    TimeRange, TypeCount, User, check_page, page_from,
};
use crate::telemetry::{site, traced};

/// Analytics over events (active users, funnels, retention, breakdowns,
/// top types) and full-text search over events and users. Get one from
/// [`Store::analytics`].
///
/// Every question takes a bounded [`TimeRange`] (`since` included, `until`
/// excluded) and buckets in UTC; events without a user count towards
/// totals (breakdowns, top types) but never as a user's activity. Input
/// that would make a meaningless or unbounded answer (an open range, an
/// empty funnel, a zero window, `top` of 0 or above [`MAX_TOP`], more than
/// [`MAX_ACTIVITY_BUCKETS`] buckets) is [`Error::InvalidInput`] naming the
/// field. Every backend gives the same answers.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dreamnet_db::Result<()> {
/// use chrono::{TimeDelta, Utc};
/// use dreamnet_db::{NewEvent, NewUser, Period, Store, TimeRange};
/// use serde_json::json;
///
/// let store = Store::in_memory();
/// let ada = store.users().create(NewUser::with_email("ada@example.com".parse()?)).await?;
/// store.events().record(NewEvent::new("page.view".parse()?, json!({"country": "FR"})).user(ada.id)).await?;
///
/// let now = Utc::now();
/// let week = TimeRange::between(now - TimeDelta::days(6), now + TimeDelta::days(1));
/// let daily = store.analytics().active_users(Period::Day, week, None).await?;
/// assert_eq!(daily.len(), 8); // every day of the range, zero-filled
/// assert_eq!(daily.iter().map(|d| d.users).sum::<u64>(), 1);
///
/// let by_country = store.analytics().breakdown("country", week, None, 10).await?;
/// assert_eq!(by_country.values[0].value, "FR");
/// # Ok(()) }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
///
/// [`MAX_TOP`]: crate::MAX_TOP
/// [`Error::InvalidInput`]: crate::Error::InvalidInput
#[derive(Debug, Clone, Copy)]
pub struct Analytics<'a> {
    pub(super) store: &'a Store,
}

impl Analytics<'_> {
    fn backend(&self) -> std::sync::Arc<dyn AnalyticsBackend> {
        self.store.backend.clone().analytics()
    }

    /// Distinct users active (with an event of `event_type`, or any) in
    /// each bucket of `period` meeting `range`: daily, weekly or monthly
    /// active users. Every bucket is listed, in order, zero-filled; only
    /// events within `range` count, so the first and last buckets may be
    /// partial. `InvalidInput` ([`Field::Period`](crate::Field::Period)) if
    /// the range holds more than [`MAX_ACTIVITY_BUCKETS`] buckets.
    pub async fn active_users(
        &self,
        period: Period,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<ActiveUsers>> {
        traced(site!("active_users", "events"), async {
            let buckets = period.buckets(range, MAX_ACTIVITY_BUCKETS)?;
            let found: BTreeMap<DateTime<Utc>, u64> = self
                .backend()
                .active_users(period, range, event_type)
                .await?
                .into_iter()
                .map(|a| (a.bucket, a.users))
                .collect();
            Ok(buckets
                .into_iter()
                .map(|bucket| ActiveUsers {
                    bucket,
                    users: found.get(&bucket).copied().unwrap_or(0),
                })
                .collect())
        })
        .await
    }

    /// How many users reached each step of `funnel`, in order (see
    /// [`Funnel`] for the rules). `InvalidInput` for fewer than two or more
    /// than [`MAX_FUNNEL_STEPS`](crate::MAX_FUNNEL_STEPS) steps
    /// ([`Field::Steps`](crate::Field::Steps)), or a window of zero or
    /// more than [`MAX_FUNNEL_WINDOW`](crate::MAX_FUNNEL_WINDOW)
    /// ([`Field::Window`](crate::Field::Window)).
    pub async fn funnel(&self, funnel: &Funnel) -> Result<Vec<FunnelStep>> {
        traced(site!("funnel", "events"), async {
            funnel.check()?;
            let counts = self.backend().funnel(funnel).await?;
            Ok(funnel
                .steps
                .iter()
                .zip(counts.into_iter().chain(std::iter::repeat(0)))
                .map(|(event_type, users)| FunnelStep {
                    event_type: event_type.clone(),
                    users,
                })
                .collect())
        })
        .await
    }

    /// A retention table (see [`Retention`]): one [`Cohort`] per bucket of
    /// the range, in order (empty cohorts included, with no activity), each
    /// with its active users in every bucket from its own to the last of
    /// the range. `InvalidInput` ([`Field::Period`](crate::Field::Period))
    /// if the range holds more than [`MAX_COHORTS`] buckets.
    pub async fn retention(&self, retention: &Retention) -> Result<Vec<Cohort>> {
        traced(site!("retention", "events"), async {
            let buckets = retention.period.buckets(retention.range, MAX_COHORTS)?;
            let mut cohorts: Vec<Cohort> = buckets
                .iter()
                .enumerate()
                .map(|(i, &start)| Cohort {
                    start,
                    users: 0,
                    active: vec![0; buckets.len() - i],
                })
                .collect();
            for cell in self.backend().retention(retention).await? {
                let Ok(c) = buckets.binary_search(&cell.cohort) else {
                    continue;
                };
                match cell.bucket {
                    None => cohorts[c].users = cell.users,
                    Some(b) => {
                        if let Ok(b) = buckets.binary_search(&b) {
                            if b >= c {
                                cohorts[c].active[b - c] = cell.users;
                            }
                        }
                    }
                }
            }
            Ok(cohorts)
        })
        .await
    }

    /// Counts of events in `range` (of `event_type`, if given) per string
    /// value of the top-level payload `key` (for example `country`): the
    /// `top` most frequent values, most first (equal counts bytewise by
    /// value), the other string values summed, and the events without a
    /// string under the key. `InvalidInput` for an empty key
    /// ([`Field::PayloadKey`](crate::Field::PayloadKey)) or `top` outside
    /// 1 to [`MAX_TOP`](crate::MAX_TOP) ([`Field::Limit`](crate::Field::Limit)).
    pub async fn breakdown(
        &self,
        key: &str,
        range: TimeRange,
        event_type: Option<&EventType>,
        top: usize,
    ) -> Result<Breakdown> {
        traced(site!("breakdown", "events"), async {
            bounded(range)?;
            check_payload_key(key)?;
            check_top(top)?;
            self.backend().breakdown(key, range, event_type, top).await
        })
        .await
    }

    /// The `top` most frequent event types in `range`, most first (equal
    /// counts bytewise by type).
    pub async fn top_event_types(&self, range: TimeRange, top: usize) -> Result<Vec<TypeCount>> {
        traced(site!("top_event_types", "events"), async {
            bounded(range)?;
            check_top(top)?;
            self.backend().top_event_types(range, top).await
        })
        .await
    }

    /// Rolls up every whole UTC day that ended at least [`ROLLUP_GRACE`]
    /// ago and is not rolled up yet, from the oldest event's day on, each
    /// day in one statement of its own (so the first call over a long
    /// history is a batched backfill, and an interrupted one loses nothing);
    /// returns how many days this call rolled up. Run it from a periodic job
    /// (hourly is plenty); stores sharing a database may run it at once,
    /// each day is rolled up once.
    ///
    /// With PostgreSQL, [`active_users`](Self::active_users),
    /// [`retention`](Self::retention) and
    /// [`top_event_types`](Self::top_event_types) then read the rolled-up
    /// days of their range from the daily rollup tables (who was active
    /// each day, per type, and events per type) instead of every event,
    /// and the rest of the range (partial days at its ends, days not
    /// rolled up yet) from `events`, so their answers are the same with or
    /// without rollups. Not running it costs speed, never correctness. The
    /// rollups are written by the crate alone (no trigger on `events`): the
    /// other services' writes cost nothing more.
    ///
    /// What a rollup does not follow: an event written into, or deleted
    /// from, a day after it was rolled up (an import with old timestamps,
    /// a delete by another service). Call
    /// [`rebuild_rollups`](Self::rebuild_rollups) over such days. The
    /// crate's own [`purge_before`](crate::Events::purge_before) forgets
    /// the rollups of the days it purges first, and a deleted user's rows
    /// go with the user (a foreign key with `ON DELETE CASCADE`).
    ///
    /// The in-memory backend answers every question from its events,
    /// keeps no rollups and returns 0.
    ///
    /// [`ROLLUP_GRACE`]: crate::ROLLUP_GRACE
    pub async fn refresh_rollups(&self) -> Result<u64> {
        traced(site!("refresh_rollups", "events"), async {
            let now = self.store.now();
            self.backend()
                .refresh_rollups(None, now - crate::model::ROLLUP_GRACE, now)
                .await
        })
        .await
    }

    /// Rolls up again the days `range` touches (bounded): forgets their
    /// rollups, so questions read them from `events` at once, then rolls
    /// them up from what `events` holds now (days that ended less than
    /// [`ROLLUP_GRACE`](crate::ROLLUP_GRACE) ago stay unrolled). Returns
    /// how many days were rolled up. For days whose events changed after
    /// they were rolled up (see [`refresh_rollups`](Self::refresh_rollups)).
    pub async fn rebuild_rollups(&self, range: TimeRange) -> Result<u64> {
        traced(site!("rebuild_rollups", "events"), async {
            let (since, until) = bounded(range)?;
            let backend = self.backend();
            backend.forget_rollups(range).await?;
            let now = self.store.now();
            let ended_by = until.min(now - crate::model::ROLLUP_GRACE);
            backend.refresh_rollups(Some(since), ended_by, now).await
        })
        .await
    }

    /// A page of at most `limit` (1 to 1000) events whose payload's string
    /// values hold every word of the search (see [`EventSearch`]), in its
    /// order, after `after` (the previous page's [`SearchPage::next`]).
    ///
    /// Words are runs of letters and digits, matched whole,
    /// case-insensitively, without stemming or stop words (PostgreSQL's
    /// `simple` configuration over `jsonb_to_tsvector(payload, '["string"]')`,
    /// served by the `events_payload_fts_idx` GIN index). Object keys,
    /// numbers and booleans are not searched. `InvalidInput`
    /// ([`Field::Query`](crate::Field::Query)) for a text without words,
    /// with more than [`MAX_SEARCH_WORDS`](crate::MAX_SEARCH_WORDS), or
    /// longer than [`MAX_SEARCH_LEN`](crate::MAX_SEARCH_LEN);
    /// ([`Field::Candidates`](crate::Field::Candidates)) for
    /// [`EventSearch::candidates`] of 0 or above
    /// [`MAX_SEARCH_CANDIDATES`](crate::MAX_SEARCH_CANDIDATES).
    ///
    /// In [`SearchOrder::Relevance`](crate::SearchOrder::Relevance) only
    /// the newest [`EventSearch::candidates`] matches
    /// ([`DEFAULT_SEARCH_CANDIDATES`](crate::DEFAULT_SEARCH_CANDIDATES),
    /// 10,000, unless set) are ranked: with more matches than that, older
    /// ones are never returned, and the cost of a search is bounded by the
    /// candidates rather than by how common its words are. Every page
    /// ranks the same candidates, so pages neither skip nor repeat a hit
    /// while nothing is written. Newest-first order returns every match.
    pub async fn search_events(
        &self,
        search: &EventSearch,
        limit: usize,
        after: Option<SearchCursor>,
    ) -> Result<SearchPage> {
        traced(site!("search_events", "events"), async {
            check_page(limit, None)?;
            search.range.check()?;
            search.check_candidates()?;
            if let Some(c) = &after {
                c.check()?;
            }
            let words = search_words(&search.text)?;
            let mut hits = self
                .backend()
                .search_events(&words, search, after, limit + 1)
                .await?;
            let next = if hits.len() > limit {
                hits.truncate(limit);
                hits.last()
                    .map(|h| SearchCursor::new(h.rank, h.event.created_at, h.event.id))
            } else {
                None
            };
            Ok(SearchPage { items: hits, next })
        })
        .await
    }

    /// A page of at most `limit` (1 to 1000) users, oldest first, after
    /// `after`, whose email or wallet address starts with `text`, or whose
    /// display name (the string under `display_name` in their metadata)
    /// has, for each word of `text`, a word starting with it; all compared
    /// case-insensitively (`"ada"` finds `Ada.Lovelace@example.com` and
    /// "Ada L."; `"0xab"` finds the wallets starting so). Served by the
    /// `users_email_prefix_idx`, `users_wallet_address_prefix_idx`
    /// (btree, `text_pattern_ops`) and `users_display_name_fts_idx` (GIN,
    /// `simple`) indexes. `InvalidInput`
    /// ([`Field::Query`](crate::Field::Query)) for a text shorter than
    /// [`MIN_USER_SEARCH_LEN`](crate::MIN_USER_SEARCH_LEN) characters.
    pub async fn search_users(
        &self,
        text: &str,
        limit: usize,
        after: Option<Cursor>,
    ) -> Result<Page<User>> {
        traced(site!("search_users", "users"), async {
            check_page(limit, after)?;
            let text = user_search_text(text)?;
            let users = self.backend().search_users(&text, after, limit + 1).await?;
            Ok(page_from(users, limit, |u| Cursor::new(u.created_at, u.id)))
        })
        .await
    }
}

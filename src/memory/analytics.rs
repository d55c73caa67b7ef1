//! Analytics and search over the in-memory tables, with the same rules as
//! the SQL of `postgres/analytics.rs`. Each query reads under the events
//! read lock (and the accounts one for users), scanning the narrowest
//! index the question allows.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::MemoryBackend;
use crate::backend::AnalyticsBackend;
use crate::error::Result;
use crate::model::analytics::{RetentionCell, after_cursor, sort_hits, tokens};
use crate::model::{
    ActiveUsers, Breakdown, Cursor, EventSearch, EventType, Funnel, Period, Retention,
    SearchCursor, SearchHit, SearchOrder, TimeRange, TypeCount, User, ValueCount,
};

/// How often the `words` occur among the words of `event`'s string values
/// (0 if any is missing).
fn occurrences(payload: &crate::model::Json, words: &[String]) -> u32 {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for s in payload.string_values() {
        for t in tokens(&s) {
            *counts.entry(t).or_default() += 1;
        }
    }
    let mut total = 0;
    for w in words {
        match counts.get(w) {
            Some(n) => total += n,
            None => return 0,
        }
    }
    total
}

#[async_trait::async_trait]
impl AnalyticsBackend for MemoryBackend {
    async fn active_users(
        &self,
        period: Period,
        range: TimeRange,
        event_type: Option<&EventType>,
    ) -> Result<Vec<ActiveUsers>> {
        let events = self.events();
        let mut buckets: BTreeMap<DateTime<Utc>, HashSet<Uuid>> = BTreeMap::new();
        for e in events.scan(None, event_type, range) {
            if let Some(u) = e.user_id {
                buckets
                    .entry(period.start_of(e.created_at))
                    .or_default()
                    .insert(u);
            }
        }
        Ok(buckets
            .into_iter()
            .map(|(bucket, users)| ActiveUsers {
                bucket,
                users: users.len() as u64,
            })
            .collect())
    }

    async fn funnel(&self, funnel: &Funnel) -> Result<Vec<u64>> {
        let events = self.events();
        // Each user's entry: their first event of the first step in range.
        let mut entries: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        for e in events.scan(None, Some(&funnel.steps[0]), funnel.range) {
            if let Some(u) = e.user_id {
                entries.entry(u).or_insert(e.created_at);
            }
        }
        let mut counts = vec![0u64; funnel.steps.len()];
        for (user, entered) in entries {
            counts[0] += 1;
            let end = entered + funnel.window;
            let mut prev = entered;
            for (k, step) in funnel.steps.iter().enumerate().skip(1) {
                let next = events
                    .scan(Some(user), None, TimeRange::between(prev, end))
                    .find(|e| &e.event_type == step && e.created_at > prev);
                match next {
                    Some(e) => {
                        counts[k] += 1;
                        prev = e.created_at;
                    }
                    None => break,
                }
            }
        }
        Ok(counts)
    }

    async fn retention(&self, retention: &Retention) -> Result<Vec<RetentionCell>> {
        let events = self.events();
        let period = retention.period;
        let since = retention.range.since.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let cohort_type = retention.cohort_event.as_ref();
        // Each user's first cohort event in range, if they had none before.
        let mut firsts: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
        for e in events.scan(None, cohort_type, retention.range) {
            if let Some(u) = e.user_id {
                firsts.entry(u).or_insert(e.created_at);
            }
        }
        firsts.retain(|&u, _| {
            !events
                .scan(Some(u), None, TimeRange::until(since))
                .any(|e| cohort_type.is_none_or(|t| &e.event_type == t))
        });
        let cohort_of: HashMap<Uuid, DateTime<Utc>> = firsts
            .into_iter()
            .map(|(u, t)| (u, period.start_of(t)))
            .collect();
        let mut sizes: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
        for c in cohort_of.values() {
            *sizes.entry(*c).or_default() += 1;
        }
        let mut active: BTreeMap<(DateTime<Utc>, DateTime<Utc>), HashSet<Uuid>> = BTreeMap::new();
        for e in events.scan(None, retention.active_event.as_ref(), retention.range) {
            let Some(u) = e.user_id else { continue };
            let Some(&c) = cohort_of.get(&u) else {
                continue;
            };
            let b = period.start_of(e.created_at);
            if b >= c {
                active.entry((c, b)).or_default().insert(u);
            }
        }
        Ok(sizes
            .into_iter()
            .map(|(cohort, users)| RetentionCell {
                cohort,
                bucket: None,
                users,
            })
            .chain(
                active
                    .into_iter()
                    .map(|((cohort, b), users)| RetentionCell {
                        cohort,
                        bucket: Some(b),
                        users: users.len() as u64,
                    }),
            )
            .collect())
    }

    async fn breakdown(
        &self,
        key: &str,
        range: TimeRange,
        event_type: Option<&EventType>,
        top: usize,
    ) -> Result<Breakdown> {
        let events = self.events();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut missing = 0;
        for e in events.scan(None, event_type, range) {
            match e.payload.string_member(key) {
                Some(v) => *counts.entry(v).or_default() += 1,
                None => missing += 1,
            }
        }
        let mut values: Vec<ValueCount> = counts
            .into_iter()
            .map(|(value, count)| ValueCount { value, count })
            .collect();
        values.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        let other = values.iter().skip(top).map(|v| v.count).sum();
        values.truncate(top);
        Ok(Breakdown {
            values,
            other,
            missing,
        })
    }

    async fn top_event_types(&self, range: TimeRange, top: usize) -> Result<Vec<TypeCount>> {
        let events = self.events();
        let mut counts: Vec<TypeCount> = events
            .type_counts(range)
            .into_iter()
            .map(|(t, count)| TypeCount {
                event_type: t.clone(),
                count,
            })
            .collect();
        counts.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.event_type.as_str().cmp(b.event_type.as_str()))
        });
        counts.truncate(top);
        Ok(counts)
    }

    async fn search_events(
        &self,
        words: &[String],
        search: &EventSearch,
        after: Option<SearchCursor>,
        limit: usize,
    ) -> Result<Vec<SearchHit>> {
        let events = self.events();
        let mut hits: Vec<SearchHit> = events
            .scan(None, search.event_type.as_ref(), search.range)
            .filter_map(|e| {
                let n = occurrences(&e.payload, words);
                (n > 0).then(|| SearchHit {
                    event: e.clone(),
                    rank: match search.order {
                        SearchOrder::Relevance => n as f32,
                        SearchOrder::Newest => 0.0,
                    },
                })
            })
            .collect();
        if search.order == SearchOrder::Relevance && hits.len() > search.candidates {
            // Only the newest `candidates` matches are ranked, as in SQL.
            sort_hits(SearchOrder::Newest, &mut hits);
            hits.truncate(search.candidates);
        }
        hits.retain(|h| after.is_none_or(|c| after_cursor(search.order, h, &c)));
        sort_hits(search.order, &mut hits);
        hits.truncate(limit);
        Ok(hits)
    }

    async fn search_users(
        &self,
        text: &str,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<User>> {
        let accounts = self.accounts();
        let words: Vec<String> = tokens(text).collect();
        Ok(accounts
            .users_after(after)
            .filter(|u| {
                u.email
                    .as_ref()
                    .is_some_and(|e| e.as_str().to_lowercase().starts_with(text))
                    || u.wallet_address
                        .as_ref()
                        .is_some_and(|w| w.as_str().starts_with(text))
                    || (!words.is_empty()
                        && u.metadata.string_member("display_name").is_some_and(|n| {
                            let name: Vec<String> = tokens(&n).collect();
                            words
                                .iter()
                                .all(|w| name.iter().any(|t| t.starts_with(w.as_str())))
                        }))
            })
            .take(limit)
            .cloned()
            .collect())
    }

    /// Nothing to roll up: the in-memory backend answers from its events.
    async fn refresh_rollups(
        &self,
        _from: Option<DateTime<Utc>>,
        _ended_by: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(0)
    }

    async fn forget_rollups(&self, _range: TimeRange) -> Result<u64> {
        Ok(0)
    }
}

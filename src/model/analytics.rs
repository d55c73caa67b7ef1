//! Analytics and search: the questions [`Analytics`](crate::Analytics)
//! answers, their validated inputs, and their answers.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Event, EventType, TimeRange, check_timestamp};
use crate::error::{Error, Field, Result};

/// The most buckets [`active_users`](crate::Analytics::active_users)
/// answers with: 1000 days is almost three years of daily figures.
pub const MAX_ACTIVITY_BUCKETS: usize = 1_000;
/// The most cohorts (and so later buckets) a
/// [`retention`](crate::Analytics::retention) table has: two years of weeks.
pub const MAX_COHORTS: usize = 104;
/// The most steps a [`Funnel`] has.
pub const MAX_FUNNEL_STEPS: usize = 10;
/// The longest window a [`Funnel`] allows: 366 days.
pub const MAX_FUNNEL_WINDOW: TimeDelta = TimeDelta::days(366);
/// The largest `top` a breakdown or a top-N list answers with.
pub const MAX_TOP: usize = 100;
/// How long after a UTC day ends
/// [`Analytics::refresh_rollups`](crate::Analytics::refresh_rollups) waits
/// before rolling it up: one hour, for writes still in flight when the day
/// ended and for clocks that differ between services.
pub const ROLLUP_GRACE: TimeDelta = TimeDelta::hours(1);
/// The longest search text, in bytes.
pub const MAX_SEARCH_LEN: usize = 256;
/// The most words an event search matches at once.
pub const MAX_SEARCH_WORDS: usize = 16;
/// How many matches a search in [`SearchOrder::Relevance`] ranks unless
/// told otherwise ([`EventSearch::candidates`]): the newest 10,000.
pub const DEFAULT_SEARCH_CANDIDATES: usize = 10_000;
/// The most matches a search in [`SearchOrder::Relevance`] may rank: the
/// time of a relevance search grows with its candidates.
pub const MAX_SEARCH_CANDIDATES: usize = 100_000;
/// The shortest user search text, in characters: shorter prefixes match
/// too many users to be of use.
pub const MIN_USER_SEARCH_LEN: usize = 3;
/// The longest payload key a breakdown groups by, in bytes.
pub const MAX_PAYLOAD_KEY_LEN: usize = 255;

/// A calendar bucket of the analytics queries, in UTC. Weeks start on
/// Monday (ISO 8601, as PostgreSQL's `date_trunc('week', …)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Period {
    /// Whole UTC days: daily active users.
    Day,
    /// Whole UTC weeks from Monday 00:00: weekly active users.
    Week,
    /// Whole UTC calendar months: monthly active users.
    Month,
}

impl Period {
    /// The start of the bucket holding `t`.
    ///
    /// ```
    /// use dreamnet_db::Period;
    /// let t = "2026-03-05T13:00:00Z".parse().unwrap(); // a Thursday
    /// assert_eq!(Period::Week.start_of(t).to_rfc3339(), "2026-03-02T00:00:00+00:00");
    /// assert_eq!(Period::Month.start_of(t).to_rfc3339(), "2026-03-01T00:00:00+00:00");
    /// ```
    pub fn start_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.timestamp().div_euclid(86_400);
        let days = match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Mondays are day 4 mod 7.
            Period::Week => day - (day - 4).rem_euclid(7),
            Period::Month => {
                return Utc
                    .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
                    .single()
                    .unwrap_or(t);
            }
        };
        DateTime::from_timestamp(days * 86_400, 0).unwrap_or(t)
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Period::Day => start + TimeDelta::days(1),
            Period::Week => start + TimeDelta::days(7),
            Period::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                    .single()
                    .unwrap_or(start + TimeDelta::days(31))
            }
        }
    }

    /// The starts of the buckets that meet `range` (which must be
    /// bounded), or `InvalidInput` ([`Field::Period`]) if there are more
    /// than `max`.
    pub(crate) fn buckets(self, range: TimeRange, max: usize) -> Result<Vec<DateTime<Utc>>> {
        let (since, until) = bounded(range)?;
        let mut out = Vec::new();
        let mut at = self.start_of(since);
        while at < until {
            if out.len() == max {
                return Err(Error::invalid(
                    Field::Period,
                    format!(
                        "the range holds more than {max} buckets of this period: use a longer period or a shorter range"
                    ),
                ));
            }
            out.push(at);
            at = self.next(at);
        }
        Ok(out)
    }

    /// PostgreSQL's `date_trunc` field name.
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Both ends of `range`, checked; analytics need a bounded range.
pub(crate) fn bounded(range: TimeRange) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    range.check()?;
    match (range.since, range.until) {
        (Some(s), Some(u)) => Ok((s, u)),
        _ => Err(Error::invalid(
            Field::TimeRange,
            "analytics need a range with both `since` and `until`",
        )),
    }
}

/// Checks a `top` count: 1 to [`MAX_TOP`].
pub(crate) fn check_top(top: usize) -> Result<()> {
    if top == 0 || top > MAX_TOP {
        return Err(Error::invalid(
            Field::Limit,
            format!("top must be 1 to {MAX_TOP}"),
        ));
    }
    Ok(())
}

/// How many distinct users were active in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveUsers {
    /// The start of the bucket (UTC).
    pub bucket: DateTime<Utc>,
    /// Distinct users with at least one event in the bucket (and the
    /// range).
    pub users: u64,
}

/// A funnel: an ordered list of event types a user goes through within a
/// window.
///
/// A user enters the funnel at their first event of the first step within
/// `range`; each later step is reached by the first event of its type
/// strictly after the previous step's event and before the entry time plus
/// `window` (later steps may fall after `range`). Events without a user are
/// not counted.
///
/// ```
/// use chrono::{TimeDelta, Utc};
/// use dreamnet_db::{Funnel, TimeRange};
///
/// let now = Utc::now();
/// let funnel = Funnel::new(
///     ["user.signup".parse()?, "key.issued".parse()?, "api.call".parse()?],
///     TimeDelta::days(7),
///     TimeRange::between(now - TimeDelta::days(30), now),
/// );
/// assert_eq!(funnel.steps.len(), 3);
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funnel {
    /// The steps, in order: 2 to [`MAX_FUNNEL_STEPS`].
    pub steps: Vec<EventType>,
    /// How long after entering a user has to reach the last step: more
    /// than zero, at most [`MAX_FUNNEL_WINDOW`].
    pub window: TimeDelta,
    /// When users enter the funnel (bounded).
    pub range: TimeRange,
}

impl Funnel {
    /// A funnel of `steps` within `window`, entered within `range`.
    pub fn new(
        steps: impl IntoIterator<Item = EventType>,
        window: TimeDelta,
        range: TimeRange,
    ) -> Self {
        Funnel {
            steps: steps.into_iter().collect(),
            window,
            range,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        bounded(self.range)?;
        if self.steps.len() < 2 || self.steps.len() > MAX_FUNNEL_STEPS {
            return Err(Error::invalid(
                Field::Steps,
                format!("a funnel needs 2 to {MAX_FUNNEL_STEPS} steps"),
            ));
        }
        if self.window <= TimeDelta::zero() || self.window > MAX_FUNNEL_WINDOW {
            return Err(Error::invalid(
                Field::Window,
                "the window must be longer than zero and at most 366 days",
            ));
        }
        Ok(())
    }
}

/// How many users reached one step of a [`Funnel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelStep {
    /// The step's event type.
    pub event_type: EventType,
    /// Users who reached this step (and so every one before it), in order.
    pub users: u64,
}

/// A retention question: users grouped by the bucket of their first event
/// (of `cohort_event`, if given; any event otherwise), and how many of each
/// group were active (had an event of `active_event`, or any) in each
/// bucket from their first on.
///
/// A user belongs to a cohort only if their first such event ever falls in
/// `range`; activity is counted up to the end of `range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The bucket width of cohorts and of activity.
    pub period: Period,
    /// The cohorts' range (bounded; at most [`MAX_COHORTS`] buckets).
    pub range: TimeRange,
    /// The event that puts a user in a cohort; `None` for any.
    pub cohort_event: Option<EventType>,
    /// The event that counts as activity; `None` for any.
    pub active_event: Option<EventType>,
}

impl Retention {
    /// Cohorts of `period` over `range`, on any event.
    pub fn new(period: Period, range: TimeRange) -> Self {
        Retention {
            period,
            range,
            cohort_event: None,
            active_event: None,
        }
    }

    /// Cohorts by the first event of this type.
    pub fn cohort_event(mut self, event_type: EventType) -> Self {
        self.cohort_event = Some(event_type);
        self
    }

    /// Activity is an event of this type.
    pub fn active_event(mut self, event_type: EventType) -> Self {
        self.active_event = Some(event_type);
        self
    }
}

/// One cohort of a retention table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    /// The start of the cohort's bucket.
    pub start: DateTime<Utc>,
    /// How many users it holds.
    pub users: u64,
    /// `active[k]`: how many of them were active in the `k`th bucket from
    /// `start` (`active[0]` is the cohort's own bucket), up to the end of
    /// the range.
    pub active: Vec<u64>,
}

impl Cohort {
    /// The share (0 to 1) of the cohort active in the `k`th bucket; `None`
    /// past the range.
    pub fn retained(&self, k: usize) -> Option<f64> {
        let n = *self.active.get(k)?;
        Some(if self.users == 0 {
            0.0
        } else {
            n as f64 / self.users as f64
        })
    }
}

/// A retention cell as a backend answers it: users of `cohort` active in
/// `bucket`, or the cohort's size when `bucket` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetentionCell {
    pub cohort: DateTime<Utc>,
    pub bucket: Option<DateTime<Utc>>,
    pub users: u64,
}

/// Counts per value of a top-level payload key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breakdown {
    /// The most frequent string values, most frequent first (equal counts
    /// bytewise by value).
    pub values: Vec<ValueCount>,
    /// Events whose value is a string outside the top.
    pub other: u64,
    /// Events whose payload lacks the key, or holds something other than a
    /// string under it.
    pub missing: u64,
}

/// How many events hold one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueCount {
    /// The value.
    pub value: String,
    /// How many events in the range hold it.
    pub count: u64,
}

/// How many events one type has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeCount {
    /// The type.
    pub event_type: EventType,
    /// How many events of it fall in the range.
    pub count: u64,
}

/// Checks a breakdown's payload key.
pub(crate) fn check_payload_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_PAYLOAD_KEY_LEN || key.contains('\0') {
        return Err(Error::invalid(
            Field::PayloadKey,
            "must be 1 to 255 bytes without NUL",
        ));
    }
    Ok(())
}

/// The order of event search results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SearchOrder {
    /// Best match first (PostgreSQL's `ts_rank`; the in-memory backend
    /// ranks by how often the words occur), then newest first, among the
    /// newest [`EventSearch::candidates`] matches only (by `created_at`,
    /// then id): with more matches than that, older ones are not returned,
    /// however well they match.
    #[default]
    Relevance,
    /// Newest first, whatever the rank: the cheaper order for common words.
    Newest,
}

/// A full-text search over event payloads: events whose payload's string
/// values hold every word of `text`.
///
/// Words are runs of letters and digits, compared case-insensitively and
/// without stemming (PostgreSQL's `simple` text-search configuration), so a
/// search works the same in any language.
///
/// In [`SearchOrder::Relevance`] a search ranks a bounded set of
/// candidates: the newest `candidates` matches (of the type and range
/// asked for), by `created_at` then id, [`DEFAULT_SEARCH_CANDIDATES`]
/// unless set. With at most that many matches every match is ranked; with
/// more, the older matches are left out, so that a common word costs the
/// same as `candidates` matches do. Pages of one search rank the same
/// candidates, so they neither skip nor repeat a hit while nothing is
/// written. [`SearchOrder::Newest`] returns every match whatever
/// `candidates` says.
///
/// ```
/// use dreamnet_db::EventSearch;
/// let search = EventSearch::new("payment failed")
///     .event_type("billing.error".parse()?)
///     .candidates(1_000);
/// assert_eq!(search.text, "payment failed");
/// assert_eq!(search.candidates, 1_000);
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSearch {
    /// The words to find (every one must match).
    pub text: String,
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// Only events in this range.
    pub range: TimeRange,
    /// The order of results.
    pub order: SearchOrder,
    /// How many of the newest matches [`SearchOrder::Relevance`] ranks:
    /// 1 to [`MAX_SEARCH_CANDIDATES`], [`DEFAULT_SEARCH_CANDIDATES`] by
    /// default.
    pub candidates: usize,
}

impl EventSearch {
    /// Events holding every word of `text`, best match first.
    pub fn new(text: impl Into<String>) -> Self {
        EventSearch {
            text: text.into(),
            event_type: None,
            range: TimeRange::all(),
            order: SearchOrder::Relevance,
            candidates: DEFAULT_SEARCH_CANDIDATES,
        }
    }

    /// Only events of this type.
    pub fn event_type(mut self, event_type: EventType) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Only events in this range.
    pub fn range(mut self, range: TimeRange) -> Self {
        self.range = range;
        self
    }

    /// Results in this order.
    pub fn order(mut self, order: SearchOrder) -> Self {
        self.order = order;
        self
    }

    /// Ranks the newest `candidates` matches in [`SearchOrder::Relevance`]
    /// (1 to [`MAX_SEARCH_CANDIDATES`]; checked when the search runs).
    pub fn candidates(mut self, candidates: usize) -> Self {
        self.candidates = candidates;
        self
    }

    /// `InvalidInput` ([`Field::Candidates`]) unless `candidates` is 1 to
    /// [`MAX_SEARCH_CANDIDATES`].
    pub(crate) fn check_candidates(&self) -> Result<()> {
        if self.candidates == 0 || self.candidates > MAX_SEARCH_CANDIDATES {
            return Err(Error::invalid(
                Field::Candidates,
                format!("candidates must be 1 to {MAX_SEARCH_CANDIDATES}"),
            ));
        }
        Ok(())
    }
}

/// The words of a search text: runs of letters and digits, lower-cased,
/// each once, in order; `InvalidInput` ([`Field::Query`]) if there are
/// none, too many, or the text is too long.
pub(crate) fn search_words(text: &str) -> Result<Vec<String>> {
    if text.len() > MAX_SEARCH_LEN {
        return Err(Error::invalid(
            Field::Query,
            format!("must be at most {MAX_SEARCH_LEN} bytes"),
        ));
    }
    let mut words: Vec<String> = Vec::new();
    for w in tokens(text) {
        if !words.contains(&w) {
            words.push(w);
        }
    }
    if words.is_empty() {
        return Err(Error::invalid(
            Field::Query,
            "must hold at least one word (letters or digits)",
        ));
    }
    if words.len() > MAX_SEARCH_WORDS {
        return Err(Error::invalid(
            Field::Query,
            format!("must hold at most {MAX_SEARCH_WORDS} words"),
        ));
    }
    Ok(words)
}

/// The lower-cased runs of letters and digits of `text`.
pub(crate) fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Checks a user search text and gives its lower-cased form.
pub(crate) fn user_search_text(text: &str) -> Result<String> {
    let n = text.chars().count();
    if n < MIN_USER_SEARCH_LEN || text.len() > MAX_SEARCH_LEN || text.contains('\0') {
        return Err(Error::invalid(
            Field::Query,
            format!(
                "must be {MIN_USER_SEARCH_LEN} characters to {MAX_SEARCH_LEN} bytes, without NUL"
            ),
        ));
    }
    Ok(text.to_lowercase())
}

/// One event a search found, and its rank (higher is better).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The event.
    pub event: Event,
    /// How well it matches: comparable only between results of one
    /// backend; `0` in [`SearchOrder::Newest`].
    pub rank: f32,
}

/// A position in a list of search results: the last hit of a page. Its
/// string form is opaque and URL-safe.
///
/// ```
/// use dreamnet_db::SearchCursor;
/// let at = "2026-11-25T10:00:00.123456Z".parse().unwrap();
/// let c = SearchCursor::new(0.25, at, uuid::Uuid::now_v7());
/// let back: SearchCursor = c.to_string().parse()?;
/// assert_eq!(back, c);
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchCursor {
    /// The rank of the last hit seen.
    pub rank: f32,
    /// Its event's `created_at`.
    pub created_at: DateTime<Utc>,
    /// Its event's id.
    pub id: Uuid,
}

impl SearchCursor {
    /// The position of a hit.
    pub fn new(rank: f32, created_at: DateTime<Utc>, id: Uuid) -> Self {
        SearchCursor {
            rank,
            created_at,
            id,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !self.rank.is_finite() {
            return Err(Error::invalid(
                Field::Cursor,
                "not a cursor this store issued",
            ));
        }
        check_timestamp(Field::Cursor, self.created_at)
    }
}

impl fmt::Display for SearchCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}_{}_{}",
            self.rank.to_bits(),
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }
}

impl FromStr for SearchCursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(Field::Cursor, "not a cursor this store issued");
        let mut parts = s.splitn(3, '_');
        let (Some(rank), Some(micros), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let rank = f32::from_bits(u32::from_str_radix(rank, 16).map_err(|_| bad())?);
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        let c = SearchCursor::new(rank, created_at, id);
        c.check()?;
        Ok(c)
    }
}

/// One page of search results, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPage {
    /// The hits, in the search's order.
    pub items: Vec<SearchHit>,
    /// Pass this to get the next page; `None` on the last page.
    pub next: Option<SearchCursor>,
}

/// Whether `hit` comes strictly after `c` in `order`.
pub(crate) fn after_cursor(order: SearchOrder, hit: &SearchHit, c: &SearchCursor) -> bool {
    let pos = (hit.event.created_at, hit.event.id);
    let cpos = (c.created_at, c.id);
    match order {
        SearchOrder::Newest => pos < cpos,
        SearchOrder::Relevance => hit.rank < c.rank || (hit.rank == c.rank && pos < cpos),
    }
}

/// Sorts hits in `order` (rank descending, then newest first).
pub(crate) fn sort_hits(order: SearchOrder, hits: &mut [SearchHit]) {
    hits.sort_by(|a, b| {
        let by_time = (b.event.created_at, b.event.id).cmp(&(a.event.created_at, a.event.id));
        match order {
            SearchOrder::Newest => by_time,
            SearchOrder::Relevance => b.rank.total_cmp(&a.rank).then(by_time),
        }
    });
}

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::Json;
use crate::error::{Error, Field};
use crate::model::check_timestamp;

/// An event's type: 1 to 100 characters of ASCII letters, digits and
/// `_ . : / -` (for example `user.login` or `payment:settled`).
///
/// ```
/// use dreamnet_db::EventType;
/// assert!(EventType::parse("user.login").is_ok());
/// assert!(EventType::parse("user login").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(String);

impl EventType {
    /// Wraps a type read back from the database without re-checking it:
    /// rows written by older services may not pass today's rules.
    pub(crate) fn from_stored(s: String) -> Self {
        EventType(s)
    }

    /// Checks `s` and wraps it.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > 100 {
            return Err(Error::invalid(
                Field::EventType,
                "must be 1 to 100 characters",
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/-".contains(&b))
        {
            return Err(Error::invalid(
                Field::EventType,
                "may contain only ASCII letters, digits and _ . : / -",
            ));
        }
        Ok(EventType(s.to_owned()))
    }

    /// The type's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EventType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        EventType::parse(s)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An event to record.
///
/// ```
/// use dreamnet_db::NewEvent;
/// use serde_json::json;
///
/// let login = NewEvent::new("user.login".parse()?, json!({"ip": "203.0.113.7"}))
///     .user(uuid::Uuid::nil());
/// let boot = NewEvent::new("system.boot".parse()?, json!({})); // no user
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The user it concerns; `None` for system events.
    pub user_id: Option<Uuid>,
    /// The event's type.
    pub event_type: EventType,
    /// The payload, any JSON value up to the store's payload limit.
    pub payload: Json,
}

impl NewEvent {
    /// A system event (no user) of `event_type` with `payload`.
    pub fn new(event_type: EventType, payload: impl Into<Json>) -> Self {
        NewEvent {
            user_id: None,
            event_type,
            payload: payload.into(),
        }
    }

    /// Ties the event to a user.
    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }
}

/// A row of `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's id (a UUIDv7, so ids follow time).
    pub id: Uuid,
    /// The user it concerns; `None` for system events and for events of a
    /// deleted user.
    pub user_id: Option<Uuid>,
    /// The event's type.
    pub event_type: EventType,
    /// The payload, exactly as stored.
    pub payload: Json,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// A half-open time range `[since, until)`; either end may be open.
///
/// ```
/// use dreamnet_db::TimeRange;
/// use chrono::{Duration, Utc};
///
/// let now = Utc::now();
/// let last_day = TimeRange::between(now - Duration::days(1), now);
/// assert!(last_day.contains(now - Duration::hours(1)));
/// assert!(!last_day.contains(now));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// The first instant included.
    pub since: Option<DateTime<Utc>>,
    /// The first instant excluded.
    pub until: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// All of time.
    pub fn all() -> Self {
        Self::default()
    }

    /// `[since, until)`.
    pub fn between(since: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        TimeRange {
            since: Some(since),
            until: Some(until),
        }
    }

    /// From `since` on.
    pub fn since(since: DateTime<Utc>) -> Self {
        TimeRange {
            since: Some(since),
            until: None,
        }
    }

    /// Up to, not including, `until`.
    pub fn until(until: DateTime<Utc>) -> Self {
        TimeRange {
            since: None,
            until: Some(until),
        }
    }

    /// Whether `t` falls in the range.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        for t in [self.since, self.until].into_iter().flatten() {
            check_timestamp(Field::TimeRange, t)?;
        }
        match (self.since, self.until) {
            (Some(s), Some(u)) if s >= u => Err(Error::invalid(
                Field::TimeRange,
                "`since` must be before `until`",
            )),
            _ => Ok(()),
        }
    }
}

/// Which events to list: any combination of a user, a type, a time range
/// and a payload that must contain a JSON value (PostgreSQL's `@>`).
///
/// ```
/// use dreamnet_db::{EventFilter, TimeRange};
/// use serde_json::json;
///
/// let filter = EventFilter::for_user(uuid::Uuid::nil())
///     .event_type("user.login".parse()?)
///     .payload_contains(json!({"country": "NZ"}));
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this user's events.
    pub user_id: Option<Uuid>,
    /// Only events of this type.
    pub event_type: Option<EventType>,
    /// Only events in this range.
    pub range: TimeRange,
    /// Only events whose payload contains this JSON value.
    pub payload_contains: Option<Json>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// One user's events.
    pub fn for_user(user_id: Uuid) -> Self {
        EventFilter {
            user_id: Some(user_id),
            ..Self::default()
        }
    }

    /// Only events of `event_type`.
    pub fn event_type(mut self, event_type: EventType) -> Self {
        self.event_type = Some(event_type);
        self
    }

    /// Only events in `range`.
    pub fn range(mut self, range: TimeRange) -> Self {
        self.range = range;
        self
    }

    /// Only events whose payload contains `value` (numbers compared by
    /// exact value).
    pub fn payload_contains(mut self, value: impl Into<Json>) -> Self {
        self.payload_contains = Some(value.into());
        self
    }

    /// Whether `event` passes the filter (the rule every backend follows).
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    pub(crate) fn matches(&self, event: &Event) -> bool {
        self.user_id.is_none_or(|u| event.user_id == Some(u))
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| &event.event_type == t)
            && self.range.contains(event.created_at)
            && self
                .payload_contains
                .as_ref()
                .is_none_or(|v| super::json::contains(&event.payload, v))
    }
}

/// The width of a time bucket for [`count_by_bucket`](crate::Events::count_by_bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeBucket {
    /// Whole UTC hours.
    Hour,
    /// Whole UTC days.
    Day,
}

impl TimeBucket {
    /// The start of the bucket holding `t`.
    pub fn start_of(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let secs = t.timestamp();
        let width = match self {
            TimeBucket::Hour => 3_600,
            TimeBucket::Day => 86_400,
        };
        DateTime::from_timestamp(secs.div_euclid(width) * width, 0).unwrap_or(t)
    }

    /// PostgreSQL's `date_trunc` field name.
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            TimeBucket::Hour => "hour",
            TimeBucket::Day => "day",
        }
    }
}

/// How many events of one type fell in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketCount {
    /// The start of the bucket (UTC).
    pub bucket: DateTime<Utc>,
    /// The events' type.
    pub event_type: EventType,
    /// How many there were.
    pub count: u64,
}

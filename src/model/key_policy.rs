//! What an API key carries besides its identity: a name and metadata,
//! permissions, a disabled switch, credits with an optional refill, and
//! named rate limits; and what one verification decided.
//!
//! # The permission model
//!
//! A key holds a flat set of permission strings (`billing.read`,
//! `media.write`). There are no roles stored in the database: a role is a
//! name the application gives to a list of permissions, expanded when the
//! key is issued or its permissions are set. So a key's permissions are
//! exactly what its record says, a change to one key never changes another,
//! and a check is a set lookup. A check asks for all of one set and/or any
//! of another ([`KeyCheck::require_all`], [`KeyCheck::require_any`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiKey, Json};
use crate::error::{Error, Field, KeyRejection, Result};
use crate::rate_limit::{RateLimitDecision, RateLimitPolicy};

/// The longest permission string, in characters.
pub const MAX_PERMISSION_LEN: usize = 100;
/// The most permissions one key can hold.
pub const MAX_PERMISSIONS: usize = 256;
/// The longest key name, in characters.
pub const MAX_KEY_NAME_LEN: usize = 200;
/// The largest key metadata object, in bytes of JSON.
pub const MAX_KEY_METADATA_BYTES: usize = 16 * 1024;
/// The most named rate limits one key can carry.
pub const MAX_KEY_RATE_LIMITS: usize = 16;
/// The longest rate limit name, in characters.
pub const MAX_RATE_LIMIT_NAME_LEN: usize = 64;

/// A key's policy: everything a verification checks besides revocation,
/// expiry and service. The default (what keys issued before policies, or
/// without one, have) is no name, no metadata, no permissions, enabled,
/// unlimited, with no rate limits: such keys validate exactly as before.
///
/// ```
/// use std::time::Duration;
/// use dreamnet_db::{KeyPolicy, RateLimitPolicy, Refill};
///
/// let policy = KeyPolicy::new()
///     .name("billing worker")
///     .permissions(["billing.read", "billing.write"])
///     .credits(1_000)
///     .refill(Refill::daily(1_000))
///     .rate_limit("default", RateLimitPolicy::per_second(50)?);
/// assert!(policy.permissions.contains("billing.read"));
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// A display name, never used for lookup.
    pub name: Option<String>,
    /// Free-form metadata (a JSON object), never used for lookup.
    pub metadata: Option<Json>,
    /// The permissions the key grants.
    pub permissions: BTreeSet<String>,
    /// When the key was disabled, if it is: a reversible switch, unlike
    /// revocation.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The key's usage budget; `None` for unlimited.
    pub credits: Option<KeyCredits>,
    /// Named rate limits applied on every verification.
    pub rate_limits: Vec<KeyRateLimit>,
}

impl KeyPolicy {
    /// The empty policy: see [`KeyPolicy`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the metadata (a JSON object).
    pub fn metadata(mut self, metadata: impl Into<Json>) -> Self {
        self.metadata = Some(metadata.into());
        self
    }

    /// Adds permissions.
    pub fn permissions<S: Into<String>>(
        mut self,
        permissions: impl IntoIterator<Item = S>,
    ) -> Self {
        self.permissions
            .extend(permissions.into_iter().map(Into::into));
        self
    }

    /// Gives the key `remaining` uses (keeping a refill set before).
    pub fn credits(mut self, remaining: i64) -> Self {
        let refill = self.credits.as_ref().and_then(|c| c.refill);
        self.credits = Some(KeyCredits {
            remaining,
            refill,
            refilled_at: None,
        });
        self
    }

    /// Refills the credits at every UTC day or month start (the key gets
    /// [`credits`](Self::credits) of `refill.amount` if none were set).
    pub fn refill(mut self, refill: Refill) -> Self {
        let credits = self.credits.get_or_insert(KeyCredits {
            remaining: refill.amount,
            refill: None,
            refilled_at: None,
        });
        credits.refill = Some(refill);
        self
    }

    /// Adds a named rate limit.
    pub fn rate_limit(mut self, name: impl Into<String>, policy: RateLimitPolicy) -> Self {
        self.rate_limits.push(KeyRateLimit {
            name: name.into(),
            policy,
        });
        self
    }

    /// `true` for the empty policy.
    pub fn is_empty(&self) -> bool {
        self == &KeyPolicy::default()
    }

    /// Checks every part; `InvalidInput` naming the first bad one.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        if let Some(metadata) = &self.metadata {
            check_metadata(metadata)?;
        }
        check_permissions(&self.permissions)?;
        if let Some(credits) = &self.credits {
            credits.check()?;
        }
        check_rate_limits(&self.rate_limits)
    }
}

/// Checks a key name: 1 to 200 characters, no control characters.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_KEY_NAME_LEN {
        return Err(Error::invalid(
            Field::KeyName,
            "must be 1 to 200 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            Field::KeyName,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks key metadata: a JSON object of at most 16 KiB.
pub(crate) fn check_metadata(metadata: &Json) -> Result<()> {
    if !metadata.is_object() {
        return Err(Error::invalid(Field::Metadata, "must be a JSON object"));
    }
    if metadata.as_str().len() > MAX_KEY_METADATA_BYTES {
        return Err(Error::invalid(
            Field::Metadata,
            format!("must be at most {MAX_KEY_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks one permission: 1 to 100 characters, no white space or control
/// characters.
pub(crate) fn check_permission(permission: &str) -> Result<()> {
    if permission.is_empty() || permission.chars().count() > MAX_PERMISSION_LEN {
        return Err(Error::invalid(
            Field::Permission,
            "must be 1 to 100 characters",
        ));
    }
    if permission
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            Field::Permission,
            "must not contain white space or control characters",
        ));
    }
    Ok(())
}

/// Checks a set of permissions: each valid, at most 256.
pub(crate) fn check_permissions<'a>(
    permissions: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let mut n = 0;
    for p in permissions {
        check_permission(p)?;
        n += 1;
    }
    if n > MAX_PERMISSIONS {
        return Err(Error::invalid(
            Field::Permission,
            format!("a key holds at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    Ok(())
}

/// Checks named rate limits: names 1 to 64 characters, unique, at most 16.
pub(crate) fn check_rate_limits(limits: &[KeyRateLimit]) -> Result<()> {
    if limits.len() > MAX_KEY_RATE_LIMITS {
        return Err(Error::invalid(
            Field::RateLimitPolicy,
            format!("a key carries at most {MAX_KEY_RATE_LIMITS} rate limits"),
        ));
    }
    let mut names = BTreeSet::new();
    for l in limits {
        if l.name.is_empty()
            || l.name.chars().count() > MAX_RATE_LIMIT_NAME_LEN
            || l.name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::invalid(
                Field::RateLimitPolicy,
                "a rate limit's name must be 1 to 64 characters without white space",
            ));
        }
        if !names.insert(l.name.as_str()) {
            return Err(Error::invalid(
                Field::RateLimitPolicy,
                format!("two rate limits are named {:?}", l.name),
            ));
        }
    }
    Ok(())
}

/// A key's usage budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCredits {
    /// Uses left. In a record read from the store this is the count when
    /// the record was read (a cached record may be older); the count a
    /// verification spent from is in [`KeyVerdict::credits_remaining`].
    pub remaining: i64,
    /// The refill, if any.
    pub refill: Option<Refill>,
    /// The start of the last period the credits were refilled for (set
    /// when issued with a refill, so the first refill comes at the next
    /// period's start).
    pub refilled_at: Option<DateTime<Utc>>,
}

impl KeyCredits {
    /// `remaining` uses, no refill.
    pub fn new(remaining: i64) -> Self {
        KeyCredits {
            remaining,
            refill: None,
            refilled_at: None,
        }
    }

    /// With a refill.
    pub fn with_refill(mut self, refill: Refill) -> Self {
        self.refill = Some(refill);
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.remaining < 0 {
            return Err(Error::invalid(Field::Credits, "must not be below zero"));
        }
        if let Some(r) = &self.refill {
            if r.amount <= 0 {
                return Err(Error::invalid(Field::Refill, "must be at least 1"));
            }
        }
        Ok(())
    }

    /// The credits available at `now`: the refill amount if a refill is
    /// due (the period holding `now` started after the last refill), else
    /// `remaining`. Also returns the period start to record when due.
    pub(crate) fn available(&self, now: DateTime<Utc>) -> (i64, Option<DateTime<Utc>>) {
        match self.refill {
            Some(r) => {
                let start = r.interval.period_start(now);
                if self.refilled_at.is_none_or(|at| at < start) {
                    (r.amount, Some(start))
                } else {
                    (self.remaining, None)
                }
            }
            None => (self.remaining, None),
        }
    }
}

/// How a key's credits are refilled: set back to `amount` at the start of
/// every UTC day or month (not added: unused credits do not accumulate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refill {
    /// The credits the key has after a refill (at least 1).
    pub amount: i64,
    /// How often.
    pub interval: RefillInterval,
}

impl Refill {
    /// `amount` credits at the start of every UTC day.
    pub fn daily(amount: i64) -> Self {
        Refill {
            amount,
            interval: RefillInterval::Day,
        }
    }

    /// `amount` credits at the start of every UTC month.
    pub fn monthly(amount: i64) -> Self {
        Refill {
            amount,
            interval: RefillInterval::Month,
        }
    }
}

/// How often credits are refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    /// At every UTC midnight.
    Day,
    /// At midnight UTC on the first of every month.
    Month,
}

impl RefillInterval {
    /// The value of `api_key_policies.refill_interval` (PostgreSQL's
    /// `date_trunc` field name).
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            RefillInterval::Day => "day",
            RefillInterval::Month => "month",
        }
    }

    pub(crate) fn from_sql(s: &str) -> Option<Self> {
        match s {
            "day" => Some(RefillInterval::Day),
            "month" => Some(RefillInterval::Month),
            _ => None,
        }
    }

    /// The start (UTC) of the period holding `t`.
    pub fn period_start(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.date_naive();
        let first = match self {
            RefillInterval::Day => day,
            RefillInterval::Month => day.with_day(1).unwrap_or(day),
        };
        Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or_default())
    }
}

/// A named rate limit carried by a key, checked on every verification
/// through the store's key rate limiter, under the key's id and the
/// limit's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRateLimit {
    /// The limit's name (`default`, `burst`, `expensive`): unique per key.
    pub name: String,
    /// How many verifications it allows.
    pub policy: RateLimitPolicy,
}

#[derive(Serialize, Deserialize)]
struct StoredLimit {
    name: String,
    emission_us: u64,
    burst: u32,
}

impl Serialize for KeyRateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        StoredLimit {
            name: self.name.clone(),
            emission_us: self.policy.emission_interval().as_micros() as u64,
            burst: self.policy.burst(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for KeyRateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let stored = StoredLimit::deserialize(d)?;
        let policy = RateLimitPolicy::from_parts(stored.emission_us, stored.burst)
            .map_err(serde::de::Error::custom)?;
        Ok(KeyRateLimit {
            name: stored.name,
            policy,
        })
    }
}

/// What a verification asks of a key besides being valid: a service,
/// permissions, and how many credits it costs.
///
/// ```
/// use dreamnet_db::KeyCheck;
///
/// let check = KeyCheck::new()
///     .service("billing")
///     .require_all(["billing.read"])
///     .cost(5);
/// # let _ = check;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub(crate) service: Option<String>,
    pub(crate) all: Vec<String>,
    pub(crate) any: Vec<String>,
    pub(crate) cost: i64,
}

impl Default for KeyCheck {
    fn default() -> Self {
        KeyCheck {
            service: None,
            all: Vec::new(),
            any: Vec::new(),
            cost: 1,
        }
    }
}

impl KeyCheck {
    /// Any service, no permissions, a cost of one credit.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key must have been issued for `service`.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The key must hold every one of `permissions`.
    pub fn require_all<S: Into<String>>(
        mut self,
        permissions: impl IntoIterator<Item = S>,
    ) -> Self {
        self.all.extend(permissions.into_iter().map(Into::into));
        self
    }

    /// The key must hold at least one of `permissions` (when any are
    /// given).
    pub fn require_any<S: Into<String>>(
        mut self,
        permissions: impl IntoIterator<Item = S>,
    ) -> Self {
        self.any.extend(permissions.into_iter().map(Into::into));
        self
    }

    /// Credits this verification spends if accepted (default 1; 0 checks
    /// the budget without spending).
    pub fn cost(mut self, cost: i64) -> Self {
        self.cost = cost;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        if let Some(s) = &self.service {
            super::check_service(s)?;
        }
        for p in self.all.iter().chain(&self.any) {
            check_permission(p)?;
        }
        if self.cost < 0 {
            return Err(Error::invalid(Field::Cost, "must not be negative"));
        }
        Ok(())
    }

    /// `true` if `permissions` satisfy this check.
    pub(crate) fn permitted(&self, permissions: &BTreeSet<String>) -> bool {
        self.all.iter().all(|p| permissions.contains(p))
            && (self.any.is_empty() || self.any.iter().any(|p| permissions.contains(p)))
    }
}

/// What one verification decided: the key (when it was found), and either
/// acceptance with the remaining credits and rate-limit state, or the one
/// reason it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVerdict {
    /// Why the key was refused; `None` if it was accepted.
    pub rejection: Option<KeyRejection>,
    /// The key's record (permissions, name, metadata in
    /// [`ApiKey::policy`]); `None` when the key was malformed or unknown.
    pub key: Option<ApiKey>,
    /// The credits left after this verification, as the atomic spend
    /// returned them (exact at that instant, across every process); `None`
    /// for keys without a budget or when the check did not get that far.
    pub credits_remaining: Option<i64>,
    /// Each of the key's rate limits checked, by name, with its decision.
    pub rate_limits: Vec<(String, RateLimitDecision)>,
}

impl KeyVerdict {
    pub(crate) fn refused(rejection: KeyRejection, key: Option<ApiKey>) -> Self {
        KeyVerdict {
            rejection: Some(rejection),
            key,
            credits_remaining: None,
            rate_limits: Vec::new(),
        }
    }

    /// `true` if the key was accepted.
    pub fn is_valid(&self) -> bool {
        self.rejection.is_none()
    }

    /// The accepted key, or `Error::Unauthorized` with why it was refused.
    pub fn into_key(self) -> Result<ApiKey> {
        match (self.rejection, self.key) {
            (None, Some(key)) => Ok(key),
            (Some(why), _) => Err(Error::Unauthorized(why)),
            (None, None) => Err(Error::Unauthorized(KeyRejection::Unknown)),
        }
    }

    /// The rate-limit decision to answer with: the refusing one, or the
    /// one with the fewest requests remaining. Its
    /// [`headers`](RateLimitDecision::headers) go on the response.
    pub fn rate_limit(&self) -> Option<&RateLimitDecision> {
        self.rate_limits
            .iter()
            .map(|(_, d)| d)
            .min_by_key(|d| (d.allowed, d.remaining))
    }
}

/// What a verification decided, as counted in a key's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum KeyOutcome {
    /// Accepted.
    Valid,
    /// Refused: revoked.
    Revoked,
    /// Refused: expired.
    Expired,
    /// Refused: issued for another service.
    WrongService,
    /// Refused: disabled.
    Disabled,
    /// Refused: lacks a required permission.
    InsufficientPermissions,
    /// Refused: no credits left.
    UsageExceeded,
    /// Refused: a rate limit.
    RateLimited,
}

impl KeyOutcome {
    /// Every outcome.
    pub const ALL: [KeyOutcome; 8] = [
        KeyOutcome::Valid,
        KeyOutcome::Revoked,
        KeyOutcome::Expired,
        KeyOutcome::WrongService,
        KeyOutcome::Disabled,
        KeyOutcome::InsufficientPermissions,
        KeyOutcome::UsageExceeded,
        KeyOutcome::RateLimited,
    ];

    /// The outcome's name, as stored in `api_key_usage.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOutcome::Valid => "valid",
            KeyOutcome::Revoked => "revoked",
            KeyOutcome::Expired => "expired",
            KeyOutcome::WrongService => "wrong_service",
            KeyOutcome::Disabled => "disabled",
            KeyOutcome::InsufficientPermissions => "insufficient_permissions",
            KeyOutcome::UsageExceeded => "usage_exceeded",
            KeyOutcome::RateLimited => "rate_limited",
        }
    }

    /// The outcome named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcome of a verification that found the key and refused it
    /// for `rejection` (`None` for malformed or unknown keys: they count
    /// for no key).
    pub(crate) fn of(rejection: Option<KeyRejection>) -> Option<Self> {
        Some(match rejection {
            None => KeyOutcome::Valid,
            Some(KeyRejection::Revoked) => KeyOutcome::Revoked,
            Some(KeyRejection::Expired) => KeyOutcome::Expired,
            Some(KeyRejection::WrongService) => KeyOutcome::WrongService,
            Some(KeyRejection::Disabled) => KeyOutcome::Disabled,
            Some(KeyRejection::InsufficientPermissions) => KeyOutcome::InsufficientPermissions,
            Some(KeyRejection::UsageExceeded) => KeyOutcome::UsageExceeded,
            Some(KeyRejection::RateLimited { .. }) => KeyOutcome::RateLimited,
            Some(_) => return None,
        })
    }
}

impl std::fmt::Display for KeyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many verifications of one key had one outcome in one hour or day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUsage {
    /// The start of the hour or day (UTC).
    pub bucket: DateTime<Utc>,
    /// What was decided.
    pub outcome: KeyOutcome,
    /// How many times.
    pub count: u64,
}

/// How a credit spend came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreditSpend {
    /// The key has no budget.
    Unlimited,
    /// Spent; this many are left.
    Spent(i64),
    /// Not enough: this many are left, and nothing was spent.
    Exhausted(i64),
}

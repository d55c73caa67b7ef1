//! Rate limiting with GCRA (the generic cell rate algorithm), in memory
//! for one process or on Redis for many.
//!
//! A [`RateLimitPolicy`] allows `rate` requests per `period` on average and
//! up to `burst` at once. GCRA keeps one timestamp per key, the theoretical
//! arrival time (TAT) of the next request if requests came at exactly the
//! policy's rate. With `T = period / rate` (the emission interval) and
//! `τ = T × burst`, a request of cost `c` at time `now` is allowed when
//! `max(TAT, now) + T×c − τ ≤ now`, and then moves TAT to
//! `max(TAT, now) + T×c`. So a fresh key admits `burst` requests at once,
//! then one per `T`; the state is one number per key, and a key whose TAT
//! has passed holds nothing worth keeping.
//!
//! The in-memory limiter is written here rather than taken from `governor`:
//! governor's keyed limiter answers allowed/not-until but does not report
//! how many requests remain, which the `RateLimit-Remaining` header needs,
//! and the Redis script has to implement the same arithmetic anyway; one
//! small function ([`gcra`]) is the rule both follow.

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
pub use self::redis::RedisLimiterOptions;
use crate::error::{Error, Field, Result};
use crate::telemetry::{Storage, rate_limit_decision};

/// How many requests a key may make: `rate` per `period` on average, up to
/// `burst` at once.
///
/// ```
/// use std::time::Duration;
/// use dreamnet_db::RateLimitPolicy;
///
/// // 100 requests a minute, 20 at once.
/// let policy = RateLimitPolicy::new(100, Duration::from_secs(60), 20)?;
/// assert_eq!(policy.emission_interval(), Duration::from_millis(600));
/// # Ok::<(), dreamnet_db::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    emission_us: u64,
    burst: u32,
}

impl RateLimitPolicy {
    /// `rate` requests per `period`, `burst` at once. `InvalidInput` unless
    /// `rate` and `burst` are at least 1 and `period / rate` is at least a
    /// microsecond.
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Self> {
        let bad = |reason: &str| Err(Error::invalid(Field::RateLimitPolicy, reason));
        if rate == 0 || burst == 0 {
            return bad("rate and burst must be at least 1");
        }
        let emission_us = period.as_micros() / u128::from(rate);
        if emission_us == 0 {
            return bad("period / rate must be at least a microsecond");
        }
        let emission_us = u64::try_from(emission_us)
            .map_err(|_| Error::invalid(Field::RateLimitPolicy, "period is too long"))?;
        if emission_us
            .checked_mul(u64::from(burst))
            .is_none_or(|t| t > i64::MAX as u64 / 4)
        {
            return bad("period × burst is too long");
        }
        Ok(RateLimitPolicy { emission_us, burst })
    }

    /// A policy from its stored parts (emission interval in µs, burst),
    /// checked as [`new`](Self::new) checks.
    pub(crate) fn from_parts(emission_us: u64, burst: u32) -> Result<Self> {
        if emission_us == 0 || burst == 0 {
            return Err(Error::invalid(
                Field::RateLimitPolicy,
                "emission interval and burst must be at least 1",
            ));
        }
        if emission_us
            .checked_mul(u64::from(burst))
            .is_none_or(|t| t > i64::MAX as u64 / 4)
        {
            return Err(Error::invalid(
                Field::RateLimitPolicy,
                "period × burst is too long",
            ));
        }
        Ok(RateLimitPolicy { emission_us, burst })
    }

    /// `rate` requests a second, `rate` at once.
    pub fn per_second(rate: u32) -> Result<Self> {
        Self::new(rate, Duration::from_secs(1), rate)
    }

    /// `rate` requests a minute, `burst` at once.
    pub fn per_minute(rate: u32, burst: u32) -> Result<Self> {
        Self::new(rate, Duration::from_secs(60), burst)
    }

    /// The most requests allowed at once: the `RateLimit-Limit` value.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The steady spacing between requests, `period / rate`.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_micros(self.emission_us)
    }

    #[cfg_attr(not(any(feature = "memory", feature = "redis")), allow(dead_code))]
    fn tolerance_us(&self) -> i64 {
        (self.emission_us * u64::from(self.burst)) as i64
    }

    fn check_cost(&self, cost: u32) -> Result<()> {
        if cost == 0 {
            return Err(Error::invalid(Field::Cost, "must be at least 1"));
        }
        if cost > self.burst {
            return Err(Error::invalid(
                Field::Cost,
                format!(
                    "{cost} is more than the burst of {}, so it could never be allowed",
                    self.burst
                ),
            ));
        }
        Ok(())
    }
}

/// The answer to one check, with what the standard rate-limit response
/// headers need.
///
/// | header | value |
/// | --- | --- |
/// | `RateLimit-Limit` | [`limit`](Self::limit) |
/// | `RateLimit-Remaining` | [`remaining`](Self::remaining) |
/// | `RateLimit-Reset` | [`reset_after`](Self::reset_after), in whole seconds rounded up |
/// | `Retry-After` (when refused) | [`retry_after`](Self::retry_after), in whole seconds rounded up |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The policy's burst: the most requests allowed at once.
    pub limit: u32,
    /// How many more requests of cost 1 would be allowed right now.
    pub remaining: u32,
    /// When refused: how long until this request would be allowed.
    pub retry_after: Option<Duration>,
    /// How long until the key is back to its full burst.
    pub reset_after: Duration,
    /// `true` when the limiter's store could not be reached and the
    /// [`FailureMode`] decided instead.
    pub degraded: bool,
}

impl RateLimitDecision {
    /// `(name, value)` pairs for the response: `RateLimit-Limit`,
    /// `RateLimit-Remaining`, `RateLimit-Reset`, and `Retry-After` when
    /// refused.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", self.remaining.to_string()),
            ("RateLimit-Reset", ceil_secs(self.reset_after).to_string()),
        ];
        if let Some(after) = self.retry_after {
            h.push(("Retry-After", ceil_secs(after).to_string()));
        }
        h
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

/// What a limiter answers when its store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Let requests through (the default): an outage of the limiter's
    /// store does not become an outage of the service.
    #[default]
    Open,
    /// Refuse requests: for limits that protect something that must not be
    /// overrun.
    Closed,
}

/// GCRA at `now` (µs) for a key whose theoretical arrival time is `tat`
/// (µs; `None` for a fresh key). Returns the decision and, when allowed,
/// the new TAT to store.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
pub(crate) fn gcra(
    policy: &RateLimitPolicy,
    tat: Option<i64>,
    now: i64,
    cost: u32,
) -> (RateLimitDecision, Option<i64>) {
    let t = policy.emission_us as i64;
    let tau = policy.tolerance_us();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + t * i64::from(cost);
    let allow_at = new_tat - tau;
    if now < allow_at {
        let decision = RateLimitDecision {
            allowed: false,
            limit: policy.burst,
            remaining: remaining(tau, tat - now, t),
            retry_after: Some(Duration::from_micros((allow_at - now) as u64)),
            reset_after: Duration::from_micros((tat - now) as u64),
            degraded: false,
        };
        return (decision, None);
    }
    let decision = RateLimitDecision {
        allowed: true,
        limit: policy.burst,
        remaining: remaining(tau, new_tat - now, t),
        retry_after: None,
        reset_after: Duration::from_micros((new_tat - now) as u64),
        degraded: false,
    };
    (decision, Some(new_tat))
}

/// Requests of cost 1 that fit in what is left of the tolerance.
#[cfg_attr(not(any(feature = "memory", feature = "redis")), allow(dead_code))]
pub(crate) fn remaining(tau: i64, used: i64, t: i64) -> u32 {
    ((tau - used).max(0) / t) as u32
}

/// The limiter key under which an API key's limit `name` is counted.
pub(crate) fn key_limit_name(id: uuid::Uuid, name: &str) -> String {
    let mut key = String::with_capacity(48 + name.len());
    key.push_str("api-key:");
    key.push_str(&id.simple().to_string());
    key.push(':');
    key.push_str(name);
    key
}

/// The part of a Redis limiter's key after its prefix: the SHA-256 of the
/// limiter key, as lower-case hex (raw identifiers never land in Redis).
pub(crate) fn redis_key_digest(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// What a limiter's store does.
#[async_trait::async_trait]
trait Limiter: Send + Sync + fmt::Debug + 'static {
    async fn check(
        &self,
        policy: &RateLimitPolicy,
        key: &str,
        cost: u32,
    ) -> Result<RateLimitDecision>;

    /// The key prefix, if this is a Redis limiter on `redis_url`.
    fn redis_prefix_on(&self, _redis_url: &str) -> Option<&str> {
        None
    }
}

/// A keyed rate limiter. Build it once and clone it freely; clones share
/// their state.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # async fn demo() -> dreamnet_db::Result<()> {
/// use dreamnet_db::{RateLimitPolicy, RateLimiter};
///
/// let limiter = RateLimiter::in_memory(RateLimitPolicy::per_second(10)?);
/// let decision = limiter.check("api-key:01a2…").await?;
/// if !decision.allowed {
///     // 429, with decision.headers()
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    policy: RateLimitPolicy,
    store: Arc<dyn Limiter>,
    storage: Storage,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("policy", &self.policy)
            .field("store", &self.store)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter for one process, on the system clock.
    #[cfg(feature = "memory")]
    pub fn in_memory(policy: RateLimitPolicy) -> Self {
        Self::in_memory_with_clock(policy, crate::SystemClock)
    }

    /// A limiter for one process whose time comes from `clock` (a
    /// [`ManualClock`](crate::ManualClock) in tests).
    #[cfg(feature = "memory")]
    pub fn in_memory_with_clock(policy: RateLimitPolicy, clock: impl crate::Clock) -> Self {
        RateLimiter {
            policy,
            store: Arc::new(memory::MemoryLimiter::new(Arc::new(clock))),
            storage: Storage::Memory,
        }
    }

    /// A limiter shared by every process using the same Redis (and
    /// prefix): one round trip per check, atomic, timed by the Redis
    /// server's clock.
    #[cfg(feature = "redis")]
    pub async fn redis(
        url: &str,
        policy: RateLimitPolicy,
        options: RedisLimiterOptions,
    ) -> Result<Self> {
        Ok(RateLimiter {
            policy,
            store: Arc::new(redis::RedisLimiter::connect(url, options).await?),
            storage: Storage::Redis,
        })
    }

    /// The key prefix of this limiter if it is a Redis limiter connected
    /// with `redis_url` (then the Redis cache on that URL can apply API
    /// keys' limits in its own script, on the same keys).
    pub(crate) fn redis_prefix_on(&self, redis_url: &str) -> Option<&str> {
        self.store.redis_prefix_on(redis_url)
    }

    /// The policy this limiter applies.
    pub fn policy(&self) -> RateLimitPolicy {
        self.policy
    }

    /// Checks one request of cost 1 for `key` (an API key id, a user id,
    /// an IP address: any string; on Redis it is hashed before it is
    /// stored).
    pub async fn check(&self, key: &str) -> Result<RateLimitDecision> {
        self.check_cost(key, 1).await
    }

    /// Checks a request that costs `cost` (1 to the policy's burst). A
    /// refused request takes nothing. Each decision is counted in
    /// `dreamnet_db_rate_limit_decisions_total` (see [`crate::telemetry`]).
    pub async fn check_cost(&self, key: &str, cost: u32) -> Result<RateLimitDecision> {
        self.check_with(&self.policy, key, cost).await
    }

    /// Checks `key` against `policy` instead of the limiter's own (the
    /// per-key limits of API keys), in the same store.
    pub(crate) async fn check_with(
        &self,
        policy: &RateLimitPolicy,
        key: &str,
        cost: u32,
    ) -> Result<RateLimitDecision> {
        policy.check_cost(cost)?;
        let decision = self.store.check(policy, key, cost).await?;
        rate_limit_decision(self.storage, decision.allowed, decision.degraded);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> i64 {
        (n * 1000) as i64
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 10 a second, 5 at once: T = 100 ms.
        let p = RateLimitPolicy::new(10, Duration::from_secs(1), 5).unwrap();
        let mut tat = None;
        for expected_remaining in [4, 3, 2, 1, 0] {
            let (d, next) = gcra(&p, tat, 0, 1);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            tat = next;
        }
        let (d, next) = gcra(&p, tat, 0, 1);
        assert!(!d.allowed && next.is_none());
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(d.reset_after, Duration::from_millis(500));
        let (d, next) = gcra(&p, tat, ms(99), 1);
        assert!(!d.allowed && next.is_none());
        let (d, next) = gcra(&p, tat, ms(100), 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        tat = next;
        // Quiet for a second: the full burst is back.
        let (d, _) = gcra(&p, tat, ms(1_100), 1);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn costs_take_several_cells_and_refusals_take_none() {
        let p = RateLimitPolicy::new(10, Duration::from_secs(1), 5).unwrap();
        let (d, tat) = gcra(&p, None, 0, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        let (d, none) = gcra(&p, tat, 0, 3);
        assert!(!d.allowed && none.is_none());
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        let (d, _) = gcra(&p, tat, 0, 2);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn policies_and_costs_are_validated() {
        assert!(RateLimitPolicy::new(0, Duration::from_secs(1), 1).is_err());
        assert!(RateLimitPolicy::new(1, Duration::from_secs(1), 0).is_err());
        assert!(RateLimitPolicy::new(10, Duration::from_nanos(5), 1).is_err());
        let p = RateLimitPolicy::per_second(3).unwrap();
        assert!(matches!(
            p.check_cost(0),
            Err(Error::InvalidInput {
                field: Field::Cost,
                ..
            })
        ));
        assert!(p.check_cost(4).is_err());
        assert!(p.check_cost(3).is_ok());
    }

    #[test]
    fn headers_round_up() {
        let d = RateLimitDecision {
            allowed: false,
            limit: 5,
            remaining: 0,
            retry_after: Some(Duration::from_millis(100)),
            reset_after: Duration::from_millis(1_500),
            degraded: false,
        };
        assert_eq!(
            d.headers(),
            vec![
                ("RateLimit-Limit", "5".to_owned()),
                ("RateLimit-Remaining", "0".to_owned()),
                ("RateLimit-Reset", "2".to_owned()),
                ("Retry-After", "1".to_owned()),
            ]
        );
    }
}

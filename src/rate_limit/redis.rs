//! The Redis limiter: GCRA in one Lua script, one round trip per check,
//! timed by the Redis server's clock so instances with skewed clocks
//! agree.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};

use super::{FailureMode, Limiter, RateLimitDecision, RateLimitPolicy, remaining};
use crate::error::Result;

/// GCRA with the server's time. KEYS[1] the key; ARGV: emission interval
/// and tolerance (µs), cost. Returns {allowed, retry_after µs, reset_after
/// µs, used µs}. The key expires when its arrival time passes, so an idle
/// key holds nothing.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission * cost
local allow_at = new_tat - tau
if now < allow_at then
  return {0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, 0, new_tat - now}
"#;

/// How a Redis limiter connects and fails.
#[derive(Debug, Clone)]
pub struct RedisLimiterOptions {
    /// Prefix of every key. Default `dreamnet:v1:rl:`. Limiters sharing a
    /// prefix and a policy share their counts.
    pub prefix: String,
    /// Bound on each Redis call. Default 100 ms.
    pub timeout: Duration,
    /// What to answer when Redis cannot be reached in time. Default
    /// [`FailureMode::Open`].
    pub failure_mode: FailureMode,
}

impl Default for RedisLimiterOptions {
    fn default() -> Self {
        RedisLimiterOptions {
            prefix: "dreamnet:v1:rl:".to_owned(),
            timeout: Duration::from_millis(100),
            failure_mode: FailureMode::Open,
        }
    }
}

pub(super) struct RedisLimiter {
    conn: ConnectionManager,
    /// Kept to recognise a cache on the same Redis; never shown.
    url: SecretString,
    script: Script,
    options: RedisLimiterOptions,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    pub(super) async fn connect(url: &str, options: RedisLimiterOptions) -> Result<Self> {
        let conn = crate::redis_conn::manager(url, options.timeout)?;
        Ok(RedisLimiter {
            conn,
            url: SecretString::from(url.to_owned()),
            script: Script::new(GCRA),
            options,
        })
    }

    /// The Redis key for `key`: hashed, so raw identifiers (IPs, user ids)
    /// do not land in Redis.
    fn redis_key(&self, key: &str) -> String {
        let mut name = String::with_capacity(self.options.prefix.len() + 64);
        name.push_str(&self.options.prefix);
        name.push_str(&super::redis_key_digest(key));
        name
    }
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    fn redis_prefix_on(&self, redis_url: &str) -> Option<&str> {
        (self.url.expose_secret() == redis_url).then_some(self.options.prefix.as_str())
    }

    async fn check(
        &self,
        policy: &RateLimitPolicy,
        key: &str,
        cost: u32,
    ) -> Result<RateLimitDecision> {
        let emission = policy.emission_us as i64;
        let tau = policy.tolerance_us();
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(self.redis_key(key));
        invocation.arg(emission).arg(tau).arg(cost);
        let answer = tokio::time::timeout(
            self.options.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok(v)) if v.len() == 3 => {
                let (allowed, retry, reset) = (v[0] == 1, v[1], v[2]);
                Ok(RateLimitDecision {
                    allowed,
                    limit: policy.burst,
                    remaining: remaining(tau, reset, emission),
                    retry_after: (!allowed).then(|| Duration::from_micros(retry.max(0) as u64)),
                    reset_after: Duration::from_micros(reset.max(0) as u64),
                    degraded: false,
                })
            }
            failed => {
                match failed {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "rate limit check could not reach Redis")
                    }
                    Err(_) => {
                        tracing::warn!(timeout = ?self.options.timeout, "rate limit check timed out on Redis")
                    }
                    Ok(Ok(_)) => {
                        tracing::warn!("rate limit script answered in an unexpected shape")
                    }
                }
                let allowed = self.options.failure_mode == FailureMode::Open;
                Ok(RateLimitDecision {
                    allowed,
                    limit: policy.burst,
                    remaining: 0,
                    retry_after: (!allowed).then_some(policy.emission_interval()),
                    reset_after: Duration::ZERO,
                    degraded: true,
                })
            }
        }
    }
}
